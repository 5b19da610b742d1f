//! `slim eval`: reproduces the paper's comparison (routers × seeds in the simulator, and a short
//! live run over MQTT) and writes a report with its plots (out/evaluation.md by default; the
//! shipped docs/evaluation.md is that report, written with `--out docs/evaluation.md`).

mod plots;
pub mod stats;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use slim_router::eval::EVAL_SEED_BASE;
use slim_router::fleet::Fleet;
use slim_router::ppo::PpoRouter;
use slim_router::reward::RewardPreset;
use slim_router::sim::{FleetEvent, FleetEventKind, RequestRecord, Scenario, Simulator};
use slim_router::{build_router, Router, RouterKind, RouterSettings};

use crate::client::Reply;
use crate::client::SlimClient;
use crate::cluster::{ClusterSpec, LocalCluster};
use crate::load::{run_open_loop, LoadReport, LoadSpec};
use crate::samples::family_samples;

use super::simulate::{batch_sizes, FleetArgs};
use plots::{CdfSeries, TradeoffPoint};
use stats::{cdf, cut_percent, percentile, Aggregate, MeanStd, RunMetrics};

/// The paper's headline figures (Harshbarger and Chidambaram, arXiv 2510.09018, abstract).
const PAPER_LATENCY_CUT: f64 = 96.45;
const PAPER_ENERGY_CUT: f64 = 97.31;
const PAPER_ACCURACY: f64 = 70.3;

/// Arguments of `slim eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Held-out simulator scenarios per router (seeds EVAL_SEED_BASE + 0..N).
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Requests per simulated scenario.
    #[arg(long, default_value_t = 5000)]
    pub requests: usize,
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
    /// Skip the live run over MQTT (simulator only).
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
}

/// One router's simulator results.
struct SimRow {
    name: String,
    agg: Aggregate,
    latencies: Vec<f64>,
    /// Fraction of requests run at their model's slimmest width.
    slimmest_share: f64,
    /// Mean accuracy of `cifar-slimresnet` requests, when the fleet has that family.
    cifar_accuracy: Option<f64>,
}

/// One router's live results.
struct LiveRow {
    name: String,
    metrics: RunMetrics,
    latency_std: f64,
    sent: usize,
    answered: usize,
    errors: usize,
    lost: usize,
    widths: String,
    energy_source: String,
    latencies: Vec<f64>,
    predicted_ms: MeanStd,
    /// Mean agent-side queue and compute time of results, ms.
    agent_ms: [f64; 2],
    /// Error replies by code.
    error_codes: String,
    /// Share of results per agent.
    agents: String,
}

fn policy_path(args: &EvalArgs, preset: RewardPreset) -> PathBuf {
    args.policies
        .join(format!("{}.safetensors", preset.as_str()))
}

/// The simulator's routers: the four baselines, then one PPO router per preset.
fn sim_routers(args: &EvalArgs) -> anyhow::Result<Vec<Box<dyn Router>>> {
    let mut routers = Vec::new();
    for kind in [
        RouterKind::Random,
        RouterKind::RoundRobin,
        RouterKind::LeastLoaded,
        RouterKind::Greedy,
    ] {
        routers.push(build_router(kind, &RouterSettings::default())?);
    }
    for preset in &args.presets {
        let path = policy_path(args, *preset);
        let router: Box<dyn Router> = Box::new(
            PpoRouter::load(&path, 0).with_context(|| format!("loading {}", path.display()))?,
        );
        routers.push(router);
    }
    Ok(routers)
}

/// Runs `router` on one scenario; returns its records and how long it lasted (simulated ms).
fn simulate_one(
    fleet: &Fleet,
    scenario: &Scenario,
    seed: u64,
    router: &mut dyn Router,
) -> (Vec<RequestRecord>, f64) {
    let mut sim = Simulator::new(fleet, scenario, seed);
    sim.run(router, &RewardPreset::Efficiency.weights());
    (sim.records().to_vec(), sim.now_ms())
}

