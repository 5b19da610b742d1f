//! The live part of `slim eval`: a local cluster over MQTT runs each router at several offered
//! loads, several runs each, after a separate calibration run (or a given calibration file)
//! that the simulator twin ([`super::twin`]) is fitted to and that sets the cluster's capacity.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;
use slim_router::calibration::Calibration;
use slim_router::RouterKind;

use super::stats::{percentile, MeanCi};
use super::twin::{self, Prediction};
use super::{policy_path, EvalArgs};
use crate::commands::calibrate::{self, LiveSetup, Measured};
use slim_client::client::Reply;
use slim_client::load::{LoadReport, Outcome};

/// A run keeps up when at least this share of the requests sent got a result…
const KEEP_UP_ANSWERED: f64 = 0.99;
/// …and requests sent in the last third of the window waited at most this many times as long
/// as those of the first third…
const KEEP_UP_GROWTH: f64 = 2.0;
/// …plus this slack, ms (so that noise on a few-millisecond latency is not read as a queue).
const KEEP_UP_SLACK_MS: f64 = 5.0;

/// What one live run measured.
#[derive(Debug, Clone, Default)]
pub struct LiveRun {
    /// Mean, p95 and p99 end-to-end latency of the results, ms.
    pub latency_ms: [f64; 3],
    /// Mean modelled energy per result, mJ (NaN without results).
    pub energy_mj: f64,
    /// Mean manifest accuracy of the widths that ran (0–1).
    pub accuracy: f64,
    /// Mean width of the results.
    pub width: f64,
    /// Of the requests sent with a deadline, the share answered within it (NaN when none had one;
    /// lost and refused ones count as misses).
    pub deadline_met: f64,
    /// Of all requests sent, the share answered within the latency budget.
    pub within_budget: f64,
    /// Mean agent-side queue and compute time of the results, ms.
    pub agent_ms: [f64; 2],
    /// Requests sent, results, error replies, never answered.
    pub counts: [usize; 4],
    /// Whether the run kept up with its offered load (see [`kept_up`]).
    pub kept_up: bool,
    /// Result latencies, ms, sorted.
    pub latencies: Vec<f64>,
    /// Results per width (× 1000), per agent (its index in the cluster, from 1), and error
    /// replies per code.
    pub widths: BTreeMap<u16, usize>,
    pub agents: BTreeMap<String, usize>,
    pub errors: BTreeMap<String, usize>,
    /// The energy figures' source as the agents label it.
    pub energy_source: String,
    /// Batches the agents ran, and those that missed their emulated pace (the host was too
    /// slow to hold them to the emulated device's latency).
    pub pace: slim_agent::scheduler::PaceCount,
}

impl LiveRun {
    /// The figures of `report`, a run that sent for `duration` with the latency budget
    /// `budget_ms`.
    pub fn of(report: &LoadReport, budget_ms: u32, duration: Duration) -> Self {
        let summary = report.summary();
        let results: Vec<(&Outcome, f64)> = report
            .outcomes
            .iter()
            .filter(|o| matches!(o.reply, Reply::Result(_)))
            .map(|o| (o, o.latency.as_secs_f64() * 1000.0))
            .collect();
        let mut latencies: Vec<f64> = results.iter().map(|(_, l)| *l).collect();
        latencies.sort_by(f64::total_cmp);
        let met = results
            .iter()
            .filter(|(o, l)| o.deadline_ms.is_some_and(|d| *l <= f64::from(d)))
            .count();
        let within = latencies
            .iter()
            .filter(|l| **l <= f64::from(budget_ms))
            .count();
        let sent = report.sent.max(1) as f64;
        let width = summary
            .widths
            .iter()
            .map(|(w, n)| f64::from(*w) / 1000.0 * *n as f64)
            .sum::<f64>()
            / summary.answered.max(1) as f64;
        Self {
            latency_ms: [
                summary.latency_ms[3],
                percentile(&latencies, 0.95),
                percentile(&latencies, 0.99),
            ],
            energy_mj: summary.energy_j.as_ref().map_or(f64::NAN, |e| e.0 * 1000.0),
            accuracy: summary.implied_accuracy,
            width,
            deadline_met: if report.with_deadline == 0 {
                f64::NAN
            } else {
                met as f64 / report.with_deadline as f64
            },
            within_budget: within as f64 / sent,
            agent_ms: summary.agent_ms,
            counts: [
                summary.sent,
                summary.answered,
                summary.errored.values().sum(),
                summary.lost,
            ],
            kept_up: kept_up(&report.outcomes, report.sent, duration),
            latencies,
            widths: summary.widths,
            agents: summary
                .agents
                .into_iter()
                .fold(BTreeMap::new(), |mut by, (agent, n)| {
                    // `{prefix}-agent-{n}`: the prefix differs per run, the index does not
                    let index = agent.rsplit('-').next().unwrap_or(&agent).to_string();
                    *by.entry(index).or_default() += n;
                    by
                }),
            errors: summary.errored,
            energy_source: summary.energy_j.map(|e| e.1).unwrap_or_default(),
            pace: Default::default(),
        }
    }
}

