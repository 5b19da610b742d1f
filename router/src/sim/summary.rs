//! Per-request records and the statistics of a run.

use serde::{Deserialize, Serialize};

use crate::reward::{Outcome, RewardWeights};
use crate::Scales;

/// One finished request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestRecord {
    /// When it arrived, ms after the start of the run.
    pub arrival_ms: f64,
    /// Index of its model in the fleet.
    pub model: u16,
    /// Index of the device that ran it.
    pub device: u16,
    /// Width it ran at.
    pub width: f32,
    /// Size of the batch it ran in.
    pub batch: u16,
    /// What happened.
    pub outcome: Outcome,
}

/// Statistics of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests that arrived.
    pub arrived: usize,
    /// Requests that finished.
    pub completed: usize,
    /// Requests no device could take.
    pub dropped: usize,
    /// Placements lost to a device leaving, and made again.
    pub rerouted: usize,
    /// Mean end-to-end latency, ms.
    pub mean_latency_ms: f64,
    /// Standard deviation of latency, ms.
    pub std_latency_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_latency_ms: f64,
    /// Mean energy per request, mJ.
    pub mean_energy_mj: f64,
    /// Standard deviation of energy per request, mJ.
    pub std_energy_mj: f64,
    /// Mean top-1 accuracy of the widths that ran.
    pub mean_accuracy: f64,
    /// Mean width.
    pub mean_width: f64,
    /// Fraction of requests with a deadline that missed it.
    pub deadline_miss_rate: f64,
    /// Mean request cost under the weights the summary was made with (lower is better).
    pub mean_cost: f64,
    /// Energy every device drew over the run, idle time included, divided by the requests
    /// finished, mJ (modelled from the profiles). Unlike `mean_energy_mj`, which charges each
    /// batch its device's power while it runs, this counts devices left idle and the idle floor
    /// once when batches overlap on one device.
    #[serde(default)]
    pub fleet_energy_per_request_mj: f64,
    /// Simulated time the run covered, ms.
    #[serde(default)]
    pub duration_ms: f64,
}

impl Summary {
    /// Records the fleet's whole energy over a run of `duration_ms`.
    pub fn set_fleet_energy(&mut self, energy_mj: f64, duration_ms: f64) {
        self.duration_ms = duration_ms;
        self.fleet_energy_per_request_mj = if self.completed == 0 {
            0.0
        } else {
            energy_mj / self.completed as f64
        };
    }

    /// Summarizes `records`; costs use each model's `scales`.
    pub fn from_records(
        records: &[RequestRecord],
        scales: &[Scales],
        weights: &RewardWeights,
        arrived: usize,
        dropped: usize,
        rerouted: usize,
    ) -> Self {
        let n = records.len();
        if n == 0 {
            return Self {
                arrived,
                dropped,
                rerouted,
                ..Self::default()
            };
        }
        let nf = n as f64;
        let mean = |f: &dyn Fn(&RequestRecord) -> f64| records.iter().map(f).sum::<f64>() / nf;
        let std = |f: &dyn Fn(&RequestRecord) -> f64, m: f64| {
            (records.iter().map(|r| (f(r) - m).powi(2)).sum::<f64>() / nf).sqrt()
        };
        let lat = |r: &RequestRecord| f64::from(r.outcome.latency_ms);
        let energy = |r: &RequestRecord| f64::from(r.outcome.energy_mj);
        let mean_latency_ms = mean(&lat);
        let mean_energy_mj = mean(&energy);
        let mut latencies: Vec<f32> = records.iter().map(|r| r.outcome.latency_ms).collect();
        latencies.sort_by(f32::total_cmp);
        let with_deadline = records
            .iter()
            .filter(|r| r.outcome.deadline_met.is_some())
            .count();
        let missed = records
            .iter()
            .filter(|r| r.outcome.deadline_met == Some(false))
            .count();
        Self {
            arrived,
            completed: n,
            dropped,
            rerouted,
            mean_latency_ms,
            std_latency_ms: std(&lat, mean_latency_ms),
            p95_latency_ms: f64::from(latencies[((n - 1) as f64 * 0.95) as usize]),
            mean_energy_mj,
            std_energy_mj: std(&energy, mean_energy_mj),
            mean_accuracy: mean(&|r| f64::from(r.outcome.top1)),
            mean_width: mean(&|r| f64::from(r.width)),
            deadline_miss_rate: if with_deadline == 0 {
                0.0
            } else {
                missed as f64 / with_deadline as f64
            },
            mean_cost: mean(&|r| {
                f64::from(weights.cost(&r.outcome, &scales[usize::from(r.model)]))
            }),
            // Set by the simulator, which knows every device's power over time.
            fleet_energy_per_request_mj: 0.0,
            duration_ms: 0.0,
        }
    }
}
