//! The markdown tables of the simulator part: keep-up marks, metrics per load, cuts against a
//! baseline (only where it keeps up) and PPO against the best heuristic, with paired bootstrap
//! intervals.

use std::fmt::Write as _;

use slim_router::eval::bootstrap::{cut_percent, mean_difference, Interval, Verdict};
use slim_router::eval::sweep::SeedRun;
use slim_router::reward::RewardPreset;

use super::sim::{Entry, SimResults};

/// A per-run figure.
pub type Metric = fn(&SeedRun) -> f64;

/// Mean latency, ms.
pub fn latency(r: &SeedRun) -> f64 {
    r.summary.mean_latency_ms
}

/// Mean modelled energy per request, mJ: each batch charged its device's power while it runs.
pub fn energy(r: &SeedRun) -> f64 {
    r.summary.mean_energy_mj
}

/// The whole fleet's modelled energy over the run, idle devices included, per request, mJ.
pub fn fleet_energy(r: &SeedRun) -> f64 {
    r.summary.fleet_energy_per_request_mj
}

fn values(runs: &[SeedRun], f: impl Fn(&SeedRun) -> f64) -> Vec<f64> {
    runs.iter().map(f).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Seeds on which the router kept up, out of all.
pub fn kept(runs: &[SeedRun]) -> (usize, usize) {
    let k = runs.iter().filter(|r| r.keep_up.keeps_up).count();
    (k, runs.len())
}

/// Whether the router kept up on every seed.
pub fn keeps_up(runs: &[SeedRun]) -> bool {
    let (k, n) = kept(runs);
    n > 0 && k == n
}

fn header(res: &SimResults, first: &str, shifting: bool) -> String {
    let mut t = format!("| {first} |");
    for l in &res.loads {
        let _ = write!(t, " {l:.2} |");
    }
    if shifting {
        t.push_str(" shifting + churn |");
    }
    let cols = res.loads.len() + 1 + usize::from(shifting);
    let _ = write!(t, "\n|{}\n", "---|".repeat(cols));
    t
}

fn cells(res: &SimResults, i: usize, shifting: bool) -> impl Iterator<Item = &Vec<SeedRun>> {
    let runs = &res.runs[i];
    runs.by_load
        .iter()
        .chain(shifting.then_some(&runs.shifting))
}

/// Which routers keep up at which load: ✓ on every seed, else ✗ and on how many.
pub fn keep_up_table(res: &SimResults) -> String {
    let mut t = header(res, "router \\ offered load", true);
    for (i, e) in res.entries.iter().enumerate() {
        let _ = write!(t, "| {} |", e.name);
        for runs in cells(res, i, true) {
            let (k, n) = kept(runs);
            let _ = write!(
                t,
                " {} |",
                if k == n {
                    "✓".to_string()
                } else {
                    format!("✗ {k}/{n}")
                }
            );
        }
        t.push('\n');
    }
    t
}

/// Mean of `f` over seeds per router and load; cells where the router does not keep up on every
/// seed carry "(✗)": their value grows with the run's length.
pub fn metric_table(
    res: &SimResults,
    f: impl Fn(&SeedRun) -> f64 + Copy,
    decimals: usize,
) -> String {
    let mut t = header(res, "router", true);
    for (i, e) in res.entries.iter().enumerate() {
        let _ = write!(t, "| {} |", e.name);
        for runs in cells(res, i, true) {
            let mark = if keeps_up(runs) { "" } else { " (✗)" };
            let _ = write!(t, " {:.*}{mark} |", decimals, mean(&values(runs, f)));
        }
        t.push('\n');
    }
    t
}

/// Cut of each router against `baseline` (percent, 95 % paired bootstrap interval) per load,
/// printed only where both keep up.
pub fn cut_table(res: &SimResults, baseline: usize, f: Metric) -> String {
    let mut t = header(res, "router", false);
    for (i, e) in res
        .entries
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != baseline)
    {
        let _ = write!(t, "| {} |", e.name);
        for (runs, base) in res.runs[i].by_load.iter().zip(&res.runs[baseline].by_load) {
            let cell = if !keeps_up(base) {
                "baseline overloaded".to_string()
            } else if !keeps_up(runs) {
                "router overloaded".to_string()
            } else {
                format!(
                    "{} %",
                    cut_percent(&values(runs, f), &values(base, f)).show(1)
                )
            };
            let _ = write!(t, " {cell} |");
        }
        t.push('\n');
    }
    t
}

