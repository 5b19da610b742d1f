//! What the monitoring side sees: a [`Snapshot`] the core task publishes, and the [`Monitor`]
//! that accumulates the totals and history it needs. Pure: the caller passes the clock.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::Instant,
};

use serde::Serialize;
use slim_protocol::{
    Decision, DeviceInfo, Emulation, EnergySource, ErrorCode, QueueStat, Telemetry,
};

use crate::{counters::Counters, online::OnlineView, state::ClusterState};

/// Decisions kept for `/api/v1/state`.
pub const RECENT_DECISIONS: usize = 100;
/// One-second history samples kept (five minutes).
pub const HISTORY_SECONDS: usize = 300;

/// Everything `/metrics`, `/api/v1/state` and the dashboard show, as of `coordinator.now_ms`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// The coordinator itself.
    pub coordinator: CoordinatorView,
    /// Every agent ever seen, by id.
    pub agents: Vec<AgentView>,
    /// Request counters.
    pub counters: CountersView,
    /// Batches run per (agent, model, width), from the agents' telemetry, since start.
    pub batches: Vec<BatchTotals>,
    /// Decisions per (agent, width, batch) since start.
    pub decision_counts: Vec<DecisionCount>,
    /// One sample per second, oldest first.
    pub history: Vec<HistorySample>,
    /// The latest decisions, oldest first.
    pub decisions: Vec<Decision>,
    /// Online refinement of the PPO policy, when it runs (set by the core task).
    pub online: Option<OnlineView>,
}

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

/// One second of activity.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HistorySample {
    /// Start of the second, coordinator clock.
    pub at_ms: u64,
    /// Requests the agents reported finished in this second.
    pub completed: u64,
    /// Mean agent-side latency (queue + compute) of those requests, ms.
    pub latency_ms: Option<f32>,
    /// Mean queue time of those requests, ms.
    pub queue_ms: Option<f32>,
    /// Decisions made in this second, by width (`"0.25"`, `"1"`).
    pub widths: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Bucket {
    start_ms: u64,
    completed: u64,
    latency_sum_ms: f64,
    queue_sum_ms: f64,
    widths: BTreeMap<u16, u64>,
}

impl Bucket {
    fn sample(&self) -> HistorySample {
        let mean = |sum: f64| (self.completed > 0).then(|| (sum / self.completed as f64) as f32);
        HistorySample {
            at_ms: self.start_ms,
            completed: self.completed,
            latency_ms: mean(self.latency_sum_ms),
            queue_ms: mean(self.queue_sum_ms),
            widths: self
                .widths
                .iter()
                .map(|(w, n)| (width_label(*w), *n))
                .collect(),
        }
    }
}

fn width_key(width: f32) -> u16 {
    (width * 1000.0).round() as u16
}

/// A width as a label value: `0.25`, `0.5`, `1`.
pub fn width_label(key: u16) -> String {
    format!("{}", f32::from(key) / 1000.0)
}

/// Accumulates what the snapshot needs beyond the cluster state: batch totals, decision counts,
/// recent decisions and per-second history.
#[derive(Debug)]
pub struct Monitor {
    id: String,
    router: String,
    started_at_ms: u64,
    batches: BTreeMap<(String, String, u16), BatchTotals>,
    decision_counts: BTreeMap<(String, u16, u16), u64>,
    recent: VecDeque<Decision>,
    history: VecDeque<HistorySample>,
    bucket: Bucket,
    last_seq: HashMap<String, u64>,
}

impl Monitor {
    /// A monitor for coordinator `id` running `router`, started at `now_ms`.
    pub fn new(id: &str, router: &str, now_ms: u64) -> Self {
        Self {
            id: id.to_string(),
            router: router.to_string(),
            started_at_ms: now_ms,
            batches: BTreeMap::new(),
            decision_counts: BTreeMap::new(),
            recent: VecDeque::with_capacity(RECENT_DECISIONS),
            history: VecDeque::with_capacity(HISTORY_SECONDS),
            bucket: Bucket {
                start_ms: now_ms,
                ..Bucket::default()
            },
            last_seq: HashMap::new(),
        }
    }

