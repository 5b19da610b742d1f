//! `slim calibrate`: runs a local cluster, fits the simulator's per-batch overheads and transport
//! delay to what it measures, and writes a calibration file that `slim simulate`, `slim train`
//! and `slim eval` read with `--calibration`.

mod measure;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use slim_router::calibration::Calibration;
use slim_router::RouterKind;

pub use measure::{measure, LiveSetup, Measured};

/// The agents of a local live cluster, as `slim calibrate` and `slim eval`'s live part start
/// them.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveClusterArgs {
    /// Emulated slowdowns of the agents, one per agent: an unpaced agent's batches sleep
    /// (k − 1) × their real compute time, a paced agent's take k × its profile's latency. The
    /// default is a CPU twice this host's time and two Jetsons paced 80 and 200 times slower
    /// than their derived profiles (the least that keeps this 2-core host under their pace).
    #[arg(long, value_delimiter = ',', default_value = "2,80,200")]
    pub slowdowns: Vec<f32>,
    /// Threads per batch of the agents, one per agent (tract's executor).
    #[arg(long, value_delimiter = ',', default_value = "1,1,1")]
    pub threads: Vec<u16>,
    /// Device profile each agent publishes (a name in the profiles folder), one per agent,
    /// measured for that agent's thread count; the simulator twin and the fit use them.
    #[arg(
        long,
        alias = "live-profiles",
        value_delimiter = ',',
        default_value = "cpu-2core-measured,jetson-orin-nano,jetson-agx-orin"
    )]
    pub agent_profiles: Vec<String>,
    /// Which agents emulate their profile's device, one true/false per agent.
    /// A paced agent holds each batch to its profile's latency for that width and batch size,
    /// times its slowdown, with the profile's power and limits (`slim-agent run
    /// --pace-to-profile`): e.g. `jetson-orin-nano` at slowdown 20 is an Orin Nano 20 times
    /// slower, whose batching stays nearly free. The slowdown must be large enough for this
    /// host to keep up; agents count the batches it did not (`pace_misses` in telemetry).
    #[arg(long, value_delimiter = ',', default_value = "false,true,true")]
    pub paced: Vec<bool>,
}

/// Arguments of `slim calibrate`.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// Calibration file to write (TOML).
    #[arg(long, default_value = "out/calibration.toml")]
    pub out: PathBuf,
    /// External broker (e.g. mqtt://127.0.0.1:1883); default: an embedded broker.
    #[arg(long)]
    pub broker: Option<String>,
    /// Model family of the workload.
    #[arg(long, default_value = "cifar-slimresnet")]
    pub model: String,
    /// Arrival rate, requests per second (Poisson); the default is about 5 % of what the
    /// default agents can serve at their cheapest width and batch, so random keeps up.
    #[arg(long, default_value_t = 40.0)]
    pub rate: f64,
    /// Sending time.
    #[arg(long, default_value = "8s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// The coordinator's router; random (the default) spreads the work over every agent,
    /// width and batch size, so every profile point gets samples.
    #[arg(long, value_enum, default_value_t = RouterKind::Random)]
    pub router: RouterKind,
    /// The agents.
    #[command(flatten)]
    pub cluster: LiveClusterArgs,
    /// Folder of device profiles.
    #[arg(long, default_value = "profiles")]
    pub profiles: PathBuf,
    /// Folder of model families.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl CalibrateArgs {
    fn setup(&self) -> LiveSetup {
        LiveSetup {
            broker: self.broker.clone(),
            profiles_dir: self.profiles.clone(),
            models_dir: self.models.clone(),
            model: self.model.clone(),
            agent_profiles: self.cluster.agent_profiles.clone(),
            slowdowns: self.cluster.slowdowns.clone(),
            threads: self.cluster.threads.clone(),
            paced: self.cluster.paced.clone(),
            router: self.router,
            policy: None,
            rate: self.rate,
            duration: self.duration,
            seed: self.seed,
            deadline_ms: None,
            constrained_share: 0.0,
            online: Default::default(),
            tag: "calibrate".into(),
        }
    }
}

