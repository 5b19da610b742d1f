//! The live part of `slim eval`: a local cluster over MQTT runs each router in turn, after a
//! separate calibration run (or a given calibration file) that the simulator twin
//! ([`super::twin`]) is fitted to.

use std::fmt::Write as _;

use anyhow::Context;
use indicatif::ProgressBar;
use slim_router::calibration::Calibration;
use slim_router::eval::EVAL_SEED_BASE;
use slim_router::RouterKind;

use super::stats::{percentile, MeanStd, RunMetrics};
use super::twin::{self, Prediction};
use super::{policy_path, EvalArgs};
use crate::commands::calibrate::{self, LiveSetup};
use slim_client::client::Reply;
use slim_client::load::LoadReport;

/// One router's live results.
pub struct LiveRow {
    pub name: String,
    pub metrics: RunMetrics,
    latency_std: f64,
    sent: usize,
    pub answered: usize,
    errors: usize,
    lost: usize,
    widths: String,
    energy_source: String,
    pub latencies: Vec<f64>,
    /// What the simulator twin predicted for this run.
    pub predicted: Prediction,
    /// Mean agent-side queue and compute time of results, ms.
    pub agent_ms: [f64; 2],
    /// Error replies by code.
    error_codes: String,
    /// Share of results per agent.
    agents: String,
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

/// The live runs and the calibration the twin was fitted with.
pub struct LivePart {
    /// One row per router.
    pub rows: Vec<LiveRow>,
    /// The calibration the twin used.
    pub calibration: Calibration,
    /// Whether it was fitted by this run (else it came from `--calibration`).
    pub fitted_here: bool,
}

/// The local cluster of the live part, for `router`, with `seed`.
fn setup(args: &EvalArgs, router: RouterKind, seed: u64, tag: String) -> LiveSetup {
    LiveSetup {
        broker: args.broker.clone(),
        profiles_dir: args.fleet.profiles.clone(),
        models_dir: args.fleet.models.clone(),
        model: args.live_model.clone(),
        agent_profiles: args.live_profiles.clone(),
        slowdowns: args.slowdowns.clone(),
        threads: args.threads.clone(),
        router,
        policy: (router == RouterKind::Ppo).then(|| policy_path(args, args.live_preset)),
        rate: args.live_rate,
        duration: args.live_duration,
        seed,
        tag,
    }
}

/// Seed offset of the calibration run's workload, so the routers' runs are held out from it.
pub const CALIBRATION_SEED_OFFSET: u64 = 1000;

/// The calibration of the twin: `--calibration` when given, else one live run of the random
/// router on a different seed than the routers' runs.
async fn calibration(args: &EvalArgs, bar: &ProgressBar) -> anyhow::Result<(Calibration, bool)> {
    if let Some(path) = &args.fleet.calibration {
        return Ok((Calibration::load(path).map_err(anyhow::Error::msg)?, false));
    }
    bar.set_message("live run: calibration (random)");
    let run = setup(
        args,
        RouterKind::Random,
        args.live_seed + CALIBRATION_SEED_OFFSET,
        "calibration".into(),
    );
    let (calibration, _) = calibrate::measure(&run)
        .await
        .context("the calibration run of the live part")?;
    bar.inc(1);
    Ok((calibration, true))
}

/// Runs every live router in turn on a fresh local cluster, after the calibration run.
pub async fn live_part(args: &EvalArgs, bar: &ProgressBar) -> anyhow::Result<LivePart> {
    setup(args, RouterKind::Random, args.live_seed, String::new()).check()?;
    let (calibration, fitted_here) = calibration(args, bar).await?;
    let mut rows = Vec::new();
    for (i, kind) in args.live_routers.iter().enumerate() {
        bar.set_message(format!("live run: {}", kind.as_str()));
        let report = setup(
            args,
            *kind,
            args.live_seed,
            format!("{}-{i}", kind.as_str()),
        )
        .run()
        .await
        .with_context(|| format!("the live run of {}", kind.as_str()))?;
        let name = match kind {
            RouterKind::Ppo => format!("ppo:{}", args.live_preset.as_str()),
            other => other.as_str().to_string(),
        };
        let predicted = twin::predict(args, *kind, &calibration)?;
        rows.push(row(name, &report, args.live_budget_ms, predicted));
        bar.inc(1);
    }
    Ok(LivePart {
        rows,
        calibration,
        fitted_here,
    })
}

/// One router's row from what its live run reported.
fn row(name: String, report: &LoadReport, budget_ms: u32, predicted: Prediction) -> LiveRow {
    let summary = report.summary();
    let (metrics, latency_std, latencies) = live_metrics(report, budget_ms);
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
    LiveRow {
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
        predicted,
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
    }
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

/// The report's live section, around the two tables.
pub fn live_section(
    args: &EvalArgs,
    part: &LivePart,
    l_table: &str,
    c_table: &str,
    live_cdf: &str,
) -> String {
    let mut d = String::new();
    let live = &part.rows;
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
        let source = if part.fitted_here {
            format!("fitted by a separate live run before the routers' runs: the random router (it spreads the work over every agent, width and batch size) on the same cluster and rate with workload seed {} (the routers' runs use seed {}, so every row below is held out from the fit)", args.live_seed + CALIBRATION_SEED_OFFSET, args.live_seed)
        } else {
            format!(
                "read from `{}`",
                args.fleet
                    .calibration
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string())
            )
        };
        let c = &part.calibration;
        let _ = writeln!(d, "The simulator twin of the live cluster: {} devices built from the profiles the agents publish ({:?}, measured by `slim profile` on this machine), restricted to the `{}` family, each slowed from t = 0 by its agent's factor ({:?}); a steady Poisson workload at the live rate ({:.0}/s) with {} requests, no deadlines or floors, the PPO batch sizes; the same router (PPO: the same checkpoint), 5 seeds (`{EVAL_SEED_BASE} + 1000..1005`). **Raw**, the twin charges each batch its profiled hot-loop latency and nothing outside the agents. **Calibrated** (`slim calibrate`, [router/src/calibration](../router/src/calibration/mod.rs)), {source}: each profile point gets the mean per-batch overhead the live agents showed at that (profile, width, batch) ({} fitted keys; live compute ÷ slowdown − profiled latency), the batching delay is the live coordinator's ({} ms), and end-to-end adds the measured mean delay outside the agents ({:.3} ms over {} results: client → broker → coordinator → broker → agent → broker → client; p50 {:.3}, p95 {:.3} ms). Targets: calibrated end-to-end within ±{:.0} % of live, agent-side within ±{:.0} %.\n",
            args.slowdowns.len(),
            args.live_profiles,
            args.live_model,
            args.slowdowns,
            args.live_rate,
            (args.live_rate * args.live_duration.as_secs_f64()).round(),
            c.overheads.len(),
            c.max_queue_delay_ms,
            c.transport.mean_ms,
            c.transport.samples,
            c.transport.quantile(0.5),
            c.transport.quantile(0.95),
            100.0 * twin::END_TO_END_TOLERANCE,
            100.0 * twin::AGENT_SIDE_TOLERANCE,
        );
        d.push_str(c_table);
        d.push('\n');
        d.push_str(&twin::verdict(live));
        d.push('\n');
        for r in live.iter().filter(|r| r.answered == 0) {
            let _ = writeln!(d, "**{}** answered nothing live ({}). The coordinator's PPO router scores (device, width, batch) candidates built from each agent's published *device profile*; a device without one has no batch options, so no candidate exists and each request is refused (the other routers do not need a profile).\n", r.name, r.error_codes);
        }
    } else {
        let _ = writeln!(d, "## Live cluster over MQTT\n\nNot run (`--no-live`).\n");
    }
    d
}