fn sim_part(args: &EvalArgs, fleet: &Fleet, bar: &ProgressBar) -> anyhow::Result<Vec<SimRow>> {
    let batches = batch_sizes();
    let slimmest: Vec<f32> = fleet
        .models
        .iter()
        .map(|m| {
            m.widths
                .iter()
                .map(|w| w.width)
                .fold(f32::INFINITY, f32::min)
        })
        .collect();
    let cifar = fleet
        .models
        .iter()
        .position(|m| m.name == "cifar-slimresnet");
    let mut rows = Vec::new();
    for mut router in sim_routers(args)? {
        bar.set_message(format!("simulating {}", router.name()));
        let mut runs = Vec::new();
        let mut latencies = Vec::new();
        let (mut slim_n, mut total, mut cifar_sum, mut cifar_n) = (0usize, 0usize, 0.0, 0usize);
        for i in 0..args.seeds {
            let seed = EVAL_SEED_BASE + i;
            let mut scenario = Scenario::sample(fleet, args.requests, seed);
            scenario.batch_sizes = batches.clone();
            let (records, duration_ms) = simulate_one(fleet, &scenario, seed, router.as_mut());
            runs.push(RunMetrics::from_records(&records, duration_ms));
            for r in &records {
                latencies.push(f64::from(r.outcome.latency_ms));
                total += 1;
                if (r.width - slimmest[usize::from(r.model)]).abs() < 1e-6 {
                    slim_n += 1;
                }
                if Some(usize::from(r.model)) == cifar {
                    cifar_sum += f64::from(r.outcome.top1);
                    cifar_n += 1;
                }
            }
            bar.inc(1);
        }
        rows.push(SimRow {
            name: router.name().to_string(),
            agg: Aggregate::of(&runs),
            latencies,
            slimmest_share: slim_n as f64 / total.max(1) as f64,
            cifar_accuracy: (cifar_n > 0).then(|| cifar_sum / cifar_n as f64),
        });
    }
    Ok(rows)
}

/// Checks that the per-agent live settings agree in length.
fn check_live_args(args: &EvalArgs) -> anyhow::Result<()> {
    let n = args.slowdowns.len();
    anyhow::ensure!(n > 0, "--slowdowns needs at least one agent");
    anyhow::ensure!(
        args.threads.len() == n && args.live_profiles.len() == n,
        "--slowdowns ({n}), --threads ({}) and --live-profiles ({}) need one entry per live agent",
        args.threads.len(),
        args.live_profiles.len()
    );
    anyhow::ensure!(
        args.threads.iter().all(|&t| t >= 1),
        "--threads entries must be at least 1"
    );
    Ok(())
}

/// The simulator fleet that stands for the live cluster: one device per agent built from the
/// profile that agent publishes, only the live model, each slowed down from t = 0 by its
/// agent's emulated factor.
fn live_twin(args: &EvalArgs, requests: usize) -> anyhow::Result<(Fleet, Scenario)> {
    let mut fleet = Fleet::load(
        &args.fleet.profiles,
        &args.fleet.models,
        &args.live_profiles,
    )
    .context("loading the live twin fleet")?;
    fleet.models.retain(|m| m.name == args.live_model);
    anyhow::ensure!(
        !fleet.models.is_empty(),
        "the live profiles {:?} have no points for {}",
        args.live_profiles,
        args.live_model
    );
    let mut scenario = Scenario::steady(&fleet, requests, 0.5);
    scenario.rate_per_s = args.live_rate;
    scenario.model_mix = vec![1.0];
    scenario.deadline_prob = 0.0;
    scenario.floor_prob = 0.0;
    scenario.batch_sizes = batch_sizes();
    scenario.events = args
        .slowdowns
        .iter()
        .enumerate()
        .filter(|(_, s)| **s > 1.0)
        .map(|(device, s)| FleetEvent {
            at_ms: 0.0,
            device,
            kind: FleetEventKind::Slowdown(*s),
        })
        .collect();
    Ok((fleet, scenario))
}

/// The simulator's prediction of mean latency for the live scenario under `kind`, over 5 seeds.
fn predict_live(args: &EvalArgs, kind: RouterKind) -> anyhow::Result<MeanStd> {
    let requests = (args.live_rate * args.live_duration.as_secs_f64())
        .round()
        .max(1.0) as usize;
    let (fleet, scenario) = live_twin(args, requests)?;
    let settings = RouterSettings {
        policy: (kind == RouterKind::Ppo).then(|| policy_path(args, args.live_preset)),
        ..RouterSettings::default()
    };
    let mut router = build_router(kind, &settings)?;
    let means: Vec<f64> = (0..5)
        .map(|i| {
            let seed = EVAL_SEED_BASE + 1000 + i;
            let (records, _) = simulate_one(&fleet, &scenario, seed, router.as_mut());
            RunMetrics::from_records(&records, 1.0).latency_ms
        })
        .collect();
    Ok(MeanStd::of(&means))
}

