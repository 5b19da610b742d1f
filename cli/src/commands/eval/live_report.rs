//! The report's live section: the table of the live runs per load and router, the comparison
//! of routers on the same workload seeds, and the text around the sim-to-real table.

use std::fmt::Write as _;

use slim_router::eval::EVAL_SEED_BASE;

use super::live::{LiveCell, LivePart, CALIBRATION_SEED_OFFSET};
use super::stats::MeanCi;
use super::twin;
use super::{policy_path, EvalArgs};
use crate::commands::calibrate::LiveClusterArgs;

fn percent(ci: MeanCi) -> MeanCi {
    MeanCi {
        mean: 100.0 * ci.mean,
        half: 100.0 * ci.half,
        n: ci.n,
    }
}

/// The live results table: one row per (load, router), each figure the mean over the runs with
/// its 95 % interval where it matters.
pub fn table(cells: &[LiveCell], budget_ms: u32) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| load (req/s) | router | kept up (runs) | mean latency ms [95 % CI] | p95 ms [95 % CI] | p99 ms [95 % CI] | energy mJ/result (modelled) [95 % CI] | deadline met % [95 % CI] | answered ≤ {budget_ms} ms % | accuracy % (manifest) | mean width (widths used) | agent queue / compute ms | sent / answered / errors / lost (all runs) | results per agent (slowdown 1st, 2nd, …) |");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for c in cells {
        let load = format!("{:.2} ({:.0})", c.load, c.rate);
        let counts = format!(
            "{} / {} / {} / {}",
            c.total(0),
            c.total(1),
            c.total(2),
            c.total(3)
        );
        if c.answered() == 0 {
            let _ = writeln!(
                t,
                "| {load} | {} | 0 of {} | — | — | — | — | 0.0 | 0.0 | — | — | — | {counts} | none: {} |",
                c.name,
                c.runs.len(),
                errors(c)
            );
            continue;
        }
        let _ = writeln!(
            t,
            "| {load} | {} | {} of {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.3} ({}) | {:.2} / {:.2} | {counts} | {} |",
            c.name,
            c.kept_up(),
            c.runs.len(),
            c.mean(|r| r.latency_ms[0]).show(2),
            c.mean(|r| r.latency_ms[1]).show(1),
            c.mean(|r| r.latency_ms[2]).show(1),
            c.mean(|r| r.energy_mj).show(3),
            percent(c.mean(|r| r.deadline_met)).show(1),
            100.0 * c.mean(|r| r.within_budget).mean,
            100.0 * c.mean(|r| r.accuracy).mean,
            c.mean(|r| r.width).mean,
            widths(c),
            c.mean(|r| r.agent_ms[0]).mean,
            c.mean(|r| r.agent_ms[1]).mean,
            agents(c),
        );
    }
    t
}

