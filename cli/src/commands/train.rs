//! `slim train`: trains a PPO router in the cluster simulator and writes a checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use slim_router::eval::evaluate;
use slim_router::ppo::features::OBSERVATION_SCHEMA_VERSION;
use slim_router::ppo::{train, Checkpoint, CheckpointMeta, IterationStats, PpoConfig, PpoRouter};

use super::simulate::{compare, print_table, FleetArgs, WeightArgs};

/// Arguments of `slim train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// Routing decisions to train for.
    #[arg(long, default_value_t = 100_000)]
    pub steps: usize,
    /// Seed of everything random in training.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Checkpoint to write (default `out/{preset}.safetensors` under the current folder; the
    /// shipped policies in router/policies/ are only replaced when named here).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// PPO hyperparameters as TOML (fields of `PpoConfig`; `--steps`, `--seed`,
    /// `--learning-rate` and `--no-greedy-prior` win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start from scratch, without the greedy prior (`greedy_prior = None`, which a TOML config
    /// cannot say: TOML has no null, and a missing key means the default prior).
    #[arg(long)]
    pub no_greedy_prior: bool,
    /// Adam learning rate at the start (overrides the config's `learning_rate`).
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Held-out scenarios for the final evaluation, seeded from the evaluation stream that
    /// training never draws from; 0 skips it.
    #[arg(long, default_value_t = 5)]
    pub eval_seeds: u64,
    /// Requests per evaluation scenario.
    #[arg(long, default_value_t = 5000)]
    pub eval_requests: usize,
}

/// Where `slim train` writes when `--out` is not given: outside the shipped tree.
pub fn default_out(preset: &str) -> PathBuf {
    PathBuf::from("out").join(format!("{preset}.safetensors"))
}

/// Runs `slim train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let (fleet, names) = args.fleet.load()?;
    let (weights, preset) = args.weights.resolve();
    let config = load_config(&args)?;
    let out = args.out.clone().unwrap_or_else(|| default_out(&preset));
    println!(
        "training {preset} ({}) on {} for {} decisions (seed {}); will write {}",
        super::weights_text(&weights),
        names.join(","),
        config.total_steps,
        config.seed,
        out.display()
    );

    let iterations = config.total_steps.div_ceil(config.steps_per_rollout).max(1) as u64;
    let bar = progress_bar(iterations);
    let started = Instant::now();
    let (policy, history) = train(&fleet, &config, &weights, |s| report_progress(&bar, s))?;
    bar.finish();
    let train_seconds = started.elapsed().as_secs_f64();
    println!("trained in {train_seconds:.1} s");

    let last = history.last().copied().unwrap_or_default();
    let final_metrics = (args.eval_seeds > 0).then(|| {
        let mut router = PpoRouter::new(policy.clone());
        evaluate(
            &fleet,
            &mut router,
            0..args.eval_seeds,
            args.eval_requests,
            &config.batch_sizes,
            &weights,
        )
        .summary
    });
    let checkpoint = Checkpoint {
        weights: policy,
        meta: CheckpointMeta {
            observation_schema_version: OBSERVATION_SCHEMA_VERSION,
            preset,
            weights,
            fleet: names,
            seed: config.seed,
            steps: last.steps,
            train_seconds,
            config: config.clone(),
            final_metrics,
            final_diagnostics: final_diagnostics(&last),
            online: None,
        },
    };
    save_checkpoint(&checkpoint, &out)?;
    if args.eval_seeds > 0 {
        let rows = compare(
            &fleet,
            &weights,
            std::slice::from_ref(&out),
            args.eval_seeds,
            args.eval_requests,
        )?;
        print_table(&rows);
    }
    Ok(())
}

/// The PPO configuration: the `--config` TOML (or the defaults) with the command-line overrides.
fn load_config(args: &TrainArgs) -> anyhow::Result<PpoConfig> {
    let mut config: PpoConfig = match &args.config {
        Some(path) => toml::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?,
        None => PpoConfig::default(),
    };
    config.total_steps = args.steps;
    config.seed = args.seed;
    if args.no_greedy_prior {
        config.greedy_prior = None;
    }
    if let Some(lr) = args.learning_rate {
        config.learning_rate = lr;
    }
    Ok(config)
}

/// The bar counting PPO updates.
fn progress_bar(iterations: u64) -> ProgressBar {
    let bar = ProgressBar::new(iterations);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} updates {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Training's progress callback: updates the bar and, every tenth update (and the first, the
/// last and each validated one), prints a diagnostics line.
fn report_progress(bar: &ProgressBar, s: &IterationStats) {
    bar.set_message(format!(
        "cost {:.3} kl {:.4} clipfrac {:.3} ev {:.2}",
        s.mean_cost, s.approx_kl, s.clipfrac, s.explained_variance
    ));
    if s.iteration == 1
        || s.iteration.is_multiple_of(10)
        || s.iteration == s.iterations
        || s.validation_cost.is_some()
    {
        let line = diagnostics_line(s);
        // A hidden bar (no terminal) drops println, so print the diagnostics directly there.
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    }
    if s.iteration > 0 {
        bar.inc(1);
    }
}

/// The diagnostics line printed for one update.
fn diagnostics_line(s: &IterationStats) -> String {
    let line = if s.iteration == 0 {
        format!("update    0/{} initial policy", s.iterations)
    } else {
        format!(
            "update {:>4}/{} steps {:>8} cost {:>8.4} lr {:.2e} pg {:>7.4} v {:>7.4} entropy {:.3} approx_kl {:.4} clipfrac {:.3} explained_variance {:.3}",
            s.iteration, s.iterations, s.steps, s.mean_cost, s.learning_rate, s.policy_loss, s.value_loss, s.entropy, s.approx_kl, s.clipfrac, s.explained_variance
        )
    };
    match s.validation_cost {
        Some(v) => format!("{line} validation_cost {v:.4}"),
        None => line,
    }
}

/// The last update's diagnostics, as stored in the checkpoint's metadata.
fn final_diagnostics(last: &IterationStats) -> HashMap<String, f64> {
    HashMap::from([
        ("mean_cost".to_string(), f64::from(last.mean_cost)),
        ("approx_kl".to_string(), f64::from(last.approx_kl)),
        ("clipfrac".to_string(), f64::from(last.clipfrac)),
        (
            "explained_variance".to_string(),
            f64::from(last.explained_variance),
        ),
        ("entropy".to_string(), f64::from(last.entropy)),
    ])
}

/// Writes the checkpoint to `out` (creating its folder) and says how to use it.
fn save_checkpoint(checkpoint: &Checkpoint, out: &Path) -> anyhow::Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    checkpoint
        .save(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "policy against its greedy prior: {}",
        slim_router::ppo::PriorCheck::of(checkpoint).describe()
    );
    println!(
        "wrote {} (use it: slim demo --router ppo --policy {})",
        out.display(),
        out.display()
    );
    Ok(())
}
