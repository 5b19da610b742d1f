//! MQTT plumbing shared by the agent, the coordinator and the CLI.
//!
//! [`BrokerOptions`] turns a broker URL plus credentials and TLS files into rumqttc options, so
//! every binary accepts the same `--broker mqtt://host:port` flags. With the `embedded` feature,
//! [`EmbeddedBroker`] starts an in-process rumqttd for the demo, tests and single-box use.
//! [`daemon`] holds what both daemons do around their tasks: signals and failure exits;
//! [`LogBudget`] bounds the log lines that network traffic can cause.

pub mod daemon;
#[cfg(feature = "embedded")]
mod embedded;
mod log_budget;
mod options;

#[cfg(feature = "embedded")]
pub use embedded::EmbeddedBroker;
pub use log_budget::{LogBudget, Verdict};
pub use options::{
    BrokerError, BrokerOptions, BROKER_MESSAGE_LIMIT_BYTES, DEFAULT_MAX_INCOMING_PACKET_BYTES,
    DEFAULT_MAX_PACKET_BYTES,
};
