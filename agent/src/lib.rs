//! The Slim Scheduler agent: one per device.
//!
//! It announces itself ([`slim_protocol::AgentInfo`], retained, with a last will), receives
//! assignments from the coordinator, checks them ([`validate`]), queues them per (model, width)
//! in the local greedy [`scheduler`], runs batches on tract plans ([`model`]) chosen by
//! [`backend`], answers each request on its `reply_to` through the [`outbox`], and reports
//! [`telemetry`]. [`service::start`] wires these together around one MQTT session.

pub mod backend;
pub mod config;
pub mod doctor;
pub mod emulation;
pub mod model;
pub mod outbox;
pub mod profile;
pub mod scheduler;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod validate;

pub use config::AgentConfig;
pub use service::{start, AgentHandle};
