//! What the monitoring side sees: a [`Snapshot`] the core task publishes, and the [`Monitor`]
//! that accumulates the totals and history it needs. Pure: the caller passes the clock.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Arc,
    time::Instant,
};

use serde::Serialize;
use slim_protocol::{Decision, RequestKey, Telemetry, WidthKey};

use super::{
    arrivals::Arrivals,
    history::{History, HistorySample},
    models::{agent_side, BatchSample, ModelStats, ModelView, MAX_MODELS},
    power::{PowerHistory, PowerSeries},
    views::{AgentView, BatchTotals, CoordinatorView, CountersView, DecisionCount, TelemetryView},
    window::Percentiles,
};
use crate::{counters::Counters, online::OnlineView, state::ClusterState};

/// Decisions kept for `/api/v1/state`.
pub const RECENT_DECISIONS: usize = 100;

/// Everything `/metrics`, `/api/v1/state` and the dashboard show, as of `coordinator.now_ms`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// The coordinator itself.
    pub coordinator: CoordinatorView,
    /// Every coordinator of the deployment (this one included), as their retained status
    /// last said: the members of a shared group (set by the core).
    pub group: Vec<slim_protocol::CoordinatorStatus>,
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
    /// Per model family, over the last minute: latency percentiles, width mix, accuracy, energy.
    pub models: Vec<ModelView>,
    /// Per agent, over the last minute: power and energy from its telemetry.
    pub power: Vec<PowerSeries>,
    /// The latest decisions, oldest first.
    pub decisions: Vec<Decision>,
    /// Online refinement of the PPO policy, when it runs (set by the core task).
    pub online: Option<OnlineView>,
}

/// The latest report number and the time between the latest two reports, per agent.
#[derive(Debug, Clone, Copy)]
struct Reports {
    seq: u64,
    at_ms: u64,
    interval_ms: Option<u64>,
}

/// Accumulates what the snapshot needs beyond the cluster state: batch totals, decision counts,
/// recent decisions, per-second history, and the last minute per model and per agent.
#[derive(Debug)]
pub struct Monitor {
    id: String,
    router: String,
    started_at_ms: u64,
    batches: BTreeMap<(String, String, WidthKey), BatchTotals>,
    /// Per agent, then per (width, batch): looked up by the agent's id without copying it.
    decision_counts: BTreeMap<String, BTreeMap<(WidthKey, u16), u64>>,
    recent: VecDeque<Decision>,
    history: History,
    reports: HashMap<String, Reports>,
    arrivals: Arrivals,
    models: BTreeMap<String, ModelStats>,
    power: BTreeMap<String, PowerHistory>,
    derived: RefCell<Option<Derived>>,
}

