//! `slim bench --knee`: the glue between the flags and [`crate::knee`].

use std::{fmt::Write as _, time::Duration};

use anyhow::Context;
use clap::Args;
use slim_agent::backend::BackendChoice;
use slim_client::samples::family_samples;
use slim_router::RouterKind;

use super::bench::BenchArgs;
use crate::knee::{self, KneeSpec};

/// `--knee`: system throughput against offered load, with real agents, beside the agent's
/// in-process throughput.
#[derive(Debug, Clone, Args)]
pub struct KneeArgs {
    /// Instead of one open-loop load against a running system: measure one in-process
    /// instance's throughput (the anchor), then start a local cluster (a broker, a coordinator,
    /// real agents) and offer open-loop load at each of --loads × the anchor for --duration
    /// each, then twice the knee, the best throughput of a step that lost nothing (overload:
    /// every request must still be answered). Prints the table; --out also writes it as markdown. --embedded starts an embedded
    /// broker; otherwise --broker is used.
    #[arg(long, conflicts_with = "saturate")]
    pub knee: bool,
    /// With --knee: offered loads as fractions of the anchor, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.1,0.25,0.5,0.75,1,1.5",
        requires = "knee"
    )]
    pub loads: Vec<f64>,
    /// With --knee: agents in the cluster (real speed).
    #[arg(long, default_value_t = 1, requires = "knee")]
    pub agents: usize,
    /// With --knee: threads per batch of each agent and of the anchor's instance.
    #[arg(long, default_value_t = 1, requires = "knee")]
    pub threads: u16,
    /// With --knee: the backend of the agents and of the anchor's instance (`cuda` or `auto`
    /// in a build with a `cuda-*` feature, to measure the live path against a GPU).
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu, requires = "knee")]
    pub backend: BackendChoice,
    /// With --knee: the coordinator's router.
    #[arg(long, value_enum, default_value = "least-loaded", requires = "knee")]
    pub router: RouterKind,
    /// With --knee: how long the anchor runs each batch size.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration, requires = "knee")]
    pub anchor_budget: Duration,
}

/// Runs the knee and prints (and with --out writes) the table.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let k = &args.knee;
    let manifest = args.manifest()?;
    // Without --width: the slimmest, the width the paper's headline is at.
    let width = match args.width {
        Some(w) => w,
        None => manifest
            .widths
            .iter()
            .map(|w| w.width)
            .min_by(f32::total_cmp)
            .context("the manifest lists no width")?,
    };
    let spec = KneeSpec {
        broker_url: (!args.saturate.embedded).then(|| args.broker.broker.clone()),
        models_dir: args.models_dir.clone(),
        model: args.model.clone(),
        width,
        agents: k.agents,
        threads: k.threads,
        backend: k.backend,
        router: k.router,
        loads: k.loads.clone(),
        step: args.duration,
        drain: args.drain,
        anchor_budget: k.anchor_budget,
        seed: args.seed,
        pushback: !args.no_pushback,
        samples: family_samples(&args.models_dir, &args.model)?,
        topic_prefix: format!("{}/knee-{}", args.broker.topic_prefix, std::process::id()),
    };
    let report = knee::run(&spec).await?;
    let table = report.markdown();
    println!("{table}");
    if let Some(out) = &args.saturate.out {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Written by `slim bench --knee` on {}: {}.\n",
            super::saturate::machine(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        md.push_str(&table);
        std::fs::write(out, md).with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
