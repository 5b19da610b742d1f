//! Inferences, batches and agent-side time per (agent, model, width), as Triton counts them.

use prometheus::proto::MetricFamily;
use slim_protocol::WidthKey;

use super::family::Family;
use crate::http::snapshot::Snapshot;

const LABELS: &[&str] = &["agent", "model", "width"];

/// The batch families, from the snapshot's per-(agent, model, width) totals.
#[derive(Debug)]
pub(super) struct BatchFamilies {
    count: Family,
    exec_count: Family,
    queue_us: Family,
    compute_us: Family,
    request_us: Family,
}

impl BatchFamilies {
    pub(super) fn new() -> Self {
        Self {
            count: Family::counter(
                "nv_inference_count",
                "Inferences run (requests in batches), per agent, model and width.",
                LABELS,
            ),
            exec_count: Family::counter(
                "nv_inference_exec_count",
                "Batches run, per agent, model and width.",
                LABELS,
            ),
            queue_us: Family::counter(
                "nv_inference_queue_duration_us",
                "Cumulative time requests waited in the agent's queue, microseconds.",
                LABELS,
            ),
            compute_us: Family::counter(
                "nv_inference_compute_infer_duration_us",
                "Cumulative compute time of requests (each request counts its batch's time), microseconds.",
                LABELS,
            ),
            request_us: Family::counter(
                "nv_inference_request_duration_us",
                "Cumulative agent-side request time (queue + compute), microseconds.",
                LABELS,
            ),
        }
    }

    pub(super) fn families(&self) -> [&Family; 5] {
        [
            &self.count,
            &self.exec_count,
            &self.queue_us,
            &self.compute_us,
            &self.request_us,
        ]
    }

    pub(super) fn collect(&self, s: &Snapshot, out: &mut Vec<MetricFamily>) {
        let mut count = self.count.samples();
        let mut exec_count = self.exec_count.samples();
        let mut queue_us = self.queue_us.samples();
        let mut compute_us = self.compute_us.samples();
        let mut request_us = self.request_us.samples();
        for b in &s.batches {
            let width = WidthKey::of(b.width).to_string();
            let labels = [b.agent.as_str(), b.model.as_str(), width.as_str()];
            count.add(&labels, b.inferences as f64);
            exec_count.add(&labels, b.executions as f64);
            queue_us.add(&labels, b.queue_us);
            compute_us.add(&labels, b.compute_us);
            request_us.add(&labels, b.queue_us + b.compute_us);
        }
        out.extend([count, exec_count, queue_us, compute_us, request_us].map(|s| s.finish()));
    }
}
