//! The policy's view of one decision: a feature vector per valid (device, width, batch) candidate.
//!
//! Candidates that are not allowed (offline device, width below the accuracy floor or not the
//! pinned one, batch that does not fit in free memory, batch above the device's largest) are
//! never built, so the policy cannot choose them: that is the action mask. Every feature is
//! relative (to the model's [`Scales`], to the device's own profile), so one network scores
//! candidates on any fleet, of any size.

use crate::baselines::expected_outcome;
use crate::{batch_fits, eligible_widths, DeviceView, Observation, Route, RouteRequest, Scales};

/// Version of the feature layout below; a checkpoint records it and refuses another.
pub const OBSERVATION_SCHEMA_VERSION: u32 = 3;
/// Features per candidate.
pub const FEATURES: usize = 22;
/// Index of the first of the linear cost features (expected finish time / L and energy / E,
/// both divided by [`COST_FEATURE_SCALE`] and clipped, then the expected deadline miss): with
/// feature 8 (accuracy lost / 10) they are the greedy heuristic's cost terms, so a linear map of
/// them is exactly greedy's cost (see [`super::net::PolicyWeights::greedy_prior`]).
pub const COST_FEATURES: usize = 16;
/// Index of the accuracy feature, `(1 - top1) * 10`.
pub const ACCURACY_FEATURE: usize = 8;
/// Index of the first of the queue features added in schema version 3 (after the cost
/// features, which keep their indices): requests waiting at the candidate's (model, width) per
/// batch of the candidate's size, the age of the oldest of them in reference latencies (the
/// batching timer), and the model's arrival rate against what the device serves at the
/// candidate's cost. The greedy prior gives them zero weight.
pub const QUEUE_FEATURES: usize = 19;
/// Divisor of the linear finish-time and energy features.
pub const COST_FEATURE_SCALE: f32 = 100.0;
/// Largest finish time (in reference latencies) and energy (in reference energies) the linear
/// features distinguish; the squashed features above still order larger ones.
pub const COST_FEATURE_CLIP: f32 = 1000.0;

/// The valid candidates of one decision and their features (`FEATURES` per candidate, row-major).
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    /// Routes, one per candidate.
    pub routes: Vec<Route>,
    /// Features, `routes.len() * FEATURES`.
    pub features: Vec<f32>,
}

fn squash(x: f32, div: f32) -> f32 {
    x.max(0.0).ln_1p() / div
}

/// The share of `device`'s instances the requested model's whole arrival stream would keep busy
/// at `per_request_ms` of compute per request: its arrival rate over the device's service rate
/// at this candidate's cost (1 = just saturated), so the same on any scale of fleet or model.
fn offered_load(device: &DeviceView, per_request_ms: f32, instances: f32) -> f32 {
    device.arrival_rate_per_s * per_request_ms / 1000.0 / instances
}

impl Candidates {
    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no candidate is valid.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Rebuilds the candidates of `request` on `observation`, offering `batch_sizes`.
    pub fn fill(&mut self, observation: &Observation, request: &RouteRequest) {
        self.routes.clear();
        self.features.clear();
        let scales = Scales::from_observation(observation);
        for (i, device) in observation.devices.iter().enumerate() {
            self.push_device(i, device, &scales, request);
        }
    }