/// Whether a live run kept up with its offered load: at least [`KEEP_UP_ANSWERED`] of the
/// requests sent got a result, and the results of requests sent in the last third of the
/// sending window took on average at most [`KEEP_UP_GROWTH`] × those of the first third +
/// [`KEEP_UP_SLACK_MS`] (a queue that grows through the run makes later requests wait longer).
pub fn kept_up(outcomes: &[Outcome], sent: usize, duration: Duration) -> bool {
    let results: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.reply, Reply::Result(_)))
        .collect();
    if sent == 0 || (results.len() as f64) < KEEP_UP_ANSWERED * sent as f64 {
        return false;
    }
    let third = duration / 3;
    let mean_of = |keep: &dyn Fn(Duration) -> bool| {
        let l: Vec<f64> = results
            .iter()
            .filter(|o| keep(o.sent_after))
            .map(|o| o.latency.as_secs_f64() * 1000.0)
            .collect();
        (!l.is_empty()).then(|| l.iter().sum::<f64>() / l.len() as f64)
    };
    match (
        mean_of(&|t| t < third),
        mean_of(&|t| t >= duration.saturating_sub(third)),
    ) {
        (Some(early), Some(late)) => late <= KEEP_UP_GROWTH * early + KEEP_UP_SLACK_MS,
        _ => true,
    }
}

/// One router at one offered load: its runs and what the twin predicted.
#[derive(Debug, Clone)]
pub struct LiveCell {
    /// Router name as the tables print it.
    pub name: String,
    /// Offered load, fraction of the cluster's capacity, and the rate it means, requests/s.
    pub load: f64,
    pub rate: f64,
    /// The runs, one per workload seed.
    pub runs: Vec<LiveRun>,
    /// What the calibrated twin predicted at this rate.
    pub predicted: Prediction,
}

impl LiveCell {
    /// Mean over the runs of `f`, with its 95 % interval.
    pub fn mean(&self, f: impl Fn(&LiveRun) -> f64) -> MeanCi {
        MeanCi::of(&self.runs.iter().map(f).collect::<Vec<_>>())
    }

    /// Runs that kept up.
    pub fn kept_up(&self) -> usize {
        self.runs.iter().filter(|r| r.kept_up).count()
    }

    /// Results over all runs.
    pub fn answered(&self) -> usize {
        self.runs.iter().map(|r| r.counts[1]).sum()
    }

    /// A count summed over the runs (0 sent, 1 results, 2 errors, 3 lost).
    pub fn total(&self, i: usize) -> usize {
        self.runs.iter().map(|r| r.counts[i]).sum()
    }
}

/// The live runs, the calibration the twin was fitted with, and the capacity they were
/// sized by.
pub struct LivePart {
    /// One cell per (load, router), loads ascending, routers in `--live-routers` order.
    pub cells: Vec<LiveCell>,
    /// The calibration the twin used.
    pub calibration: Calibration,
    /// Whether it was fitted by this run (else it came from `--calibration`).
    pub fitted_here: bool,
    /// Capacity of the cluster, requests/s: from the raw profiles, and calibrated (the loads'
    /// yardstick).
    pub capacity: [f64; 2],
    /// Offered rate of the calibration run (0 when it was read from a file).
    pub calibration_rate: f64,
}

