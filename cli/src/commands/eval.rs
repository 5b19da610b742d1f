//! `slim eval`: every router in the simulator over a load sweep and over shifting-load and churn
//! scenarios (keep-up marks, paired bootstrap intervals, PPO against the best heuristic), then a
//! short live run over MQTT; writes a report with its plots (out/evaluation.md by default; the
//! shipped docs/evaluation.md is only replaced when named with `--out`).

mod ablations;
mod figures;
mod generalise;
mod live;
mod live_report;
pub(crate) use live_report::agents_text;
mod plots;
mod report;
mod sim;
pub mod stats;
mod tables;
mod twin;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use slim_router::reward::RewardPreset;
use slim_router::RouterKind;

use super::calibrate::LiveClusterArgs;
use super::simulate::FleetArgs;
use live::LivePart;
pub use sim::checkpoint_name;

/// Arguments of `slim eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// CI-sized run: 4 seeds, loads 0.1, 0.5, 0.9, 600 requests per run, no live part
    /// (explicit --seeds, --loads and --requests still win).
    #[arg(long)]
    pub quick: bool,
    /// Evaluation seeds per (router, load), from the evaluation stream that training never
    /// draws from.
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Offered loads, as fractions of the fleet's capacity; default 0.05, 0.15, …, 0.95.
    #[arg(long, value_delimiter = ',')]
    pub loads: Option<Vec<f64>>,
    /// Requests per simulated run; default 3000.
    #[arg(long)]
    pub requests: Option<usize>,
    /// Threads for the simulator part (default: the machine's cores).
    #[arg(long)]
    pub sim_threads: Option<usize>,
    /// Folder of PPO checkpoints, one `<preset>.safetensors` per preset.
    #[arg(long, default_value = "router/policies")]
    pub policies: PathBuf,
    /// PPO presets to evaluate (their checkpoints must exist).
    #[arg(long, value_delimiter = ',', default_value = "efficiency,balanced")]
    pub presets: Vec<RewardPreset>,
    /// The report to write (the shipped docs/evaluation.md is only replaced when named here).
    #[arg(long, default_value = "out/evaluation.md")]
    pub out: PathBuf,
    /// Folder for the SVG plots, linked from the report by a path relative to it (default: a
    /// folder `eval` next to --out).
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Skip the live run over MQTT (simulator only; implied by --quick).
    #[arg(long)]
    pub no_live: bool,
    /// External broker for the live run (e.g. mqtt://127.0.0.1:1883 for Mosquitto); default:
    /// an embedded broker.
    #[arg(long)]
    pub broker: Option<String>,
    /// Routers the live cluster uses in turn (random, round-robin, least-loaded, greedy, ppo).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,least-loaded,greedy,ppo",
        hide_possible_values = true
    )]
    pub live_routers: Vec<RouterKind>,
    /// Sending time per live run.
    #[arg(long, default_value = "8s", value_parser = super::parse_duration)]
    pub live_duration: Duration,
    /// Offered loads of the live runs, as fractions of the live cluster's capacity: the
    /// calibrated twin's best sustainable rate (every agent at its cheapest width and batch,
    /// slowed by its factor, with the fitted per-batch overheads).
    #[arg(long, value_delimiter = ',', default_value = "0.03,0.1,0.3,0.5")]
    pub live_loads: Vec<f64>,
    /// Live runs per router and load, each with its own workload seed (--live-seed + run).
    #[arg(long, default_value_t = 3)]
    pub live_runs: u64,
    /// Offered load of the calibration run (random router), as a fraction of the capacity the
    /// raw profiles give: low enough that random keeps up, so the queues it measures are the
    /// hand-off's, not an overload's.
    #[arg(long, default_value_t = 0.03)]
    pub calibration_load: f64,
    /// The live agents.
    #[command(flatten)]
    pub cluster: LiveClusterArgs,
    /// Model family of the live run.
    #[arg(long, default_value = "cifar-slimresnet")]
    pub live_model: String,
    /// PPO preset the live coordinator loads when it runs `ppo`.
    #[arg(long, value_enum, default_value_t = RewardPreset::Efficiency)]
    pub live_preset: RewardPreset,
    /// Latency budget, ms: the deadline that --live-deadline-share of the live requests carry,
    /// and the budget of the "answered within" column (over requests sent).
    #[arg(long, default_value_t = 200)]
    pub live_budget_ms: u32,
    /// Fraction of the live requests that carry --live-budget-ms as their deadline.
    #[arg(long, default_value_t = 0.3)]
    pub live_deadline_share: f64,
    /// Seed of the live workload (run k of each load uses this + k).
    #[arg(long, default_value_t = 1)]
    pub live_seed: u64,
    /// Device counts of the generalisation check: each checkpoint, without retraining, on the
    /// evaluated fleet cycled to each size, and on that fleet plus one device of a type no
    /// checkpoint was trained on (default 2,5,10,50; with --quick 2,10).
    #[arg(long, value_delimiter = ',')]
    pub generalise_sizes: Option<Vec<usize>>,
    /// Offered load of the generalisation check, as a fraction of each fleet's capacity.
    #[arg(long, default_value_t = 0.35)]
    pub generalise_load: f64,
    /// Skip the generalisation check.
    #[arg(long)]
    pub no_generalise: bool,
    /// PPO ablation (bench/ablations.sh): write one `slim train --config` file per variant
    /// into DIR/configs, print the plan and exit.
    #[arg(long, value_name = "DIR")]
    pub ablation_plan: Option<PathBuf>,
    /// PPO ablation: instead of the full evaluation, run the checkpoints DIR/<variant>/*.safetensors
    /// and the heuristics on shifting-load, churn and mixed scenarios (held-out seeds) and write
    /// the comparison to --out.
    #[arg(long, value_name = "DIR", conflicts_with = "ablation_plan")]
    pub ablations: Option<PathBuf>,
}

