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
pub const OBSERVATION_SCHEMA_VERSION: u32 = 2;
/// Features per candidate.
pub const FEATURES: usize = 19;
/// Index of the first of the linear cost features (expected finish time / L and energy / E,
/// both divided by [`COST_FEATURE_SCALE`] and clipped, then the expected deadline miss): with
/// feature 8 (accuracy lost / 10) they are the greedy heuristic's cost terms, so a linear map of
/// them is exactly greedy's cost (see [`super::net::PolicyWeights::greedy_prior`]).
pub const COST_FEATURES: usize = 16;
/// Index of the accuracy feature, `(1 - top1) * 10`.
pub const ACCURACY_FEATURE: usize = 8;
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
}
