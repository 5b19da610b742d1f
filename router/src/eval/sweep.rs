//! Runs routers over seeds of a workload, in parallel, with the keep-up test of every run.

use serde::Serialize;

use super::keepup::KeepUp;
use super::seeds::eval_seed;
use crate::fleet::Fleet;
use crate::reward::RewardWeights;
use crate::sim::{Scenario, Simulator, Summary};
use crate::Router;

/// What one router did on one seed.
#[derive(Debug, Clone, Serialize)]
pub struct SeedRun {
    /// The evaluation seed ([`eval_seed`] of its index).
    pub seed: u64,
    /// Statistics under the first of the spec's cost weights.
    pub summary: Summary,
    /// Mean request cost under each of the spec's cost weights, in order.
    pub costs: Vec<f64>,
    /// The keep-up test.
    pub keep_up: KeepUp,
    /// Fraction of requests run at their model's slimmest width.
    pub slimmest_share: f64,
}

/// How a sweep runs.
#[derive(Debug, Clone)]
pub struct SweepSpec<'a> {
    /// The fleet.
    pub fleet: &'a Fleet,
    /// Requests per run.
    pub requests: usize,
    /// Seeds per cell: evaluation seeds `eval_seed(0..seeds)`, the same for every router.
    pub seeds: u64,
    /// Batch sizes routers may assign.
    pub batch_sizes: Vec<u16>,
    /// Cost weights to score every run under (the presets whose costs are reported).
    pub cost_weights: Vec<RewardWeights>,
    /// Worker threads.
    pub threads: usize,
}

/// A steady Poisson workload at `rate_per_s` with an equal model mix, the default share of
/// deadlines (30 %) and accuracy floors (20 %), and no fleet events.
pub fn steady(spec: &SweepSpec<'_>, rate_per_s: f64) -> Scenario {
    let mut s = Scenario::steady(spec.fleet, spec.requests, 0.5);
    s.rate_per_s = rate_per_s;
    s.batch_sizes.clone_from(&spec.batch_sizes);
    s
}

/// The shifting-load and churn workload of seed `seed`: [`Scenario::sample`] (bursts, steps, a
/// device slowing down or leaving, varied deadlines and floors).
pub fn shifting(spec: &SweepSpec<'_>, seed: u64) -> Scenario {
    let mut s = Scenario::sample(spec.fleet, spec.requests, seed);
    s.batch_sizes.clone_from(&spec.batch_sizes);
    s
}

/// One run of a fresh router from `make` on `scenario` with `seed`.
fn run_one(
    spec: &SweepSpec<'_>,
    scenario: &Scenario,
    seed: u64,
    router: &mut dyn Router,
) -> SeedRun {
    let first = spec.cost_weights.first().copied().unwrap_or_default();
    let mut sim = Simulator::new(spec.fleet, scenario, seed);
    let summary = sim.run(router, &first);
    let records = sim.records();
    let scales = sim.scales();
    let costs = spec
        .cost_weights
        .iter()
        .map(|w| Summary::from_records(records, scales, w, summary.arrived, 0, 0).mean_cost)
        .collect();
    let slack_ms =
        scales.iter().map(|s| f64::from(s.latency_ms)).sum::<f64>() / scales.len().max(1) as f64;
    let keep_up = KeepUp::of(records, summary.arrived, sim.now_ms(), slack_ms);
    let slimmest: Vec<f32> = spec
        .fleet
        .models
        .iter()
        .map(|m| {
            m.widths
                .iter()
                .map(|w| w.width)
                .fold(f32::INFINITY, f32::min)
        })
        .collect();
    let slim = records
        .iter()
        .filter(|r| (r.width - slimmest[usize::from(r.model)]).abs() < 1e-6)
        .count();
    SeedRun {
        seed,
        summary,
        costs,
        keep_up,
        slimmest_share: slim as f64 / records.len().max(1) as f64,
    }
}

/// Runs a fresh router from `make` on every seed of `spec`, the scenario of seed `s` being
/// `scenario(s)`; results in seed order.
pub fn run_seeds(
    spec: &SweepSpec<'_>,
    scenario: &(dyn Fn(u64) -> Scenario + Sync),
    make: &(dyn Fn() -> Box<dyn Router> + Sync),
) -> Vec<SeedRun> {
    let threads = spec.threads.clamp(1, spec.seeds.max(1) as usize);
    let mut runs: Vec<(u64, SeedRun)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t as u64..spec.seeds)
                        .step_by(threads)
                        .map(|i| {
                            let seed = eval_seed(i);
                            let mut router = make();
                            (i, run_one(spec, &scenario(seed), seed, router.as_mut()))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a sweep worker panicked"))
            .collect()
    });
    runs.sort_by_key(|(i, _)| *i);
    runs.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::capacity::sustainable_capacity_per_s;
    use crate::fleet::tests::tiny_fleet;
    use crate::reward::RewardPreset;
    use crate::{build_router, RouterKind, RouterSettings};

    #[test]
    fn greedy_keeps_up_at_low_load_and_nobody_keeps_up_far_above_capacity() {
        let fleet = tiny_fleet();
        let spec = SweepSpec {
            fleet: &fleet,
            requests: 1500,
            seeds: 3,
            batch_sizes: vec![1, 4, 8, 16],
            cost_weights: vec![RewardPreset::Efficiency.weights()],
            threads: 2,
        };
        let capacity = sustainable_capacity_per_s(&fleet, &[1.0, 1.0], &spec.batch_sizes);
        let make = || build_router(RouterKind::Greedy, &RouterSettings::default()).unwrap();
        let low = run_seeds(&spec, &|_| steady(&spec, 0.1 * capacity), &make);
        assert_eq!(low.len(), 3);
        assert!(
            low.iter().all(|r| r.keep_up.keeps_up),
            "{:?}",
            low[0].keep_up
        );
        let over = run_seeds(&spec, &|_| steady(&spec, 3.0 * capacity), &make);
        assert!(
            over.iter().all(|r| !r.keep_up.keeps_up),
            "{:?}",
            over[0].keep_up
        );
        // The same seeds replay the same runs, whatever the thread count.
        let one = SweepSpec {
            threads: 1,
            ..spec.clone()
        };
        let again = run_seeds(&one, &|_| steady(&one, 0.1 * capacity), &make);
        assert_eq!(again[2].summary, low[2].summary);
    }
}
