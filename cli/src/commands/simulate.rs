//! `slim simulate`: compares routers in the cluster simulator on seeds never used in training
//! (`slim_router::eval::eval_seed`). It pools requests over seeds and has no keep-up test or
//! intervals: `slim eval` is the comparison to cite.

use std::path::PathBuf;

use anyhow::Context;
use slim_router::calibration::Calibration;
use slim_router::eval::{evaluate, Evaluation};
use slim_router::fleet::Fleet;
use slim_router::ppo::PpoRouter;
use slim_router::reward::{RewardPreset, RewardWeights};
use slim_router::{build_router, RouterKind, RouterSettings};

/// Default fleet: two Jetson Orin Nanos, a Jetson AGX Orin, an RTX 4090 and this machine's CPU.
pub const DEFAULT_FLEET: &str = "jetson-orin-nano*2,jetson-agx-orin,rtx-4090,cpu-2core";

/// Reward weights: a preset, with any term overridden by flag (`custom` weights).
#[derive(Debug, Clone, clap::Args)]
pub struct WeightArgs {
    /// Reward preset.
    #[arg(long, value_enum, default_value_t = RewardPreset::Efficiency, env = "SLIM_PRESET")]
    pub preset: RewardPreset,
    /// Custom weight per reference latency (overrides the preset's).
    #[arg(long)]
    pub latency_weight: Option<f32>,
    /// Custom weight per reference energy (overrides the preset's).
    #[arg(long)]
    pub energy_weight: Option<f32>,
    /// Custom weight per accuracy point lost (overrides the preset's).
    #[arg(long)]
    pub accuracy_weight: Option<f32>,
    /// Custom weight per missed deadline (overrides the preset's).
    #[arg(long)]
    pub deadline_weight: Option<f32>,
}

impl WeightArgs {
    /// The weights and their name (`custom` when a flag overrides the preset).
    pub fn resolve(&self) -> (RewardWeights, String) {
        let mut w = self.preset.weights();
        let overrides = [
            (self.latency_weight, &mut w.latency),
            (self.energy_weight, &mut w.energy),
            (self.accuracy_weight, &mut w.accuracy),
            (self.deadline_weight, &mut w.deadline),
        ];
        let mut custom = false;
        for (value, slot) in overrides {
            if let Some(v) = value {
                *slot = v;
                custom = true;
            }
        }
        let name = if custom {
            "custom".to_string()
        } else {
            self.preset.as_str().to_string()
        };
        (w, name)
    }
}

/// Where the fleet comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Devices, as profile names (repeat or `name*N` for several).
    #[arg(long, default_value = DEFAULT_FLEET)]
    pub fleet: String,
    /// Folder of device profiles.
    #[arg(long, default_value = "profiles")]
    pub profiles: PathBuf,
    /// Folder of model families (their manifests).
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Calibration file from `slim calibrate`: adds its per-batch overheads to the matching
    /// profiles' latencies and its transport delay to every simulated request.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
}

impl FleetArgs {
    /// Loads the fleet, calibrated when `--calibration` names a file.
    pub fn load(&self) -> anyhow::Result<(Fleet, Vec<String>)> {
        super::require_path(&self.profiles, "the profiles folder", "--profiles")?;
        super::require_path(&self.models, "the models folder", "--models")?;
        let names = Fleet::parse_names(&self.fleet);
        let mut fleet =
            Fleet::load(&self.profiles, &self.models, &names).context("loading the fleet")?;
        if let Some(path) = &self.calibration {
            let calibration = Calibration::load(path).map_err(anyhow::Error::msg)?;
            let applied = calibration.apply(&mut fleet);
            println!(
                "calibrated by {}: {} profile points with a fitted overhead, {} from the nearest batch size, {} from their model's mean, {} as profiled; transport mean {:.3} ms",
                path.display(),
                applied.exact,
                applied.nearest_batch,
                applied.model_mean,
                applied.untouched,
                calibration.transport.mean_ms
            );
        }
        Ok((fleet, names))
    }
}

/// Arguments of `slim simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// PPO checkpoints to compare (repeatable); without one, only the baselines run.
    #[arg(long)]
    pub policy: Vec<PathBuf>,
    /// Held-out scenarios to run, seeded from the evaluation stream that training never draws
    /// from.
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Requests per scenario.
    #[arg(long, default_value_t = 5000)]
    pub requests: usize,
}