/// Error replies over the runs, by code.
fn errors(c: &LiveCell) -> String {
    let mut by_code = std::collections::BTreeMap::<&str, usize>::new();
    for r in &c.runs {
        for (code, n) in &r.errors {
            *by_code.entry(code.as_str()).or_default() += n;
        }
    }
    by_code
        .iter()
        .map(|(code, n)| format!("{code} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Share of results per width over the runs (`0.25x 80%, 1.00x 20%`).
fn widths(c: &LiveCell) -> String {
    let mut by_width = std::collections::BTreeMap::<u16, usize>::new();
    for r in &c.runs {
        for (w, n) in &r.widths {
            *by_width.entry(*w).or_default() += n;
        }
    }
    slim_client::load::width_mix(&by_width, ", ")
}

/// Share of results per agent over the runs (`#1 67%, #2 23%`).
fn agents(c: &LiveCell) -> String {
    let mut by_agent = std::collections::BTreeMap::<&str, usize>::new();
    for r in &c.runs {
        for (agent, n) in &r.agents {
            *by_agent.entry(agent.as_str()).or_default() += n;
        }
    }
    let total = by_agent.values().sum::<usize>().max(1) as f64;
    by_agent
        .iter()
        .map(|(agent, n)| format!("#{agent} {:.0}%", 100.0 * *n as f64 / total))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per load, the router with the lowest mean latency among those that kept up in every run,
/// and each other router's paired difference from it (same workload seeds) with its 95 %
/// interval.
pub fn comparison(cells: &[LiveCell]) -> String {
    let mut d = String::new();
    let mut loads: Vec<f64> = cells.iter().map(|c| c.load).collect();
    loads.dedup();
    for load in loads {
        let at: Vec<&LiveCell> = cells.iter().filter(|c| c.load == load).collect();
        let stable: Vec<&&LiveCell> = at
            .iter()
            .filter(|c| c.answered() > 0 && c.kept_up() == c.runs.len())
            .collect();
        let Some(best) = stable.iter().min_by(|a, b| {
            let m = |c: &LiveCell| c.mean(|r| r.latency_ms[0]).mean;
            m(a).total_cmp(&m(b))
        }) else {
            let _ = writeln!(
                d,
                "- Load {load:.2}: no router kept up in every run, so none is compared."
            );
            continue;
        };
        let others = stable
            .iter()
            .filter(|c| c.name != best.name)
            .map(|c| {
                let diff: Vec<f64> = c
                    .runs
                    .iter()
                    .zip(&best.runs)
                    .map(|(a, b)| a.latency_ms[0] - b.latency_ms[0])
                    .collect();
                format!("{} {} ms", c.name, MeanCi::of(&diff).show(2))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let unstable = at
            .iter()
            .filter(|c| c.answered() == 0 || c.kept_up() < c.runs.len())
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            d,
            "- Load {load:.2}: lowest mean latency among the routers that kept up in every run: **{}** ({} ms). Each other router's mean latency minus it, paired by seed: {}. Did not keep up in every run (not compared): {}.",
            best.name,
            best.mean(|r| r.latency_ms[0]).show(2),
            if others.is_empty() { "none".into() } else { others },
            if unstable.is_empty() { "none".into() } else { unstable },
        );
    }
    d
}

/// The report's live section, around the two tables.
pub fn section(args: &EvalArgs, part: &LivePart, tables: [&str; 2], plots: [&str; 2]) -> String {
    let mut d = String::new();
    let _ = writeln!(d, "## Live cluster over MQTT\n");
    let _ = writeln!(d, "{} agents on this machine (CPU backend, tract), standing for **emulated** devices, not real ones: {}. One coordinator runs each router in turn, a freshly started cluster for every run, broker: {}. Each agent publishes its profile (from `profiles/`; a slowed agent's was measured by `slim profile` at its thread count on the CPU its file's header names, which need not be this host's: the calibration's per-batch overheads absorb the difference, a paced agent's is the device it paces to) and its slowdown; the profile-based routers (greedy, PPO) read both and scale the profile's latencies by the slowdown. Workload: `{}` requests, open-loop Poisson for {:?} per run, 5 s drain; {:.0} % of the requests carry a {} ms deadline, none an accuracy floor. **Loads** are fractions of the cluster's capacity, {:.0} requests/s: the calibrated twin's best sustainable rate (each agent at its cheapest width and batch, slowed by its factor, running as many batches at once as it announced, with the fitted per-batch overheads; {:.0}/s from the raw profiles). It is an upper bound: a router that uses wider models or fills fewer batches saturates below it. {} runs per router and load with workload seeds {}..{} (the same seeds for every router, so differences are paired); the intervals are Student t over the runs. A run **kept up** when at least 99 % of the requests sent got a result and requests sent in the last third of the window took at most 2× as long as those of the first third + 5 ms. Energy is the agents' labelled energy model (source `{}`: this host's full-load power × the cores a batch used × its compute time; for a paced agent, its profile's power × the paced time), not a sensor. PPO loads `{}`. \"deadline met\" is over the requests sent with a deadline, \"answered ≤ {} ms\" over all requests sent (lost and refused requests count as misses).\n",
        args.cluster.slowdowns.len(),
        agents_text(&args.cluster),
        args.broker.as_deref().map_or("embedded (rumqttd)".to_string(), |u| format!("external `{u}`")),
        args.live_model,
        args.live_duration,
        100.0 * args.live_deadline_share,
        args.live_budget_ms,
        part.capacity[1],
        part.capacity[0],
        args.live_runs,
        args.live_seed,
        args.live_seed + args.live_runs - 1,
        part.cells.iter().flat_map(|c| &c.runs).map(|r| r.energy_source.as_str()).find(|s| !s.is_empty()).unwrap_or(""),
        policy_path(args, args.live_preset).display(),
        args.live_budget_ms,
    );
    d.push_str(tables[0]);
    d.push_str(&pace_text(&args.cluster, &part.cells));
    let _ = writeln!(d, "\n{}", comparison(&part.cells));
    let _ = writeln!(d, "![live mean latency against load]({})\n", plots[0]);
    let _ = writeln!(d, "![live latency CDF per router]({})\n", plots[1]);
    let _ = writeln!(d, "### Sim-to-real check\n");
    d.push_str(&twin_text(args, part));
    d.push_str(tables[1]);
    d.push('\n');
    d.push_str(&twin::verdict(&part.cells));
    d.push('\n');
    for c in part.cells.iter().filter(|c| c.answered() == 0) {
        let _ = writeln!(d, "**{}** answered nothing live at load {:.2} ({}). The coordinator's PPO router scores (device, width, batch) candidates built from each agent's published *device profile*; a device without one has no batch options, so no candidate exists and each request is refused (the other routers do not need a profile).\n", c.name, c.load, errors(c));
    }
    d
}

/// How many batches ran slower than their emulated device, when any agent was paced.
fn pace_text(cluster: &LiveClusterArgs, cells: &[LiveCell]) -> String {
    if !cluster.paced.iter().any(|p| *p) {
        return String::new();
    }
    let share = |c: &LiveCell| {
        let (b, m) = c
            .runs
            .iter()
            .fold((0, 0), |(b, m), r| (b + r.pace.batches, m + r.pace.missed));
        (m, b, 100.0 * m as f64 / b.max(1) as f64)
    };
    let (missed, batches) = cells
        .iter()
        .map(share)
        .fold((0, 0), |(m, b), (cm, cb, _)| (m + cm, b + cb));
    let mut text = format!("\nPacing: {missed} of {batches} batches ({:.1} %) over all runs took longer on this host than the emulated device's latency, so they ran slower than the emulation (the rest were held to it exactly).", 100.0 * missed as f64 / batches.max(1) as f64);
    if let Some(worst) = cells
        .iter()
        .max_by(|a, b| share(a).2.total_cmp(&share(b).2))
    {
        let (m, b, pct) = share(worst);
        let _ = write!(
            text,
            " Most in one cell: {} at load {:.2}, {m} of {b} ({pct:.1} %).",
            worst.name, worst.load
        );
    }
    text.push('\n');
    text
}

/// One phrase per agent: its profile, how it is emulated, its threads.
pub(crate) fn agents_text(cluster: &LiveClusterArgs) -> String {
    let agents: Vec<String> = cluster
        .slowdowns
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let profile = cluster.agent_profiles.get(i).map_or("-", String::as_str);
            let threads = cluster.threads.get(i).copied().unwrap_or(1);
            let how = if cluster.paced.get(i).copied().unwrap_or(false) {
                format!("paced to `{profile}` × {k} (each batch held to that device's profiled latency for its width and batch size, times {k})")
            } else if *k > 1.0 {
                format!("`{profile}` slowed {k}× (each batch sleeps (k − 1) × its real compute time)")
            } else {
                format!("`{profile}` at this host's speed")
            };
            format!("agent {} {how}, {threads} thread(s) per batch", i + 1)
        })
        .collect();
    agents.join("; ")
}

/// The paragraph that says how the twin was built and calibrated.
fn twin_text(args: &EvalArgs, part: &LivePart) -> String {
    let source = if part.fitted_here {
        format!("fitted by a separate live run before the routers' runs: the random router (it spreads the work over every agent, width and batch size) on the same cluster at {:.0} requests/s ({:.2} of the raw capacity, low enough for random to keep up, so the queues it measures are the hand-off's), no deadlines, workload seed {} (the routers' runs use seeds {}.., so every row below is held out from the fit)", part.calibration_rate, args.calibration_load, args.live_seed + CALIBRATION_SEED_OFFSET, args.live_seed)
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
    format!("The simulator twin of the live cluster: {} devices built from the profiles the agents publish ({:?}), restricted to the `{}` family, each slowed from t = 0 by its agent's factor ({:?}); a steady Poisson workload at each live rate for the same duration, with the same share of requests carrying the same deadline, the PPO batch sizes; the same router (PPO: the same checkpoint), 5 seeds (`{EVAL_SEED_BASE} + 1000..1005`). **Raw**, the twin charges each batch its profiled hot-loop latency and nothing outside the agents. **Calibrated** (`slim calibrate`, [router/src/calibration](../router/src/calibration/mod.rs)), {source}: each profile point gets the mean per-batch overhead the live agents showed at that (profile, width, batch) ({} fitted keys; live compute ÷ slowdown − profiled latency), the batching delay is the live coordinator's ({} ms), each device runs as many batches at once as its live agent announced ({}), and end-to-end adds the measured mean delay outside the agents ({:.3} ms over {} results: client → broker → coordinator → broker → agent → broker → client; p50 {:.3}, p95 {:.3} ms). Targets: calibrated end-to-end within ±{:.0} % of live, agent-side within ±{:.0} %, per router and load.\n\n",
        args.cluster.slowdowns.len(),
        args.cluster.agent_profiles,
        args.live_model,
        args.cluster.slowdowns,
        c.overheads.len(),
        c.max_queue_delay_ms,
        concurrency_text(c),
        c.transport.mean_ms,
        c.transport.samples,
        c.transport.quantile(0.5),
        c.transport.quantile(0.95),
        100.0 * twin::END_TO_END_TOLERANCE,
        100.0 * twin::AGENT_SIDE_TOLERANCE,
    )
}

/// Batches at once per profile, as the calibration recorded them.
fn concurrency_text(c: &slim_router::calibration::Calibration) -> String {
    if c.concurrency.is_empty() {
        return "none recorded: the profiles' `max_instances`, 1 when absent".into();
    }
    c.concurrency
        .iter()
        .map(|k| format!("`{}` {}", k.profile, k.batches))
        .collect::<Vec<_>>()
        .join(", ")
}