/// Runs `slim calibrate`.
pub async fn run(args: CalibrateArgs) -> anyhow::Result<()> {
    super::require_path(&args.profiles, "the profiles folder", "--profiles")?;
    super::require_path(&args.models, "the models folder", "--models")?;
    anyhow::ensure!(
        args.router != RouterKind::Ppo,
        "--router ppo needs a policy; calibrate with a heuristic (random covers every width)"
    );
    let setup = args.setup();
    setup.check()?;
    println!(
        "calibrating: {} agents, `{}` at {:.0} req/s for {}, router {}",
        setup.slowdowns.len(),
        setup.model,
        setup.rate,
        super::human_duration(setup.duration),
        setup.router.as_str()
    );
    let (calibration, report) = measure(&setup).await?;
    print!("{}", summary(&calibration));
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = format!(
        "# Written by `slim calibrate`; read by `slim simulate|train|eval --calibration FILE`.\n{}",
        calibration.to_toml()
    );
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{} of {} requests answered; wrote {}",
        report.outcomes.len(),
        report.sent,
        args.out.display()
    );
    Ok(())
}

/// What a calibration says, for a terminal.
pub fn summary(c: &Calibration) -> String {
    use std::fmt::Write as _;
    let t = &c.transport;
    let mut s = format!(
        "transport (end-to-end − agent time), {} results: mean {:.3} ms, p50 {:.3}, p95 {:.3}, p99 {:.3}\n",
        t.samples,
        t.mean_ms,
        t.quantile(0.5),
        t.quantile(0.95),
        t.quantile(0.99)
    );
    s.push_str("hand-off per request (median agent queue time):\n");
    for h in &c.handoffs {
        let _ = writeln!(
            s,
            "  {}: {:.3} ms ({} results)",
            h.profile, h.queue_ms, h.samples
        );
    }
    if !c.concurrency.is_empty() {
        s.push_str("batches at once, as the agents announced:\n");
        for k in &c.concurrency {
            let _ = writeln!(s, "  {}: {}", k.profile, k.batches);
        }
    }
    s.push_str("per-batch overhead (live compute ÷ slowdown − profile), ms:\n");
    let rows: Vec<Vec<String>> = c
        .overheads
        .iter()
        .map(|o| {
            vec![
                o.profile.clone(),
                o.model.clone(),
                format!("{:.2}", o.width),
                o.batch.to_string(),
                format!("{:+.3}", o.overhead_ms),
                o.samples.to_string(),
            ]
        })
        .collect();
    let header = ["profile", "model", "width", "batch", "overhead", "results"];
    let lines: Vec<Vec<String>> = std::iter::once(header.map(String::from).to_vec())
        .chain(rows)
        .collect();
    for line in super::columns::align_columns(&lines, 2).lines() {
        let _ = writeln!(s, "  {line}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use slim_router::calibration::{BatchOverhead, Handoff, Transport, CALIBRATION_VERSION};

    #[test]
    fn the_summary_names_every_overhead_and_the_transport_quantiles() {
        let c = Calibration {
            version: CALIBRATION_VERSION,
            source: "test".into(),
            max_queue_delay_ms: 0.0,
            telemetry_interval_ms: 500.0,
            overheads: vec![BatchOverhead {
                profile: "cpu-2core-measured".into(),
                model: "digits".into(),
                width: 0.25,
                batch: 1,
                overhead_ms: 0.412,
                samples: 17,
            }],
            handoffs: vec![Handoff {
                profile: "cpu-2core-measured".into(),
                queue_ms: 0.125,
                samples: 17,
            }],
            concurrency: Vec::new(),
            transport: Transport::from_samples(&[1.0, 2.0, 3.0]).unwrap(),
        };
        let s = summary(&c);
        assert!(s.contains("3 results: mean 2.000 ms"), "{s}");
        assert!(
            s.contains("cpu-2core-measured: 0.125 ms (17 results)"),
            "{s}"
        );
        assert!(
            s.contains("cpu-2core-measured  digits   0.25      1    +0.412       17"),
            "{s}"
        );
    }
}
