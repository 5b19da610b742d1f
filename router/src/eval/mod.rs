//! Comparing routers in the simulator on held-out seeds: the evaluation seed stream, the
//! fleet's capacity, the keep-up test, paired bootstrap intervals and the sweep runner.

pub mod ablation;
pub mod bootstrap;
pub mod capacity;
pub mod generalise;
pub mod keepup;
pub mod seeds;
pub mod sweep;

use std::time::Instant;

pub use seeds::{eval_seed, EVAL_STREAM_KEY};

use crate::fleet::Fleet;
use crate::reward::RewardWeights;
use crate::sim::{RequestRecord, Scenario, Simulator, Summary};
use crate::Router;

/// First seed of the live-twin runs of `slim eval` (`EVAL_SEED_BASE + 1000 + i`). Router
/// comparisons draw their seeds from [`eval_seed`] instead, a stream training never uses.
pub const EVAL_SEED_BASE: u64 = 9_000_000_000;

/// A router's results over several scenarios.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Router name.
    pub router: String,
    /// Statistics over every request of every scenario.
    pub summary: Summary,
    /// Routing decisions per second of wall-clock time, simulator included.
    pub decisions_per_s: f64,
}

/// Runs `router` on `seeds` scenarios of `requests` requests (scenario `i` drawn by
/// [`Scenario::sample`] from [`eval_seed`]`(i)`) and pools the results under `weights`.
pub fn evaluate(
    fleet: &Fleet,
    router: &mut dyn Router,
    seeds: std::ops::Range<u64>,
    requests: usize,
    batch_sizes: &[u16],
    weights: &RewardWeights,
) -> Evaluation {
    let mut records: Vec<RequestRecord> = Vec::new();
    let (mut arrived, mut dropped, mut rerouted, mut decisions) = (0, 0, 0, 0u64);
    let mut scales = Vec::new();
    let start = Instant::now();
    for seed in seeds {
        let seed = eval_seed(seed);
        let mut scenario = Scenario::sample(fleet, requests, seed);
        scenario.batch_sizes = batch_sizes.to_vec();
        let mut sim = Simulator::new(fleet, &scenario, seed);
        let s = sim.run(router, weights);
        arrived += s.arrived;
        dropped += s.dropped;
        rerouted += s.rerouted;
        decisions += sim.decisions();
        scales = sim.scales().to_vec();
        records.extend_from_slice(sim.records());
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    Evaluation {
        router: router.name().to_string(),
        summary: Summary::from_records(&records, &scales, weights, arrived, dropped, rerouted),
        decisions_per_s: decisions as f64 / elapsed,
    }
}