fn live_metrics(report: &LoadReport, budget_ms: u32) -> (RunMetrics, f64, Vec<f64>) {
    let summary = report.summary();
    let mut latencies: Vec<f64> = report
        .outcomes
        .iter()
        .filter(|o| matches!(o.reply, Reply::Result(_)))
        .map(|o| o.latency.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let within = latencies
        .iter()
        .filter(|l| **l <= f64::from(budget_ms))
        .count();
    let std = MeanStd::of(&latencies).std * {
        // population std, like the simulator's per-request spread
        let n = latencies.len() as f64;
        if n > 1.0 {
            ((n - 1.0) / n).sqrt()
        } else {
            0.0
        }
    };
    let metrics = RunMetrics {
        latency_ms: summary.latency_ms[3],
        p95_ms: percentile(&latencies, 0.95),
        energy_mj: summary.energy_j.as_ref().map_or(f64::NAN, |e| e.0 * 1000.0),
        accuracy: summary.implied_accuracy,
        throughput: summary.throughput,
        attainment: within as f64 / report.sent.max(1) as f64,
        width: report
            .outcomes
            .iter()
            .filter_map(|o| match &o.reply {
                Reply::Result(r) => Some(f64::from(r.width)),
                Reply::Error(_) => None,
            })
            .sum::<f64>()
            / summary.answered.max(1) as f64,
    };
    (metrics, std, latencies)
}

async fn live_part(args: &EvalArgs, bar: &ProgressBar) -> anyhow::Result<Vec<LiveRow>> {
    check_live_args(args)?;
    let samples = family_samples(&args.fleet.models, &args.live_model)?;
    let mut rows = Vec::new();
    for (i, kind) in args.live_routers.iter().enumerate() {
        bar.set_message(format!("live run: {}", kind.as_str()));
        let policy = (*kind == RouterKind::Ppo).then(|| policy_path(args, args.live_preset));
        let spec = ClusterSpec {
            broker_url: args.broker.clone(),
            topic_prefix: format!("slim-eval/{}-{}-{i}/v1", std::process::id(), kind.as_str()),
            router: *kind,
            policy,
            models_dir: args.fleet.models.clone(),
            models: vec![args.live_model.clone()],
            agent_slowdowns: args.slowdowns.clone(),
            agent_threads: args.threads.clone(),
            agent_profiles: args
                .live_profiles
                .iter()
                .map(|name| args.fleet.profiles.join(format!("{name}.toml")))
                .collect(),
            ..ClusterSpec::default()
        };
        let cluster = LocalCluster::start(spec)
            .await
            .with_context(|| format!("starting the live cluster for {}", kind.as_str()))?;
        let client = SlimClient::connect(
            &cluster.broker,
            &cluster.spec.topic_prefix,
            &format!("slim-eval-client-{}-{i}", std::process::id()),
            &[],
        )
        .await?;
        // let telemetry arrive once before measuring
        tokio::time::sleep(Duration::from_millis(600)).await;
        let report = run_open_loop(
            &client,
            &samples,
            &LoadSpec {
                model: args.live_model.clone(),
                rate: args.live_rate,
                duration: args.live_duration,
                drain: Duration::from_secs(5),
                seed: args.live_seed,
                width: None,
                min_accuracy: None,
                deadline_ms: None,
            },
        )
        .await?;
        client.disconnect().await;
        cluster.shutdown().await;
        let summary = report.summary();
        let (metrics, latency_std, latencies) = live_metrics(&report, args.live_budget_ms);
        let total = summary.answered.max(1) as f64;
        let widths = summary
            .widths
            .iter()
            .map(|(w, n)| {
                format!(
                    "{:.2}x {:.0}%",
                    f64::from(*w) / 1000.0,
                    100.0 * *n as f64 / total
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let name = match kind {
            RouterKind::Ppo => format!("ppo:{}", args.live_preset.as_str()),
            other => other.as_str().to_string(),
        };
        rows.push(LiveRow {
            name,
            metrics,
            latency_std,
            sent: summary.sent,
            answered: summary.answered,
            errors: summary.errored.values().sum(),
            lost: summary.lost,
            widths,
            energy_source: summary.energy_j.map(|e| e.1).unwrap_or_default(),
            latencies,
            predicted_ms: predict_live(args, *kind)?,
            agent_ms: summary.agent_ms,
            agents: summary
                .agents
                .iter()
                .map(|(agent, n)| {
                    let short = agent.rsplit('-').next().unwrap_or(agent);
                    format!("#{short} {:.0}%", 100.0 * *n as f64 / total)
                })
                .collect::<Vec<_>>()
                .join(", "),
            error_codes: summary
                .errored
                .iter()
                .map(|(code, n)| format!("{code} ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
        bar.inc(1);
    }
    Ok(rows)
}

fn sim_table(rows: &[SimRow]) -> String {
    let mut t = String::new();
    t.push_str("| router | latency ms | p95 ms | energy mJ/request | accuracy % | throughput req/s | deadline attainment % | mean width | at slimmest width | latency cut vs random | energy cut vs random |\n");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    let random = rows.iter().find(|r| r.name == "random").map(|r| r.agg);
    for r in rows {
        let a = &r.agg;
        let pct = |m: MeanStd| MeanStd {
            mean: 100.0 * m.mean,
            std: 100.0 * m.std,
        };
        let (lc, ec) = random.map_or((f64::NAN, f64::NAN), |b| {
            (
                cut_percent(a.latency_ms.mean, b.latency_ms.mean),
                cut_percent(a.energy_mj.mean, b.energy_mj.mean),
            )
        });
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1}% | {:.2}% | {:.2}% |",
            r.name,
            a.latency_ms.show(2),
            a.p95_ms.show(2),
            a.energy_mj.show(3),
            pct(a.accuracy).show(2),
            a.throughput.show(1),
            pct(a.attainment).show(1),
            a.width.show(3),
            100.0 * r.slimmest_share,
            lc,
            ec
        );
    }
    t
}

fn live_table(rows: &[LiveRow], budget_ms: u32) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| router | latency ms (mean ± std over requests) | p95 ms | energy mJ/result | accuracy % | throughput res/s | answered ≤ {budget_ms} ms % | mean width | agent queue / compute ms | sent / answered / errors / lost | widths used | results per agent (slowdown 1st, 2nd, …) |");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let m = &r.metrics;
        if r.answered == 0 {
            let _ = writeln!(
                t,
                "| {} | — | — | — | — | 0.0 | 0.0 | — | — | {} / 0 / {} / {} | none: {} | — |",
                r.name, r.sent, r.errors, r.lost, r.error_codes
            );
            continue;
        }
        let _ = writeln!(
            t,
            "| {} | {:.2} ± {:.2} | {:.2} | {:.4} | {:.2} | {:.1} | {:.1} | {:.3} | {:.2} / {:.2} | {} / {} / {} / {} | {} | {} |",
            r.name,
            m.latency_ms,
            r.latency_std,
            m.p95_ms,
            m.energy_mj,
            100.0 * m.accuracy,
            m.throughput,
            100.0 * m.attainment,
            m.width,
            r.agent_ms[0],
            r.agent_ms[1],
            r.sent,
            r.answered,
            r.errors,
            r.lost,
            r.widths,
            r.agents
        );
    }
    t
}

fn calibration_table(rows: &[LiveRow]) -> String {
    let mut t = String::new();
    t.push_str("| router | simulator predicted mean latency ms (± std over 5 seeds) | measured mean latency ms | measured / predicted | measured − agent queue − agent compute, ms (not modelled) | measured agent queue + compute ms | agent-side measured / predicted |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        if r.answered == 0 {
            let _ = writeln!(
                t,
                "| {} | {} | — | n/a (nothing answered) | — | — | — |",
                r.name,
                r.predicted_ms.show(3)
            );
            continue;
        }
        let agent_side = r.agent_ms[0] + r.agent_ms[1];
        let _ = writeln!(
            t,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.2} |",
            r.name,
            r.predicted_ms.show(3),
            r.metrics.latency_ms,
            r.metrics.latency_ms / r.predicted_ms.mean,
            r.metrics.latency_ms - agent_side,
            agent_side,
            agent_side / r.predicted_ms.mean
        );
    }
    t
}

fn verdict(ours: f64, paper: f64, tolerance: f64) -> &'static str {
    if (ours - paper).abs() <= tolerance {
        "matches"
    } else if ours > paper {
        "beats"
    } else {
        "falls short of"
    }
}

fn paper_section(rows: &[SimRow]) -> String {
    let mut t = String::new();
    let Some(random) = rows.iter().find(|r| r.name == "random") else {
        return t;
    };
    t.push_str("| router | mean latency cut vs random | paper | energy cut vs random | paper | accuracy of cifar-slimresnet requests | paper (slimmest width) | requests at slimmest width |\n|---|---|---|---|---|---|---|---|\n");
    for r in rows.iter().filter(|r| r.name != "random") {
        let lc = cut_percent(r.agg.latency_ms.mean, random.agg.latency_ms.mean);
        let ec = cut_percent(r.agg.energy_mj.mean, random.agg.energy_mj.mean);
        let _ = writeln!(
            t,
            "| {} | {:.2}% ({}) | {PAPER_LATENCY_CUT}% | {:.2}% ({}) | {PAPER_ENERGY_CUT}% | {} | {PAPER_ACCURACY}% | {:.1}% |",
            r.name,
            lc,
            verdict(lc, PAPER_LATENCY_CUT, 1.0),
            ec,
            verdict(ec, PAPER_ENERGY_CUT, 1.0),
            r.cifar_accuracy
                .map_or("n/a".into(), |a| format!("{:.1}%", 100.0 * a)),
            100.0 * r.slimmest_share
        );
    }
    t
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

/// Runs `slim eval`.
pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let command: Vec<String> = std::env::args().skip(1).collect();
    let (fleet, names) = args.fleet.load()?;
    let live = !args.no_live;
    let steps = (sim_routers(&args)?.len() as u64) * args.seeds
        + if live {
            args.live_routers.len() as u64
        } else {
            0
        };
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let sim_rows = sim_part(&args, &fleet, &bar)?;
    let sim_elapsed = start.elapsed();
    let live_rows = if live {
        live_part(&args, &bar).await?
    } else {
        Vec::new()
    };
    bar.finish_and_clear();

    // plots
    let plots_dir = plots_dir(&args);
    std::fs::create_dir_all(&plots_dir)
        .with_context(|| format!("creating {}", plots_dir.display()))?;
    let cdf_path = plots_dir.join("latency_cdf.svg");
    let series: Vec<CdfSeries> = sim_rows
        .iter()
        .map(|r| CdfSeries {
            name: r.name.clone(),
            points: cdf(&r.latencies, 400),
        })
        .collect();
    plots::latency_cdf(
        &cdf_path,
        &format!(
            "Simulator: latency CDF per router ({} seeds x {} requests)",
            args.seeds, args.requests
        ),
        &series,
    )?;
    let tradeoff_path = plots_dir.join("accuracy_vs_latency_energy.svg");
    let points: Vec<TradeoffPoint> = sim_rows
        .iter()
        .map(|r| TradeoffPoint {
            name: r.name.clone(),
            latency_ms: r.agg.latency_ms.mean,
            energy_mj: r.agg.energy_mj.mean,
            accuracy_pct: 100.0 * r.agg.accuracy.mean,
        })
        .collect();
    plots::tradeoff(
        &tradeoff_path,
        "Simulator: accuracy against latency and energy (mean over seeds)",
        &points,
    )?;
    let live_cdf_path = plots_dir.join("live_latency_cdf.svg");
    if live {
        let series: Vec<CdfSeries> = live_rows
            .iter()
            .map(|r| CdfSeries {
                name: r.name.clone(),
                points: cdf(&r.latencies, 300),
            })
            .collect();
        plots::latency_cdf(
            &live_cdf_path,
            "Live cluster over MQTT: latency CDF per router",
            &series,
        )?;
    }

    let elapsed = start.elapsed();
    let mut doc = String::new();
    let s_table = sim_table(&sim_rows);
    let l_table = live_table(&live_rows, args.live_budget_ms);
    let c_table = calibration_table(&live_rows);
    let p_table = paper_section(&sim_rows);
    println!(
        "Simulator: fleet {} | {} held-out seeds x {} requests\n",
        names.join(","),
        args.seeds,
        args.requests
    );
    println!("{s_table}");
    println!("Against the paper:\n\n{p_table}");
    if live {
        println!("Live ({} agents, threads {:?}, emulated slowdowns {:?}, {:.0} req/s for {:?} per router, broker {}):\n", args.slowdowns.len(), args.threads, args.slowdowns, args.live_rate, args.live_duration, args.broker.as_deref().unwrap_or("embedded"));
        println!("{l_table}");
        println!("Sim-to-real:\n\n{c_table}");
    }
    let _ = write!(
        doc,
        "{}",
        report_text(
            &args,
            &names,
            &sim_rows,
            &live_rows,
            ReportParts {
                command: &command,
                elapsed,
                sim_elapsed,
                s_table: &s_table,
                l_table: &l_table,
                c_table: &c_table,
                p_table: &p_table,
                cdf: rel(&args.out, &cdf_path),
                tradeoff: rel(&args.out, &tradeoff_path),
                live_cdf: rel(&args.out, &live_cdf_path),
            }
        )
    );
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&args.out, doc).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "Took {:.1} s (simulator {:.1} s). Wrote {}, {}, {}{}.",
        elapsed.as_secs_f64(),
        sim_elapsed.as_secs_f64(),
        args.out.display(),
        cdf_path.display(),
        tradeoff_path.display(),
        if live {
            format!(", {}", live_cdf_path.display())
        } else {
            String::new()
        }
    );
    Ok(())
}