/// What [`Monitor::snapshot`] computes from the windows, with the second it was computed in.
#[derive(Debug, Clone)]
struct Derived {
    second: u64,
    models: Vec<ModelView>,
    agent_latency: HashMap<String, Option<Percentiles>>,
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
            history: History::new(now_ms),
            reports: HashMap::new(),
            arrivals: Arrivals::default(),
            models: BTreeMap::new(),
            power: BTreeMap::new(),
            derived: RefCell::new(None),
        }
    }

    /// The windows of `model`; `None` once [`MAX_MODELS`] other models are tracked.
    fn model(&mut self, model: &str) -> Option<&mut ModelStats> {
        if !self.models.contains_key(model) {
            if self.models.len() >= MAX_MODELS {
                return None;
            }
            self.models.insert(model.to_string(), ModelStats::default());
        }
        self.models.get_mut(model)
    }

    /// A new request arrived at `now` (wall clock `now_ms`); repeats are ignored.
    pub fn on_arrival(
        &mut self,
        key: &RequestKey,
        model: &str,
        sent_at_ms: Option<u64>,
        now: Instant,
        now_ms: u64,
    ) {
        self.arrivals.arrive(key, model, sent_at_ms, now, now_ms);
    }

    /// Adds one telemetry report that arrived at `now` / `now_ms` (a redelivered report is
    /// counted once): its batches, its done notices, and the agent's power and energy.
    pub fn on_telemetry(&mut self, t: &Telemetry, now: Instant, now_ms: u64) {
        let previous = self.reports.get(&t.agent).copied();
        if previous.is_some_and(|r| r.seq == t.seq) {
            return;
        }
        // A further page of the same tick (`more` on the one before) carries the same readings:
        // it keeps the interval and adds no power point.
        let same_tick = previous.is_some_and(|r| r.at_ms == t.at_ms);
        let interval_ms = if same_tick {
            previous.and_then(|r| r.interval_ms)
        } else {
            previous
                .filter(|r| t.at_ms > r.at_ms)
                .map(|r| t.at_ms - r.at_ms)
        };
        self.reports.insert(
            t.agent.clone(),
            Reports {
                seq: t.seq,
                at_ms: t.at_ms,
                interval_ms,
            },
        );
        let agent: Arc<str> = Arc::from(t.agent.as_str());
        for b in &t.batches {
            let sample = BatchSample::new(agent.clone(), b, t.energy_source);
            self.add_totals(&t.agent, b, &sample);
            self.history
                .batch(u64::from(sample.size), sample.queue_ms, sample.compute_ms);
            if let Some(stats) = self.model(&b.model) {
                stats.batches.push(now_ms, sample);
            }
        }
        for wire in &t.done {
            if let Some((model, ms)) = self.arrivals.done(wire, now) {
                if let Some(stats) = self.model(&model) {
                    stats.done_notice.push(now_ms, ms);
                }
            }
        }
        if !same_tick {
            self.power
                .entry(t.agent.clone())
                .or_default()
                .push(t, now_ms);
        }
    }

    fn add_totals(&mut self, agent: &str, b: &slim_protocol::BatchRecord, s: &BatchSample) {
        let totals = self
            .batches
            .entry((agent.to_string(), b.model.clone(), s.width))
            .or_insert_with(|| BatchTotals {
                agent: agent.to_string(),
                model: b.model.clone(),
                width: b.width,
                executions: 0,
                inferences: 0,
                queue_us: 0.0,
                compute_us: 0.0,
            });
        let size = f64::from(s.size);
        totals.executions += 1;
        totals.inferences += u64::from(s.size);
        totals.queue_us += f64::from(s.queue_ms) * 1000.0 * size;
        totals.compute_us += f64::from(s.compute_ms) * 1000.0 * size;
    }

    /// Records a published decision for request `key`; `now` is when its assignment was
    /// handed to the MQTT client.
    pub fn on_decision(&mut self, d: &Decision, key: &RequestKey, now: Instant) {
        let width = WidthKey::of(d.width);
        if !self.decision_counts.contains_key(&d.agent) {
            self.decision_counts
                .insert(d.agent.clone(), BTreeMap::new());
        }
        let per_agent = self
            .decision_counts
            .get_mut(&d.agent)
            .expect("inserted above");
        *per_agent.entry((width, d.batch_size)).or_default() += 1;
        self.history.decision(width);
        let recent = if self.recent.len() == RECENT_DECISIONS {
            // The oldest record's strings are reused for the newest.
            let mut oldest = self.recent.pop_front().expect("the list is full");
            copy_decision(d, &mut oldest);
            oldest
        } else {
            d.clone()
        };
        self.recent.push_back(recent);
        let Some(placed) = self.arrivals.place(key, now) else {
            return;
        };
        self.history
            .placement(placed.client_hop_ms, placed.coordinator_ms);
        if let Some(stats) = self.model(&placed.model) {
            if let Some(hop) = placed.client_hop_ms {
                stats.client_hop.push(d.at_ms, hop);
            }
            stats.coordinator.push(d.at_ms, placed.coordinator_ms);
        }
    }

    /// Closes every whole second up to `now_ms` into the history and forgets what is older
    /// than the last minute.
    pub fn tick(&mut self, now_ms: u64) {
        self.history.tick(now_ms);
        self.models.values_mut().for_each(|m| m.prune(now_ms));
        self.power.values_mut().for_each(|p| p.prune(now_ms));
    }

    /// Agent-side latency over the last minute, per agent.
    fn agent_latency(&self) -> HashMap<String, Option<Percentiles>> {
        let mut per_agent: HashMap<&str, Vec<&BatchSample>> = HashMap::new();
        for stats in self.models.values() {
            for b in stats.batches.iter() {
                per_agent.entry(&b.agent).or_default().push(b);
            }
        }
        per_agent
            .into_iter()
            .map(|(agent, batches)| {
                let [_, _, total] = agent_side(batches.into_iter());
                (agent.to_string(), total)
            })
            .collect()
    }

    /// The per-model and per-agent figures of the last minute, computed at most once per
    /// second of `now_ms` (sorting the windows is the costly part of a snapshot, and the core
    /// task takes one every 200 ms).
    fn derived(&self, cluster: &ClusterState, now_ms: u64) -> Derived {
        let second = now_ms / 1000;
        let mut cache = self.derived.borrow_mut();
        match cache.as_ref() {
            Some(d) if d.second == second => d.clone(),
            _ => {
                let d = Derived {
                    second,
                    models: self.model_views(cluster),
                    agent_latency: self.agent_latency(),
                };
                *cache = Some(d.clone());
                d
            }
        }
    }

    fn agent_views(
        &self,
        cluster: &ClusterState,
        now: Instant,
        latency: &HashMap<String, Option<Percentiles>>,
    ) -> Vec<AgentView> {
        cluster
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
                latency: latency.get(&a.info.agent).copied().flatten(),
                telemetry_interval_ms: self.reports.get(&a.info.agent).and_then(|r| r.interval_ms),
            })
            .collect()
    }

    /// Every model announced or seen in the last minute.
    fn model_views(&self, cluster: &ClusterState) -> Vec<ModelView> {
        let announced = cluster.agents().flat_map(|a| a.info.models.iter());
        let names: BTreeSet<&str> = announced
            .map(|m| m.name.as_str())
            .chain(self.models.keys().map(String::as_str))
            .collect();
        let empty = ModelStats::default();
        names
            .into_iter()
            .map(|name| {
                let stats = self.models.get(name).unwrap_or(&empty);
                ModelView::new(name, stats, cluster.models(name).next())
            })
            .collect()
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
        let derived = self.derived(cluster, now_ms);
        let agents = self.agent_views(cluster, now, &derived.agent_latency);
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
                .flat_map(|(agent, counts)| {
                    counts.iter().map(|((width, batch), count)| DecisionCount {
                        agent: agent.clone(),
                        width: width.width(),
                        batch: *batch,
                        count: *count,
                    })
                })
                .collect(),
            history: self.history.samples.iter().cloned().collect(),
            models: derived.models,
            power: self
                .power
                .iter()
                .map(|(agent, p)| p.series(agent))
                .collect(),
            decisions: self.recent.iter().cloned().collect(),
            online: None,
            group: Vec::new(),
        }
    }
}

/// Copies `from` into `to`, reusing the buffers of `to`'s strings.
fn copy_decision(from: &Decision, to: &mut Decision) {
    // Every field named, so that a new one cannot be forgotten here.
    let Decision {
        v,
        request_id,
        model,
        agent,
        width,
        batch_size,
        router,
        at_ms,
        candidates,
        agent_outstanding,
        attempt,
    } = from;
    to.request_id.clone_from(request_id);
    to.model.clone_from(model);
    to.agent.clone_from(agent);
    to.router.clone_from(router);
    (to.v, to.width, to.batch_size, to.at_ms) = (*v, *width, *batch_size, *at_ms);
    (to.candidates, to.agent_outstanding, to.attempt) = (*candidates, *agent_outstanding, *attempt);
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
pub(crate) mod tests;