    /// Adds the batches of one telemetry report (a redelivered report is counted once).
    pub fn on_telemetry(&mut self, t: &Telemetry) {
        if self.last_seq.insert(t.agent.clone(), t.seq) == Some(t.seq) {
            return;
        }
        for b in &t.batches {
            let size = u64::from(b.batch_size.max(1));
            let totals = self
                .batches
                .entry((t.agent.clone(), b.model.clone(), width_key(b.width)))
                .or_insert_with(|| BatchTotals {
                    agent: t.agent.clone(),
                    model: b.model.clone(),
                    width: b.width,
                    executions: 0,
                    inferences: 0,
                    queue_us: 0.0,
                    compute_us: 0.0,
                });
            let queue_ms = f64::from(b.queue_ms.max(0.0));
            let compute_ms = f64::from(b.compute_ms.max(0.0));
            totals.executions += 1;
            totals.inferences += size;
            totals.queue_us += queue_ms * 1000.0 * size as f64;
            totals.compute_us += compute_ms * 1000.0 * size as f64;
            self.bucket.completed += size;
            self.bucket.queue_sum_ms += queue_ms * size as f64;
            self.bucket.latency_sum_ms += (queue_ms + compute_ms) * size as f64;
        }
    }

    /// Records a published decision.
    pub fn on_decision(&mut self, d: &Decision) {
        let width = width_key(d.width);
        *self
            .decision_counts
            .entry((d.agent.clone(), width, d.batch_size))
            .or_default() += 1;
        *self.bucket.widths.entry(width).or_default() += 1;
        if self.recent.len() == RECENT_DECISIONS {
            self.recent.pop_front();
        }
        self.recent.push_back(d.clone());
    }

