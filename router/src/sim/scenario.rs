//! What happens in one simulated run: the workload and the fleet events.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::fleet::Fleet;

/// Bursty arrivals: the rate is multiplied by `factor` during "on" periods.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Burst {
    /// Rate multiplier while a burst is on.
    pub factor: f64,
    /// Mean length of a burst, ms (exponential).
    pub mean_on_ms: f64,
    /// Mean gap between bursts, ms (exponential).
    pub mean_off_ms: f64,
}

/// A step change in the arrival rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateStep {
    /// When it happens, ms after the start.
    pub at_ms: f64,
    /// Rate multiplier from then on.
    pub factor: f64,
}

/// Something that happens to a device during a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum FleetEventKind {
    /// Every batch takes this many times its profiled latency from now on.
    Slowdown(f32),
    /// The device goes offline; its queued and running requests are routed again.
    Leave,
    /// The device comes back.
    Join,
}

/// A [`FleetEventKind`] at a time, on a device.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FleetEvent {
    /// When, ms after the start.
    pub at_ms: f64,
    /// Index into the fleet's devices.
    pub device: usize,
    /// What happens.
    pub kind: FleetEventKind,
}

/// One simulated run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Requests that arrive in the run.
    pub requests: usize,
    /// Base Poisson arrival rate, requests per second.
    pub rate_per_s: f64,
    /// Bursty arrivals, if any.
    pub burst: Option<Burst>,
    /// A step change in rate, if any.
    pub step: Option<RateStep>,
    /// Relative frequency of each fleet model.
    pub model_mix: Vec<f64>,
    /// Fraction of requests with a deadline.
    pub deadline_prob: f64,
    /// Deadlines are drawn uniformly in this range, in multiples of the model's reference latency.
    pub deadline_factor: (f64, f64),
    /// Fraction of requests with an accuracy floor (the top-1 of a randomly drawn width).
    pub floor_prob: f64,
    /// Device events, by time.
    pub events: Vec<FleetEvent>,
    /// How long an idle instance waits to fill a batch, ms (the agents' rule; default
    /// [`slim_protocol::DEFAULT_BATCH_DELAY_MS`], work-conserving).
    pub max_queue_delay_ms: f64,
    /// Batch sizes a router may assign.
    pub batch_sizes: Vec<u16>,
}

impl Scenario {
    /// A steady Poisson run at `load` × the fleet's capacity (see [`fleet_capacity_per_s`]).
    pub fn steady(fleet: &Fleet, requests: usize, load: f64) -> Self {
        let model_mix = vec![1.0; fleet.models.len()];
        Self {
            requests,
            rate_per_s: load * fleet_capacity_per_s(fleet, &model_mix),
            burst: None,
            step: None,
            model_mix,
            deadline_prob: 0.3,
            deadline_factor: (2.0, 20.0),
            floor_prob: 0.2,
            events: Vec::new(),
            max_queue_delay_ms: f64::from(slim_protocol::DEFAULT_BATCH_DELAY_MS),
            batch_sizes: vec![1, 4, 8, 16],
        }
    }

    /// A run drawn from `seed`: load between 0.2 and 0.9 of capacity, and with some probability
    /// bursts, a step change in rate, a device that slows down, and a device that leaves (and
    /// maybe comes back).
    pub fn sample(fleet: &Fleet, requests: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5ce7_a210);
        let mut s = Self::steady(fleet, requests, rng.gen_range(0.2..0.9));
        s.model_mix = (0..fleet.models.len())
            .map(|_| rng.gen_range(0.2..1.0))
            .collect();
        s.rate_per_s = s.rate_per_s / fleet_capacity_per_s(fleet, &vec![1.0; fleet.models.len()])
            * fleet_capacity_per_s(fleet, &s.model_mix);
        let horizon_ms = requests as f64 / s.rate_per_s * 1000.0;
        if rng.gen_bool(0.4) {
            s.burst = Some(Burst {
                factor: rng.gen_range(2.0..4.0),
                mean_on_ms: horizon_ms * 0.05,
                mean_off_ms: horizon_ms * 0.2,
            });
        }
        if rng.gen_bool(0.3) {
            s.step = Some(RateStep {
                at_ms: horizon_ms * rng.gen_range(0.2..0.6),
                factor: rng.gen_range(0.5..1.8),
            });
        }
        let n = fleet.devices.len();
        if n > 1 && rng.gen_bool(0.3) {
            s.events.push(FleetEvent {
                at_ms: horizon_ms * rng.gen_range(0.1..0.7),
                device: rng.gen_range(0..n),
                kind: FleetEventKind::Slowdown(rng.gen_range(2.0..6.0)),
            });
        }
        if n > 1 && rng.gen_bool(0.3) {
            let device = rng.gen_range(0..n);
            let at_ms = horizon_ms * rng.gen_range(0.1..0.7);
            s.events.push(FleetEvent {
                at_ms,
                device,
                kind: FleetEventKind::Leave,
            });
            if rng.gen_bool(0.5) {
                s.events.push(FleetEvent {
                    at_ms: at_ms + horizon_ms * 0.2,
                    device,
                    kind: FleetEventKind::Join,
                });
            }
        }
        s.deadline_prob = rng.gen_range(0.0..0.6);
        s.floor_prob = rng.gen_range(0.0..0.4);
        s.events.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        s
    }
}

/// Requests per second the fleet serves when every request runs at the middle of its widths'
/// cost range (mean over widths) in batches of 8: the yardstick for a scenario's load.
pub fn fleet_capacity_per_s(fleet: &Fleet, model_mix: &[f64]) -> f64 {
    let total: f64 = model_mix.iter().sum::<f64>().max(1e-9);
    fleet
        .devices
        .iter()
        .map(|d| {
            let per_request_ms: f64 = fleet
                .models
                .iter()
                .zip(model_mix)
                .map(|(m, share)| {
                    let mean: f64 = m
                        .widths
                        .iter()
                        .filter_map(|w| d.profile.cost(&m.name, w.width, 8))
                        .map(|(lat, _)| f64::from(lat) / 8.0)
                        .sum::<f64>()
                        / m.widths.len().max(1) as f64;
                    share / total * mean
                })
                .sum();
            f64::from(d.instances) * 1000.0 / per_request_ms.max(1e-6)
        })
        .sum()
}
