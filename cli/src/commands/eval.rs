//! `slim eval`: every router in the simulator over a load sweep and over shifting-load and churn
//! scenarios (keep-up marks, paired bootstrap intervals, PPO against the best heuristic), then a
//! short live run over MQTT; writes a report with its plots (out/evaluation.md by default; the
//! shipped docs/evaluation.md is only replaced when named with `--out`).

mod ablations;
mod generalise;
mod live;
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
use slim_router::eval::bootstrap::paired;
use slim_router::reward::RewardPreset;
use slim_router::RouterKind;

use super::simulate::FleetArgs;
use plots::{CdfSeries, LoadSeries};
pub use sim::checkpoint_name;
use sim::SimResults;
use stats::cdf;
use tables::keeps_up;

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
    /// Sending time per live router.
    #[arg(long, default_value = "8s", value_parser = super::parse_duration)]
    pub live_duration: Duration,
    /// Live arrival rate, requests per second (Poisson).
    #[arg(long, default_value_t = 60.0)]
    pub live_rate: f64,
    /// Emulated slowdowns of the live agents, one per agent.
    #[arg(long, value_delimiter = ',', default_value = "1,3,8")]
    pub slowdowns: Vec<f32>,
    /// Threads per batch of the live agents, one per agent (tract's executor).
    #[arg(long, value_delimiter = ',', default_value = "2,1,1")]
    pub threads: Vec<u16>,
    /// Device profile (a name in the profiles folder) each live agent publishes and its
    /// simulator twin is built from, one per agent; measured for that agent's thread count.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cpu-2core-2threads-measured,cpu-2core-measured,cpu-2core-measured"
    )]
    pub live_profiles: Vec<String>,
    /// Model family of the live run.
    #[arg(long, default_value = "digits")]
    pub live_model: String,
    /// PPO preset the live coordinator loads when it runs `ppo`.
    #[arg(long, value_enum, default_value_t = RewardPreset::Efficiency)]
    pub live_preset: RewardPreset,
    /// Latency budget for live deadline attainment, ms (answered within it, over requests sent).
    #[arg(long, default_value_t = 100)]
    pub live_budget_ms: u32,
    /// Seed of the live workload.
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

/// Per router, `f`'s mean over seeds with its 95 % bootstrap interval, at loads it keeps up.
fn load_series(res: &SimResults, f: tables::Metric) -> Vec<LoadSeries> {
    let mean = |a: &[f64], _: &[f64]| a.iter().sum::<f64>() / a.len().max(1) as f64;
    res.entries
        .iter()
        .zip(&res.runs)
        .map(|(e, runs)| LoadSeries {
            name: e.name.clone(),
            points: res
                .loads
                .iter()
                .zip(&runs.by_load)
                .filter(|(_, r)| keeps_up(r))
                .map(|(l, r)| {
                    let v: Vec<f64> = r.iter().map(f).collect();
                    let ci = paired(&v, &v, mean);
                    (*l, ci.lo, ci.estimate, ci.hi)
                })
                .collect(),
        })
        .collect()
}

fn draw(args: &EvalArgs, res: &SimResults, live: &[live::LiveRow]) -> anyhow::Result<[PathBuf; 3]> {
    let dir = plots_dir(args);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let paths = [
        dir.join("latency_vs_load.svg"),
        dir.join("energy_vs_load.svg"),
        dir.join("live_latency_cdf.svg"),
    ];
    let title = |what: &str| {
        format!("Simulator: {what} against load (mean over seeds, 95 % CI; only where the router keeps up)")
    };
    plots::vs_load(
        &paths[0],
        &title("mean latency"),
        "mean latency, ms (log)",
        &load_series(res, tables::latency),
    )?;
    plots::vs_load(
        &paths[1],
        &title("modelled energy"),
        "modelled energy per request, mJ (log)",
        &load_series(res, tables::energy),
    )?;
    if !live.is_empty() {
        let series: Vec<CdfSeries> = live
            .iter()
            .map(|r| CdfSeries {
                name: r.name.clone(),
                points: cdf(&r.latencies, 300),
            })
            .collect();
        plots::latency_cdf(
            &paths[2],
            "Live cluster over MQTT: latency CDF per router",
            &series,
        )?;
    }
    Ok(paths)
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
    let sizes = args.generalise_sizes();
    let generalise_fleets = if sizes.is_empty() { 0 } else { sizes.len() + 1 };
    let steps = sim::steps(entries.len(), loads.len())
        + generalise::steps(entries.len(), generalise_fleets)
        + if live {
            args.live_routers.len() as u64 + u64::from(args.fleet.calibration.is_none())
        } else {
            0
        };
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
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
    let generalise_text = if sizes.is_empty() {
        String::new()
    } else {
        let g = generalise::Plan {
            fleet: (&fleet, &names),
            dirs: (&args.fleet.profiles, &args.fleet.models),
            policies: (&args.policies, &args.presets),
            sizes: &sizes,
            load: args.generalise_load,
            seeds,
            requests,
            threads: args.sim_threads(),
        };
        let table = generalise::table(&generalise::run(&g, &bar)?);
        println!("Generalisation:\n\n{table}");
        generalise::section(&g, &table)
    };
    let sim_seconds = start.elapsed().as_secs_f64();
    let live_part = if live {
        Some(live::live_part(&args, &bar).await?)
    } else {
        None
    };
    let live_rows = live_part.as_ref().map_or(&[][..], |p| &p.rows[..]);
    bar.finish_and_clear();
    let paths = draw(&args, &res, live_rows)?;
    let live_text = if let Some(part) = &live_part {
        let l_table = live::live_table(live_rows, args.live_budget_ms);
        let c_table = twin::table(live_rows);
        println!("Live:\n\n{l_table}\nSim-to-real:\n\n{c_table}");
        live::live_section(&args, part, &l_table, &c_table, &rel(&args.out, &paths[2]))
    } else {
        String::new()
    };
    let parts = report::Parts {
        command: &command.join(" "),
        seconds: (start.elapsed().as_secs_f64(), sim_seconds),
        names: &names,
        live: live_text,
        generalise: generalise_text,
        plots: (rel(&args.out, &paths[0]), rel(&args.out, &paths[1])),
    };
    let doc = report::text(&args, &res, &parts);
    println!("{}", tables::keep_up_table(&res));
    println!("{}", tables::versus_table(&res));
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&args.out, doc).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "Took {:.1} s (simulator {sim_seconds:.1} s). Wrote {} and the plots in {}.",
        start.elapsed().as_secs_f64(),
        args.out.display(),
        plots_dir(&args).display()
    );
    Ok(())
}
