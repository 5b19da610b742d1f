//! The live part of `slim eval`: a local cluster over MQTT runs each router in turn, and the
//! simulator twin of that cluster predicts what it should measure.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;
use slim_router::eval::EVAL_SEED_BASE;
use slim_router::fleet::Fleet;
use slim_router::reward::RewardPreset;
use slim_router::sim::{FleetEvent, FleetEventKind, RequestRecord, Scenario, Simulator};
use slim_router::{build_router, Router, RouterKind, RouterSettings};

use super::stats::{percentile, MeanStd, RunMetrics};
use super::{policy_path, EvalArgs};
use crate::commands::simulate::batch_sizes;
use slim_client::client::{Reply, SlimClient};
use slim_client::cluster::{ClusterSpec, LocalCluster};
use slim_client::load::{run_open_loop, LoadReport, LoadSpec};
use slim_client::samples::family_samples;

/// One router's live results.
pub struct LiveRow {
    pub name: String,
    pub metrics: RunMetrics,
    latency_std: f64,
    sent: usize,
    answered: usize,
    errors: usize,
    lost: usize,
    widths: String,
    energy_source: String,
    pub latencies: Vec<f64>,
    predicted_ms: MeanStd,
    /// Mean agent-side queue and compute time of results, ms.
    agent_ms: [f64; 2],
    /// Error replies by code.
    error_codes: String,
    /// Share of results per agent.
    agents: String,
}

/// Runs `router` on one scenario; returns its records.
fn simulate_one(
    fleet: &Fleet,
    scenario: &Scenario,
    seed: u64,
    router: &mut dyn Router,
) -> Vec<RequestRecord> {
    let mut sim = Simulator::new(fleet, scenario, seed);
    sim.run(router, &RewardPreset::Efficiency.weights());
    sim.records().to_vec()
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
            let records = simulate_one(&fleet, &scenario, seed, router.as_mut());
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

/// Runs every live router in turn on a fresh local cluster.
pub async fn live_part(args: &EvalArgs, bar: &ProgressBar) -> anyhow::Result<Vec<LiveRow>> {
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

/// The live results table.
pub fn live_table(rows: &[LiveRow], budget_ms: u32) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| router | latency ms (mean ± std over requests) | p95 ms | energy mJ/result (modelled) | accuracy % | throughput res/s | answered ≤ {budget_ms} ms % | mean width | agent queue / compute ms | sent / answered / errors / lost | widths used | results per agent (slowdown 1st, 2nd, …) |");
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

/// The sim-to-real table.
pub fn calibration_table(rows: &[LiveRow]) -> String {
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

/// The report's live section, around the two tables.
pub fn live_section(
    args: &EvalArgs,
    live: &[LiveRow],
    l_table: &str,
    c_table: &str,
    live_cdf: &str,
) -> String {
    let mut d = String::new();
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
        d.push_str(l_table);
        let _ = writeln!(d, "\n![live latency CDF per router]({})\n", live_cdf);
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
        d.push_str(c_table);
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
