//! `slim models`: what each model family offers, with accuracy sources and cost measured here.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use slim_agent::{
    backend::{select_backend, BackendChoice},
    model::ModelFamily,
    profile::{measure_family, ProfileSettings},
};

/// Lists every model family and width: top-1 accuracy and its source, FLOPs, parameters, and
/// the latency measured on this machine at batch 1 and batch 32.
#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    /// Folder of model families.
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// Skip the latency measurement.
    #[arg(long)]
    pub no_latency: bool,
}

/// Runs the command.
pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    super::require_path(&args.models_dir, "the models folder", "--models-dir")?;
    let (backend, reason) = select_backend(BackendChoice::Cpu).map_err(anyhow::Error::msg)?;
    let dirs = slim_agent::service::family_dirs(&args.models_dir)?;
    anyhow::ensure!(
        !dirs.is_empty(),
        "no model family in {} (no */manifest.toml there); pass --models-dir PATH",
        args.models_dir.display()
    );
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("backend: {} ({reason}); latency = mean of timed runs, one instance, single-threaded tract, {threads} cores here", backend.name);
    for dir in dirs {
        let family = ModelFamily::load(&dir, backend.runtime, &Default::default())
            .with_context(|| format!("cannot load the model family in {}", dir.display()))?;
        let m = &family.manifest;
        println!("\n{} — {}", m.family, m.description);
        println!(
            "  input {} (C x H x W), {} classes, weights {}",
            m.input_shape
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join("x"),
            m.classes.len(),
            m.weights
        );
        if let Some(d) = &m.dataset {
            println!("  measured on: {} — {}", d.name, d.split);
        }
        println!(
            "  {:>5}  {:>7}  {:<9}  {:>14}  {:>11}  {:>10}  {:>11}",
            "width", "top-1", "source", "FLOPs", "params", "b1 ms", "b32 ms/img"
        );
        let latencies = if args.no_latency {
            Vec::new()
        } else {
            let settings = ProfileSettings {
                batches: vec![1, 32],
                ..ProfileSettings::default()
            };
            measure_family(&family, &settings, |_| {})?
        };
        for plan in family.plans() {
            let e = &plan.entry;
            let at = |batch: u16| {
                latencies
                    .iter()
                    .find(|p| p.point.width == e.width && p.point.batch == batch)
                    .map(|p| format!("{:.3}", p.point.latency_ms / batch as f32))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "  {:>5.2}  {:>6.2}%  {:<9}  {:>14}  {:>11}  {:>10}  {:>11}",
                e.width,
                e.top1 * 100.0,
                e.accuracy_source,
                e.flops,
                e.params,
                at(1),
                at(32)
            );
        }
        if let Some(note) = family.plans().last().map(|p| &p.entry.accuracy_note) {
            println!("  accuracy note: {note}");
        }
    }
    Ok(())
}
