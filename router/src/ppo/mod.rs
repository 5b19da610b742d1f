//! PPO for the global router, trained in the simulator with candle.
//!
//! - [`features`]: each valid (device, width, batch) candidate becomes a feature vector; invalid
//!   ones are never built (the action mask).
//! - [`net`]: one shared encoder scores every candidate, softmax over candidates, so any number
//!   of devices works; a critic pools the candidates.
//! - [`train`]: rollouts in sampled scenarios, GAE, clipped policy and value losses, entropy
//!   bonus, gradient-norm clipping, learning-rate annealing, diagnostics.
//! - [`checkpoint`]: safetensors weights plus metadata; [`PpoRouter`] loads it.

pub mod checkpoint;
mod config;
pub mod features;
pub mod net;
mod router;
pub mod train;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointMeta};
pub use config::PpoConfig;
pub use router::PpoRouter;
pub use train::{train, IterationStats};
