//! The local greedy scheduler: a pure [`Batcher`] driven by an actor that owns the model instances.

mod actor;
mod batcher;

pub use actor::{spawn_scheduler, SchedulerConfig, SchedulerHandle, SchedulerReport};
pub use batcher::{Batch, Batcher, QueueKey, QueueSnapshot, Queued};
