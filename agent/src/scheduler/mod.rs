//! The local greedy scheduler: a pure [`Batcher`] driven by an actor that owns the model instances.

mod actor;
mod batcher;
mod instances;
mod memory;
mod pace;
mod replay;
mod unreported;

pub use actor::{
    spawn_scheduler, warm_instances, PaceCount, SchedulerConfig, SchedulerHandle, SchedulerReport,
    WarmInstances,
};
pub use batcher::{Batch, Batcher, QueueKey, QueueSnapshot, Queued};
pub use instances::{InstancePolicy, ScaleDecision, ScaleInput};
pub use memory::resident_bytes;
pub use pace::{Hold, Pace};
pub use replay::{ReplayCache, ReplayLimits};
