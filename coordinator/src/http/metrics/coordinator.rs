//! The coordinator's own counters and gauges, and the router's placements and policy.

use prometheus::proto::MetricFamily;
use slim_protocol::WidthKey;

use super::family::{Family, Samples};
use crate::http::snapshot::Snapshot;

/// A value the snapshot carries, read at scrape time.
type Read = fn(&Snapshot) -> f64;

/// The coordinator's running totals: name, help and where the snapshot keeps the value.
const TOTALS: [(&str, &str, Read); 11] = [
    (
        "slim_requests_received_total",
        "Requests received on the request topics.",
        |s| s.counters.received as f64,
    ),
    (
        "slim_requests_duplicate_total",
        "Redelivered requests ignored.",
        |s| s.counters.duplicates as f64,
    ),
    (
        "slim_router_placements_total",
        "Placements published (first placements and re-routes).",
        |s| s.counters.routed as f64,
    ),
    (
        "slim_router_reroutes_total",
        "Requests routed again after their agent was lost.",
        |s| s.counters.rerouted as f64,
    ),
    (
        "slim_router_reroutes_abandoned_total",
        "Re-routed requests that found no agent within the park timeout, left to the client's retry (never refused: the lost agent may have answered them).",
        |s| s.counters.reroutes_abandoned as f64,
    ),
    (
        "slim_requests_shed_total",
        "Requests refused overloaded at once because every agent that could take them held as many requests as its bound (also in nv_inference_request_failure with reason overloaded).",
        |s| s.counters.shed as f64,
    ),
    (
        "slim_requests_resent_total",
        "Retried requests sent again to the agent that holds or answered them.",
        |s| s.counters.resent as f64,
    ),
    (
        "slim_coordinator_mqtt_reconnects_total",
        "Reconnections to the broker after the first connection.",
        |s| s.counters.reconnects as f64,
    ),
    (
        "slim_agent_messages_refused_total",
        "Agent status or telemetry refused: identity mismatch, limits, undecodable, or too many agents.",
        |s| s.counters.agent_messages_refused as f64,
    ),
    (
        "slim_ledger_reconciled_total",
        "Ledger entries dropped because the agent's own outstanding count showed them gone.",
        |s| s.counters.ledger_reconciled as f64,
    ),
    (
        "slim_ledger_expired_total",
        "Ledger entries dropped after ledger_ttl_ms without an answer.",
        |s| s.counters.ledger_expired as f64,
    ),
];

/// The coordinator's gauges: name, help and how to read them from the snapshot.
const GAUGES: [(&str, &str, Read); 2] = [
    ("slim_agents_online", "Agents online and routable.", |s| {
        s.agents.iter().filter(|a| a.online).count() as f64
    }),
    (
        "slim_coordinator_connected",
        "1 when the coordinator is connected to the broker.",
        |s| f64::from(u8::from(s.coordinator.connected)),
    ),
];

/// The coordinator's and the router's families.
#[derive(Debug)]
pub(super) struct CoordinatorFamilies {
    /// The families of [`TOTALS`] and [`GAUGES`], with their readers.
    plain: Vec<(Family, Read)>,
    decisions: Family,
    router: Family,
}

impl CoordinatorFamilies {
    pub(super) fn new() -> Self {
        let totals = TOTALS.map(|(name, help, read)| (Family::counter(name, help, &[]), read));
        let gauges = GAUGES.map(|(name, help, read)| (Family::gauge(name, help, &[]), read));
        Self {
            plain: totals.into_iter().chain(gauges).collect(),
            decisions: Family::counter(
                "slim_router_decisions_total",
                "Placements per chosen agent, width and batch size.",
                &["agent", "width", "batch"],
            ),
            router: Family::gauge(
                "slim_router_info",
                "The routing policy in use (value is always 1).",
                &["policy"],
            ),
        }
    }

    pub(super) fn families(&self) -> impl Iterator<Item = &Family> {
        let plain = self.plain.iter().map(|(family, _)| family);
        plain.chain([&self.decisions, &self.router])
    }

    /// Adds the coordinator's samples to `out`, and its refusals by error code to `failure`.
    pub(super) fn collect(
        &self,
        s: &Snapshot,
        failure: &mut Samples<'_>,
        out: &mut Vec<MetricFamily>,
    ) {
        for (code, n) in &s.counters.refused {
            failure.add(&["", code], *n as f64);
        }
        for (family, read) in &self.plain {
            let mut samples = family.samples();
            samples.set(&[], read(s));
            out.push(samples.finish());
        }
        let mut decisions = self.decisions.samples();
        for d in &s.decision_counts {
            let width = WidthKey::of(d.width).to_string();
            let batch = d.batch.to_string();
            decisions.add(&[&d.agent, &width, &batch], d.count as f64);
        }
        let mut router = self.router.samples();
        router.set(&[&s.coordinator.router], 1.0);
        out.extend([decisions, router].map(Samples::finish));
    }
}
