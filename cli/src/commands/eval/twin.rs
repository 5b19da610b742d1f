//! The simulator twin of the live cluster, calibrated from a separate live run, and how well it
//! predicts each router's live results.

use std::fmt::Write as _;

use anyhow::Context;
use slim_router::calibration::Calibration;
use slim_router::eval::capacity::sustainable_capacity_per_s;
use slim_router::eval::EVAL_SEED_BASE;
use slim_router::fleet::Fleet;
use slim_router::reward::RewardPreset;
use slim_router::sim::{FleetEvent, FleetEventKind, Scenario, Simulator};
use slim_router::{build_router, RouterKind, RouterSettings};

use super::live::LiveCell;
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

/// The twin fleet and scenario at `rate_per_s`: one device per agent from the profile it
/// publishes, only the live model, each slowed from t = 0 by its agent's factor;
/// `--live-deadline-share` of the requests carry the deadline `--live-budget-ms`, none an
/// accuracy floor, as live; calibrated when `calibration` is given (its overheads, its batching
/// delay; its transport is left to the caller).
fn twin(
    args: &EvalArgs,
    rate_per_s: f64,
    calibration: Option<&Calibration>,
) -> anyhow::Result<(Fleet, Scenario)> {
    let mut fleet = Fleet::load(
        &args.fleet.profiles,
        &args.fleet.models,
        &args.cluster.agent_profiles,
    )
    .context("loading the live twin fleet")?;
    fleet.models.retain(|m| m.name == args.live_model);
    anyhow::ensure!(
        !fleet.models.is_empty(),
        "the live profiles {:?} have no points for {}",
        args.cluster.agent_profiles,
        args.live_model
    );
    let requests = (rate_per_s * args.live_duration.as_secs_f64())
        .round()
        .max(1.0) as usize;
    let mut scenario = Scenario::steady(&fleet, requests, 0.5);
    if let Some(c) = calibration {
        c.apply(&mut fleet);
        fleet.transport = None;
        scenario.max_queue_delay_ms = c.max_queue_delay_ms;
    }
    scenario.rate_per_s = rate_per_s;
    scenario.model_mix = vec![1.0];
    scenario.floor_prob = 0.0;
    scenario.batch_sizes = batch_sizes();
    scenario.events = args
        .cluster
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
    // the simulator draws deadlines in multiples of the model's reference latency: one fixed
    // multiple gives the live budget
    let reference = Simulator::new(&fleet, &scenario, 0).scales()[0].latency_ms;
    let factor = f64::from(args.live_budget_ms) / f64::from(reference).max(1e-6);
    scenario.deadline_prob = args.live_deadline_share;
    scenario.deadline_factor = (factor, factor);
    Ok((fleet, scenario))
}

/// Requests per second the live cluster sustains at best, from its twin: each agent at its
/// cheapest width and batch, slowed by its factor; with `calibration`, with the fitted
/// per-batch overheads (see [`slim_router::eval::sustainable_capacity_per_s`]).
pub fn capacity_per_s(args: &EvalArgs, calibration: Option<&Calibration>) -> anyhow::Result<f64> {
    let (mut fleet, scenario) = twin(args, 1.0, calibration)?;
    for (device, slowdown) in fleet.devices.iter_mut().zip(&args.cluster.slowdowns) {
        for point in &mut device.profile.points {
            point.latency_ms *= slowdown;
        }
    }
    Ok(sustainable_capacity_per_s(
        &fleet,
        &[1.0],
        &scenario.batch_sizes,
    ))
}

