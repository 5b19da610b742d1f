//! The wire contract of Slim Scheduler: MQTT topic names, the message types that travel on them,
//! and their MessagePack codec.
//!
//! Every payload is a MessagePack map with named fields (rmp-serde `to_vec_named`) and carries
//! the protocol version in `v`. Clients in any language can speak it; `docs/protocol.md` is the
//! user-facing description of the same contract and `docs/asyncapi.yaml` its machine-readable
//! form. This crate has no async runtime and no I/O.

mod auth;
mod check;
mod codec;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod key;
pub mod limits;
mod liveness;
pub mod manifest;
mod messages;
mod profile;
mod tensor;
mod topics;
mod width;

pub use auth::{AssignmentKey, KeyError};
pub use check::Refusal;
pub use codec::{
    decode, decode_request_shared, encode, peek_reply_address, peek_str, DecodeError, PeekedAddress,
};
pub use error::{ErrorCode, ErrorReply, MAX_RETRY_AFTER_MS};
pub use key::RequestKey;
pub use liveness::{Liveness, DEFAULT_TELEMETRY_TIMEOUT_MS};
pub use messages::*;
pub use tensor::{DType, Tensor, TensorError};
pub use topics::{AgentTopic, Topics, DEFAULT_PREFIX};
pub use width::WidthKey;

/// How long an idle model instance waits for its batch to fill by default, in milliseconds: 0,
/// work-conserving. An idle instance takes what is queued at once; batches form while every
/// instance of a queue is busy (as Triton's dynamic batcher with no queue delay). The agents'
/// `max_queue_delay_ms` and the simulator's twin both default to it.
pub const DEFAULT_BATCH_DELAY_MS: u32 = 0;

/// Version of the payload schema. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;

/// Milliseconds since the Unix epoch, the clock every timestamp on the wire uses.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
