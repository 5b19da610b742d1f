//! A greedy cost heuristic: the lowest expected finish time plus energy, with the width chosen to
//! meet the request's deadline and accuracy floor.

use crate::reward::{Outcome, RewardWeights};
use crate::{
    batch_fits, eligible_widths, Observation, Route, RouteRequest, Router, RouterSettings, Scales,
};

/// Greedy placement by expected cost; ties go to the lower index.
#[derive(Debug)]
pub struct GreedyRouter {
    weights: RewardWeights,
    batch_size: u16,
}

impl GreedyRouter {
    /// A greedy router weighing its cost terms with `settings.weights`.
    pub fn new(settings: &RouterSettings) -> Self {
        Self {
            weights: settings.weights,
            batch_size: settings.batch_size,
        }
    }
}

/// What the greedy router expects of one candidate: finish time and energy from the profile,
/// the device's backlog spread over its instances, and the batch it will likely run in (what is
/// already waiting plus this request, up to the batch size).
pub(crate) fn expected_outcome(
    device: &crate::DeviceView,
    width: &crate::WidthOption,
    option: &crate::BatchOption,
    request: &RouteRequest,
) -> Outcome {
    let likely = option
        .batch
        .min(
            device
                .queue_depth
                .saturating_add(1)
                .min(u32::from(u16::MAX)) as u16,
        )
        .max(1);
    let run = width.batch_option(likely).unwrap_or(option);
    let scale = f32::from(likely) / f32::from(run.batch.max(1));
    let latency = run.latency_ms * scale.clamp(1.0, 2.0) * device.slowdown.max(0.01);
    let wait = device.backlog_ms / f32::from(device.instances.max(1));
    let finish = wait + latency;
    Outcome {
        latency_ms: finish,
        energy_mj: run.power_w * latency / f32::from(likely),
        top1: width.top1,
        deadline_met: request.deadline_ms.map(|d| finish <= d as f32),
    }
}

impl Router for GreedyRouter {
    fn name(&self) -> &str {
        "greedy"
    }

    fn route(&mut self, observation: &Observation, request: &RouteRequest) -> Option<Route> {
        let scales = Scales::from_observation(observation);
        let mut best: Option<(f32, Route)> = None;
        for (i, device) in observation.devices.iter().enumerate() {
            for width in eligible_widths(device, request) {
                if width.batches.is_empty() {
                    // No profile: cost by FLOPs and queue alone.
                    let cost = device.outstanding as f32 + width.flops as f32 * 1e-9;
                    if best.is_none_or(|(c, _)| cost < c) {
                        best = Some((
                            cost,
                            Route {
                                device: i,
                                width: width.width,
                                batch_size: self.batch_size,
                            },
                        ));
                    }
                    continue;
                }
                for option in width.batches.iter().filter(|o| batch_fits(device, o)) {
                    let outcome = expected_outcome(device, width, option, request);
                    let cost = self.weights.cost(&outcome, &scales);
                    if best.is_none_or(|(c, _)| cost < c) {
                        best = Some((
                            cost,
                            Route {
                                device: i,
                                width: width.width,
                                batch_size: option.batch,
                            },
                        ));
                    }
                }
            }
        }
        best.map(|(_, route)| route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::tests::device;
    use crate::reward::RewardPreset;

    #[test]
    fn the_efficiency_greedy_takes_the_slimmest_width_on_the_idle_device() {
        let mut busy = device("busy", 9);
        busy.backlog_ms = 500.0;
        let obs = Observation {
            devices: vec![busy, device("idle", 0)],
        };
        let mut r = GreedyRouter::new(&RouterSettings::default());
        let route = r.route(&obs, &RouteRequest::default()).unwrap();
        assert_eq!(route.device, 1);
        assert_eq!(route.width, 0.25);
    }

    #[test]
    fn the_accuracy_greedy_takes_the_widest_width_that_meets_the_floor() {
        let obs = Observation {
            devices: vec![device("a", 0)],
        };
        let settings = RouterSettings {
            weights: RewardPreset::Accuracy.weights(),
            ..Default::default()
        };
        let route = GreedyRouter::new(&settings)
            .route(&obs, &RouteRequest::default())
            .unwrap();
        assert_eq!(route.width, 1.0);
    }

    #[test]
    fn batches_that_do_not_fit_in_memory_are_never_chosen() {
        let mut small = device("small", 0);
        small.mem_free_bytes = 300_000;
        let obs = Observation {
            devices: vec![small],
        };
        let route = GreedyRouter::new(&RouterSettings::default())
            .route(&obs, &RouteRequest::default())
            .unwrap();
        assert_eq!((route.width, route.batch_size), (0.25, 1));
    }
}