/// Mean latency of `kind` on the twin at `rate_per_s` over [`TWIN_SEEDS`] seeds, and each
/// device's share of the results.
fn mean_latency(
    args: &EvalArgs,
    kind: RouterKind,
    rate_per_s: f64,
    calibration: Option<&Calibration>,
) -> anyhow::Result<(MeanStd, Vec<f64>)> {
    let (fleet, scenario) = twin(args, rate_per_s, calibration)?;
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

/// The twin's predictions for `kind` at `rate_per_s`, raw and calibrated.
pub fn predict(
    args: &EvalArgs,
    kind: RouterKind,
    rate_per_s: f64,
    calibration: &Calibration,
) -> anyhow::Result<Prediction> {
    let (agent_side, shares) = mean_latency(args, kind, rate_per_s, Some(calibration))?;
    Ok(Prediction {
        raw: mean_latency(args, kind, rate_per_s, None)?.0,
        agent_side,
        end_to_end: agent_side.mean + calibration.transport.mean_ms,
        shares,
    })
}

fn within(measured: f64, predicted: f64, tolerance: f64) -> &'static str {
    if predicted > 0.0 && (measured / predicted - 1.0).abs() <= tolerance + 1e-9 {
        "yes"
    } else {
        "**no**"
    }
}

/// The sim-to-real table: raw and calibrated predictions against the live means over runs, per
/// load and router.
pub fn table(cells: &[LiveCell]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| load | router | live runs kept up | measured mean ms (mean of runs) | raw twin ms (± std over {TWIN_SEEDS} seeds) | measured / raw | calibrated twin ms | measured / calibrated | within ±{:.0} % | measured agent-side ms | calibrated agent-side ms | measured / calibrated | within ±{:.0} % | calibrated twin's results per agent |", 100.0 * END_TO_END_TOLERANCE, 100.0 * AGENT_SIDE_TOLERANCE);
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for c in cells {
        let kept = format!("{} of {}", c.kept_up(), c.runs.len());
        let p = &c.predicted;
        if c.answered() == 0 {
            let _ = writeln!(
                t,
                "| {:.2} | {} | {kept} | — | {} | n/a (nothing answered) | {:.3} | — | — | — | {:.3} | — | — | {} |",
                c.load,
                c.name,
                p.raw.show(3),
                p.end_to_end,
                p.agent_side.mean,
                shares(&p.shares)
            );
            continue;
        }
        let (measured, agent) = measured(c);
        let _ = writeln!(
            t,
            "| {:.2} | {} | {kept} | {measured:.3} | {} | {:.2} | {:.3} | {:.2} | {} | {agent:.3} | {:.3} | {:.2} | {} | {} |",
            c.load,
            c.name,
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

/// Measured end-to-end and agent-side (queue + compute) means of a cell, over its runs.
fn measured(c: &LiveCell) -> (f64, f64) {
    (
        c.mean(|r| r.latency_ms[0]).mean,
        c.mean(|r| r.agent_ms[0] + r.agent_ms[1]).mean,
    )
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

/// Kendall's tau pooled over loads: the routers are ranked within each load only, and the
/// concordant and discordant pairs of all loads are summed (tau-b's denominator summed the
/// same way). `groups` holds, per load, the (measured, predicted) pairs of its routers.
pub fn pooled_tau(groups: &[Vec<(f64, f64)>]) -> f64 {
    let (mut s, mut da, mut db) = (0.0f64, 0.0f64, 0.0f64);
    for g in groups {
        for i in 0..g.len() {
            for j in i + 1..g.len() {
                let (x, y) = ((g[i].0 - g[j].0).signum(), (g[i].1 - g[j].1).signum());
                let (tie_a, tie_b) = (g[i].0 == g[j].0, g[i].1 == g[j].1);
                if !tie_a && !tie_b {
                    s += x * y;
                }
                da += f64::from(u8::from(!tie_a));
                db += f64::from(u8::from(!tie_b));
            }
        }
    }
    if da == 0.0 || db == 0.0 {
        0.0
    } else {
        s / (da * db).sqrt()
    }
}

/// The verdict under the table: targets met per (router, load), and whether the twin ranks
/// the routers as the live runs do at each load and over all loads.
pub fn verdict(cells: &[LiveCell]) -> String {
    let answered: Vec<&LiveCell> = cells.iter().filter(|c| c.answered() > 0).collect();
    if answered.is_empty() {
        return "No router answered live, so the twin cannot be checked.\n".into();
    }
    // an overloaded live run loses what its drain does not answer and averages the rest, while
    // the twin's queue keeps growing: their means are not comparable, only the order is
    let stable: Vec<&&LiveCell> = answered
        .iter()
        .filter(|c| c.kept_up() == c.runs.len())
        .collect();
    let e2e_ok = stable
        .iter()
        .filter(|c| within(measured(c).0, c.predicted.end_to_end, END_TO_END_TOLERANCE) == "yes")
        .count();
    let agent_ok = stable
        .iter()
        .filter(|c| {
            within(
                measured(c).1,
                c.predicted.agent_side.mean,
                AGENT_SIDE_TOLERANCE,
            ) == "yes"
        })
        .count();
    let mut loads: Vec<f64> = answered.iter().map(|c| c.load).collect();
    loads.dedup();
    let group = |load: f64, raw: bool| -> Vec<(f64, f64)> {
        answered
            .iter()
            .filter(|c| c.load == load)
            .map(|c| {
                let p = if raw {
                    c.predicted.raw.mean
                } else {
                    c.predicted.end_to_end
                };
                (measured(c).0, p)
            })
            .collect()
    };
    let per_load = loads
        .iter()
        .map(|&l| format!("{:.2} at load {l:.2}", pooled_tau(&[group(l, false)])))
        .collect::<Vec<_>>()
        .join(", ");
    let calibrated: Vec<_> = loads.iter().map(|&l| group(l, false)).collect();
    let raw: Vec<_> = loads.iter().map(|&l| group(l, true)).collect();
    format!(
        "Calibrated, the twin's end-to-end mean is within ±{:.0} % of the live one (mean of the runs) for {e2e_ok} of the {n} (router, load) cells whose live runs all kept up, and its agent-side mean within ±{:.0} % for {agent_ok} of {n} (a cell that did not keep up is not judged: live loses what the drain does not answer and averages the rest, while the twin's queue keeps growing). Ranking the routers by mean latency within each load, Kendall's tau between live and twin is {:.2} calibrated and {:.2} raw over the {} loads (target ≥ 0.8), per load: {per_load}.\n",
        100.0 * END_TO_END_TOLERANCE,
        100.0 * AGENT_SIDE_TOLERANCE,
        pooled_tau(&calibrated),
        pooled_tau(&raw),
        loads.len(),
        n = stable.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tau(a: &[f64], b: &[f64]) -> f64 {
        pooled_tau(&[a.iter().copied().zip(b.iter().copied()).collect()])
    }

    #[test]
    fn kendall_tau_is_one_for_the_same_order_and_minus_one_for_the_reverse() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((tau(&a, &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
        assert!((tau(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // one swapped pair of six: (5 − 1) / 6
        assert!((tau(&a, &[1.0, 3.0, 2.0, 4.0]) - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(tau(&a, &[1.0, 1.0, 1.0, 1.0]), 0.0);
        assert_eq!(tau(&[1.0], &[2.0]), 0.0);
    }

    #[test]
    fn pooled_tau_ranks_within_each_load_only() {
        // across loads the latencies differ by orders of magnitude; that must not count
        let low = vec![(1.0, 1.1), (2.0, 2.2), (3.0, 3.3)];
        let high = vec![(100.0, 5.0), (200.0, 6.0), (300.0, 4.0)];
        // low: 3 concordant; high: 1 concordant, 2 discordant -> (3 + 1 - 2) / 6
        assert!((pooled_tau(&[low.clone(), high]) - 2.0 / 6.0).abs() < 1e-12);
        assert!((pooled_tau(&[low.clone(), low]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn within_a_tolerance_is_judged_on_the_ratio() {
        assert_eq!(within(1.3, 1.0, 0.3), "yes");
        assert_eq!(within(0.7, 1.0, 0.3), "yes");
        assert_eq!(within(1.31, 1.0, 0.3), "**no**");
        assert_eq!(within(1.0, 0.0, 0.3), "**no**");
    }
}