impl EvalArgs {
    /// Seeds, loads and requests per run, after --quick and the explicit flags.
    pub fn sizes(&self) -> (u64, Vec<f64>, usize) {
        let (seeds, loads, requests) = if self.quick {
            (4, vec![0.1, 0.5, 0.9], 600)
        } else {
            (
                20,
                (0..10).map(|i| 0.05 + 0.1 * f64::from(i)).collect(),
                3000,
            )
        };
        (
            self.seeds.unwrap_or(seeds),
            self.loads.clone().unwrap_or(loads),
            self.requests.unwrap_or(requests),
        )
    }

    /// Device counts of the generalisation check (empty with --no-generalise).
    pub fn generalise_sizes(&self) -> Vec<usize> {
        if self.no_generalise {
            return Vec::new();
        }
        let default = if self.quick {
            vec![2, 10]
        } else {
            vec![2, 5, 10, 50]
        };
        self.generalise_sizes.clone().unwrap_or(default)
    }

    /// Threads of the simulator part.
    pub fn sim_threads(&self) -> usize {
        self.sim_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        })
    }
}

fn policy_path(args: &EvalArgs, preset: RewardPreset) -> PathBuf {
    args.policies
        .join(format!("{}.safetensors", preset.as_str()))
}

fn rel(from: &Path, to: &Path) -> String {
    let base = from.parent().unwrap_or(Path::new(""));
    to.strip_prefix(base)
        .unwrap_or(to)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Where the plots go: `--plots`, or a folder `eval` next to the report.
pub fn plots_dir(args: &EvalArgs) -> PathBuf {
    args.plots
        .clone()
        .unwrap_or_else(|| args.out.parent().unwrap_or(Path::new("")).join("eval"))
}

/// The progress bar of a full evaluation.
fn progress(args: &EvalArgs, entries: usize, loads: usize, live: bool) -> ProgressBar {
    let sizes = args.generalise_sizes();
    let generalise_fleets = if sizes.is_empty() { 0 } else { sizes.len() + 1 };
    let steps = sim::steps(entries, loads)
        + generalise::steps(entries, generalise_fleets)
        + if live { live::steps(args) } else { 0 };
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar
}

/// The generalisation check and its report section (empty with --no-generalise).
fn generalise_part(
    args: &EvalArgs,
    fleet: &slim_router::fleet::Fleet,
    names: &[String],
    (seeds, requests): (u64, usize),
    bar: &ProgressBar,
) -> anyhow::Result<String> {
    let sizes = args.generalise_sizes();
    if sizes.is_empty() {
        return Ok(String::new());
    }
    let g = generalise::Plan {
        fleet: (fleet, names),
        dirs: (&args.fleet.profiles, &args.fleet.models),
        policies: (&args.policies, &args.presets),
        sizes: &sizes,
        load: args.generalise_load,
        seeds,
        requests,
        threads: args.sim_threads(),
    };
    let table = generalise::table(&generalise::run(&g, bar)?);
    println!("Generalisation:\n\n{table}");
    Ok(generalise::section(&g, &table))
}

/// The live section of the report, printing its tables.
fn live_text(args: &EvalArgs, part: &LivePart, figures: &figures::Figures) -> String {
    let l_table = live_report::table(&part.cells, args.live_budget_ms);
    let c_table = twin::table(&part.cells);
    println!(
        "Live:\n\n{l_table}\n{}\nSim-to-real:\n\n{c_table}\n{}",
        live_report::comparison(&part.cells),
        twin::verdict(&part.cells)
    );
    let live_plots = figures
        .live
        .as_ref()
        .map_or([String::new(), String::new()], |p| {
            [rel(&args.out, &p[0]), rel(&args.out, &p[1])]
        });
    live_report::section(
        args,
        part,
        [&l_table, &c_table],
        [&live_plots[0], &live_plots[1]],
    )
}

/// Runs `slim eval`.
pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.ablation_plan {
        return ablations::plan(dir);
    }
    if let Some(dir) = &args.ablations {
        return ablations::run(&args, dir);
    }
    let start = Instant::now();
    let command: Vec<String> = std::env::args().skip(1).collect();
    let (fleet, names) = args.fleet.load()?;
    let (seeds, loads, requests) = args.sizes();
    anyhow::ensure!(
        seeds >= 2,
        "--seeds must be at least 2 for paired intervals"
    );
    let entries = sim::entries(&args.policies, &args.presets)?;
    let live = !args.no_live && !args.quick;
    let bar = progress(&args, entries.len(), loads.len(), live);
    let plan = sim::SimPlan {
        fleet: &fleet,
        loads,
        seeds,
        requests,
        presets: args.presets.clone(),
        threads: args.sim_threads(),
        shifting: true,
    };
    let res = sim::run(&plan, entries, &bar);
    let generalise_text = generalise_part(&args, &fleet, &names, (seeds, requests), &bar)?;
    let sim_seconds = start.elapsed().as_secs_f64();
    let live_part = if live {
        Some(live::live_part(&args, &bar).await?)
    } else {
        None
    };
    bar.finish_and_clear();
    let figures = figures::draw(&args, &res, live_part.as_ref())?;
    let live_text = match &live_part {
        Some(part) => live_text(&args, part, &figures),
        None => String::new(),
    };
    let parts = report::Parts {
        command: &command.join(" "),
        seconds: (start.elapsed().as_secs_f64(), sim_seconds),
        names: &names,
        sources: fleet
            .devices
            .iter()
            .map(|d| (d.profile.name.clone(), d.profile.source.clone()))
            .collect(),
        live: live_text,
        generalise: generalise_text,
        plots: (
            rel(&args.out, &figures.sim[0]),
            rel(&args.out, &figures.sim[1]),
        ),
    };
    let doc = report::text(&args, &res, &parts);
    println!("{}", tables::keep_up_table(&res));
    println!("{}", tables::versus_table(&res));
    write_report(&args, &doc)?;
    println!(
        "Took {:.1} s (simulator {sim_seconds:.1} s). Wrote {} and the plots in {}.",
        start.elapsed().as_secs_f64(),
        args.out.display(),
        plots_dir(&args).display()
    );
    Ok(())
}

/// Writes the report to --out, creating its folder.
fn write_report(args: &EvalArgs, doc: &str) -> anyhow::Result<()> {
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&args.out, doc).with_context(|| format!("writing {}", args.out.display()))
}
