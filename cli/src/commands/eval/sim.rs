//! The simulator part of `slim eval`: every router over a load sweep and over shifting-load and
//! churn scenarios, on the same evaluation seeds.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use indicatif::ProgressBar;
use slim_router::eval::capacity::sustainable_capacity_per_s;
use slim_router::eval::sweep::{run_seeds, shifting, steady, SeedRun, SweepSpec};
use slim_router::fleet::Fleet;
use slim_router::ppo::{Checkpoint, PpoRouter, PriorCheck};
use slim_router::reward::RewardPreset;
use slim_router::{build_router, Router, RouterKind, RouterSettings};

/// A router of the comparison: how to build a fresh one per run. Cloning shares the builder
/// (and a checkpoint's loaded weights).
#[derive(Clone)]
pub struct Entry {
    /// Name in the tables.
    pub name: String,
    /// Whether it is a hand-written heuristic (a candidate for "best heuristic").
    pub heuristic: bool,
    /// For PPO checkpoints: the preset, and how the checkpoint compares with its greedy prior.
    pub ppo: Option<(RewardPreset, PriorCheck)>,
    make: Arc<dyn Fn() -> Box<dyn Router> + Sync>,
}

fn baseline(kind: RouterKind, name: &str, settings: RouterSettings) -> Entry {
    Entry {
        name: name.to_string(),
        heuristic: true,
        ppo: None,
        make: Arc::new(move || build_router(kind, &settings).expect("baselines always build")),
    }
}

/// A PPO checkpoint's name in reports: `prior:<preset>` when it equals its greedy prior (it
/// decides as greedy-weighted does), else `ppo:<preset>`.
pub fn checkpoint_name(preset: &str, check: &PriorCheck) -> String {
    let prefix = if check.is_prior() { "prior" } else { "ppo" };
    format!("{prefix}:{preset}")
}

/// The routers: the six baselines, greedy weighted like each non-efficiency preset, and one PPO
/// checkpoint per preset (named `prior:<preset>` when it equals its greedy prior).
pub fn entries(policies: &Path, presets: &[RewardPreset]) -> anyhow::Result<Vec<Entry>> {
    Ok(with_checkpoints(policies, presets)?.0)
}

/// [`entries`], and the profile names each checkpoint was trained on.
pub fn with_checkpoints(
    policies: &Path,
    presets: &[RewardPreset],
) -> anyhow::Result<(Vec<Entry>, Vec<String>)> {
    let plain = RouterSettings::default();
    let mut out = vec![
        baseline(RouterKind::Random, "random", plain.clone()),
        baseline(RouterKind::RoundRobin, "round-robin", plain.clone()),
        baseline(
            RouterKind::JoinShortestQueue,
            "join-shortest-queue",
            plain.clone(),
        ),
        baseline(
            RouterKind::PowerOfTwoChoices,
            "power-of-two-choices",
            plain.clone(),
        ),
        baseline(RouterKind::LeastLoaded, "least-loaded", plain.clone()),
        baseline(RouterKind::Greedy, "greedy", plain.clone()),
    ];
    for preset in presets.iter().filter(|p| **p != RewardPreset::Efficiency) {
        let settings = RouterSettings {
            weights: preset.weights(),
            ..RouterSettings::default()
        };
        let name = format!("greedy-weighted:{}", preset.as_str());
        out.push(baseline(RouterKind::Greedy, &name, settings));
    }
    let mut trained_on = Vec::new();
    for preset in presets {
        let path = policies.join(format!("{}.safetensors", preset.as_str()));
        let checkpoint =
            Checkpoint::load(&path).with_context(|| format!("loading {}", path.display()))?;
        trained_on.extend(checkpoint.meta.fleet.iter().cloned());
        let check = PriorCheck::of(&checkpoint);
        let name = checkpoint_name(preset.as_str(), &check);
        let (weights, label) = (checkpoint.weights, name.clone());
        out.push(Entry {
            name,
            heuristic: false,
            ppo: Some((*preset, check)),
            make: Arc::new(move || Box::new(PpoRouter::new(weights.clone()).named(label.clone()))),
        });
    }
    trained_on.sort();
    trained_on.dedup();
    Ok((out, trained_on))
}

/// One router's runs at every load of the sweep, and on the shifting scenarios.
pub struct RouterRuns {
    /// Runs per load, in the order of [`SimResults::loads`], each over the same seeds.
    pub by_load: Vec<Vec<SeedRun>>,
    /// Runs on the shifting-load and churn scenarios.
    pub shifting: Vec<SeedRun>,
}

/// Everything the simulator part measured.
pub struct SimResults {
    /// Offered loads, as fractions of `capacity_per_s`.
    pub loads: Vec<f64>,
    /// The fleet's capacity for the sweep's equal model mix, requests/s.
    pub capacity_per_s: f64,
    /// The presets whose costs `SeedRun::costs` holds, in order.
    pub presets: Vec<RewardPreset>,
    /// The routers, in table order.
    pub entries: Vec<Entry>,
    /// Their runs, aligned with `entries`.
    pub runs: Vec<RouterRuns>,
}

/// Settings of the simulator part.
pub struct SimPlan<'a> {
    /// The fleet.
    pub fleet: &'a Fleet,
    /// Loads to sweep (fractions of capacity).
    pub loads: Vec<f64>,
    /// Seeds per cell.
    pub seeds: u64,
    /// Requests per run.
    pub requests: usize,
    /// PPO presets.
    pub presets: Vec<RewardPreset>,
    /// Worker threads.
    pub threads: usize,
    /// Whether to run the shifting-load and churn scenarios too.
    pub shifting: bool,
}

/// Runs every router of `entries` over the plan.
pub fn run(plan: &SimPlan<'_>, entries: Vec<Entry>, bar: &ProgressBar) -> SimResults {
    let spec = SweepSpec {
        fleet: plan.fleet,
        requests: plan.requests,
        seeds: plan.seeds,
        batch_sizes: super::super::simulate::batch_sizes(),
        cost_weights: plan.presets.iter().map(|p| p.weights()).collect(),
        threads: plan.threads,
    };
    let mix = vec![1.0; plan.fleet.models.len()];
    let capacity_per_s = sustainable_capacity_per_s(plan.fleet, &mix, &spec.batch_sizes);
    let mut runs = Vec::new();
    for entry in &entries {
        bar.set_message(format!("simulating {}", entry.name));
        let mut by_load = Vec::new();
        for &load in &plan.loads {
            let rate = load * capacity_per_s;
            by_load.push(run_seeds(&spec, &|_| steady(&spec, rate), &*entry.make));
            bar.inc(1);
        }
        let shifting = if plan.shifting {
            bar.inc(1);
            run_seeds(&spec, &|seed| shifting(&spec, seed), &*entry.make)
        } else {
            Vec::new()
        };
        runs.push(RouterRuns { by_load, shifting });
    }
    SimResults {
        loads: plan.loads.clone(),
        capacity_per_s,
        presets: plan.presets.clone(),
        entries,
        runs,
    }
}

/// Progress-bar steps of [`run`] with the shifting scenarios.
pub fn steps(routers: usize, loads: usize) -> u64 {
    (routers * (loads + 1)) as u64
}
