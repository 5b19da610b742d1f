//! The router interface and the factory that builds a router by name.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::reward::RewardWeights;
use crate::{baselines, ppo, Observation, RouteRequest};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum RouterKind {
    /// Uniformly random device, width and batch size (the paper's baseline).
    Random,
    /// Devices in turn, widest eligible width.
    RoundRobin,
    /// The device with the fewest outstanding requests, weighted by its slowdown, widest
    /// eligible width.
    LeastLoaded,
    /// The device with the fewest outstanding requests (speed ignored), widest eligible width.
    JoinShortestQueue,
    /// The shorter queue of two devices drawn at random, widest eligible width.
    PowerOfTwoChoices,
    /// Lowest expected finish time plus energy (weighted), width chosen to meet the deadline
    /// and accuracy floor.
    Greedy,
    /// A trained PPO policy, loaded from the checkpoint given with --policy.
    Ppo,
}

impl RouterKind {
    /// The name used on the command line and in decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            RouterKind::Random => "random",
            RouterKind::RoundRobin => "round-robin",
            RouterKind::LeastLoaded => "least-loaded",
            RouterKind::JoinShortestQueue => "join-shortest-queue",
            RouterKind::PowerOfTwoChoices => "power-of-two-choices",
            RouterKind::Greedy => "greedy",
            RouterKind::Ppo => "ppo",
        }
    }
}

/// Settings every router shares.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterSettings {
    /// Seed for routers that draw random numbers.
    pub seed: u64,
    /// Batch size assigned by routers that do not choose one (and by random on a device
    /// without a profile).
    pub batch_size: u16,
    /// Checkpoint of a trained policy (`--policy FILE`), required by [`RouterKind::Ppo`].
    pub policy: Option<PathBuf>,
    /// Cost weights of the greedy router (default: the efficiency preset, finish time plus energy).
    pub weights: RewardWeights,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            seed: 0,
            batch_size: 8,
            policy: None,
            weights: crate::reward::RewardPreset::Efficiency.weights(),
        }
    }
}

/// Why a router could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// `--router ppo` without `--policy`.
    #[error("the ppo router needs a policy checkpoint (--policy FILE)")]
    MissingPolicy,
    /// The checkpoint could not be loaded.
    #[error(transparent)]
    Checkpoint(#[from] ppo::CheckpointError),
}

/// Builds the router `kind`.
pub fn build_router(
    kind: RouterKind,
    settings: &RouterSettings,
) -> Result<Box<dyn Router>, RouterError> {
    Ok(match kind {
        RouterKind::Random => Box::new(baselines::RandomRouter::new(settings)),
        RouterKind::RoundRobin => Box::new(baselines::RoundRobinRouter::new(settings)),
        RouterKind::LeastLoaded => Box::new(baselines::LeastLoadedRouter::new(settings)),
        RouterKind::JoinShortestQueue => Box::new(baselines::ShortestQueueRouter::new(settings)),
        RouterKind::PowerOfTwoChoices => Box::new(baselines::PowerOfTwoRouter::new(settings)),
        RouterKind::Greedy => Box::new(baselines::GreedyRouter::new(settings)),
        RouterKind::Ppo => {
            let path = settings.policy.as_ref().ok_or(RouterError::MissingPolicy)?;
            Box::new(ppo::PpoRouter::load(path, settings.seed)?)
        }
    })
}
