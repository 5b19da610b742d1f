//! PPO for the global router, trained in the simulator with candle.
//!
//! - [`features`]: each valid (device, width, batch) candidate becomes a feature vector; invalid
//!   ones are never built (the action mask).
//! - [`net`]: one shared encoder scores every candidate, softmax over candidates, so any number
//!   of devices works; a critic pools the candidates.
//! - [`train`]: rollouts in sampled scenarios, GAE, clipped policy and value losses, entropy
//!   bonus, gradient-norm clipping, learning-rate annealing, diagnostics (the loss step is
//!   `update.rs`, shared with [`online`]).
//! - [`checkpoint`]: safetensors weights plus metadata; [`PpoRouter`] loads it.
//! - [`online`]: refinement from live rewards (a contextual bandit over the same network and
//!   loss), for the coordinator's `--online-refine`.

pub mod checkpoint;
mod config;
pub mod features;
pub mod net;
pub mod online;
pub mod prior;
mod router;
pub mod train;
mod update;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointMeta, OnlineMeta};
pub use config::PpoConfig;
pub use prior::PriorCheck;
pub use router::{argmax, PpoRouter};
pub use train::{train, IterationStats};
