//! The PPO ablation of issue #16 (item 4), driven by `bench/ablations.sh` around `slim train`:
//!
//! - `slim eval --ablation-plan DIR` writes one `slim train --config` file per variant
//!   (`DIR/configs/<variant>.toml`) and prints the plan, one line per variant:
//!   `<variant> <train|prior> [extra slim train flags]`.
//! - `slim eval --ablations DIR` runs every checkpoint `DIR/<variant>/*.safetensors` and every
//!   heuristic on the same held-out seeds of the shifting-load, churn and mixed scenario families,
//!   and writes a report (`--out`): per variant and family the mean cost difference against the
//!   best heuristic with its 95 % paired interval, the spread over training seeds, and whether
//!   `PriorCheck` calls each checkpoint its prior.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use slim_router::eval::ablation::{
    meets_bar, pooled_difference, seed_means, Family, Spread, Variant, BAR_MIN_SEEDS, FAMILIES,
    VARIANTS,
};
use slim_router::eval::bootstrap::{mean_difference, Interval, Verdict, RESAMPLES};
use slim_router::eval::sweep::{run_seeds, SeedRun, SweepSpec};
use slim_router::eval::EVAL_STREAM_KEY;
use slim_router::ppo::net::PolicyWeights;
use slim_router::ppo::{Checkpoint, PpoRouter, PriorCheck};
use slim_router::reward::RewardWeights;
use slim_router::{build_router, Router, RouterKind, RouterSettings};

use super::EvalArgs;

/// `slim eval --ablation-plan DIR`: the variants' config files and the plan.
pub fn plan(dir: &Path) -> anyhow::Result<()> {
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs).with_context(|| format!("creating {}", configs.display()))?;
    for v in &VARIANTS {
        let path = configs.join(format!("{}.toml", v.name));
        std::fs::write(&path, v.config_toml())
            .with_context(|| format!("writing {}", path.display()))?;
        let kind = if v.trains { "train" } else { "prior" };
        println!("{} {kind} {}", v.name, v.train_flags().join(" "));
    }
    Ok(())
}

/// One checkpoint of the ablation.
struct Ckpt {
    path: PathBuf,
    seed: u64,
    steps: usize,
    train_seconds: f64,
    check: PriorCheck,
    policy: PolicyWeights,
}

/// A variant's checkpoints (or the shipped reference checkpoint).
struct Arm {
    name: String,
    what: String,
    /// Part of the ablation (the shipped reference is not).
    ablation: bool,
    ckpts: Vec<Ckpt>,
}

fn load(path: &Path) -> anyhow::Result<(Checkpoint, Ckpt)> {
    let c = Checkpoint::load(path).with_context(|| format!("loading {}", path.display()))?;
    let ckpt = Ckpt {
        path: path.to_path_buf(),
        seed: c.meta.seed,
        steps: c.meta.steps,
        train_seconds: c.meta.train_seconds,
        check: PriorCheck::of(&c),
        policy: c.weights.clone(),
    };
    Ok((c, ckpt))
}

/// The variants' checkpoints under `dir`, checked against their folder's variant, and the cost
/// weights they were all trained for.
fn load_arms(dir: &Path) -> anyhow::Result<(Vec<Arm>, String, RewardWeights)> {
    let mut arms = Vec::new();
    let mut preset: Option<(String, RewardWeights)> = None;
    for v in &VARIANTS {
        let folder = dir.join(v.name);
        let Ok(read) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        paths.sort();
        let mut ckpts = Vec::new();
        for path in paths {
            let (c, ckpt) = load(&path)?;
            let found = Variant::of(&c.meta.config).map_or("none of the variants", |f| f.name);
            anyhow::ensure!(
                v.matches(&c.meta.config),
                "{} is in the folder of `{}` but was trained as {found} (gamma {}, greedy_prior {:?}, learning rate {})",
                path.display(),
                v.name,
                c.meta.config.gamma,
                c.meta.config.greedy_prior,
                c.meta.config.learning_rate
            );
            match &preset {
                None => preset = Some((c.meta.preset.clone(), c.meta.weights)),
                Some((name, w)) => anyhow::ensure!(
                    *w == c.meta.weights,
                    "{} was trained for {} but the others for {name}",
                    path.display(),
                    c.meta.preset
                ),
            }
            ckpts.push(ckpt);
        }
        if !ckpts.is_empty() {
            arms.push(Arm {
                name: v.name.to_string(),
                what: v.what.to_string(),
                ablation: true,
                ckpts,
            });
        }
    }
    let (name, weights) = preset.with_context(|| {
        format!(
            "no checkpoints under {}/<variant>/*.safetensors (variants: {})",
            dir.display(),
            VARIANTS.map(|v| v.name).join(", ")
        )
    })?;
    Ok((arms, name, weights))
}