/// Batch sizes offered to routers in evaluation (the PPO default).
pub fn batch_sizes() -> Vec<u16> {
    slim_router::ppo::PpoConfig::default().batch_sizes
}

/// Evaluates the baselines (greedy twice: plain finish time plus energy, and weighted like the
/// reward) and `policies` under `weights`.
pub fn compare(
    fleet: &Fleet,
    weights: &RewardWeights,
    policies: &[PathBuf],
    seeds: u64,
    requests: usize,
) -> anyhow::Result<Vec<Evaluation>> {
    let batches = batch_sizes();
    let mut rows = Vec::new();
    for kind in [
        RouterKind::Random,
        RouterKind::RoundRobin,
        RouterKind::JoinShortestQueue,
        RouterKind::PowerOfTwoChoices,
        RouterKind::LeastLoaded,
        RouterKind::Greedy,
    ] {
        let mut router = build_router(kind, &RouterSettings::default())?;
        rows.push(evaluate(
            fleet,
            router.as_mut(),
            0..seeds,
            requests,
            &batches,
            weights,
        ));
    }
    let settings = RouterSettings {
        weights: *weights,
        ..Default::default()
    };
    let mut weighted = build_router(RouterKind::Greedy, &settings)?;
    let mut row = evaluate(
        fleet,
        weighted.as_mut(),
        0..seeds,
        requests,
        &batches,
        weights,
    );
    row.router = "greedy-weighted".into();
    rows.push(row);
    for path in policies {
        let mut router =
            PpoRouter::load(path, 0).with_context(|| format!("loading {}", path.display()))?;
        rows.push(evaluate(
            fleet,
            &mut router,
            0..seeds,
            requests,
            &batches,
            weights,
        ));
    }
    Ok(rows)
}

/// Prints `rows` as a table, with each router's cuts in latency and energy against random.
pub fn print_table(rows: &[Evaluation]) {
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7} {:>6} {:>6} {:>9} {:>7} {:>7} {:>10}",
        "router",
        "lat ms",
        "lat std",
        "p95 ms",
        "energy mJ",
        "en. std",
        "top1",
        "width",
        "miss",
        "cost",
        "lat cut",
        "en. cut",
        "dec/s"
    );
    let random = rows
        .iter()
        .find(|r| r.router == "random")
        .map(|r| r.summary.clone());
    for row in rows {
        let s = &row.summary;
        let cut = |a: f64, b: Option<f64>| b.map_or(f64::NAN, |b| 100.0 * (1.0 - a / b));
        println!(
            "{:<22} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>7.4} {:>6.3} {:>5.1}% {:>9.3} {:>6.2}% {:>6.2}% {:>10.0}",
            row.router,
            s.mean_latency_ms,
            s.std_latency_ms,
            s.p95_latency_ms,
            s.mean_energy_mj,
            s.std_energy_mj,
            s.mean_accuracy,
            s.mean_width,
            100.0 * s.deadline_miss_rate,
            s.mean_cost,
            cut(s.mean_latency_ms, random.as_ref().map(|r| r.mean_latency_ms)),
            cut(s.mean_energy_mj, random.as_ref().map(|r| r.mean_energy_mj)),
            row.decisions_per_s,
        );
    }
}

/// What `slim simulate` says when no PPO checkpoint was given.
pub const NO_POLICY_NOTE: &str = "PPO not compared: no --policy given (e.g. --policy \
     router/policies/efficiency.safetensors; repeat --policy to compare several)";

/// Runs `slim simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let (fleet, names) = args.fleet.load()?;
    let (weights, name) = args.weights.resolve();
    println!(
        "fleet: {} | reward: {name} ({}) | {} held-out seeds x {} requests",
        names.join(","),
        super::weights_text(&weights),
        args.seeds,
        args.requests
    );
    let rows = compare(&fleet, &weights, &args.policy, args.seeds, args.requests)?;
    print_table(&rows);
    if args.policy.is_empty() {
        println!("{}", NO_POLICY_NOTE);
    }
    Ok(())
}