/// The local cluster of the live part, for `router` at `rate`, with `seed`.
fn setup(args: &EvalArgs, router: RouterKind, rate: f64, seed: u64, tag: String) -> LiveSetup {
    LiveSetup {
        broker: args.broker.clone(),
        profiles_dir: args.fleet.profiles.clone(),
        models_dir: args.fleet.models.clone(),
        model: args.live_model.clone(),
        agent_profiles: args.cluster.agent_profiles.clone(),
        slowdowns: args.cluster.slowdowns.clone(),
        threads: args.cluster.threads.clone(),
        paced: args.cluster.paced.clone(),
        router,
        policy: (router == RouterKind::Ppo).then(|| policy_path(args, args.live_preset)),
        rate,
        duration: args.live_duration,
        seed,
        deadline_ms: Some(args.live_budget_ms),
        constrained_share: args.live_deadline_share,
        online: Default::default(),
        tag,
    }
}

/// Seed offset of the calibration run's workload, so the routers' runs are held out from it.
pub const CALIBRATION_SEED_OFFSET: u64 = 1000;

/// Progress-bar steps of the live part.
pub fn steps(args: &EvalArgs) -> u64 {
    args.live_routers.len() as u64 * args.live_loads.len() as u64 * args.live_runs
        + u64::from(args.fleet.calibration.is_none())
}

/// The calibration of the twin and the rate it was measured at: `--calibration` when given,
/// else one live run of the random router at `--calibration-load` × `raw_capacity`, on a
/// different seed than the routers' runs.
async fn calibration(
    args: &EvalArgs,
    bar: &ProgressBar,
    raw_capacity: f64,
) -> anyhow::Result<(Calibration, bool, f64)> {
    if let Some(path) = &args.fleet.calibration {
        let c = Calibration::load(path).map_err(anyhow::Error::msg)?;
        return Ok((c, false, 0.0));
    }
    bar.set_message("live run: calibration (random)");
    let rate = args.calibration_load * raw_capacity;
    let mut run = setup(
        args,
        RouterKind::Random,
        rate,
        args.live_seed + CALIBRATION_SEED_OFFSET,
        "calibration".into(),
    );
    run.constrained_share = 0.0;
    let (calibration, _) = calibrate::measure(&run)
        .await
        .context("the calibration run of the live part")?;
    bar.inc(1);
    Ok((calibration, true, rate))
}

/// The router's name in the tables.
fn name(args: &EvalArgs, kind: RouterKind) -> String {
    match kind {
        RouterKind::Ppo => format!("ppo:{}", args.live_preset.as_str()),
        other => other.as_str().to_string(),
    }
}

