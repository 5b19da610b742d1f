//! `/metrics`: the snapshot in Prometheus text format, with Triton's names where the meaning
//! matches (see `docs/monitoring.md`). [`Metrics`] holds the registry, built once at start,
//! with one collector that reads the latest snapshot when a scrape gathers; each family
//! group (batches, agents, coordinator, online) describes its families once and turns the
//! snapshot into samples.

mod agents;
mod batches;
mod collector;
mod coordinator;
mod family;
mod online;
mod registry;

pub use registry::{Metrics, CONTENT_TYPE};

#[cfg(test)]
mod scrape_tests;
#[cfg(test)]
mod tests;