/// One PPO-against-best-heuristic comparison.
pub struct Versus {
    /// Load (None: the shifting scenarios).
    pub load: Option<f64>,
    /// The best heuristic's name and mean cost, if one keeps up.
    pub best: Option<(String, f64)>,
    /// PPO's mean cost and whether it keeps up.
    pub ppo: (f64, bool),
    /// PPO − heuristic cost, when both keep up.
    pub diff: Option<Interval>,
}

/// PPO entry `i` (preset index `p`) against the heuristic of lowest mean preset cost among
/// those that keep up, at each load; on the shifting scenarios (whose rate steps and device
/// losses fail the keep-up test by design) among all heuristics, whether they keep up or not.
pub fn versus(res: &SimResults, i: usize, p: usize) -> Vec<Versus> {
    let cost = |r: &SeedRun| r.costs[p];
    let n = res.loads.len();
    (0..=n)
        .map(|c| {
            let pick = |j: usize| {
                if c < n {
                    &res.runs[j].by_load[c]
                } else {
                    &res.runs[j].shifting
                }
            };
            let best = res
                .entries
                .iter()
                .enumerate()
                .filter(|(j, e)| e.heuristic && (c == n || keeps_up(pick(*j))))
                .map(|(j, e)| (j, e, mean(&values(pick(j), cost))))
                .min_by(|a, b| a.2.total_cmp(&b.2));
            let ppo_runs = pick(i);
            let ppo = (mean(&values(ppo_runs, cost)), c == n || keeps_up(ppo_runs));
            let diff = best
                .filter(|_| ppo.1)
                .map(|(j, _, _)| mean_difference(&values(ppo_runs, cost), &values(pick(j), cost)));
            Versus {
                load: (c < n).then(|| res.loads[c]),
                best: best.map(|(_, e, m)| (e.name.clone(), m)),
                ppo,
                diff,
            }
        })
        .collect()
}

/// The PPO entries of `res` with their preset and its index in `res.presets`, as
/// `(entry index, entry, preset, preset index)`.
pub fn ppo_entries(res: &SimResults) -> impl Iterator<Item = (usize, &Entry, RewardPreset, usize)> {
    res.entries.iter().enumerate().filter_map(|(i, e)| {
        let (preset, _) = e.ppo?;
        let p = res.presets.iter().position(|x| *x == preset).unwrap_or(0);
        Some((i, e, preset, p))
    })
}

/// Appends one PPO-against-best-heuristic row to `t`: the `lead` cells (joined with ` | `),
/// then the best heuristic, its cost, the checkpoint's cost (✗: it does not keep up), the
/// difference with its interval and the verdict. `no_best` is the verdict when the checkpoint
/// keeps up but there is no heuristic to compare with.
pub fn versus_row(t: &mut String, lead: &str, v: &Versus, no_best: &str) {
    let (best, best_cost) = v
        .best
        .clone()
        .map_or(("none keeps up".into(), "—".into()), |(n, c)| {
            (n, format!("{c:.3}"))
        });
    let ppo = format!("{:.3}{}", v.ppo.0, if v.ppo.1 { "" } else { " (✗)" });
    let (diff, verdict) = match (&v.diff, v.ppo.1) {
        (Some(d), _) => (d.show(3), d.verdict().as_str().to_string()),
        (None, false) => ("—".into(), "checkpoint overloaded".into()),
        (None, true) => ("—".into(), no_best.to_string()),
    };
    let _ = writeln!(
        t,
        "| {lead} | {best} | {best_cost} | {ppo} | {diff} | {verdict} |"
    );
}

/// The PPO-against-best-heuristic table of every PPO entry.
pub fn versus_table(res: &SimResults) -> String {
    let mut t = String::from("| checkpoint | preset cost of | offered load | best heuristic (lowest mean cost among those keeping up) | its cost | checkpoint's cost | checkpoint − heuristic [95 % CI] | verdict |\n|---|---|---|---|---|---|---|---|\n");
    for (i, e, preset, p) in ppo_entries(res) {
        for v in versus(res, i, p) {
            let load = v
                .load
                .map_or("shifting + churn".into(), |l| format!("{l:.2}"));
            let lead = format!("{} | {} | {load}", e.name, preset.as_str());
            versus_row(&mut t, &lead, &v, "no heuristic to compare");
        }
    }
    t
}

/// How many comparisons of PPO entry `i` ended in each verdict: (better, worse, no difference).
pub fn tally(rows: &[Versus]) -> (usize, usize, usize) {
    let count = |v: Verdict| {
        rows.iter()
            .filter(|r| r.diff.is_some_and(|d| d.verdict() == v))
            .count()
    };
    (
        count(Verdict::Better),
        count(Verdict::Worse),
        count(Verdict::NoSignificantDifference),
    )
}
