//! Hand-written routers: the baselines a learned router must beat.

mod greedy;
mod least_loaded;
mod random;
mod round_robin;

pub(crate) use greedy::expected_outcome;
pub use greedy::GreedyRouter;
pub use least_loaded::LeastLoadedRouter;
pub use random::RandomRouter;
pub use round_robin::RoundRobinRouter;

use crate::{eligible_widths, DeviceView, RouteRequest, WidthOption};

/// The widest width of `device` that `request` allows.
pub(crate) fn widest<'a>(
    device: &'a DeviceView,
    request: &'a RouteRequest,
) -> Option<&'a WidthOption> {
    eligible_widths(device, request).last()
}
