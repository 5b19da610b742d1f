//! [`Metrics`]: the registry `/metrics` encodes, built once when the HTTP server starts.

use std::sync::Arc;

use prometheus::{Registry, TextEncoder};
use tokio::sync::watch;

use super::collector::SnapshotCollector;
use crate::http::snapshot::Snapshot;

/// The content type of [`Metrics::scrape`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The coordinator's Prometheus registry: every family is described and registered once, at
/// start; a scrape only gathers the latest snapshot's values and encodes them.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Registers the families, whose values come from the latest `snapshot` at each scrape.
    pub fn new(snapshot: watch::Receiver<Arc<Snapshot>>) -> Self {
        let registry = Registry::new();
        registry
            .register(Box::new(SnapshotCollector::new(snapshot)))
            .expect("metric names are unique");
        Self { registry }
    }

    /// The registry, for a caller that adds collectors of its own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The latest snapshot in Prometheus text format (0.0.4), with Triton's names where the
    /// meaning matches (see `docs/monitoring.md`).
    pub fn scrape(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("text encoding cannot fail")
    }
}