struct ReportParts<'a> {
    command: &'a [String],
    elapsed: Duration,
    sim_elapsed: Duration,
    s_table: &'a str,
    l_table: &'a str,
    c_table: &'a str,
    p_table: &'a str,
    cdf: String,
    tradeoff: String,
    live_cdf: String,
}

fn report_text(
    args: &EvalArgs,
    names: &[String],
    sim: &[SimRow],
    live: &[LiveRow],
    p: ReportParts<'_>,
) -> String {
    let mut d = String::new();
    let find = |name: &str| sim.iter().find(|r| r.name == name);
    let _ = writeln!(d, "# Evaluation: Slim Scheduler against the paper\n");
    let _ = writeln!(d, "_Generated by `slim eval`; do not edit by hand. Every number below is one the command printed._\n");
    let _ = writeln!(d, "## How to reproduce\n");
    let _ = writeln!(
        d,
        "```\ncargo run -p slim -- {}\n```\n",
        p.command.join(" ")
    );
    let _ = writeln!(
        d,
        "This run took **{:.1} s** of wall time ({:.1} s of it in the simulator{}) on the shared 2-core development machine, after the build.\n",
        p.elapsed.as_secs_f64(),
        p.sim_elapsed.as_secs_f64(),
        if live.is_empty() { "" } else { ", the rest in the live runs" }
    );
    let _ = writeln!(d, "- Simulator seeds: `{EVAL_SEED_BASE} + 0..{}` (`slim_router::eval::EVAL_SEED_BASE`; training never uses them), {} requests per seed, the same scenarios for every router.", args.seeds, args.requests);
    let _ = writeln!(d, "- Fleet: `{}` (profiles in `profiles/`: the Jetsons and the RTX 4090 are *derived* from datasheet FLOPS and power, `cpu-2core` is *provisional*; see docs/router.md).", names.join(","));
    let _ = writeln!(d, "- Workloads: `Scenario::sample` per seed: Poisson load at 0.2–0.9 of fleet capacity, random model mix over the fleet's families (`digits`, `cifar-slimresnet`), with some probability bursts (×2–4), a step change in rate, a device slowing down ×2–6, a device leaving (and maybe rejoining); 0–60% of requests carry a deadline (2–20× the model's reference latency), 0–40% an accuracy floor.");
    let _ = writeln!(
        d,
        "- PPO: the committed checkpoints {} (decided deterministically).",
        args.presets
            .iter()
            .map(|p| format!("`{}`", policy_path(args, *p).display()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(d, "- mean ± std is over the {} seeds (sample std of the per-seed values); p95 is per seed, then averaged. Throughput is finished requests per simulated second (it follows the offered load unless a router falls behind). Deadline attainment is over requests that had a deadline. Energy is the profile's power × batch time / batch size. Accuracy is the manifest top-1 of the width each request ran at.\n", args.seeds);

    let _ = writeln!(
        d,
        "## Simulator: routers over {} held-out seeds\n",
        args.seeds
    );
    d.push_str(p.s_table);
    let _ = writeln!(
        d,
        "\n![latency CDF per router]({})\n\n![accuracy against latency and energy]({})\n",
        p.cdf, p.tradeoff
    );

    let _ = writeln!(d, "## Against the paper\n");
    let _ = writeln!(d, "The paper (Harshbarger and Chidambaram, arXiv 2510.09018) reports, against a random task distribution, a **{PAPER_LATENCY_CUT}%** cut in mean latency and **{PAPER_ENERGY_CUT}%** in energy when its router drops to the slimmest width (**{PAPER_ACCURACY}%** top-1 on CIFAR-100), and with other reward weights lower latency + energy at higher accuracy, at the cost of a larger spread. Our figures, from the table above (\"matches\" = within 1 point):\n");
    d.push_str(p.p_table);
    d.push('\n');
    if let (Some(eff), Some(random)) = (find("ppo:efficiency"), find("random")) {
        let lc = cut_percent(eff.agg.latency_ms.mean, random.agg.latency_ms.mean);
        let ec = cut_percent(eff.agg.energy_mj.mean, random.agg.energy_mj.mean);
        let _ = writeln!(d, "Plainly:\n");
        let _ = writeln!(d, "- **Latency**: the efficiency PPO policy cuts mean latency by {lc:.2}% against random, so it {} the paper's {PAPER_LATENCY_CUT}%.", verdict(lc, PAPER_LATENCY_CUT, 1.0));
        let _ = writeln!(d, "- **Energy**: it cuts energy per request by {ec:.2}%, so it {} the paper's {PAPER_ENERGY_CUT}%.", verdict(ec, PAPER_ENERGY_CUT, 1.0));
        let _ = writeln!(d, "- **Accuracy**: it runs {:.1}% of requests at the slimmest width; its `cifar-slimresnet` requests score {} — but that is the paper's own 70.3% copied into our manifest for *every* width (the paper gives no other width's figure), so it is not an independent measurement. Mean accuracy over all requests ({:.2}%) mixes in the `digits` family (97–99%, measured on held-out images) and is not comparable to the paper's CIFAR-100 number.", 100.0 * eff.slimmest_share, eff.cifar_accuracy.map_or("n/a".into(), |a| format!("{:.1}%", 100.0 * a)), 100.0 * eff.agg.accuracy.mean);
        if let Some(greedy) = find("greedy") {
            let gl = cut_percent(greedy.agg.latency_ms.mean, random.agg.latency_ms.mean);
            let ge = cut_percent(greedy.agg.energy_mj.mean, random.agg.energy_mj.mean);
            let _ = writeln!(d, "- **Our greedy heuristic** (not in the paper's comparison) cuts latency by {gl:.2}% and energy by {ge:.2}%: {}", if greedy.agg.latency_ms.mean <= eff.agg.latency_ms.mean && greedy.agg.energy_mj.mean <= eff.agg.energy_mj.mean { "a hand-written cost rule with the profiles in hand beats the learned efficiency policy on both, so the learned router's gain here comes from avoiding random's mistakes, not from something only learning finds (docs/router.md gives the training diagnosis)." } else { "the learned efficiency policy is ahead of it on at least one of the two." });
        }
        if let Some(bal) = find("ppo:balanced") {
            let bl = cut_percent(bal.agg.latency_ms.mean, random.agg.latency_ms.mean);
            let be = cut_percent(bal.agg.energy_mj.mean, random.agg.energy_mj.mean);
            let holds = bal.agg.accuracy.mean > eff.agg.accuracy.mean && bl > 0.0 && be > 0.0;
            let _ = writeln!(
                d,
                "- **Balanced preset** (the paper's second finding: other weights give lower latency + energy than random at higher accuracy): mean accuracy {:.2}% vs {:.2}% for efficiency, while still cutting latency by {bl:.2}% and energy by {be:.2}% against random (mean latency {:.2} ms vs efficiency's {:.2} ms; energy {:.3} mJ vs {:.3} mJ). The finding {}. Its spread: latency std over seeds {:.2} ms vs random's {:.2} ms.",
                100.0 * bal.agg.accuracy.mean,
                100.0 * eff.agg.accuracy.mean,
                bal.agg.latency_ms.mean,
                eff.agg.latency_ms.mean,
                bal.agg.energy_mj.mean,
                eff.agg.energy_mj.mean,
                if holds { "holds here" } else { "does not hold here" },
                bal.agg.latency_ms.std,
                random.agg.latency_ms.std,
            );
        }
        let _ = writeln!(d, "\nWhy the figures differ from the paper's: (1) the baseline's size decides the cut: our random router, like the paper's, spreads requests uniformly over devices and widths, so it sends a share of the load to the slow CPU and Jetson Nano whatever their queues, and those queues grow for as long as a run lasts — random's mean latency ({:.2} ms here) and with it every cut against it depend on the number of requests per scenario (`--requests`), not only on the routers' skill;", random.agg.latency_ms.mean);
        let _ = writeln!(d, "(2) our fleet is a mix of derived Jetson / RTX 4090 profiles and a provisional CPU profile, not the paper's GPUs, and nothing here was timed on those devices; (3) our workloads include deadlines, accuracy floors, bursts and devices leaving, which the paper's headline comparison does not; (4) CIFAR accuracy is cited, not measured, as above.\n");
    }

    if !live.is_empty() {
        let _ = writeln!(d, "## Live cluster over MQTT\n");
        let _ = writeln!(d, "{} agents on this machine (CPU backend, tract) with {:?} threads per batch (tract's executor) and **emulated** slowdowns {:?} (each batch sleeps (k − 1) × its real compute time, so they stand for slower devices; they are not real devices), one coordinator running each router in turn on a fresh cluster, broker: {}. Workload: `{}` requests, open-loop Poisson at {:.0} requests/s for {:?} per router (seed {}), 5 s drain; no deadlines or accuracy floors in the requests. The agents publish the profiles {:?} (from `profiles/`, measured on this machine by `slim profile` at the agent's thread count) with latencies scaled by their slowdown, which the profile-based routers (greedy, PPO) read. Energy is the agents' labelled energy model (source `{}`: profile power × compute time), not a sensor. PPO loads `{}`. One run per router: the ± is the spread over requests, not over seeds. \"answered ≤ {} ms\" counts results within that budget over requests *sent* (lost and errored requests count as misses).\n",
            args.slowdowns.len(),
            args.threads,
            args.slowdowns,
            args.broker.as_deref().map_or("embedded (rumqttd)".to_string(), |u| format!("external `{u}`")),
            args.live_model,
            args.live_rate,
            args.live_duration,
            args.live_seed,
            args.live_profiles,
            live.first().map_or("", |r| r.energy_source.as_str()),
            policy_path(args, args.live_preset).display(),
            args.live_budget_ms,
        );
        d.push_str(p.l_table);
        let _ = writeln!(d, "\n![live latency CDF per router]({})\n", p.live_cdf);
        let answered: Vec<&LiveRow> = live.iter().filter(|r| r.answered > 0).collect();
        if !answered.is_empty() {
            let (lo, hi) = answered.iter().fold((f64::INFINITY, 0f64), |(lo, hi), r| {
                (lo.min(r.metrics.latency_ms), hi.max(r.metrics.latency_ms))
            });
            let overhead = answered
                .iter()
                .map(|r| r.metrics.latency_ms - r.agent_ms[0] - r.agent_ms[1])
                .sum::<f64>()
                / answered.len() as f64;
            let _ = writeln!(d, "Live, the routers that answered are within {lo:.2}–{hi:.2} ms of each other in mean latency: on average {overhead:.2} ms of each request's latency is spent outside the agents' queue and compute (client → broker → coordinator → broker → agent → broker → client), the same for every router, and at this light load the agents' own queues stay short, so the routing choice moves latency little. Width and agent choice do show in energy and accuracy: energy is compute time × modelled power, and compute time includes the emulated slowdown, so sending work to the slowed agents costs modelled energy even at the slimmest width. On two shared cores a second thread per batch buys little for small batches, and the agents compete for the same cores, so the thread-count difference shows mainly in the profiles' batch-32 figures.\n");
        }
        let _ = writeln!(d, "### Sim-to-real check\n");
        let _ = writeln!(d, "The simulator twin of the live cluster: {} devices built from the profiles the agents publish ({:?}, measured by `slim profile` on this machine), restricted to the `{}` family, each slowed from t = 0 by its agent's factor ({:?}) with a `FleetEventKind::Slowdown` event; a steady Poisson workload at the live rate ({:.0}/s) with {} requests, no deadlines or floors, the PPO batch sizes; the same router (PPO: the same checkpoint), 5 seeds (`{EVAL_SEED_BASE} + 1000..1005`). The simulator has no network, broker, serialization or client in it, so the ratio measures how much of live latency the simulator does not model; the last column compares only what it does model (the agents' queue and compute time, as the results report them) with its prediction.\n",
            args.slowdowns.len(),
            args.live_profiles,
            args.live_model,
            args.slowdowns,
            args.live_rate,
            (args.live_rate * args.live_duration.as_secs_f64()).round(),
        );
        d.push_str(p.c_table);
        d.push('\n');
        let ratios: Vec<(f64, f64)> = live
            .iter()
            .filter(|r| r.answered > 0 && r.predicted_ms.mean > 0.0)
            .map(|r| {
                (
                    (r.agent_ms[0] + r.agent_ms[1]) / r.predicted_ms.mean,
                    r.agent_ms[1],
                )
            })
            .collect();
        if !ratios.is_empty() {
            let lo = ratios.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().map(|r| r.0).fold(0.0, f64::max);
            let compute = ratios.iter().map(|r| r.1).sum::<f64>() / ratios.len() as f64;
            let _ = writeln!(d, "Agent-side, live is {lo:.2}–{hi:.2}× the prediction. The simulator charges a batch the profile's time for its size, timed by `slim profile` in a hot loop on an otherwise idle machine; live, the agents' mean compute time per request is {compute:.3} ms, and their queue time includes the batcher's wait for a fuller batch. What the hot loop does not see is not broken down here: candidates are the hand-over of each batch to a worker thread, caches gone cold between sparse requests, and the cores being shared with the broker, the coordinator and the load generator on this one machine. For a model as small as `digits` these per-batch costs are most of the time, so the simulator is best read as a ranking of routers, not a latency forecast.\n");
        }
        for r in live.iter().filter(|r| r.answered == 0) {
            let _ = writeln!(d, "**{}** answered nothing live ({}). The coordinator's PPO router scores (device, width, batch) candidates built from each agent's published *device profile*; a device without one has no batch options, so no candidate exists and each request is refused (the other routers do not need a profile).\n", r.name, r.error_codes);
        }
    } else {
        let _ = writeln!(d, "## Live cluster over MQTT\n\nNot run (`--no-live`).\n");
    }
    d
}
