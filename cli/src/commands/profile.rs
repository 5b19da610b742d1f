//! `slim profile`: measure this device and write a profile file.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Args;
use slim_agent::{
    backend::{select_backend, BackendChoice, SelectedBackend},
    model::{ModelFamily, PlanOptions},
    profile::{measure_family, to_profile, ProfileSettings},
};
use slim_protocol::ProfilePoint;

/// Measures the latency of every family × width × batch size on this device and writes a
/// profile (TOML) that agents publish and the simulator builds fleets from.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// Profile name, e.g. `jetson-orin-nano` or `lab-cpu-2core`.
    #[arg(long)]
    pub name: String,
    /// Where to write it.
    #[arg(long)]
    pub out: PathBuf,
    /// Folder of model families.
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// Families to measure (default: all).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    pub batches: Vec<u16>,
    /// Time budget per point.
    #[arg(long, default_value = "300ms", value_parser = super::parse_duration)]
    pub budget: Duration,
    /// Backend to measure (`ort`: ONNX Runtime, in builds with the `ort` feature; the library
    /// comes from ORT_DYLIB_PATH).
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    pub backend: BackendChoice,
    /// Idle power of the device, watts (for the energy model when there is no sensor).
    #[arg(long, default_value_t = 10.0)]
    pub idle_power_w: f32,
    /// Full-load power of the device, watts.
    #[arg(long, default_value_t = 65.0)]
    pub max_power_w: f32,
    /// Threads per batch, as the agent's `--threads` (tract's executor, or ONNX Runtime's
    /// intra-op threads).
    #[arg(long, default_value_t = 1)]
    pub threads: u16,
    /// Batch sizes with a plan of their own, as the agent's `--concrete-batches` (`none`: only
    /// the symbolic-batch plan). tract only: ONNX Runtime runs every size on one session.
    #[arg(long, default_value = "1")]
    pub concrete_batches: slim_agent::config::BatchList,
}

/// Runs the command.
pub fn run(args: ProfileArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.threads >= 1, "--threads must be at least 1");
    let (backend, reason) = select_backend(args.backend).map_err(anyhow::Error::msg)?;
    let plan_options = PlanOptions {
        threads: args.threads as usize,
        concrete_batches: args
            .concrete_batches
            .0
            .iter()
            .map(|&b| b as usize)
            .collect(),
    };
    eprintln!("profiling on {} ({reason})", backend.name);
    let settings = ProfileSettings {
        batches: args.batches.clone(),
        budget: args.budget,
        ..ProfileSettings::default()
    };
    let dirs = selected_family_dirs(&args)?;
    let points = measure_families(&dirs, &backend, &plan_options, &settings)?;
    let profile = to_profile(&args.name, points, args.idle_power_w, args.max_power_w);
    std::fs::write(
        &args.out,
        header(&args, &backend) + &toml::to_string_pretty(&profile)?,
    )
    .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// The family folders under `--models-dir`, only those named by `--models` when given.
fn selected_family_dirs(args: &ProfileArgs) -> anyhow::Result<Vec<PathBuf>> {
    super::require_path(&args.models_dir, "the models folder", "--models-dir")?;
    let dirs: Vec<PathBuf> = slim_agent::service::family_dirs(&args.models_dir)?
        .into_iter()
        .filter(|p| {
            args.models.is_empty()
                || args
                    .models
                    .iter()
                    .any(|m| p.file_name().is_some_and(|n| n.to_string_lossy() == *m))
        })
        .collect();
    anyhow::ensure!(
        !dirs.is_empty(),
        "no model family to measure in {}{}",
        args.models_dir.display(),
        if args.models.is_empty() {
            String::new()
        } else {
            format!(" named {}", args.models.join(", "))
        }
    );
    Ok(dirs)
}

/// Loads and measures each family in turn, printing each point under a progress bar.
fn measure_families(
    dirs: &[PathBuf],
    backend: &SelectedBackend,
    plan_options: &PlanOptions,
    settings: &ProfileSettings,
) -> anyhow::Result<Vec<ProfilePoint>> {
    let mut points = Vec::new();
    let per_family = 4 * settings.batches.len() as u64;
    let bar = indicatif::ProgressBar::new(per_family * dirs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} points {msg}")
            .expect("valid template"),
    );
    for dir in dirs {
        let family = ModelFamily::load(dir, backend.runtime, plan_options)?;
        let measured = measure_family(&family, settings, |m| {
            bar.inc(1);
            bar.println(format!(
                "  {:<18} w{:<5} b{:<3} {:>9.3} ms/batch  {:>8.3} ms/img  ({} runs, median {:.3} ms)",
                m.point.model,
                m.point.width,
                m.point.batch,
                m.point.latency_ms,
                m.point.latency_ms / m.point.batch as f32,
                m.runs,
                m.median_ms
            ));
        })?;
        points.extend(measured.into_iter().map(|m| m.point));
    }
    bar.finish_and_clear();
    Ok(points)
}

/// The comment block above the profile: how it was measured, on what, and the power model.
fn header(args: &ProfileArgs, backend: &SelectedBackend) -> String {
    let device = slim_agent::telemetry::device_info();
    format!(
        "# Measured by `slim profile --name {} --out {} --batches {} --budget {:?} --threads {} --concrete-batches {}`\n\
         # on {} ({} cores, {} MiB RAM), backend {}, {} with {} thread(s) per batch, one instance.\n\
         # Power: labelled model (idle {} W, max {} W), not a sensor reading.\n",
        args.name,
        args.out.display(),
        args.batches
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.budget,
        args.threads,
        args.concrete_batches,
        device.cpu_model,
        device.cpu_cores,
        device.ram_bytes / (1024 * 1024),
        backend.name,
        if backend.name == "ort" {
            "ONNX Runtime"
        } else {
            "tract"
        },
        args.threads,
        args.idle_power_w,
        args.max_power_w,
    )
}
