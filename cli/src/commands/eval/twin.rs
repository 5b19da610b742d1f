//! The simulator twin of the live cluster, calibrated from a separate live run, and how well it
//! predicts each router's live results.

use std::fmt::Write as _;

use anyhow::Context;
use slim_router::calibration::Calibration;
use slim_router::eval::EVAL_SEED_BASE;
use slim_router::fleet::Fleet;
use slim_router::reward::RewardPreset;
use slim_router::sim::{FleetEvent, FleetEventKind, Scenario, Simulator};
use slim_router::{build_router, RouterKind, RouterSettings};

use super::live::LiveRow;
use super::stats::{MeanStd, RunMetrics};
use super::{policy_path, EvalArgs};
use crate::commands::simulate::batch_sizes;

/// The live prediction must be within this share of the measured end-to-end mean…
pub const END_TO_END_TOLERANCE: f64 = 0.30;
/// …and within this share of the measured agent-side (queue + compute) mean.
pub const AGENT_SIDE_TOLERANCE: f64 = 0.20;
/// Seeds the twin runs per router.
const TWIN_SEEDS: u64 = 5;

/// What the twin predicts for one router's live run, ms.
#[derive(Debug, Clone, Default)]
pub struct Prediction {
    /// Mean latency of the twin built from the profiles alone (no calibration).
    pub raw: MeanStd,
    /// Mean agent-side latency of the calibrated twin (overheads added, no transport).
    pub agent_side: MeanStd,
    /// Calibrated end-to-end: `agent_side` plus the calibration's mean transport delay.
    pub end_to_end: f64,
    /// Share of the calibrated twin's results per device (agent), in fleet order.
    pub shares: Vec<f64>,
}

/// The twin fleet and scenario: one device per agent from the profile it publishes, only the
/// live model, each slowed from t = 0 by its agent's factor; calibrated when `calibration` is
/// given (its overheads, its batching delay; its transport is left to the caller).
fn twin(
    args: &EvalArgs,
    requests: usize,
    calibration: Option<&Calibration>,
) -> anyhow::Result<(Fleet, Scenario)> {
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
    if let Some(c) = calibration {
        c.apply(&mut fleet);
        fleet.transport = None;
        scenario.max_queue_delay_ms = c.max_queue_delay_ms;
    }
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

/// Mean latency of `kind` on the twin over [`TWIN_SEEDS`] seeds, and each device's share of
/// the results.
fn mean_latency(
    args: &EvalArgs,
    kind: RouterKind,
    calibration: Option<&Calibration>,
) -> anyhow::Result<(MeanStd, Vec<f64>)> {
    let requests = (args.live_rate * args.live_duration.as_secs_f64())
        .round()
        .max(1.0) as usize;
    let (fleet, scenario) = twin(args, requests, calibration)?;
    let settings = RouterSettings {
        policy: (kind == RouterKind::Ppo).then(|| policy_path(args, args.live_preset)),
        ..RouterSettings::default()
    };
    let mut router = build_router(kind, &settings)?;
    let mut per_device = vec![0usize; fleet.devices.len()];
    let means: Vec<f64> = (0..TWIN_SEEDS)
        .map(|i| {
            let mut sim = Simulator::new(&fleet, &scenario, EVAL_SEED_BASE + 1000 + i);
            sim.run(router.as_mut(), &RewardPreset::Efficiency.weights());
            for r in sim.records() {
                per_device[usize::from(r.device)] += 1;
            }
            RunMetrics::from_records(sim.records(), 1.0).latency_ms
        })
        .collect();
    let total = per_device.iter().sum::<usize>().max(1) as f64;
    let shares = per_device.iter().map(|&n| n as f64 / total).collect();
    Ok((MeanStd::of(&means), shares))
}

/// The twin's predictions for `kind`, raw and calibrated.
pub fn predict(
    args: &EvalArgs,
    kind: RouterKind,
    calibration: &Calibration,
) -> anyhow::Result<Prediction> {
    let (agent_side, shares) = mean_latency(args, kind, Some(calibration))?;
    Ok(Prediction {
        raw: mean_latency(args, kind, None)?.0,
        agent_side,
        end_to_end: agent_side.mean + calibration.transport.mean_ms,
        shares,
    })
}

/// Kendall's rank correlation (tau-b) of two equally long series; 0 when fewer than two items
/// or either series is constant.
pub fn kendall_tau(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (mut concordant, mut discordant, mut ties_a, mut ties_b) = (0.0f64, 0.0, 0.0, 0.0);
    for i in 0..n {
        for j in i + 1..n {
            let (x, y) = ((a[i] - a[j]).signum(), (b[i] - b[j]).signum());
            match (a[i] == a[j], b[i] == b[j]) {
                (true, true) => {}
                (true, false) => ties_a += 1.0,
                (false, true) => ties_b += 1.0,
                (false, false) if x == y => concordant += 1.0,
                (false, false) => discordant += 1.0,
            }
        }
    }
    let denominator =
        ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)).sqrt();
    if denominator == 0.0 {
        0.0
    } else {
        (concordant - discordant) / denominator
    }
}

