//! `slim bench`: open-loop Poisson load against a running system.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Args;
use slim_agent::model::Manifest;
use slim_client::{
    load::{run_open_loop, LoadSpec},
    samples::{family_samples, read_npy, split_batch, Sample},
};

use super::BrokerArgs;

/// Sends requests at a Poisson rate for a while, then prints throughput, latency percentiles and
/// what was lost. The load is open loop: arrivals do not wait for answers.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Mean request rate, per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long to send (with --knee: per step).
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// How long to wait for answers after sending stops (with --knee: after each step).
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub drain: Duration,
    /// Model family.
    #[arg(long, default_value = "digits")]
    pub model: String,
    /// Inputs: a .npy batch [N,C,H,W]; defaults to the family's held-out samples in --models-dir.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Folder of model families (for default inputs), relative to the current folder.
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// Pin a width (with --knee: the slimmest unless given).
    #[arg(long)]
    pub width: Option<f32>,
    /// Accuracy floor, fraction.
    #[arg(long)]
    pub min_accuracy: Option<f32>,
    /// Latency budget per request, ms.
    #[arg(long)]
    pub deadline_ms: Option<u32>,
    /// Seed of arrivals and input choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Send every request, even while the coordinator has asked for a pause: by default, after
    /// an `overloaded` reply with `retry_after_ms`, the client answers the model's next
    /// requests `overloaded` itself until then, without sending them (reported as "held by
    /// this client").
    #[arg(long)]
    pub no_pushback: bool,
    #[command(flatten)]
    pub saturate: SaturateArgs,
    #[command(flatten)]
    pub knee: super::knee::KneeArgs,
}

impl BenchArgs {
    /// The manifest of the family under load (`--models-dir`/`--model`).
    pub fn manifest(&self) -> anyhow::Result<Manifest> {
        Manifest::load(&self.models_dir.join(&self.model)).with_context(|| {
            format!(
                "model family {:?} in {}",
                self.model,
                self.models_dir.display()
            )
        })
    }
}

/// `--saturate`: the coordinator's routing rate against the same broker's own rates.
#[derive(Debug, Clone, Args)]
pub struct SaturateArgs {
    /// Instead of an open-loop load against a running system: start a coordinator per router
    /// and fleet size on the broker, with emulated agents that count assignments without
    /// running a model, flood it with requests and print requests routed per second beside two
    /// anchors measured in the same run on the same broker (raw publish → subscribe, and a
    /// do-nothing relay client).
    #[arg(long)]
    pub saturate: bool,
    /// With --saturate or --knee: start an embedded broker for the run (the demo's) instead of
    /// using --broker.
    #[arg(long)]
    pub embedded: bool,
    /// With --saturate: requests per case.
    #[arg(long, default_value_t = 20_000, requires = "saturate")]
    pub messages: usize,
    /// With --saturate: emulated fleet sizes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "5,50,500",
        requires = "saturate"
    )]
    pub fleets: Vec<usize>,
    /// With --saturate: routers, comma-separated (`ppo` needs --policy).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,round-robin,least-loaded,greedy,ppo",
        requires = "saturate"
    )]
    pub routers: Vec<slim_router::RouterKind>,
    /// With --saturate: how many coordinators share the request stream (one MQTT shared
    /// subscription group), comma-separated; every fleet size and router is measured with
    /// each count.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1",
        requires = "saturate"
    )]
    pub coordinators: Vec<usize>,
    /// With --saturate: PPO checkpoint for the `ppo` router.
    #[arg(long, default_value = "router/policies/balanced.safetensors")]
    pub policy: PathBuf,
    /// With --saturate: the device profile every emulated agent publishes (greedy and PPO
    /// read it).
    #[arg(long, default_value = "profiles/cpu-2core-measured.toml")]
    pub profile: PathBuf,
    /// With --saturate or --knee: also write the table, as markdown, to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs the command.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.saturate.saturate {
        return super::saturate::run(&args).await;
    }
    if args.knee.knee {
        return super::knee::run(&args).await;
    }
    anyhow::ensure!(
        !args.saturate.embedded && args.saturate.out.is_none(),
        "--embedded and --out go with --saturate or --knee"
    );
    let samples: Vec<Sample> = match &args.input {
        Some(path) => split_batch(&read_npy(path)?)
            .into_iter()
            .map(|input| Sample { input, label: None })
            .collect(),
        None => family_samples(&args.models_dir, &args.model)?,
    };
    let client = args
        .broker
        .connect("slim-bench")
        .await?
        .with_pushback(!args.no_pushback);
    println!(
        "bench: {} req/s of {} for {} against {} (prefix {})",
        args.rate,
        args.model,
        super::human_duration(args.duration),
        args.broker.broker,
        args.broker.topic_prefix
    );
    let bar = indicatif::ProgressBar::new(args.duration.as_secs().max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} s sending, then draining")
            .expect("valid template"),
    );
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                bar.inc(1);
            }
        })
    };
    let report = run_open_loop(
        &client,
        &samples,
        &LoadSpec {
            model: args.model.clone(),
            rate: args.rate,
            duration: args.duration,
            drain: args.drain,
            seed: args.seed,
            width: args.width,
            min_accuracy: args.min_accuracy,
            deadline_ms: args.deadline_ms,
            constrained_share: 1.0,
        },
    )
    .await;
    ticker.abort();
    bar.finish_and_clear();
    print!("{}", report?.summary());
    client.disconnect().await;
    Ok(())
}
