//! The Slim Scheduler coordinator.
//!
//! It reads requests from `{prefix}/requests/+`, checks them ([`validate`]), asks a
//! [`slim_router::Router`] where each should run given the [`state::ClusterState`] built from
//! agents' retained status and telemetry, and publishes the [`slim_protocol::Assignment`] to the
//! chosen agent plus a [`slim_protocol::Decision`] record. Requests held by an agent that goes
//! offline (last will, or telemetry silence) are routed again. The decisions live in the
//! I/O-free [`core::Core`]; [`service::start`] connects it to the broker and runs it; [`http`] serves
//! its metrics, state and dashboard to operators. With online refinement ([`online`]) the PPO
//! policy keeps learning from the latency and energy agents report for the requests it placed.

pub mod admission;
pub mod answered;
pub mod config;
pub mod core;
pub mod counters;
pub mod http;
pub mod online;
pub mod routing;
pub mod service;
pub mod state;
pub mod validate;

pub use config::CoordinatorConfig;
pub use service::{start, CoordinatorHandle};
