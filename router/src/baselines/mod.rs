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

use crate::{eligible_widths, DeviceView, RouteRequest, WidthOption};

/// The widest width of `device` that `request` allows.
pub(crate) fn widest<'a>(
    device: &'a DeviceView,
    request: &'a RouteRequest,
) -> Option<&'a WidthOption> {
    eligible_widths(device, request).last()
}
