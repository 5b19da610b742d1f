//! Hand-written routers: the baselines a learned router must beat.

mod greedy;
mod least_loaded;
mod power_of_two;
mod random;
mod round_robin;
mod shortest_queue;

pub(crate) use greedy::expected_outcome;
pub use greedy::GreedyRouter;
pub use least_loaded::LeastLoadedRouter;
pub use power_of_two::PowerOfTwoRouter;
pub use random::RandomRouter;
pub use round_robin::RoundRobinRouter;
pub use shortest_queue::ShortestQueueRouter;

use crate::cached::{self, Class, Leaf, Ranked, ScoreCache};
use crate::{eligible_widths, DeviceView, Observation, Route, RouteRequest, WidthOption};

/// The widest width of `device` that `request` allows.
pub(crate) fn widest<'a>(
    device: &'a DeviceView,
    request: &'a RouteRequest,
) -> Option<&'a WidthOption> {
    eligible_widths(device, request).last()
}

/// Every device that can take `request`, with its index and its widest eligible width.
pub(crate) fn eligible<'a>(
    observation: &'a Observation,
    request: &'a RouteRequest,
) -> impl Iterator<Item = (usize, &'a DeviceView, f32)> + 'a {
    observation
        .devices
        .iter()
        .enumerate()
        .filter_map(move |(i, d)| widest(d, request).map(|w| (i, d, w.width)))
}

/// Of `candidates`, the one `load` ranks lowest (the first on a tie), routed at its width with
/// `batch_size`: the queue-based baselines differ only in what they count and among whom.
pub(crate) fn least_loaded<'a>(
    candidates: impl Iterator<Item = (usize, &'a DeviceView, f32)>,
    load: impl Fn(&DeviceView) -> f64,
    batch_size: u16,
) -> Option<Route> {
    candidates
        .min_by(|(_, a, _), (_, b, _)| load(a).total_cmp(&load(b)))
        .map(|(device, _, width)| Route {
            device,
            width,
            batch_size,
        })
}

/// A device's load and its route, for [`least_loaded_cached`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lightest {
    load: f64,
    route: Route,
}

impl Ranked for Lightest {
    fn beats(&self, other: &Self) -> bool {
        // `least_loaded`'s order (`min_by` keeps the first of equal minima).
        self.load.total_cmp(&other.load) == std::cmp::Ordering::Less
    }
}

/// [`least_loaded`] over every eligible device, keeping each device's load between requests
/// (per constraint class) when the observation's devices carry versions, so only the devices
/// that changed are looked at again; the same pick as the full scan.
pub(crate) fn least_loaded_cached(
    cache: &mut ScoreCache<Lightest>,
    observation: &Observation,
    request: &RouteRequest,
    load: impl Fn(&DeviceView) -> f64,
    batch_size: u16,
) -> Option<Route> {
    if !cached::tracked(observation) {
        return least_loaded(eligible(observation, request), load, batch_size);
    }
    let class = Class::of(request, false);
    let best = cache.best(
        observation,
        request,
        class,
        false,
        |i, device, _| match widest(device, request) {
            Some(width) => Leaf::Best(Lightest {
                load: load(device),
                route: Route {
                    device: i,
                    width: width.width,
                    batch_size,
                },
            }),
            None => Leaf::Empty,
        },
    );
    match best {
        Ok(best) => best.map(|b| b.route),
        // Never: `total_cmp` orders every load, so no leaf is unordered.
        Err(cached::Unordered) => least_loaded(eligible(observation, request), load, batch_size),
    }
}
