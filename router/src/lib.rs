//! Routing for Slim Scheduler: the pure [`Router`] interface, its implementations, and the
//! cluster simulator a learned router trains in.
//!
//! A router sees an [`Observation`] of the devices that can serve a request and the request's
//! constraints ([`RouteRequest`]), and returns a [`Route`]: which device, which width and which
//! batch size. Routers do no I/O, so the live coordinator and the simulator drive the same code.
//!
//! - [`baselines`]: random (the paper's baseline), round-robin, least-loaded, greedy cost.
//! - [`ppo`]: the learned router (candle), its training loop and checkpoints.
//! - [`sim`]: the seeded discrete-event cluster simulator.
//! - [`eval`]: comparing routers on held-out simulator seeds.
//! - [`fleet`]: device profiles and model manifests, shared by the simulator and the coordinator.
//! - [`reward`]: reward presets.
//! - [`calibration`]: per-batch overheads and transport delay fitted from a live cluster.

pub mod baselines;
mod cached;
pub mod calibration;
pub mod eval;
pub mod fleet;
mod observation;
pub mod ppo;
pub mod reward;
mod router;
pub mod sim;

pub use observation::{
    allowed_widths, batch_fits, eligible_widths, ArrivalRate, BatchOption, DeviceView, Observation,
    RouteRequest, Scales, WidthOption, LIVE_ARRIVAL_MIN_WINDOW_MS,
};
pub use router::{build_router, Route, Router, RouterError, RouterKind, RouterSettings};
