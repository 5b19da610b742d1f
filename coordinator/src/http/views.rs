//! The JSON shapes of the snapshot's parts: the coordinator, its agents and their latest
//! telemetry, counters, batch totals and decision counts.

use std::collections::BTreeMap;

use serde::Serialize;
use slim_protocol::{DeviceInfo, Emulation, EnergySource, ErrorCode, QueueStat, Telemetry};

use super::window::Percentiles;
use crate::counters::Counters;

/// The coordinator's own state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoordinatorView {
    /// Coordinator id.
    pub id: String,
    /// Router (policy) name.
    pub router: String,
    /// Connected to the broker.
    pub connected: bool,
    /// Connected and at least one agent online.
    pub ready: bool,
    /// Coordinator clock at start, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// Coordinator clock when this snapshot was taken.
    pub now_ms: u64,
}

/// One agent as the coordinator knows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// Agent id.
    pub id: String,
    /// Inference backend (`cpu`, `cuda`).
    pub backend: String,
    /// Why that backend was chosen.
    pub backend_reason: String,
    /// Online and routable.
    pub online: bool,
    /// Hardware.
    pub device: DeviceInfo,
    /// Slower-device emulation, when enabled.
    pub emulation: Option<Emulation>,
    /// Model families served.
    pub models: Vec<String>,
    /// Requests the coordinator placed on it and has not seen answered.
    pub outstanding: usize,
    /// Requests placed on it since the coordinator started.
    pub assigned: u64,
    /// Seconds since anything was heard from it.
    pub last_seen_s: f32,
    /// Its latest telemetry, summarized.
    pub telemetry: Option<TelemetryView>,
    /// Agent-side latency (queue + compute) over the last minute, all models, ms.
    pub latency: Option<Percentiles>,
    /// Time between its latest two telemetry reports (agent clock), ms.
    pub telemetry_interval_ms: Option<u64>,
}

/// Batches one agent ran for one (model, width), summed over its telemetry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BatchTotals {
    /// Agent id.
    pub agent: String,
    /// Model family.
    pub model: String,
    /// Width.
    pub width: f32,
    /// Batches run.
    pub executions: u64,
    /// Requests in those batches.
    pub inferences: u64,
    /// Queue time summed over requests, microseconds.
    pub queue_us: f64,
    /// Compute time summed over requests (each request counts its batch's time), microseconds.
    pub compute_us: f64,
}

/// How often the router chose one (agent, width, batch).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DecisionCount {
    /// Agent id.
    pub agent: String,
    /// Width.
    pub width: f32,
    /// Batch size.
    pub batch: u16,
    /// Decisions.
    pub count: u64,
}

/// The latest telemetry of one agent, without the per-batch and per-request lists.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryView {
    /// Report number.
    pub seq: u64,
    /// CPU utilization, 0..1.
    pub cpu_util: f32,
    /// GPU utilization, 0..1, where readable.
    pub gpu_util: Option<f32>,
    /// RAM in use.
    pub ram_used_bytes: u64,
    /// RAM in total.
    pub ram_total_bytes: u64,
    /// VRAM in use, where readable.
    pub vram_used_bytes: Option<u64>,
    /// VRAM in total, where readable.
    pub vram_total_bytes: Option<u64>,
    /// Power now, watts.
    pub power_w: f32,
    /// Energy since the agent started, joules.
    pub energy_j: f64,
    /// Where power and energy come from.
    pub energy_source: EnergySource,
    /// Requests waiting in the agent's queues.
    pub queue_depth: u32,
    /// Queue per (model, width).
    pub queues: Vec<QueueStat>,
    /// Requests accepted and not yet answered, as the agent counts them.
    pub outstanding: u32,
    /// Requests answered since the agent started.
    pub completed: u64,
    /// Error replies since the agent started.
    pub errors: u64,
    /// The agent emulates a slower device.
    pub emulated: bool,
    /// Answered keys and batch records the agent dropped unreported since it started.
    pub unreported_dropped: u64,
}

impl From<&Telemetry> for TelemetryView {
    fn from(t: &Telemetry) -> Self {
        Self {
            seq: t.seq,
            cpu_util: t.cpu_util,
            gpu_util: t.gpu_util,
            ram_used_bytes: t.ram_used_bytes,
            ram_total_bytes: t.ram_total_bytes,
            vram_used_bytes: t.vram_used_bytes,
            vram_total_bytes: t.vram_total_bytes,
            power_w: t.power_w,
            energy_j: t.energy_j,
            energy_source: t.energy_source,
            queue_depth: t.queues.iter().map(|q| q.depth).sum(),
            queues: t.queues.clone(),
            outstanding: t.outstanding,
            completed: t.completed,
            errors: t.errors,
            emulated: t.emulated,
            unreported_dropped: t.unreported_dropped,
        }
    }
}

/// The coordinator's counters, JSON-friendly.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CountersView {
    /// Requests received.
    pub received: u64,
    /// Placements published (first placements and re-routes).
    pub routed: u64,
    /// Re-routes after an agent was lost.
    pub rerouted: u64,
    /// Redelivered requests ignored.
    pub duplicates: u64,
    /// Agents online now.
    pub agents_online: usize,
    /// Retried requests sent again to the agent that holds or answered them.
    pub resent: u64,
    /// Requests refused `overloaded` at once: every agent serving their model was at its bound.
    pub shed: u64,
    /// Re-routed requests left to the client's retry after the park timeout.
    pub reroutes_abandoned: u64,
    /// MQTT reconnects after the first connection.
    pub reconnects: u64,
    /// Agent status or telemetry messages refused.
    pub agent_messages_refused: u64,
    /// Ledger entries dropped by reconciliation with the agents' own counts.
    pub ledger_reconciled: u64,
    /// Ledger entries dropped after the ledger TTL.
    pub ledger_expired: u64,
    /// Refusals by error code; every code is present.
    pub refused: BTreeMap<String, u64>,
}

impl From<&Counters> for CountersView {
    fn from(c: &Counters) -> Self {
        Self {
            received: c.received,
            routed: c.routed,
            rerouted: c.rerouted,
            duplicates: c.duplicates,
            agents_online: c.agents_online,
            resent: c.resent,
            shed: c.shed,
            reroutes_abandoned: c.reroutes_abandoned,
            reconnects: c.reconnects,
            agent_messages_refused: c.agent_messages_refused,
            ledger_reconciled: c.ledger_reconciled,
            ledger_expired: c.ledger_expired,
            refused: ErrorCode::ALL
                .iter()
                .map(|code| {
                    (
                        code.as_str().to_string(),
                        c.refused.get(code).copied().unwrap_or(0),
                    )
                })
                .collect(),
        }
    }
}