/// Runs the calibration, then every live router at every load, `--live-runs` times each, each
/// run on a freshly started cluster.
pub async fn live_part(args: &EvalArgs, bar: &ProgressBar) -> anyhow::Result<LivePart> {
    anyhow::ensure!(
        args.live_runs >= 1 && !args.live_loads.is_empty(),
        "the live part needs at least one load (--live-loads) and one run (--live-runs)"
    );
    anyhow::ensure!(
        args.live_loads.iter().all(|l| l.is_finite() && *l > 0.0),
        "live loads must be positive fractions of the cluster's capacity"
    );
    setup(args, RouterKind::Random, 1.0, args.live_seed, String::new()).check()?;
    let raw_capacity = twin::capacity_per_s(args, None)?;
    let (calibration, fitted_here, calibration_rate) = calibration(args, bar, raw_capacity).await?;
    let capacity = twin::capacity_per_s(args, Some(&calibration))?;
    let mut loads = args.live_loads.clone();
    loads.sort_by(f64::total_cmp);
    let mut cells = Vec::new();
    for load in loads {
        let rate = load * capacity;
        for (i, kind) in args.live_routers.iter().enumerate() {
            let mut runs = Vec::new();
            for k in 0..args.live_runs {
                bar.set_message(format!(
                    "live run: {} at {load:.2} ({rate:.0}/s), run {}",
                    kind.as_str(),
                    k + 1
                ));
                let tag = format!("{}-{i}-{:.0}-{k}", kind.as_str(), load * 100.0);
                let Measured { report, pace, .. } =
                    setup(args, *kind, rate, args.live_seed + k, tag)
                        .run()
                        .await
                        .with_context(|| format!("the live run of {} at {load}", kind.as_str()))?;
                runs.push(LiveRun {
                    pace,
                    ..LiveRun::of(&report, args.live_budget_ms, args.live_duration)
                });
                bar.inc(1);
            }
            cells.push(LiveCell {
                name: name(args, *kind),
                load,
                rate,
                runs,
                predicted: twin::predict(args, *kind, rate, &calibration)?,
            });
        }
    }
    Ok(LivePart {
        cells,
        calibration,
        fitted_here,
        capacity: [raw_capacity, capacity],
        calibration_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use slim_protocol::{EnergySource, ErrorCode, ErrorReply, InferResult, Timings};

    fn outcome(sent_after_ms: u64, latency_ms: u64, ok: bool) -> Outcome {
        let reply = if ok {
            Reply::Result(InferResult {
                v: 1,
                id: "x".into(),
                model: "m".into(),
                agent: "a-agent-1".into(),
                width: 0.25,
                batch_size: 1,
                top_k: Vec::new(),
                accuracy: 0.7,
                timings: Timings::default(),
                energy_j: 0.001,
                energy_source: EnergySource::Model,
                router: "random".into(),
                emulated: false,
            })
        } else {
            Reply::Error(ErrorReply::new(
                None,
                ErrorCode::NoCapacity,
                "full",
                "coordinator",
            ))
        };
        Outcome {
            latency: Duration::from_millis(latency_ms),
            reply,
            label: None,
            sent_after: Duration::from_millis(sent_after_ms),
            deadline_ms: Some(50),
        }
    }

    #[test]
    fn a_run_whose_later_requests_wait_longer_did_not_keep_up() {
        let window = Duration::from_secs(3);
        let steady: Vec<Outcome> = (0..300).map(|i| outcome(i * 10, 8, true)).collect();
        assert!(kept_up(&steady, 300, window));
        // the queue grows: latency rises with the send time
        let growing: Vec<Outcome> = (0..300).map(|i| outcome(i * 10, 5 + i, true)).collect();
        assert!(!kept_up(&growing, 300, window));
        // a few milliseconds of noise on a short latency is not a queue
        let noisy: Vec<Outcome> = (0..300)
            .map(|i| outcome(i * 10, if i > 200 { 9 } else { 2 }, true))
            .collect();
        assert!(kept_up(&noisy, 300, window));
    }

    #[test]
    fn a_run_that_lost_or_refused_over_one_percent_did_not_keep_up() {
        let window = Duration::from_secs(3);
        let mut outcomes: Vec<Outcome> = (0..297).map(|i| outcome(i * 10, 8, true)).collect();
        assert!(kept_up(&outcomes, 300, window), "297 of 300 is 99 %");
        assert!(!kept_up(&outcomes, 301, window), "4 lost of 301");
        outcomes.push(outcome(2990, 8, false));
        assert!(
            !kept_up(&outcomes, 301, window),
            "a refusal is not a result"
        );
        assert!(!kept_up(&[], 0, window));
    }

    #[test]
    fn deadline_attainment_counts_requests_sent_with_a_deadline() {
        let report = LoadReport {
            sent: 4,
            outcomes: vec![
                outcome(0, 10, true),  // met
                outcome(10, 70, true), // missed
                outcome(20, 10, false),
            ],
            elapsed: Duration::from_secs(1),
            duplicates: 0,
            with_deadline: 4,
            held_locally: 0,
            sending: Duration::from_secs(1),
        };
        let run = LiveRun::of(&report, 100, Duration::from_millis(30));
        assert!((run.deadline_met - 0.25).abs() < 1e-12);
        assert!((run.within_budget - 0.5).abs() < 1e-12);
        assert_eq!(run.counts, [4, 2, 1, 1]);
        assert!(!run.kept_up);
    }
}