fn within(measured: f64, predicted: f64, tolerance: f64) -> &'static str {
    if predicted > 0.0 && (measured / predicted - 1.0).abs() <= tolerance + 1e-9 {
        "yes"
    } else {
        "**no**"
    }
}

/// The sim-to-real table: raw and calibrated predictions against the live measurements.
pub fn table(rows: &[LiveRow]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| router | measured mean ms | raw twin ms (± std over {TWIN_SEEDS} seeds) | measured / raw | calibrated twin ms | measured / calibrated | within ±{:.0} % | measured agent-side ms | calibrated agent-side ms | measured / calibrated | within ±{:.0} % | calibrated twin's results per agent |", 100.0 * END_TO_END_TOLERANCE, 100.0 * AGENT_SIDE_TOLERANCE);
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let p = &r.predicted;
        if r.answered == 0 {
            let _ = writeln!(
                t,
                "| {} | — | {} | n/a (nothing answered) | {:.3} | — | — | — | {:.3} | — | — | {} |",
                r.name,
                p.raw.show(3),
                p.end_to_end,
                p.agent_side.mean,
                shares(&p.shares)
            );
            continue;
        }
        let measured = r.metrics.latency_ms;
        let agent = r.agent_ms[0] + r.agent_ms[1];
        let _ = writeln!(
            t,
            "| {} | {measured:.3} | {} | {:.2} | {:.3} | {:.2} | {} | {agent:.3} | {:.3} | {:.2} | {} | {} |",
            r.name,
            p.raw.show(3),
            measured / p.raw.mean,
            p.end_to_end,
            measured / p.end_to_end,
            within(measured, p.end_to_end, END_TO_END_TOLERANCE),
            p.agent_side.mean,
            agent / p.agent_side.mean,
            within(agent, p.agent_side.mean, AGENT_SIDE_TOLERANCE),
            shares(&p.shares),
        );
    }
    t
}

/// Shares per agent as the live table prints them (`#1 67%, #2 23%`).
fn shares(shares: &[f64]) -> String {
    shares
        .iter()
        .enumerate()
        .map(|(i, s)| format!("#{} {:.0}%", i + 1, 100.0 * s))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verdict under the table: targets met per router, and whether the twin ranks the routers
/// as the live runs do.
pub fn verdict(rows: &[LiveRow]) -> String {
    let answered: Vec<&LiveRow> = rows.iter().filter(|r| r.answered > 0).collect();
    if answered.is_empty() {
        return "No router answered live, so the twin cannot be checked.\n".into();
    }
    let e2e_ok = answered
        .iter()
        .filter(|r| {
            within(
                r.metrics.latency_ms,
                r.predicted.end_to_end,
                END_TO_END_TOLERANCE,
            ) == "yes"
        })
        .count();
    let agent_ok = answered
        .iter()
        .filter(|r| {
            within(
                r.agent_ms[0] + r.agent_ms[1],
                r.predicted.agent_side.mean,
                AGENT_SIDE_TOLERANCE,
            ) == "yes"
        })
        .count();
    let live: Vec<f64> = answered.iter().map(|r| r.metrics.latency_ms).collect();
    let calibrated: Vec<f64> = answered.iter().map(|r| r.predicted.end_to_end).collect();
    let raw: Vec<f64> = answered.iter().map(|r| r.predicted.raw.mean).collect();
    format!(
        "Calibrated, the twin's end-to-end mean is within ±{:.0} % of the live one for {e2e_ok} of {n} routers and its agent-side mean within ±{:.0} % for {agent_ok} of {n}. Ranking the routers by mean latency, Kendall's tau between live and twin is {:.2} calibrated and {:.2} raw (target ≥ 0.8; over the {n} routers at this one load, so one swapped pair moves it by {:.2}).\n",
        100.0 * END_TO_END_TOLERANCE,
        100.0 * AGENT_SIDE_TOLERANCE,
        kendall_tau(&live, &calibrated),
        kendall_tau(&live, &raw),
        if answered.len() > 1 {
            4.0 / (answered.len() * (answered.len() - 1)) as f64
        } else {
            0.0
        },
        n = answered.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kendall_tau_is_one_for_the_same_order_and_minus_one_for_the_reverse() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((kendall_tau(&a, &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
        assert!((kendall_tau(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // one swapped pair of six: (5 − 1) / 6
        assert!((kendall_tau(&a, &[1.0, 3.0, 2.0, 4.0]) - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(kendall_tau(&a, &[1.0, 1.0, 1.0, 1.0]), 0.0);
        assert_eq!(kendall_tau(&[1.0], &[2.0]), 0.0);
    }

    #[test]
    fn within_a_tolerance_is_judged_on_the_ratio() {
        assert_eq!(within(1.3, 1.0, 0.3), "yes");
        assert_eq!(within(0.7, 1.0, 0.3), "yes");
        assert_eq!(within(1.31, 1.0, 0.3), "**no**");
        assert_eq!(within(1.0, 0.0, 0.3), "**no**");
    }
}