    /// Appends the candidates of `device` (index `i` of its observation), with the
    /// observation's `scales`: what [`Candidates::fill`] builds for that device.
    pub fn push_device(
        &mut self,
        i: usize,
        device: &DeviceView,
        scales: &Scales,
        request: &RouteRequest,
    ) {
        let (ls, es) = (scales.latency_ms, scales.energy_mj);
        let deadline = request.deadline_ms.map(|d| d as f32);
        let instances = f32::from(device.instances.max(1));
        let util = device.gpu_util.unwrap_or(device.cpu_util);
        for width in eligible_widths(device, request) {
            let base = width
                .batches
                .first()
                .map_or(1.0, |b| b.latency_ms.max(1e-4));
            let drift = width.recent_latency_ms.map_or(0.0, |r| {
                (r / (base * device.slowdown.max(0.01)))
                    .ln()
                    .clamp(-3.0, 3.0)
            });
            for option in width
                .batches
                .iter()
                .filter(|o| o.batch <= device.max_batch && batch_fits(device, o))
            {
                let expected = expected_outcome(device, width, option, request);
                let per_request = option.latency_ms * device.slowdown / f32::from(option.batch);
                let slack = deadline.map_or(1.0, |d| {
                    ((d - expected.latency_ms) / ls).clamp(-5.0, 5.0) / 5.0
                });
                self.features.extend_from_slice(&[
                    f32::from(u8::from(deadline.is_some())),
                    deadline.map_or(0.0, |d| squash(d / ls, 3.0)),
                    squash(device.queue_depth as f32, 4.0),
                    squash(device.outstanding as f32, 4.0),
                    squash(device.backlog_ms / instances / ls, 3.0),
                    util,
                    device.slowdown.max(0.01).ln(),
                    width.width,
                    (1.0 - width.top1) * 10.0,
                    f32::from(option.batch).log2() / 4.0,
                    squash(per_request / ls, 1.0),
                    squash(expected.latency_ms / ls, 2.0),
                    squash(expected.energy_mj / es, 2.0),
                    slack,
                    drift,
                    squash(device.power_w, 5.0),
                    (expected.latency_ms / ls).min(COST_FEATURE_CLIP) / COST_FEATURE_SCALE,
                    (expected.energy_mj / es).min(COST_FEATURE_CLIP) / COST_FEATURE_SCALE,
                    f32::from(u8::from(expected.deadline_met == Some(false))),
                    squash(width.queue_depth as f32 / f32::from(option.batch), 2.0),
                    squash(width.oldest_wait_ms / ls, 2.0),
                    squash(offered_load(device, per_request, instances), 1.0),
                ]);
                self.routes.push(Route {
                    device: i,
                    width: width.width,
                    batch_size: option.batch,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::tests::device;

    #[test]
    fn masked_candidates_are_never_offered() {
        let mut offline = device("offline", 0);
        offline.online = false;
        let mut tight = device("tight", 0);
        tight.mem_free_bytes = 600_000;
        tight.max_batch = 4;
        let obs = Observation {
            devices: vec![offline, tight, device("ok", 0)],
        };
        let request = RouteRequest {
            min_accuracy: Some(0.95),
            ..Default::default()
        };
        let mut c = Candidates::default();
        c.fill(&obs, &request);
        assert_eq!(c.features.len(), c.len() * FEATURES);
        assert!(c.routes.iter().all(|r| r.device != 0));
        assert!(c.routes.iter().all(|r| r.width >= 0.5));
        let tight_routes: Vec<_> = c.routes.iter().filter(|r| r.device == 1).collect();
        assert_eq!(
            tight_routes.len(),
            1,
            "only width 0.5 at batch 1 fits: {tight_routes:?}"
        );
        assert_eq!(c.routes.iter().filter(|r| r.device == 2).count(), 2 * 3);
        assert!(c.features.iter().all(|f| f.is_finite()));
    }

    /// The features of `device`'s candidates for a plain request, one row per candidate.
    fn rows(device: &DeviceView) -> (Vec<Route>, Vec<Vec<f32>>) {
        let obs = Observation {
            devices: vec![device.clone()],
        };
        let mut c = Candidates::default();
        c.fill(&obs, &RouteRequest::default());
        let rows = c.features.chunks(FEATURES).map(<[f32]>::to_vec).collect();
        (c.routes, rows)
    }

    #[test]
    fn the_queue_features_are_zero_when_idle_and_grow_with_the_queue_age_and_rate() {
        let idle = device("a", 0);
        let (_, base) = rows(&idle);
        assert!(base
            .iter()
            .all(|r| r[QUEUE_FEATURES..].iter().all(|&f| f == 0.0)));
        let mut busy = idle.clone();
        busy.widths[1].queue_depth = 8;
        busy.widths[1].oldest_wait_ms = 50.0;
        busy.arrival_rate_per_s = 500.0;
        let (routes, loaded) = rows(&busy);
        for ((route, a), b) in routes.iter().zip(&base).zip(&loaded) {
            assert_eq!(a[..QUEUE_FEATURES], b[..QUEUE_FEATURES], "{route:?}");
            assert!(b.iter().all(|f| f.is_finite()));
            let at_queue = route.width == 0.5;
            assert_eq!(b[QUEUE_FEATURES] > 0.0, at_queue, "{route:?}");
            assert_eq!(b[QUEUE_FEATURES + 1] > 0.0, at_queue, "{route:?}");
            assert!(b[QUEUE_FEATURES + 2] > 0.0, "{route:?}");
        }
        // Depth is per batch of the candidate's size: a batch of 16 sees half a batch queued.
        let depth = |batch: u16| {
            let k = routes
                .iter()
                .position(|r| r.width == 0.5 && r.batch_size == batch)
                .unwrap();
            loaded[k][QUEUE_FEATURES]
        };
        assert!(depth(1) > depth(4) && depth(4) > depth(16));
        assert!((depth(16) - 1.5f32.ln() / 2.0).abs() < 1e-6);
    }

    #[test]
    fn the_queue_features_are_relative_so_scaling_time_changes_nothing() {
        // The same device 10x faster, with queues 10x younger and arrivals 10x more frequent.
        let mut slow = device("a", 3);
        slow.widths[2].queue_depth = 5;
        slow.widths[2].oldest_wait_ms = 40.0;
        slow.arrival_rate_per_s = 100.0;
        slow.backlog_ms = 30.0;
        let mut fast = slow.clone();
        fast.arrival_rate_per_s *= 10.0;
        fast.backlog_ms /= 10.0;
        for w in &mut fast.widths {
            w.oldest_wait_ms /= 10.0;
            for b in &mut w.batches {
                b.latency_ms /= 10.0;
            }
        }
        let ((_, a), (_, b)) = (rows(&slow), rows(&fast));
        for (x, y) in a.iter().zip(&b) {
            for f in QUEUE_FEATURES..FEATURES {
                assert!(
                    (x[f] - y[f]).abs() < 1e-5,
                    "feature {f}: {} vs {}",
                    x[f],
                    y[f]
                );
            }
        }
    }
}
