//! The figures of the report: the simulator's latency and energy against load, and the live
//! runs' mean latency against load and latency CDF.

use std::path::PathBuf;

use anyhow::Context;
use slim_router::eval::bootstrap::paired;

use super::live::LivePart;
use super::plots::{self, CdfSeries, LoadSeries};
use super::sim::SimResults;
use super::stats::cdf;
use super::tables::{self, keeps_up};
use super::{plots_dir, EvalArgs};

/// Where the figures were written.
pub struct Figures {
    /// Simulator: mean latency and modelled energy against load.
    pub sim: [PathBuf; 2],
    /// Live: mean latency against load, and the latency CDF at the highest load.
    pub live: Option<[PathBuf; 2]>,
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

/// Per live router, its mean latency over runs with the 95 % interval, at the loads where
/// every run kept up.
fn live_series(part: &LivePart) -> Vec<LoadSeries> {
    let mut names: Vec<&str> = Vec::new();
    for c in &part.cells {
        if !names.contains(&c.name.as_str()) {
            names.push(&c.name);
        }
    }
    names
        .into_iter()
        .map(|name| LoadSeries {
            name: name.to_string(),
            points: part
                .cells
                .iter()
                .filter(|c| c.name == name && c.answered() > 0 && c.kept_up() == c.runs.len())
                .map(|c| {
                    let m = c.mean(|r| r.latency_ms[0]);
                    let half = if m.half.is_finite() { m.half } else { 0.0 };
                    (c.load, m.mean - half, m.mean, m.mean + half)
                })
                .collect(),
        })
        .collect()
}

/// The live figures, into `dir`.
fn draw_live(dir: &std::path::Path, part: &LivePart) -> anyhow::Result<[PathBuf; 2]> {
    let paths = [
        dir.join("live_latency_vs_load.svg"),
        dir.join("live_latency_cdf.svg"),
    ];
    plots::vs_load(
        &paths[0],
        "Live cluster: mean latency against load (mean over runs, 95 % CI; only where every run kept up)",
        "mean end-to-end latency, ms (log)",
        &live_series(part),
    )?;
    let top = part.cells.iter().map(|c| c.load).fold(0.0, f64::max);
    let series: Vec<CdfSeries> = part
        .cells
        .iter()
        .filter(|c| c.load == top)
        .map(|c| CdfSeries {
            name: c.name.clone(),
            points: cdf(
                &c.runs
                    .iter()
                    .flat_map(|r| r.latencies.iter().copied())
                    .collect::<Vec<_>>(),
                300,
            ),
        })
        .collect();
    plots::latency_cdf(
        &paths[1],
        &format!("Live cluster at load {top:.2}: latency CDF per router (all runs)"),
        &series,
    )?;
    Ok(paths)
}

/// Draws every figure into the plots folder.
pub fn draw(args: &EvalArgs, res: &SimResults, live: Option<&LivePart>) -> anyhow::Result<Figures> {
    let dir = plots_dir(args);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let sim = [
        dir.join("latency_vs_load.svg"),
        dir.join("energy_vs_load.svg"),
    ];
    let title = |what: &str| {
        format!("Simulator: {what} against load (mean over seeds, 95 % CI; only where the router keeps up)")
    };
    plots::vs_load(
        &sim[0],
        &title("mean latency"),
        "mean latency, ms (log)",
        &load_series(res, tables::latency),
    )?;
    plots::vs_load(
        &sim[1],
        &title("modelled energy"),
        "modelled energy per request, mJ (log)",
        &load_series(res, tables::energy),
    )?;
    let live = live.map(|part| draw_live(&dir, part)).transpose()?;
    Ok(Figures { sim, live })
}
