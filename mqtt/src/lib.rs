//! MQTT plumbing shared by the agent, the coordinator and the CLI.
//!
//! [`BrokerOptions`] turns a broker URL plus credentials and TLS files into rumqttc options, so
//! every binary accepts the same `--broker mqtt://host:port` flags. With the `embedded` feature,
//! [`EmbeddedBroker`] starts an in-process rumqttd for the demo, tests and single-box use.

#[cfg(feature = "embedded")]
mod embedded;
mod options;

#[cfg(feature = "embedded")]
pub use embedded::EmbeddedBroker;
pub use options::{BrokerError, BrokerOptions, DEFAULT_MAX_PACKET_BYTES};