/// The heuristics: every baseline, and greedy weighted like the preset when that differs from
/// greedy's default (efficiency) weights.
fn heuristics(weights: RewardWeights, preset: &str) -> Vec<(String, RouterKind, RouterSettings)> {
    let plain = RouterSettings::default();
    let mut out: Vec<(String, RouterKind, RouterSettings)> = [
        ("random", RouterKind::Random),
        ("round-robin", RouterKind::RoundRobin),
        ("join-shortest-queue", RouterKind::JoinShortestQueue),
        ("power-of-two-choices", RouterKind::PowerOfTwoChoices),
        ("least-loaded", RouterKind::LeastLoaded),
        ("greedy", RouterKind::Greedy),
    ]
    .into_iter()
    .map(|(n, k)| (n.to_string(), k, plain.clone()))
    .collect();
    if weights != plain.weights {
        out.push((
            format!("greedy-weighted:{preset}"),
            RouterKind::Greedy,
            RouterSettings { weights, ..plain },
        ));
    }
    out
}

fn costs(runs: &[SeedRun]) -> Vec<f64> {
    runs.iter().map(|r| r.costs[0]).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn kept(runs: &[SeedRun]) -> usize {
    runs.iter().filter(|r| r.keep_up.keeps_up).count()
}

/// Runs of one family: per heuristic, and per arm and checkpoint.
struct FamilyRuns {
    heuristics: Vec<Vec<SeedRun>>,
    arms: Vec<Vec<Vec<SeedRun>>>,
}

impl FamilyRuns {
    /// The heuristic of lowest mean cost (whether it keeps up or not: these scenarios' rate
    /// steps and device losses fail the keep-up test by design, as in `slim eval`).
    fn best(&self) -> usize {
        (0..self.heuristics.len())
            .min_by(|a, b| {
                mean(&costs(&self.heuristics[*a])).total_cmp(&mean(&costs(&self.heuristics[*b])))
            })
            .expect("heuristics")
    }
}

/// One variant on one family against the best heuristic.
struct Row {
    cost: Spread,
    diffs: Vec<Interval>,
    pooled: Interval,
    bar: bool,
}

fn row(runs: &FamilyRuns, arm: usize, seeds: u64) -> Row {
    let best = costs(&runs.heuristics[runs.best()]);
    let per: Vec<Vec<f64>> = runs.arms[arm].iter().map(|r| costs(r)).collect();
    let diffs: Vec<Interval> = per.iter().map(|c| mean_difference(c, &best)).collect();
    let pooled = pooled_difference(&per, &best);
    Row {
        cost: Spread::of(&per.iter().map(|c| mean(c)).collect::<Vec<_>>()),
        bar: meets_bar(&pooled, &diffs, seeds),
        diffs,
        pooled,
    }
}

fn verdict_counts(diffs: &[Interval]) -> String {
    let n = |v: Verdict| diffs.iter().filter(|d| d.verdict() == v).count();
    format!(
        "{} / {} / {}",
        n(Verdict::Better),
        n(Verdict::NoSignificantDifference),
        n(Verdict::Worse)
    )
}

/// `slim eval --ablations DIR`.
pub fn run(args: &EvalArgs, dir: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let command: Vec<String> = std::env::args().skip(1).collect();
    let (fleet, names) = args.fleet.load()?;
    let (seeds, _, requests) = args.sizes();
    anyhow::ensure!(
        seeds >= 2,
        "--seeds must be at least 2 for paired intervals"
    );
    let (mut arms, preset, weights) = load_arms(dir)?;
    arms.extend(reference_arm(args, &preset, weights)?);
    let heur = heuristics(weights, &preset);
    let spec = SweepSpec {
        fleet: &fleet,
        requests,
        seeds,
        batch_sizes: super::super::simulate::batch_sizes(),
        cost_weights: vec![weights],
        threads: args.sim_threads(),
    };
    let results = run_families(&spec, &arms, &heur);
    let parts = Report {
        command: command.join(" "),
        seconds: start.elapsed().as_secs_f64(),
        fleet: names.join(","),
        preset,
        seeds,
        requests,
        threads: args.sim_threads(),
    };
    let doc = report(&parts, &arms, &heur, &results);
    println!("{doc}");
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&args.out, &doc).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "Took {:.1} s. Wrote {}.",
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// The shipped checkpoint of the preset (`--policies`), as a reference arm outside the
/// ablation, when it exists and was trained for the same cost weights.
fn reference_arm(
    args: &EvalArgs,
    preset: &str,
    weights: RewardWeights,
) -> anyhow::Result<Option<Arm>> {
    let reference = args.policies.join(format!("{preset}.safetensors"));
    if !reference.exists() {
        return Ok(None);
    }
    let (c, ckpt) = load(&reference)?;
    if c.meta.weights != weights {
        return Ok(None);
    }
    Ok(Some(Arm {
        name: "shipped (reference)".into(),
        what: format!(
            "`{}` as shipped: {} steps, ent_coef {}, gamma {} (not part of the ablation)",
            reference.display(),
            c.meta.steps,
            c.meta.config.ent_coef,
            c.meta.config.gamma
        ),
        ablation: false,
        ckpts: vec![ckpt],
    }))
}

/// Every heuristic and every arm's checkpoints on the held-out seeds of each family, in the
/// order of `FAMILIES`, with a progress bar.
fn run_families(
    spec: &SweepSpec<'_>,
    arms: &[Arm],
    heur: &[(String, RouterKind, RouterSettings)],
) -> Vec<FamilyRuns> {
    let total_ckpts: usize = arms.iter().map(|a| a.ckpts.len()).sum();
    let bar = ProgressBar::new((FAMILIES.len() * (heur.len() + total_ckpts)) as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let results = FAMILIES
        .into_iter()
        .map(|family| run_family(spec, family, arms, heur, &bar))
        .collect();
    bar.finish_and_clear();
    results
}

/// The runs of one family: each heuristic, then each arm's checkpoints.
fn run_family(
    spec: &SweepSpec<'_>,
    family: Family,
    arms: &[Arm],
    heur: &[(String, RouterKind, RouterSettings)],
    bar: &ProgressBar,
) -> FamilyRuns {
    let scenario = |seed: u64| {
        let mut s = family.scenario(spec.fleet, spec.requests, seed);
        s.batch_sizes.clone_from(&spec.batch_sizes);
        s
    };
    let mut h_runs = Vec::new();
    for (name, kind, settings) in heur {
        bar.set_message(format!("{}: {name}", family.as_str()));
        let make = || build_router(*kind, settings).expect("baselines always build");
        h_runs.push(run_seeds(spec, &scenario, &make));
        bar.inc(1);
    }
    let mut a_runs = Vec::new();
    for arm in arms {
        let mut per = Vec::new();
        for c in &arm.ckpts {
            bar.set_message(format!("{}: {} seed {}", family.as_str(), arm.name, c.seed));
            let policy = c.policy.clone();
            let make = || Box::new(PpoRouter::new(policy.clone())) as Box<dyn Router>;
            per.push(run_seeds(spec, &scenario, &make));
            bar.inc(1);
        }
        a_runs.push(per);
    }
    FamilyRuns {
        heuristics: h_runs,
        arms: a_runs,
    }
}

struct Report {
    command: String,
    seconds: f64,
    fleet: String,
    preset: String,
    seeds: u64,
    requests: usize,
    threads: usize,
}

fn short_check(c: &PriorCheck) -> String {
    if c.is_prior() {
        "**is the prior**".into()
    } else if !c.had_prior {
        format!(
            "no prior (from scratch); head max \\|w\\| {:.2e}",
            c.head_max_abs
        )
    } else {
        format!(
            "differs: head max \\|w\\| {:.2e}, skip changed {:.2} %",
            c.head_max_abs,
            100.0 * c.skip_change
        )
    }
}

/// What the costs are made of: the best heuristic's and each arm's mean latency, energy,
/// deadline misses and width (means over seeds, and over training seeds for an arm), how many
/// runs kept up and how many requests did not finish.
fn composition(
    d: &mut String,
    arms: &[Arm],
    heur: &[(String, RouterKind, RouterSettings)],
    results: &[FamilyRuns],
) {
    let _ = writeln!(d, "\n### What the costs are made of\n");
    let _ = writeln!(d, "Means over the evaluation seeds (and over the training seeds for a variant). \"kept up\": runs that passed the keep-up test, of all runs (20 seeds × checkpoints); \"unfinished\": requests that arrived but never completed (dropped, or still queued at the end), of all arrived, summed over the runs; the cost is over completed requests only, so a router that left requests unfinished would look cheaper than it is.\n");
    let _ = writeln!(d, "| router | family | mean latency ms | mean energy mJ (modelled) | deadline miss % | mean width | kept up | unfinished |\n|---|---|---|---|---|---|---|---|");
    let line = |d: &mut String, name: &str, family: Family, runs: &[&Vec<SeedRun>]| {
        let all: Vec<&SeedRun> = runs.iter().flat_map(|r| r.iter()).collect();
        let m = |f: &dyn Fn(&SeedRun) -> f64| {
            all.iter().map(|r| f(r)).sum::<f64>() / all.len().max(1) as f64
        };
        let arrived: usize = all.iter().map(|r| r.summary.arrived).sum();
        let completed: usize = all.iter().map(|r| r.summary.completed).sum();
        let _ = writeln!(
            d,
            "| {name} | {} | {:.3} | {:.3} | {:.1} | {:.3} | {}/{} | {}/{arrived} |",
            family.as_str(),
            m(&|r| r.summary.mean_latency_ms),
            m(&|r| r.summary.mean_energy_mj),
            100.0 * m(&|r| r.summary.deadline_miss_rate),
            m(&|r| r.summary.mean_width),
            all.iter().filter(|r| r.keep_up.keeps_up).count(),
            all.len(),
            arrived.saturating_sub(completed)
        );
    };
    for (f, r) in FAMILIES.iter().zip(results) {
        let best = r.best();
        line(
            d,
            &format!("{} (best heuristic)", heur[best].0),
            *f,
            &[&r.heuristics[best]],
        );
        for (a, runs) in arms.iter().zip(&r.arms) {
            line(d, &a.name, *f, &runs.iter().collect::<Vec<_>>());
        }
    }
}

/// Each trained arm against the default arm (prior + PPO at gamma 0.5): pooled paired
/// difference per family. The interval is over evaluation seeds; training seeds only average.
fn against_default(d: &mut String, arms: &[Arm], results: &[FamilyRuns]) {
    let Some(base) = arms.iter().position(|a| a.name == "prior-ppo-gamma0.5") else {
        return;
    };
    let _ = writeln!(d, "\n### Against the default arm (prior-ppo-gamma0.5)\n");
    let _ = writeln!(d, "Pooled difference of cost, arm − prior-ppo-gamma0.5, per evaluation seed (each arm's cost the mean over its training seeds), 95 % paired interval over the evaluation seeds; it does not include the spread over training seeds, given in the table above.\n");
    let _ = write!(d, "| arm |");
    for f in FAMILIES {
        let _ = write!(d, " {} |", f.as_str());
    }
    let _ = writeln!(d, "\n|---|{}", "---|".repeat(FAMILIES.len()));
    for (ai, a) in arms
        .iter()
        .enumerate()
        .filter(|(ai, a)| *ai != base && a.ablation)
    {
        let _ = write!(d, "| {} |", a.name);
        for r in results {
            let mine: Vec<Vec<f64>> = r.arms[ai].iter().map(|x| costs(x)).collect();
            let theirs: Vec<Vec<f64>> = r.arms[base].iter().map(|x| costs(x)).collect();
            let i = mean_difference(&seed_means(&mine), &seed_means(&theirs));
            let _ = write!(d, " {} ({}) |", i.show(3), i.verdict().as_str());
        }
        d.push('\n');
    }
}

/// The Markdown report: how it was run, the checkpoints, the heuristics, the variants against
/// the best heuristic, what the costs are made of, the arms against the default arm, and the
/// verdict.
fn report(
    p: &Report,
    arms: &[Arm],
    heur: &[(String, RouterKind, RouterSettings)],
    results: &[FamilyRuns],
) -> String {
    let mut d = String::new();
    method(&mut d, p, heur);
    checkpoints(&mut d, arms);
    heuristics_table(&mut d, p, heur, results);
    let rows = variants_table(&mut d, p, arms, heur, results);
    composition(&mut d, arms, heur, results);
    against_default(&mut d, arms, results);
    verdict(&mut d, p, arms, heur, results, &rows);
    d
}

/// The report's opening: the command, and how the fleet, seeds, families, best heuristic and
/// intervals were chosen.
fn method(d: &mut String, p: &Report, heur: &[(String, RouterKind, RouterSettings)]) {
    let _ = writeln!(
        d,
        "Command: `slim {}` ({:.0} s, {} simulator threads).\n",
        p.command, p.seconds, p.threads
    );
    let _ = writeln!(d, "- Fleet `{}`; cost: the **{}** preset's (lower is better), the preset every checkpoint was trained for.", p.fleet, p.preset);
    let _ = writeln!(d, "- Held-out seeds: {} per family, `eval_seed(0..{})` (SplitMix64 of key `{EVAL_STREAM_KEY:#x}` + i, top bit set): a generator training (`seed·1_000_003 + episode`) and validation (`8_000_000_000 + i`) never draw from. Every router and checkpoint runs the same seeds; {} requests per run.", p.seeds, p.seeds, p.requests);
    let _ = writeln!(d, "- Families, each built on `Scenario::sample`'s workload of the seed (load 0.2–0.9 of the mean-width yardstick, model mix, 0–60 % deadlines, 0–40 % floors): **shifting load**: bursts ×2–4 and a step change in rate ×0.5–0.8 or ×1.2–1.8, no fleet events; **churn**: steady rate, one device slows down ×2–6 and one leaves (rejoining after a fifth of the run with probability ½); **mixed**: `Scenario::sample` as drawn, the \"shifting + churn\" column of `slim eval` (each perturbation with some probability, often none).");
    let _ = writeln!(d, "- Best heuristic: per family, the heuristic of lowest mean cost over the seeds ({}), whether it keeps up or not (rate steps and device losses fail the keep-up test by design).", heur.iter().map(|h| h.0.as_str()).collect::<Vec<_>>().join(", "));
    let _ = writeln!(d, "- Intervals: 95 % paired percentile bootstrap over evaluation seeds ({RESAMPLES} resamples). *Pooled*: a variant's cost on a seed is the mean over its training seeds' checkpoints; the spread over training seeds is given beside it, not folded into the interval. A variant **meets the bar** on a family when its pooled interval lies below zero over ≥ {BAR_MIN_SEEDS} seeds and no training seed's own interval says \"worse\".");
    let _ = writeln!(d, "- Energy and latency behind the cost are **modelled** (derived and provisional profiles).\n");
}

/// Every checkpoint: its variant, training seed, steps, time and `PriorCheck`; then the files.
fn checkpoints(d: &mut String, arms: &[Arm]) {
    let _ = writeln!(d, "### Checkpoints\n");
    let _ = writeln!(d, "| variant | what | training seed | steps trained | training s | against its greedy prior (`PriorCheck`) |\n|---|---|---|---|---|---|");
    for a in arms {
        for c in &a.ckpts {
            let _ = writeln!(
                d,
                "| {} | {} | {} | {} | {:.0} | {} |",
                a.name,
                a.what,
                c.seed,
                c.steps,
                c.train_seconds,
                short_check(&c.check)
            );
        }
    }
    let _ = writeln!(
        d,
        "\nFiles: {}.\n",
        arms.iter()
            .flat_map(|a| a.ckpts.iter().map(|c| format!("`{}`", c.path.display())))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Each heuristic's mean cost per family (and how many seeds kept up), the best in bold.
fn heuristics_table(
    d: &mut String,
    p: &Report,
    heur: &[(String, RouterKind, RouterSettings)],
    results: &[FamilyRuns],
) {
    let _ = writeln!(
        d,
        "### Heuristics: mean {} cost (seeds keeping up)\n",
        p.preset
    );
    let _ = write!(d, "| heuristic |");
    for f in FAMILIES {
        let _ = write!(d, " {} |", f.as_str());
    }
    let _ = writeln!(d, "\n|---|{}", "---|".repeat(FAMILIES.len()));
    for (h, (name, _, _)) in heur.iter().enumerate() {
        let _ = write!(d, "| {name} |");
        for r in results {
            let runs = &r.heuristics[h];
            let cell = format!("{:.3} ({}/{})", mean(&costs(runs)), kept(runs), runs.len());
            let cell = if r.best() == h {
                format!("**{cell}**")
            } else {
                cell
            };
            let _ = write!(d, " {cell} |");
        }
        d.push('\n');
    }
}

/// Each arm on each family against the best heuristic; returns the rows as (arm, family, row)
/// for the verdict.
fn variants_table(
    d: &mut String,
    p: &Report,
    arms: &[Arm],
    heur: &[(String, RouterKind, RouterSettings)],
    results: &[FamilyRuns],
) -> Vec<(usize, usize, Row)> {
    let _ = writeln!(d, "\n### Variants against the best heuristic\n");
    let _ = writeln!(d, "| variant | family | best heuristic (its cost) | variant cost: mean over training seeds [min, max] (sd) | pooled variant − heuristic [95 % CI] | per training seed: difference (better / n.s. / worse) | `PriorCheck`: is the prior | meets the bar |\n|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (ai, a) in arms.iter().enumerate() {
        for (fi, (f, r)) in FAMILIES.iter().zip(results).enumerate() {
            let best = r.best();
            let x = row(r, ai, p.seeds);
            let per = x
                .diffs
                .iter()
                .map(|i| format!("{:+.3}", i.estimate))
                .collect::<Vec<_>>()
                .join(", ");
            let priors = a.ckpts.iter().filter(|c| c.check.is_prior()).count();
            let _ = writeln!(
                d,
                "| {} | {} | {} ({:.3}) | {:.3} [{:.3}, {:.3}] ({:.3}) | {} — {} | {per} ({}) | {priors} of {} | {} |",
                a.name,
                f.as_str(),
                heur[best].0,
                mean(&costs(&r.heuristics[best])),
                x.cost.mean,
                x.cost.min,
                x.cost.max,
                x.cost.sd,
                x.pooled.show(3),
                x.pooled.verdict().as_str(),
                verdict_counts(&x.diffs),
                a.ckpts.len(),
                if !a.ablation { "(reference)" } else if x.bar { "**yes**" } else { "no" }
            );
            rows.push((ai, fi, x));
        }
    }
    rows
}

/// Whether an arm is a trained variant of the ablation (not the reference, not the prior alone).
fn is_ppo_arm(a: &Arm) -> bool {
    a.ablation && a.name != "prior-only"
}

/// The verdict: per family, which trained variants meet the bar; then overall, which meet it on
/// both shifting load and churn.
fn verdict(
    d: &mut String,
    p: &Report,
    arms: &[Arm],
    heur: &[(String, RouterKind, RouterSettings)],
    results: &[FamilyRuns],
    rows: &[(usize, usize, Row)],
) {
    let _ = writeln!(d, "\n### Verdict\n");
    for (fi, f) in FAMILIES.iter().enumerate() {
        let passing: Vec<&str> = rows
            .iter()
            .filter(|(ai, rf, x)| *rf == fi && is_ppo_arm(&arms[*ai]) && x.bar)
            .map(|(ai, _, _)| arms[*ai].name.as_str())
            .collect();
        let best_heur = &heur[results[fi].best()].0;
        let _ = writeln!(
            d,
            "- **{}**: {}",
            f.as_str(),
            if passing.is_empty() {
                format!("no trained variant beats the best heuristic ({best_heur}) with a 95 % interval that excludes zero: **the bar is not met**.")
            } else {
                format!("{} beat{} the best heuristic ({best_heur}) with a 95 % interval below zero: the bar is met.", passing.join(", "), if passing.len() == 1 { "s" } else { "" })
            }
        );
    }
    // The bar: one trained variant beats the best heuristic on shifting load and on churn.
    let meets = |a: usize, fam: Family| {
        let fi = FAMILIES.iter().position(|f| *f == fam);
        rows.iter()
            .any(|(ai, rf, x)| *ai == a && Some(*rf) == fi && x.bar)
    };
    let winners: Vec<&str> = arms
        .iter()
        .enumerate()
        .filter(|(a, arm)| {
            is_ppo_arm(arm) && meets(*a, Family::ShiftingLoad) && meets(*a, Family::Churn)
        })
        .map(|(_, arm)| arm.name.as_str())
        .collect();
    let _ = writeln!(
        d,
        "- Overall: {}",
        if p.seeds < BAR_MIN_SEEDS {
            format!(
                "only {} evaluation seeds (the bar needs ≥ {BAR_MIN_SEEDS}): no verdict.",
                p.seeds
            )
        } else if winners.is_empty() {
            "**no trained variant meets the issue's bar** (beat the best heuristic on shifting load *and* on churn with a 95 % paired interval excluding zero); by the issue's rule the default router should be the best heuristic.".into()
        } else {
            format!("**{}** meet{} the issue's bar: better than the best heuristic on both shifting load and churn, 95 % paired intervals excluding zero, no training seed significantly worse.", winners.join(", "), if winners.len() == 1 { "s" } else { "" })
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use slim_router::ppo::features::OBSERVATION_SCHEMA_VERSION;
    use slim_router::ppo::{CheckpointMeta, PpoConfig};
    use slim_router::reward::RewardPreset;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("slim-ablations-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn save(path: &Path, config: PpoConfig, preset: RewardPreset) {
        let weights = preset.weights();
        let shipped = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../router/policies/efficiency.safetensors"
        );
        let mut policy = Checkpoint::load(Path::new(shipped)).unwrap().weights;
        if let Some(sharpness) = config.greedy_prior {
            policy.greedy_prior(&weights, sharpness);
        }
        let checkpoint = Checkpoint {
            weights: policy,
            meta: CheckpointMeta {
                observation_schema_version: OBSERVATION_SCHEMA_VERSION,
                preset: preset.as_str().into(),
                weights,
                fleet: vec!["x".into()],
                seed: config.seed,
                steps: 10,
                train_seconds: 1.0,
                config,
                final_metrics: None,
                final_diagnostics: Default::default(),
                online: None,
            },
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        checkpoint.save(path).unwrap();
    }

    #[test]
    fn checkpoints_are_taken_only_from_the_folder_of_their_variant() {
        let dir = temp_dir("arms");
        let base = PpoConfig::default();
        let scratch = Variant::by_name("scratch").unwrap().config(&base);
        let prior = Variant::by_name("prior-only").unwrap().config(&base);
        save(
            &dir.join("scratch/seed-1.safetensors"),
            scratch.clone(),
            RewardPreset::Efficiency,
        );
        save(
            &dir.join("prior-only/seed-1.safetensors"),
            prior.clone(),
            RewardPreset::Efficiency,
        );
        let (arms, preset, weights) = load_arms(&dir).unwrap();
        assert_eq!(preset, "efficiency");
        assert_eq!(weights, RewardPreset::Efficiency.weights());
        let names: Vec<&str> = arms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["prior-only", "scratch"]);
        assert!(arms[0].ckpts[0].check.is_prior());
        assert!(!arms[1].ckpts[0].check.is_prior());

        // A "from scratch" run that silently kept the prior (a config file cannot say None) is
        // refused, and so is a checkpoint trained for another preset.
        save(
            &dir.join("scratch/seed-2.safetensors"),
            base.clone(),
            RewardPreset::Efficiency,
        );
        let err = load_arms(&dir).err().unwrap().to_string();
        assert!(err.contains("trained as prior-ppo-gamma0.5"), "{err}");
        std::fs::remove_file(dir.join("scratch/seed-2.safetensors")).unwrap();
        save(
            &dir.join("prior-only/seed-2.safetensors"),
            prior,
            RewardPreset::Balanced,
        );
        let err = load_arms(&dir).err().unwrap().to_string();
        assert!(err.contains("trained for balanced"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load_arms(&dir).is_err());
    }

    #[test]
    fn the_plan_writes_one_config_per_variant() {
        let dir = temp_dir("plan");
        plan(&dir).unwrap();
        for v in &VARIANTS {
            let text =
                std::fs::read_to_string(dir.join(format!("configs/{}.toml", v.name))).unwrap();
            assert_eq!(text, v.config_toml());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn greedy_weighted_joins_the_heuristics_only_when_its_weights_differ() {
        let eff = heuristics(RewardPreset::Efficiency.weights(), "efficiency");
        assert_eq!(eff.len(), 6);
        assert!(eff.iter().any(|h| h.0 == "greedy"));
        let bal = heuristics(RewardPreset::Balanced.weights(), "balanced");
        assert_eq!(bal.last().unwrap().0, "greedy-weighted:balanced");
        assert_eq!(
            bal.last().unwrap().2.weights,
            RewardPreset::Balanced.weights()
        );
    }

    #[test]
    fn verdicts_are_counted_better_then_unclear_then_worse() {
        let i = |lo, hi| Interval {
            estimate: (lo + hi) / 2.0,
            lo,
            hi,
        };
        assert_eq!(
            verdict_counts(&[i(-2.0, -1.0), i(-1.0, 1.0), i(1.0, 2.0), i(-3.0, -0.5)]),
            "2 / 1 / 1"
        );
    }
}