    /// Closes every whole second up to `now_ms` into the history.
    pub fn tick(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.bucket.start_ms) > 1000 * HISTORY_SECONDS as u64 {
            // Long silence (a suspended process): restart the history rather than fill it.
            self.history.clear();
            self.bucket = Bucket {
                start_ms: now_ms,
                ..Bucket::default()
            };
            return;
        }
        while now_ms >= self.bucket.start_ms + 1000 {
            if self.history.len() == HISTORY_SECONDS {
                self.history.pop_front();
            }
            self.history.push_back(self.bucket.sample());
            self.bucket = Bucket {
                start_ms: self.bucket.start_ms + 1000,
                ..Bucket::default()
            };
        }
    }

    /// The snapshot of everything, as of `now` / `now_ms`.
    pub fn snapshot(
        &self,
        cluster: &ClusterState,
        counters: &Counters,
        connected: bool,
        now: Instant,
        now_ms: u64,
    ) -> Snapshot {
        let agents: Vec<AgentView> = cluster
            .agents()
            .map(|a| AgentView {
                id: a.info.agent.clone(),
                backend: a.info.backend.clone(),
                backend_reason: a.info.backend_reason.clone(),
                online: a.online,
                device: a.info.device.clone(),
                emulation: a.info.emulation.clone(),
                models: a.info.models.iter().map(|m| m.name.clone()).collect(),
                outstanding: a.pending.len(),
                assigned: a.assigned,
                last_seen_s: now.saturating_duration_since(a.last_seen).as_secs_f32(),
                telemetry: a.telemetry.as_ref().map(TelemetryView::from),
            })
            .collect();
        let online = agents.iter().filter(|a| a.online).count();
        Snapshot {
            coordinator: CoordinatorView {
                id: self.id.clone(),
                router: self.router.clone(),
                connected,
                ready: connected && online > 0,
                started_at_ms: self.started_at_ms,
                now_ms,
            },
            agents,
            counters: CountersView::from(counters),
            batches: self.batches.values().cloned().collect(),
            decision_counts: self
                .decision_counts
                .iter()
                .map(|((agent, width, batch), count)| DecisionCount {
                    agent: agent.clone(),
                    width: f32::from(*width) / 1000.0,
                    batch: *batch,
                    count: *count,
                })
                .collect(),
            history: self.history.iter().cloned().collect(),
            decisions: self.recent.iter().cloned().collect(),
            online: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use slim_protocol::{BatchRecord, PROTOCOL_VERSION};

    /// An online agent serving digits at width 0.5 (shared with the cluster-state tests).
    pub(crate) use crate::state::tests::agent_info as info;

    pub(crate) fn telemetry(agent: &str, seq: u64, batches: Vec<BatchRecord>) -> Telemetry {
        Telemetry {
            v: PROTOCOL_VERSION,
            agent: agent.into(),
            seq,
            at_ms: 0,
            cpu_util: 0.25,
            ram_used_bytes: 1_000,
            ram_total_bytes: 4_000,
            gpu_util: None,
            vram_used_bytes: None,
            vram_total_bytes: None,
            power_w: 7.5,
            energy_j: 120.0,
            energy_source: EnergySource::Model,
            queues: vec![QueueStat {
                model: "digits".into(),
                width: 0.5,
                depth: 3,
                oldest_wait_ms: 2.0,
                instances: 1,
            }],
            outstanding: 3,
            completed: 42,
            errors: 2,
            batches,
            done: vec![],
            emulated: false,
        }
    }

    pub(crate) fn batch(size: u16, queue_ms: f32, compute_ms: f32) -> BatchRecord {
        BatchRecord {
            model: "digits".into(),
            width: 0.5,
            batch_size: size,
            queue_ms,
            compute_ms,
            energy_j: 0.1,
            requests: vec![],
        }
    }

    pub(crate) fn decision(agent: &str, width: f32, batch: u16) -> Decision {
        Decision {
            v: PROTOCOL_VERSION,
            request_id: "r".into(),
            model: "digits".into(),
            agent: agent.into(),
            width,
            batch_size: batch,
            router: "least-loaded".into(),
            at_ms: 0,
            candidates: 1,
            agent_outstanding: 0,
            attempt: 0,
        }
    }

    #[test]
    fn batch_totals_sum_per_request_and_ignore_a_redelivered_report() {
        let mut m = Monitor::new("c", "least-loaded", 0);
        let t = telemetry("a", 1, vec![batch(4, 2.0, 10.0), batch(1, 0.0, 5.0)]);
        m.on_telemetry(&t);
        m.on_telemetry(&t);
        let totals = &m.batches.values().next().unwrap();
        assert_eq!(totals.executions, 2);
        assert_eq!(totals.inferences, 5);
        assert_eq!(totals.queue_us, 8_000.0);
        assert_eq!(totals.compute_us, 45_000.0);
    }

    #[test]
    fn history_has_one_sample_per_second_with_throughput_latency_and_width_mix() {
        let mut m = Monitor::new("c", "least-loaded", 10_000);
        m.on_telemetry(&telemetry("a", 1, vec![batch(2, 1.0, 3.0)]));
        m.on_decision(&decision("a", 0.25, 8));
        m.on_decision(&decision("a", 1.0, 8));
        m.tick(10_500);
        assert!(m.history.is_empty(), "the second is not over");
        m.tick(12_100);
        assert_eq!(m.history.len(), 2);
        let first = &m.history[0];
        assert_eq!(first.at_ms, 10_000);
        assert_eq!(first.completed, 2);
        assert_eq!(first.latency_ms, Some(4.0));
        assert_eq!(first.queue_ms, Some(1.0));
        assert_eq!(first.widths.get("0.25"), Some(&1));
        assert_eq!(first.widths.get("1"), Some(&1));
        assert_eq!(m.history[1].completed, 0);
        assert_eq!(m.history[1].latency_ms, None);
    }

    #[test]
    fn only_the_latest_hundred_decisions_are_kept() {
        let mut m = Monitor::new("c", "least-loaded", 0);
        for i in 0..150 {
            let mut d = decision("a", 0.5, 1);
            d.request_id = format!("r{i}");
            m.on_decision(&d);
        }
        let s = m.snapshot(
            &ClusterState::default(),
            &Counters::default(),
            false,
            Instant::now(),
            0,
        );
        assert_eq!(s.decisions.len(), RECENT_DECISIONS);
        assert_eq!(s.decisions.last().unwrap().request_id, "r149");
        assert_eq!(s.decision_counts[0].count, 150);
    }
}
