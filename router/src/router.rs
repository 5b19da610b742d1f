//! The router interface and the factory that builds a router by name.

use serde::{Deserialize, Serialize};

use crate::{baselines, Observation, RouteRequest};

/// A placement decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route {
    /// Index into [`Observation::devices`].
    pub device: usize,
    /// Width to run at.
    pub width: f32,
    /// Largest batch the agent may form.
    pub batch_size: u16,
}

/// Decides where each request runs. Implementations are pure: no I/O, no clock.
pub trait Router: Send {
    /// Name reported in decisions and metrics.
    fn name(&self) -> &str;
    /// Places `request`, or returns `None` when no device has an eligible width.
    fn route(&mut self, observation: &Observation, request: &RouteRequest) -> Option<Route>;
}

/// The routers that can be chosen by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RouterKind {
    /// Uniformly random device and width (the paper's baseline).
    Random,
    /// Devices in turn, widest eligible width.
    RoundRobin,
    /// The device with the fewest outstanding requests, widest eligible width.
    LeastLoaded,
}

impl RouterKind {
    /// The name used on the command line and in decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            RouterKind::Random => "random",
            RouterKind::RoundRobin => "round-robin",
            RouterKind::LeastLoaded => "least-loaded",
        }
    }
}

/// Settings every router shares.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterSettings {
    /// Seed for routers that draw random numbers.
    pub seed: u64,
    /// Batch size assigned by routers that do not choose one.
    pub batch_size: u16,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            seed: 0,
            batch_size: 8,
        }
    }
}

/// Builds the router `kind`.
pub fn build_router(kind: RouterKind, settings: &RouterSettings) -> Box<dyn Router> {
    match kind {
        RouterKind::Random => Box::new(baselines::RandomRouter::new(settings)),
        RouterKind::RoundRobin => Box::new(baselines::RoundRobinRouter::new(settings)),
        RouterKind::LeastLoaded => Box::new(baselines::LeastLoadedRouter::new(settings)),
    }
}
