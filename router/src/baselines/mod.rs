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
