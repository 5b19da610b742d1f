//! The one collector behind `/metrics`: every family described once, read from the latest
//! snapshot when the registry gathers.

use std::sync::Arc;

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tokio::sync::watch;

use super::{
    agents::AgentFamilies, batches::BatchFamilies, coordinator::CoordinatorFamilies,
    family::Family, online::OnlineFamilies,
};
use crate::http::snapshot::Snapshot;

/// Exports the snapshot the core publishes. The core owns the counts; this only reports them,
/// the way Prometheus' guide asks exporters to: values are built at collect time from the
/// source (Go's `MustNewConstMetric`), never kept in metrics that a scrape would update. So a
/// scrape changes no state, concurrent scrapes need no lock, every family of one scrape comes
/// from the same snapshot, and an agent gone from the snapshot is gone from the scrape.
#[derive(Debug)]
pub(super) struct SnapshotCollector {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Coordinator refusals (agent="") and agent error replies (reason="agent_error").
    failure: Family,
    batches: BatchFamilies,
    agents: AgentFamilies,
    coordinator: CoordinatorFamilies,
    online: OnlineFamilies,
}

impl SnapshotCollector {
    /// Describes every family, reading values from the latest `snapshot` at each collect.
    pub(super) fn new(snapshot: watch::Receiver<Arc<Snapshot>>) -> Self {
        Self {
            snapshot,
            failure: Family::counter(
                "nv_inference_request_failure",
                "Failed requests by reason: coordinator refusals by error code (agent=\"\"), and error replies sent by agents (reason=\"agent_error\").",
                &["agent", "reason"],
            ),
            batches: BatchFamilies::new(),
            agents: AgentFamilies::new(),
            coordinator: CoordinatorFamilies::new(),
            online: OnlineFamilies::new(),
        }
    }

    fn families(&self) -> impl Iterator<Item = &Family> {
        std::iter::once(&self.failure)
            .chain(self.batches.families())
            .chain(self.agents.families())
            .chain(self.coordinator.families())
            .chain(self.online.families())
    }
}

impl Collector for SnapshotCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.families().map(Family::desc).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Clone the Arc so the watch's lock is not held while the families are built.
        let s = Arc::clone(&self.snapshot.borrow());
        let mut out = Vec::new();
        let mut failure = self.failure.samples();
        self.batches.collect(&s, &mut out);
        self.agents.collect(&s, &mut failure, &mut out);
        self.coordinator.collect(&s, &mut failure, &mut out);
        self.online.collect(s.online.as_ref(), &mut out);
        out.push(failure.finish());
        out
    }
}
