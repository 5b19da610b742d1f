//! A greedy cost heuristic: the lowest expected finish time plus energy, with the width chosen to
//! meet the request's deadline and accuracy floor.

use crate::cached::{self, Class, Leaf, Ranked, ScoreCache};
use crate::reward::{Outcome, RewardWeights};
use crate::{
    batch_fits, eligible_widths, DeviceView, Observation, Route, RouteRequest, Router,
    RouterSettings, Scales,
};

/// Greedy placement by expected cost; ties go to the lower index.
///
/// On an observation whose devices carry versions (the coordinator's), it keeps each device's
/// cheapest candidate per constraint class and recosts only the devices that changed since
/// (`router/src/cached.rs`); the pick is the full scan's, exactly.
#[derive(Debug)]
pub struct GreedyRouter {
    weights: RewardWeights,
    batch_size: u16,
    cache: ScoreCache<Cheapest>,
}

/// A device's cheapest candidate.
#[derive(Debug, Clone, Copy)]
struct Cheapest {
    cost: f32,
    route: Route,
}

impl Ranked for Cheapest {
    fn beats(&self, other: &Self) -> bool {
        self.cost < other.cost
    }
}

impl GreedyRouter {
    /// A greedy router weighing its cost terms with `settings.weights`.
    pub fn new(settings: &RouterSettings) -> Self {
        Self {
            weights: settings.weights,
            batch_size: settings.batch_size,
            cache: ScoreCache::default(),
        }
    }

    /// Every candidate of device `i` with its cost, in (width, batch) order.
    fn costs<'a>(
        &'a self,
        (i, device): (usize, &'a DeviceView),
        scales: &'a Scales,
        request: &'a RouteRequest,
    ) -> impl Iterator<Item = (f32, Route)> + 'a {
        eligible_widths(device, request).flat_map(move |width| {
            // No profile: cost by FLOPs and queue alone.
            let unprofiled = width.batches.is_empty().then(|| {
                let cost = device.outstanding as f32 + width.flops as f32 * 1e-9;
                (cost, self.batch_size)
            });
            let profiled =
                width
                    .batches
                    .iter()
                    .filter(|o| batch_fits(device, o))
                    .map(move |option| {
                        let outcome = expected_outcome(device, width, option, request);
                        (self.weights.cost(&outcome, scales), option.batch)
                    });
            unprofiled
                .into_iter()
                .chain(profiled)
                .map(move |(cost, batch_size)| {
                    let route = Route {
                        device: i,
                        width: width.width,
                        batch_size,
                    };
                    (cost, route)
                })
        })
    }

    /// Scans every candidate (the path without a cache).
    fn route_full(&self, observation: &Observation, request: &RouteRequest) -> Option<Route> {
        let scales = Scales::from_observation(observation);
        let mut best: Option<(f32, Route)> = None;
        for device in observation.devices.iter().enumerate() {
            for (cost, route) in self.costs(device, &scales, request) {
                if best.is_none_or(|(c, _)| cost < c) {
                    best = Some((cost, route));
                }
            }
        }
        best.map(|(_, route)| route)
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
        if cached::tracked(observation) {
            let mut cache = std::mem::take(&mut self.cache);
            let class = Class::of(request, true);
            let best = cache
                .best(observation, request, class, true, |i, device, scales| {
                    let mut best: Option<Cheapest> = None;
                    for (cost, route) in self.costs((i, device), scales, request) {
                        if cost.is_nan() {
                            return Leaf::Unordered;
                        }
                        if best.is_none_or(|b| cost < b.cost) {
                            best = Some(Cheapest { cost, route });
                        }
                    }
                    best.map_or(Leaf::Empty, Leaf::Best)
                })
                .map(|best| best.map(|b| b.route));
            self.cache = cache;
            if let Ok(route) = best {
                return route;
            }
        }
        self.route_full(observation, request)
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

    #[test]
    fn the_cached_costs_pick_what_the_full_scan_picks() {
        for preset in [RewardPreset::Efficiency, RewardPreset::Accuracy] {
            let settings = RouterSettings {
                weights: preset.weights(),
                ..Default::default()
            };
            let mut full = GreedyRouter::new(&settings);
            let mut cached = GreedyRouter::new(&settings);
            crate::cached::tests::compare(&mut cached, &mut full, |r| r.cache.rescored());
        }
    }
}
