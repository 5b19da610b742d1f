//! Routing for Slim Scheduler: the pure [`Router`] interface and its implementations.
//!
//! A router sees an [`Observation`] of the devices that can serve a request and the request's
//! constraints ([`RouteRequest`]), and returns a [`Route`]: which device, which width and which
//! batch size. Routers do no I/O, so the live coordinator and the simulator drive the same code.

pub mod baselines;
mod observation;
mod router;

pub use observation::{eligible_widths, DeviceView, Observation, RouteRequest, WidthOption};
pub use router::{build_router, Route, Router, RouterKind, RouterSettings};
