//! Cluster state: which agents exist, what they serve, how loaded they are, and which requests
//! each one holds. Pure: the caller passes the clock.

use std::{
    collections::{hash_map::RandomState, BTreeMap, HashMap},
    hash::BuildHasher,
    sync::Arc,
    time::{Duration, Instant},
};

use slim_protocol::{
    AgentInfo, InferRequest, Liveness, ModelInfo, RequestKey, Telemetry, WidthKey,
};

use crate::{
    admission::Admission,
    answered::{Answered, AnsweredBy},
};
use slim_router::{
    ArrivalRate, BatchOption, DeviceView, Observation, WidthOption, LIVE_ARRIVAL_MIN_WINDOW_MS,
};

/// A request placed on an agent and not yet answered.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The request.
    pub request: InferRequest,
    /// Placements so far minus one.
    pub attempt: u16,
    /// When it was last placed.
    pub assigned_at: Instant,
    /// The width it was assigned.
    pub width: f32,
    /// The batch size it was assigned.
    pub batch_size: u16,
}

impl Pending {
    /// Bytes this entry holds ([`request_bytes`]), for the held-bytes bound.
    pub fn bytes(&self) -> usize {
        request_bytes(&self.request)
    }
}

/// Bytes a held request takes, roughly: its tensor and the buffer that holds it (a placed
/// request's tensor shares its encoded assignment, which repeats the request's strings and adds
/// at most about 320 bytes of fields and signature: `core/records.rs`), its id, model and reply
/// topic as the request and as its key, and the entry itself.
pub fn request_bytes(request: &InferRequest) -> usize {
    let strings =
        request.id.len() + request.model.len() + request.reply_to.as_ref().map_or(0, String::len);
    request.input.data.len() + 3 * strings + 448
}

/// What reconciling the ledger with telemetry and its age did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LedgerCleanup {
    /// Entries dropped because the agent reported fewer outstanding requests than the ledger
    /// held from before its previous report.
    pub reconciled: usize,
    /// Entries dropped for having waited longer than the ledger TTL.
    pub expired: usize,
}

/// What the coordinator knows of one agent.
#[derive(Debug, Clone)]
pub struct AgentEntry {
    /// Its latest announcement.
    pub info: AgentInfo,
    /// Its latest telemetry.
    pub telemetry: Option<Telemetry>,
    /// Last time anything was heard from it.
    pub last_seen: Instant,
    /// Online and routable.
    pub online: bool,
    /// Requests it holds, by key.
    pub pending: HashMap<RequestKey, Pending>,
    /// Outstanding count from its latest telemetry (its own figure, all coordinators' work).
    pub reported_outstanding: Option<u32>,
    /// When its latest and the previous telemetry arrived.
    pub last_report_at: Option<Instant>,
    prev_report_at: Option<Instant>,
    /// Requests assigned to it since its latest telemetry (kept as a count, so the router's
    /// view of the agent costs the same whatever its ledger holds).
    assigned_since_report: u32,
    /// Mean batch compute latency per (model, width × 1000), exponentially smoothed, ms.
    pub latency_ms: HashMap<(String, WidthKey), f32>,
    /// Mean compute time per request (batch time / batch size), exponentially smoothed, ms.
    pub per_request_ms: Option<f32>,
    /// Requests assigned since start.
    pub assigned: u64,
    /// Whether it can take more: its bound, its answer rate, whether it is masked as full.
    pub admission: Admission,
    /// Its id, shared by the request index entries that point at it.
    id: Arc<str>,
}

impl AgentEntry {
    /// Whether, by the coordinator's estimate, it holds or has on the way as many requests as
    /// its announced bound (see [`crate::admission`]).
    pub fn at_limit(&self, now: Instant) -> bool {
        let reported = self.reported_outstanding.unwrap_or(u32::MAX);
        self.admission
            .at_limit(reported, self.pending.len(), self.since_report(now))
    }

    /// How long until it is expected below its bound again (see [`Admission::reopens_in`]).
    pub fn reopens_in(&self, now: Instant) -> Option<Duration> {
        self.admission
            .reopens_in(self.pending.len(), self.since_report(now))
    }

    /// Time since its latest telemetry arrived (zero before any).
    fn since_report(&self, now: Instant) -> Duration {
        self.last_report_at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
    }

    /// Batches of one (model, width) the agent runs at once, as routers see it: what it
    /// announced, or (an agent that announces none) the most instances loaded for a queue that
    /// waited at its latest report, 1 when none waited.
    pub fn concurrency(&self) -> u16 {
        let loaded = || {
            self.telemetry
                .as_ref()
                .and_then(|t| t.queues.iter().map(|q| q.instances).max())
                .unwrap_or(1)
        };
        self.info.concurrency.unwrap_or_else(loaded).max(1)
    }

    /// The load the router sees: the agent's own outstanding count from its latest report plus
    /// what was assigned to it since, or the ledger alone before any report.
    pub fn routing_outstanding(&self) -> u32 {
        match self.reported_outstanding {
            Some(reported) => reported.saturating_add(self.assigned_since_report),
            None => self.pending.len() as u32,
        }
    }
}

/// All agents, by id, and the requests they answered recently.
#[derive(Debug)]
pub struct ClusterState {
    agents: BTreeMap<String, AgentEntry>,
    answered: Answered,
    /// Which agent each held request was last assigned to, by a keyed fingerprint of its key,
    /// so finding a request's holder does not ask every agent. Verified against that agent's
    /// ledger on use; entries leave with the ledger entry or after the ledger TTL.
    holders: HashMap<u64, (Arc<str>, Instant)>,
    hasher: RandomState,
    /// The router's view of each model, built once and then kept current device by device
    /// (telemetry, assignments); rebuilt when an agent joins, leaves or changes what it serves.
    views: HashMap<String, ModelView>,
    /// The last [`DeviceView::version`] given out: every built or updated device view gets the
    /// next one, so a router can rescore only the devices that changed since its last request.
    last_version: u64,
    /// Each model's recent arrival rate (new requests routed, not re-placements), for
    /// [`DeviceView::arrival_rate_per_s`]; only models some agent announced are counted.
    arrivals: HashMap<String, ArrivalRate>,
    /// The zero of the arrival clock (the first arrival).
    arrival_origin: Option<Instant>,
    /// Agents masked as full in the views, re-checked before each placement.
    full: Vec<String>,
}

/// The cached [`Observation`] of one model.
#[derive(Debug)]
struct ModelView {
    observation: Observation,
    ids: Vec<String>,
    /// Index in `observation.devices` by agent id.
    index: HashMap<String, usize>,
}

impl Default for ClusterState {
    fn default() -> Self {
        Self::new(100_000, Duration::from_secs(120))
    }
}

impl ClusterState {
    /// An empty cluster that remembers up to `answered_capacity` answered requests for
    /// `answered_ttl`.
    pub fn new(answered_capacity: usize, answered_ttl: Duration) -> Self {
        Self {
            agents: BTreeMap::new(),
            answered: Answered::new(answered_capacity, answered_ttl),
            holders: HashMap::new(),
            hasher: RandomState::new(),
            views: HashMap::new(),
            last_version: 0,
            arrivals: HashMap::new(),
            arrival_origin: None,
            full: Vec::new(),
        }
    }

    /// Counts a new request for `model` (one an agent announced) arriving at `now`, for its
    /// arrival rate; when the published rate changes, every cached device view of the model
    /// takes it (and a new version).
    pub fn note_arrival(&mut self, model: &str, now: Instant) {
        let origin = *self.arrival_origin.get_or_insert(now);
        let now_ms = now.saturating_duration_since(origin).as_secs_f64() * 1000.0;
        if !self.arrivals.contains_key(model) {
            self.arrivals.insert(
                model.to_string(),
                ArrivalRate::with_min_window(LIVE_ARRIVAL_MIN_WINDOW_MS),
            );
        }
        let rate = self.arrivals.get_mut(model).expect("inserted above");
        if !rate.arrive(now_ms) {
            return;
        }
        let rate = rate.rate_per_s();
        if let Some(view) = self.views.get_mut(model) {
            for device in &mut view.observation.devices {
                device.arrival_rate_per_s = rate;
                device.version = next_version(&mut self.last_version);
            }
        }
    }

    /// `model`'s published arrival rate, requests/s (0 before any estimate).
    pub fn arrival_rate_per_s(&self, model: &str) -> f32 {
        self.arrivals
            .get(model)
            .map_or(0.0, ArrivalRate::rate_per_s)
    }

    /// The agent holding `key` in its ledger, with the ledger entry.
    pub fn holder(&self, key: &RequestKey) -> Option<(&str, &Pending)> {
        let (agent, _) = self.holders.get(&self.hasher.hash_one(key))?;
        let (id, entry) = self.agents.get_key_value(&**agent)?;
        entry.pending.get(key).map(|p| (id.as_str(), p))
    }

    /// The online agent that answered `key` recently, if any.
    pub fn answered_by(&self, key: &RequestKey, now: Instant) -> Option<&AnsweredBy> {
        self.answered
            .get(key, now)
            .filter(|by| self.agents.get(&*by.agent).is_some_and(|a| a.online))
    }

    /// Applies a status message. Returns the requests to re-route if the agent went offline.
    pub fn on_status(&mut self, info: AgentInfo, now: Instant) -> Vec<Pending> {
        let id = info.agent.clone();
        let online = info.online;
        let known = self.agents.contains_key(&id);
        let entry = self.agents.entry(id.clone()).or_insert_with(|| AgentEntry {
            info: info.clone(),
            telemetry: None,
            last_seen: now,
            online,
            pending: HashMap::new(),
            reported_outstanding: None,
            last_report_at: None,
            prev_report_at: None,
            assigned_since_report: 0,
            latency_ms: HashMap::new(),
            per_request_ms: None,
            assigned: 0,
            admission: Admission::default(),
            id: id.as_str().into(),
        });
        let restarted = entry.info.started_at_ms != info.started_at_ms;
        // A new agent joins the cached views too (before, one that announced itself after a
        // model's view was cached was not routed to until something else rebuilt it).
        if !known || entry.info != info || entry.online != online {
            self.views.clear();
        }
        entry.admission.set_limit(info.max_queued);
        entry.info = info;
        entry.last_seen = now;
        let was_online = entry.online;
        entry.online = online;
        if online && was_online && !restarted {
            return Vec::new();
        }
        if online {
            tracing::info!(agent = %id, restarted, "agent online");
        } else {
            tracing::warn!(agent = %id, pending = entry.pending.len(), "agent offline");
        }
        if !online || (restarted && !entry.info.durable) {
            entry.pending.drain().map(|(_, p)| p).collect()
        } else {
            Vec::new()
        }
    }

    /// What `agent` last announced, when it has.
    pub fn info(&self, agent: &str) -> Option<&AgentInfo> {
        self.agents.get(agent).map(|a| &a.info)
    }

    /// True when `agent` has announced itself.
    pub fn knows(&self, agent: &str) -> bool {
        self.agents.contains_key(agent)
    }

    /// Number of agents known (online or not).
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// True when no agent is known.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Applies telemetry: load figures, latencies, and the requests it has answered. Ledger
    /// entries from before the agent's previous report that exceed its own outstanding count
    /// cannot still be there (their assignment or their `done` was lost): the oldest are dropped,
    /// so phantom load is gone one report after it appears.
    pub fn on_telemetry(&mut self, telemetry: Telemetry, now: Instant) -> LedgerCleanup {
        let mut cleanup = LedgerCleanup::default();
        let Some(entry) = self.agents.get_mut(&telemetry.agent) else {
            return cleanup;
        };
        entry.last_seen = now;
        if !entry.online && entry.info.online {
            entry.online = true;
            self.views.clear();
        }
        let agent: std::sync::Arc<str> = telemetry.agent.as_str().into();
        let mut answered = 0;
        for key in &telemetry.done {
            if let Some(key) = RequestKey::from_wire(key) {
                let width = entry.pending.remove(&key).map(|p| p.width);
                if width.is_some() {
                    self.holders.remove(&self.hasher.hash_one(&key));
                    answered += 1;
                }
                let by = AnsweredBy {
                    agent: agent.clone(),
                    width,
                };
                self.answered.insert(&key, by, now);
            }
        }
        // Refused: the agent holds nothing of them, and a retry is routed again (not answered).
        // They leave the ledger but not the rate: refusing is not serving.
        for key in &telemetry.refused {
            if let Some(key) = RequestKey::from_wire(key) {
                if entry.pending.remove(&key).is_some() {
                    self.holders.remove(&self.hasher.hash_one(&key));
                }
            }
        }
        entry.admission.note_served(answered);
        // Reconciled on the last page of a report only: until then, answers are still listed.
        let last_page = !telemetry.more;
        if let Some(previous) = entry.last_report_at.filter(|_| last_page) {
            let mut old: Vec<(Instant, RequestKey)> = entry
                .pending
                .iter()
                .filter(|(_, p)| p.assigned_at <= previous)
                .map(|(k, p)| (p.assigned_at, k.clone()))
                .collect();
            let excess = old.len().saturating_sub(telemetry.outstanding as usize);
            if excess > 0 {
                old.sort();
                for (_, key) in old.into_iter().take(excess) {
                    entry.pending.remove(&key);
                    self.holders.remove(&self.hasher.hash_one(&key));
                }
                cleanup.reconciled = excess;
            }
        }
        if last_page {
            entry.prev_report_at = entry.last_report_at;
            entry.last_report_at = Some(now);
            entry
                .admission
                .on_report(telemetry.outstanding, telemetry.at_ms);
        }
        entry.assigned_since_report = 0;
        entry.reported_outstanding = Some(telemetry.outstanding);
        for batch in &telemetry.batches {
            let key = (batch.model.clone(), WidthKey::of(batch.width));
            let smoothed = entry.latency_ms.entry(key).or_insert(batch.compute_ms);
            *smoothed = 0.8 * *smoothed + 0.2 * batch.compute_ms;
            let per_request = batch.compute_ms / f32::from(batch.batch_size.max(1));
            entry.per_request_ms = Some(match entry.per_request_ms {
                Some(old) => 0.8 * old + 0.2 * per_request,
                None => per_request,
            });
        }
        entry.telemetry = Some(telemetry);
        let id = entry.info.agent.clone();
        self.refresh(&id);
        if last_page {
            // Pages before the last already took their answers out of the ledger while the
            // report's time still runs from the previous one: judged once the report is whole.
            self.mask_if_full(&id, now);
        }
        cleanup
    }

    /// Drops ledger entries older than `ttl`: the agent neither answered them nor lost them
    /// visibly, and holding them forever would let lost `done` reports grow the ledger.
    pub fn expire_ledger(&mut self, now: Instant, ttl: Duration) -> LedgerCleanup {
        self.answered.expire(now);
        let mut expired = 0;
        self.holders
            .retain(|_, (_, at)| now.saturating_duration_since(*at) <= ttl);
        for entry in self.agents.values_mut() {
            let before = entry.pending.len();
            entry
                .pending
                .retain(|_, p| now.saturating_duration_since(p.assigned_at) <= ttl);
            expired += before - entry.pending.len();
        }
        if expired > 0 {
            // An agent that has not reported yet is seen with its ledger's length.
            self.views.clear();
        }
        LedgerCleanup {
            reconciled: 0,
            expired,
        }
    }

    /// Requests held in every agent's ledger, and their bytes.
    pub fn held(&self) -> (usize, usize) {
        self.agents
            .values()
            .flat_map(|a| a.pending.values())
            .fold((0, 0), |(n, b), p| (n + 1, b + p.bytes()))
    }

    /// Takes offline every agent silent for longer than `timeout`; returns their requests.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Pending> {
        let mut orphans = Vec::new();
        for (id, entry) in &mut self.agents {
            let since_heard = now.saturating_duration_since(entry.last_seen);
            if Liveness::of(entry.online, since_heard, timeout) == Liveness::Silent {
                tracing::warn!(agent = %id, silent_ms = now.saturating_duration_since(entry.last_seen).as_millis() as u64, "agent silent: taken offline");
                entry.online = false;
                self.views.clear();
                orphans.extend(entry.pending.drain().map(|(_, p)| p));
            }
        }
        orphans
    }

    /// Counts every agent as heard from at `now` (after the coordinator's own reconnect, when
    /// the silence was the coordinator's, not the agents').
    pub fn touch_all(&mut self, now: Instant) {
        for entry in self.agents.values_mut() {
            entry.last_seen = now;
        }
    }

    /// Records that `request` was placed on `agent`.
    pub fn record_assignment(
        &mut self,
        agent: &str,
        request: InferRequest,
        attempt: u16,
        (width, batch_size): (f32, u16),
        now: Instant,
    ) {
        let key = RequestKey::new(request.reply_to.clone().unwrap_or_default(), &request.id);
        self.record_keyed(agent, key, request, attempt, (width, batch_size), now);
    }

    /// Records that `request`, whose key is `key`, was placed on `agent`.
    pub fn record_keyed(
        &mut self,
        agent: &str,
        key: RequestKey,
        request: InferRequest,
        attempt: u16,
        (width, batch_size): (f32, u16),
        now: Instant,
    ) {
        debug_assert!(key.id == request.id && Some(&key.reply_to) == request.reply_to.as_ref());
        if let Some(entry) = self.agents.get_mut(agent) {
            entry.assigned += 1;
            entry.assigned_since_report = entry.assigned_since_report.saturating_add(1);
            self.holders
                .insert(self.hasher.hash_one(&key), (entry.id.clone(), now));
            entry.pending.insert(
                key,
                Pending {
                    request,
                    attempt,
                    assigned_at: now,
                    width,
                    batch_size,
                },
            );
            self.refresh_load(agent);
            self.mask_if_full(agent, now);
        }
    }

    /// Masks `agent` in the views while it is at its limit, and unmasks it when it is not.
    fn mask_if_full(&mut self, agent: &str, now: Instant) {
        let Some(entry) = self.agents.get_mut(agent) else {
            return;
        };
        let full = entry.at_limit(now);
        if full == entry.admission.full {
            return;
        }
        entry.admission.full = full;
        if full {
            self.full.push(agent.to_string());
        } else {
            self.full.retain(|a| a != agent);
        }
        mask(&mut self.views, &mut self.last_version, agent, full);
    }

    /// Whether any agent is masked as full (in some view).
    pub fn any_masked(&self) -> bool {
        !self.full.is_empty()
    }

    /// How long until the first agent masked as full that serves `model` is expected to take
    /// requests again: `None` when none is masked or none of them drains at a known rate.
    pub fn reopens_in(&self, model: &str, now: Instant) -> Option<Duration> {
        self.full
            .iter()
            .filter_map(|agent| self.agents.get(agent))
            .filter(|entry| entry.info.models.iter().any(|m| m.name == model))
            .filter_map(|entry| entry.reopens_in(now))
            .min()
    }

    /// Unmasks the agents masked as full that are no longer at their limit by `now` (they
    /// answered since). Free while none is masked.
    pub fn reopen(&mut self, now: Instant) {
        if self.full.is_empty() {
            return;
        }
        let mut masked = std::mem::take(&mut self.full);
        masked.retain(|agent| {
            let Some(entry) = self.agents.get_mut(agent) else {
                return false;
            };
            if entry.at_limit(now) {
                return true;
            }
            entry.admission.full = false;
            mask(&mut self.views, &mut self.last_version, agent, false);
            false
        });
        self.full = masked;
    }

    /// The model as each known agent describes it: online agents first, then the others
    /// (agents can differ, e.g. while a new width rolls out).
    pub fn models<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ModelInfo> + 'a {
        let of = move |online: bool| {
            self.agents
                .values()
                .filter(move |a| a.online == online)
                .flat_map(|a| a.info.models.iter())
                .filter(move |m| m.name == name)
        };
        of(true).chain(of(false))
    }

    /// Online agents that serve `model`, as the router sees them, with their ids.
    pub fn observation(&mut self, model: &str) -> (&Observation, &[String]) {
        if !self.views.contains_key(model) {
            let mut view = self.build_view(model);
            for device in &mut view.observation.devices {
                device.version = next_version(&mut self.last_version);
            }
            self.views.insert(model.to_string(), view);
        }
        let view = &self.views[model];
        (&view.observation, &view.ids)
    }

    fn build_view(&self, model: &str) -> ModelView {
        let arrival_rate = self.arrival_rate_per_s(model);
        let mut ids = Vec::new();
        let devices: Vec<DeviceView> = self
            .agents
            .values()
            .filter(|a| a.online)
            .filter_map(|a| {
                let m = a.info.models.iter().find(|m| m.name == model)?;
                ids.push(a.info.agent.clone());
                let mut view = device_view(a, m, model);
                view.arrival_rate_per_s = arrival_rate;
                Some(view)
            })
            .collect();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        ModelView {
            observation: Observation { devices },
            ids,
            index,
        }
    }

    /// Brings `agent`'s outstanding work up to date in every cached view (after an assignment).
    fn refresh_load(&mut self, agent: &str) {
        let Some(entry) = self.agents.get(agent) else {
            return;
        };
        for view in self.views.values_mut() {
            if let Some(&i) = view.index.get(agent) {
                let device = &mut view.observation.devices[i];
                device.outstanding = entry.routing_outstanding();
                device.backlog_ms = device.outstanding as f32 * entry.per_request_ms.unwrap_or(0.0);
                device.version = next_version(&mut self.last_version);
            }
        }
    }

    /// Brings `agent`'s telemetry figures up to date in every cached view.
    fn refresh(&mut self, agent: &str) {
        let Some(entry) = self.agents.get(agent) else {
            return;
        };
        for (model, view) in &mut self.views {
            if let Some(&i) = view.index.get(agent) {
                let device = &mut view.observation.devices[i];
                update_dynamic(device, entry, model);
                device.version = next_version(&mut self.last_version);
            }
        }
    }

    /// Every agent.
    pub fn agents(&self) -> impl Iterator<Item = &AgentEntry> {
        self.agents.values()
    }

    /// Number of online agents.
    pub fn online_count(&self) -> usize {
        self.agents.values().filter(|a| a.online).count()
    }
}

/// Masks (`full`) or unmasks `agent` in every cached view, with a new version.
fn mask(views: &mut HashMap<String, ModelView>, last_version: &mut u64, agent: &str, full: bool) {
    for view in views.values_mut() {
        if let Some(&i) = view.index.get(agent) {
            let device = &mut view.observation.devices[i];
            device.online = !full;
            device.version = next_version(last_version);
        }
    }
}

/// The next device-view version (never 0, which means "not tracked").
fn next_version(last: &mut u64) -> u64 {
    *last += 1;
    *last
}

/// The router's view of one agent for `model`.
fn device_view(a: &AgentEntry, m: &ModelInfo, model: &str) -> DeviceView {
    let mut view = DeviceView {
        agent: a.info.agent.clone(),
        online: true,
        outstanding: 0,
        backlog_ms: 0.0,
        instances: 1,
        queue_depth: 0,
        cpu_util: 0.0,
        gpu_util: None,
        mem_free_bytes: 0,
        power_w: 0.0,
        max_batch: a.info.max_batch,
        slowdown: a.info.emulation.as_ref().map(|e| e.slowdown).unwrap_or(1.0),
        // Stamped by `ClusterState::observation` when the view is cached.
        version: 0,
        // Set by `ClusterState::build_view` and `ClusterState::note_arrival`.
        arrival_rate_per_s: 0.0,
        widths: m
            .widths
            .iter()
            .map(|w| WidthOption {
                width: w.width,
                top1: w.top1,
                flops: w.flops,
                recent_latency_ms: None,
                queue_depth: 0,
                oldest_wait_ms: 0.0,
                batches: profile_batches(&a.info, model, w.width),
            })
            .collect(),
    };
    update_dynamic(&mut view, a, model);
    view
}

/// The figures of `view` that telemetry and assignments change.
fn update_dynamic(view: &mut DeviceView, a: &AgentEntry, model: &str) {
    let t = a.telemetry.as_ref();
    view.online = !a.admission.full;
    view.outstanding = a.routing_outstanding();
    view.backlog_ms = view.outstanding as f32 * a.per_request_ms.unwrap_or(0.0);
    view.instances = a.concurrency();
    view.queue_depth = t
        .map(|t| t.queues.iter().map(|q| q.depth).sum())
        .unwrap_or(0);
    view.cpu_util = t.map(|t| t.cpu_util).unwrap_or(0.0);
    view.gpu_util = t.and_then(|t| t.gpu_util);
    view.mem_free_bytes = t
        .map(|t| match (t.vram_total_bytes, t.vram_used_bytes) {
            (Some(total), Some(used)) => total.saturating_sub(used),
            _ => t.ram_total_bytes.saturating_sub(t.ram_used_bytes),
        })
        .unwrap_or(0);
    view.power_w = t.map(|t| t.power_w).unwrap_or(0.0);
    // Per (model, width): the agent's queue at its last report (none listed: nothing waits).
    for w in &mut view.widths {
        let queue = t.and_then(|t| {
            t.queues
                .iter()
                .find(|q| q.model == model && WidthKey::same(q.width, w.width))
        });
        w.queue_depth = queue.map_or(0, |q| q.depth);
        w.oldest_wait_ms = queue.map_or(0.0, |q| q.oldest_wait_ms.max(0.0));
    }
    if !a.latency_ms.is_empty() {
        for w in &mut view.widths {
            w.recent_latency_ms = a
                .latency_ms
                .get(&(model.to_string(), WidthKey::of(w.width)))
                .copied();
        }
    }
}

/// The batch sizes an agent's profile lists for `model` at `width`, ascending.
fn profile_batches(info: &AgentInfo, model: &str, width: f32) -> Vec<BatchOption> {
    let Some(profile) = &info.profile else {
        return Vec::new();
    };
    let mut batches: Vec<BatchOption> = profile
        .points
        .iter()
        .filter(|p| p.model == model && WidthKey::same(p.width, width))
        .map(|p| BatchOption {
            batch: p.batch,
            latency_ms: p.latency_ms,
            power_w: p.power_w.unwrap_or(profile.max_power_w),
            mem_bytes: 0,
        })
        .collect();
    batches.sort_by_key(|b| b.batch);
    batches
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use slim_protocol::{DeviceInfo, QueueStat, Tensor, WidthInfo, PROTOCOL_VERSION};

    /// An online agent serving digits at width 0.5.
    pub(crate) fn agent_info(agent: &str) -> AgentInfo {
        AgentInfo {
            threads: 1,
            v: PROTOCOL_VERSION,
            agent: agent.into(),
            online: true,
            started_at_ms: 1,
            backend: "cpu".into(),
            backend_reason: String::new(),
            device: DeviceInfo::default(),
            models: vec![ModelInfo {
                name: "digits".into(),
                input_shape: vec![1, 8, 8],
                classes: 10,
                widths: vec![WidthInfo {
                    width: 0.5,
                    top1: 0.9,
                    accuracy_source: "measured".into(),
                    flops: 1,
                    params: 1,
                }],
            }],
            max_batch: 8,
            emulation: None,
            profile: None,
            durable: false,
            max_queued: None,
            concurrency: None,
        }
    }

    fn info(agent: &str, online: bool, started: u64) -> AgentInfo {
        AgentInfo {
            online,
            started_at_ms: started,
            ..agent_info(agent)
        }
    }

    fn request(id: &str) -> InferRequest {
        let mut r = InferRequest::new(id, "digits", Tensor::from_u8(vec![1, 8, 8], vec![0; 64]));
        r.reply_to = Some("replies/c".into());
        r
    }

    fn key(id: &str) -> String {
        RequestKey::new("replies/c", id).wire()
    }

    fn telemetry(agent: &str, done: &[&str]) -> Telemetry {
        Telemetry {
            at_ms: 0,
            cpu_util: 0.5,
            ram_used_bytes: 1,
            ram_total_bytes: 3,
            power_w: 1.0,
            energy_j: 1.0,
            done: done.iter().map(|id| key(id)).collect(),
            ..Telemetry::idle(agent, 1)
        }
    }

    #[test]
    fn an_agent_that_goes_offline_hands_back_its_pending_requests() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        assert!(s.on_status(info("a", true, 1), t0).is_empty());
        s.record_assignment("a", request("r1"), 0, (0.5, 1), t0);
        s.record_assignment("a", request("r2"), 0, (0.5, 1), t0);
        s.on_telemetry(telemetry("a", &["r1"]), t0);
        let orphans = s.on_status(info("a", false, 1), t0);
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].request.id, "r2");
        assert_eq!(s.observation("digits").0.devices.len(), 0);
    }

    /// Routers divide an agent's backlog by the batches it runs at once. Read from what was
    /// loaded, an idle two-instance device looked like one and a busy one like two, so the
    /// simulator's twin (which knows the device's limit) and the live coordinator disagreed.
    #[test]
    fn routers_see_the_concurrency_an_agent_announces_whether_or_not_it_is_busy() {
        let t0 = Instant::now();
        let instances = |s: &mut ClusterState| s.observation("digits").0.devices[0].instances;
        let waiting = |loaded: u16| {
            let mut t = telemetry("a", &[]);
            t.queues = vec![QueueStat {
                model: "digits".into(),
                width: 0.5,
                depth: 3,
                oldest_wait_ms: 1.0,
                instances: loaded,
            }];
            t
        };
        let mut s = ClusterState::default();
        s.on_status(
            AgentInfo {
                concurrency: Some(2),
                ..agent_info("a")
            },
            t0,
        );
        assert_eq!(instances(&mut s), 2, "idle, before any report");
        s.on_telemetry(waiting(1), t0);
        assert_eq!(instances(&mut s), 2, "busy with one instance loaded so far");

        // An agent that announces none: the instances loaded for its waiting queues.
        let mut old = ClusterState::default();
        old.on_status(info("a", true, 1), t0);
        assert_eq!(instances(&mut old), 1);
        old.on_telemetry(waiting(3), t0);
        assert_eq!(instances(&mut old), 3);

        let mut zero = ClusterState::default();
        zero.on_status(
            AgentInfo {
                concurrency: Some(0),
                ..agent_info("a")
            },
            t0,
        );
        assert_eq!(instances(&mut zero), 1, "0 is read as 1");
    }

    #[test]
    fn done_reports_clear_only_the_same_clients_request() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        s.on_status(info("a", true, 1), t0);
        let mut other = request("r1");
        other.reply_to = Some("replies/other".into());
        s.record_assignment("a", request("r1"), 0, (0.5, 1), t0);
        s.record_assignment("a", other, 0, (0.5, 1), t0);
        s.on_telemetry(telemetry("a", &["r1"]), t0);
        let left: Vec<_> = s.agents().flat_map(|a| a.pending.keys()).collect();
        assert_eq!(left, vec![&RequestKey::new("replies/other", "r1")]);
    }

    #[test]
    fn phantom_ledger_entries_disappear_one_report_after_the_agent_says_it_holds_nothing() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = ClusterState::default();
        s.on_status(info("a", true, 1), t0);
        for i in 0..15 {
            s.record_assignment("a", request(&format!("lost{i}")), 0, (0.5, 1), t0);
        }
        // The first report after the loss: the agent holds nothing, but the ledger cannot yet
        // tell lost assignments from ones still in flight.
        let mut t = telemetry("a", &[]);
        t.outstanding = 0;
        assert_eq!(s.on_telemetry(t.clone(), t0 + ms(200)).reconciled, 0);
        // Routing already trusts the agent's own count.
        assert_eq!(s.observation("digits").0.devices[0].outstanding, 0);
        s.record_assignment("a", request("fresh"), 0, (0.5, 1), t0 + ms(300));
        assert_eq!(s.observation("digits").0.devices[0].outstanding, 1);
        // One report later the lost ones are dropped; the fresh one is in flight and kept.
        let cleanup = s.on_telemetry(t, t0 + ms(400));
        assert_eq!(cleanup.reconciled, 15);
        assert_eq!(s.held().0, 1);
    }

    /// An agent answering faster than one report can list sends the rest in pages at once; the
    /// ledger was once reconciled against each page, dropping entries whose answers were on
    /// the next page.
    #[test]
    fn the_ledger_is_reconciled_only_on_the_last_page_of_a_report() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = ClusterState::default();
        s.on_status(info("a", true, 1), t0);
        s.on_telemetry(telemetry("a", &[]), t0);
        for i in 0..4 {
            s.record_assignment("a", request(&format!("r{i}")), 0, (0.5, 1), t0 + ms(10));
        }
        let mut running = telemetry("a", &[]);
        running.outstanding = 4;
        s.on_telemetry(running, t0 + ms(500));
        // All four answered; the next report lists two, and says more follow.
        let mut first = telemetry("a", &["r0", "r1"]);
        (first.outstanding, first.more) = (0, true);
        let cleanup = s.on_telemetry(first, t0 + ms(1000));
        assert_eq!((cleanup.reconciled, s.held().0), (0, 2));
        let mut last = telemetry("a", &["r2", "r3"]);
        last.outstanding = 0;
        assert_eq!(s.on_telemetry(last, t0 + ms(1001)).reconciled, 0);
        assert_eq!(s.held().0, 0);
        let answered = |id: &str| s.answered_by(&RequestKey::new("replies/c", id), t0 + ms(1002));
        assert!(answered("r1").is_some() && answered("r3").is_some());
        // A request whose answer is never listed is dropped at the next last page, and its
        // holder with it.
        s.record_assignment("a", request("lost"), 0, (0.5, 1), t0 + ms(1100));
        let mut t = telemetry("a", &[]);
        t.outstanding = 0;
        s.on_telemetry(t.clone(), t0 + ms(2000));
        assert_eq!(s.on_telemetry(t, t0 + ms(3000)).reconciled, 1);
        assert_eq!((s.held().0, s.holders.len()), (0, 0));
    }

    #[test]
    fn every_change_to_a_cached_device_view_gives_it_a_new_version() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        s.on_status(info("a", true, 1), t0);
        s.on_status(info("b", true, 1), t0);
        let versions = |s: &mut ClusterState| -> Vec<u64> {
            let devices = &s.observation("digits").0.devices;
            devices.iter().map(|d| d.version).collect()
        };
        let first = versions(&mut s);
        assert!(first.iter().all(|&v| v != 0) && first[0] != first[1]);
        assert_eq!(versions(&mut s), first, "reading changes nothing");
        s.record_assignment("a", request("r1"), 0, (0.5, 1), t0);
        let assigned = versions(&mut s);
        assert!(assigned[0] > first[0] && assigned[0] > first[1]);
        assert_eq!(assigned[1], first[1], "b did not change");
        s.on_telemetry(telemetry("b", &[]), t0);
        let reported = versions(&mut s);
        assert_eq!(reported[0], assigned[0]);
        assert!(reported[1] > assigned[0]);
        // A rebuilt view (an agent joins) gives every device a version never used before.
        s.on_status(info("c", true, 1), t0);
        let rebuilt = versions(&mut s);
        assert_eq!(rebuilt.len(), 3, "the new agent is in the view");
        assert!(rebuilt.iter().all(|v| *v > reported[1]));
    }

    #[test]
    fn ledger_entries_expire_after_the_ttl() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        s.on_status(info("a", true, 1), t0);
        s.record_assignment("a", request("r1"), 0, (0.5, 1), t0);
        let ttl = Duration::from_secs(60);
        assert_eq!(
            s.expire_ledger(t0 + Duration::from_secs(59), ttl).expired,
            0
        );
        assert_eq!(
            s.expire_ledger(t0 + Duration::from_secs(61), ttl).expired,
            1
        );
        assert_eq!(s.held(), (0, 0));
    }

    #[test]
    fn a_silent_agent_is_taken_offline_after_the_timeout() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        s.on_status(info("a", true, 1), t0);
        s.record_assignment("a", request("r1"), 0, (0.5, 1), t0);
        assert!(s
            .expire(t0 + Duration::from_millis(900), Duration::from_secs(1))
            .is_empty());
        let orphans = s.expire(t0 + Duration::from_millis(1100), Duration::from_secs(1));
        assert_eq!(orphans.len(), 1);
        assert_eq!(s.online_count(), 0);
        s.on_telemetry(telemetry("a", &[]), t0 + Duration::from_millis(1200));
        assert_eq!(s.online_count(), 1, "telemetry brings it back");
    }

    #[test]
    fn a_restarted_agent_hands_back_what_its_previous_run_held() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        s.on_status(info("a", true, 1), t0);
        s.record_assignment("a", request("r1"), 0, (0.5, 1), t0);
        let orphans = s.on_status(info("a", true, 2), t0);
        assert_eq!(orphans.len(), 1);
        assert_eq!(s.online_count(), 1);
    }

    #[test]
    fn a_durable_agent_keeps_its_requests_across_a_restart() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        let mut first = info("a", true, 1);
        first.durable = true;
        s.on_status(first, t0);
        s.record_assignment("a", request("r1"), 0, (0.5, 1), t0);
        let mut second = info("a", true, 2);
        second.durable = true;
        assert!(s.on_status(second, t0).is_empty(), "it resumes them itself");
    }

    /// Marks every agent as heard from now, after the coordinator itself was cut off.
    #[test]
    fn silence_while_the_coordinator_was_disconnected_does_not_count() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        s.on_status(info("a", true, 1), t0);
        s.touch_all(t0 + Duration::from_secs(10));
        assert!(s
            .expire(t0 + Duration::from_secs(11), Duration::from_secs(2))
            .is_empty());
        assert_eq!(s.online_count(), 1);
    }

    #[test]
    fn the_observation_reports_outstanding_work_and_memory() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        s.on_status(info("a", true, 1), t0);
        s.on_status(info("b", true, 1), t0);
        s.record_assignment("b", request("r1"), 0, (0.5, 1), t0);
        let mut t = telemetry("b", &[]);
        t.outstanding = 1;
        s.on_telemetry(t, t0);
        let (obs, ids) = s.observation("digits");
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(obs.devices[1].outstanding, 1);
        assert_eq!(obs.devices[1].mem_free_bytes, 2);
        assert!(s.observation("other").0.devices.is_empty());
    }

    #[test]
    fn the_observation_carries_each_widths_queue_and_timer_from_telemetry() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        let mut wider = info("a", true, 1);
        let full = WidthInfo {
            width: 1.0,
            ..wider.models[0].widths[0].clone()
        };
        wider.models[0].widths.push(full);
        s.on_status(wider, t0);
        let queue = |model: &str, width: f32, depth: u32, oldest_wait_ms: f32| QueueStat {
            model: model.into(),
            width,
            depth,
            oldest_wait_ms,
            instances: 1,
        };
        let mut t = telemetry("a", &[]);
        t.queues = vec![queue("digits", 1.0, 6, 12.5), queue("other", 0.5, 9, 99.0)];
        s.on_telemetry(t, t0);
        let widths = |s: &mut ClusterState| -> Vec<(f32, u32, f32)> {
            s.observation("digits").0.devices[0]
                .widths
                .iter()
                .map(|w| (w.width, w.queue_depth, w.oldest_wait_ms))
                .collect()
        };
        assert_eq!(widths(&mut s), vec![(0.5, 0, 0.0), (1.0, 6, 12.5)]);
        // The next report replaces them, in the cached view too.
        let mut t = telemetry("a", &[]);
        t.seq = 2;
        t.queues = vec![queue("digits", 0.5, 2, 3.0)];
        s.on_telemetry(t, t0 + Duration::from_millis(100));
        assert_eq!(widths(&mut s), vec![(0.5, 2, 3.0), (1.0, 0, 0.0)]);
    }

    #[test]
    fn the_observation_carries_the_models_arrival_rate_and_restamps_when_it_moves() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        s.on_status(info("a", true, 1), t0);
        s.on_status(info("b", true, 1), t0);
        let seen = |s: &mut ClusterState| -> Vec<(f32, u64)> {
            let devices = &s.observation("digits").0.devices;
            devices
                .iter()
                .map(|d| (d.arrival_rate_per_s, d.version))
                .collect()
        };
        let before = seen(&mut s);
        assert!(before.iter().all(|(rate, _)| *rate == 0.0));
        // 100 requests/s: one every 10 ms.
        for i in 0..=64u64 {
            s.note_arrival("digits", t0 + Duration::from_millis(10 * i));
        }
        let after = seen(&mut s);
        for ((rate, version), (_, old)) in after.iter().zip(&before) {
            assert!((rate - 100.0).abs() < 0.5, "{rate}");
            assert!(version > old, "a new rate is a new version");
        }
        assert_eq!(s.arrival_rate_per_s("digits"), after[0].0);
        assert_eq!(s.arrival_rate_per_s("other"), 0.0);
        // A view built afterwards starts with the rate.
        s.on_status(info("c", true, 1), t0);
        assert!(seen(&mut s).iter().all(|(rate, _)| *rate == after[0].0));
        // The same rate again publishes nothing: the versions stay.
        let steady = seen(&mut s);
        for i in 65..=128u64 {
            s.note_arrival("digits", t0 + Duration::from_millis(10 * i));
        }
        assert_eq!(seen(&mut s), steady);
    }

    #[test]
    fn models_list_online_agents_announcements_first() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        s.on_status(info("a", false, 1), t0);
        let mut wider = info("b", true, 1);
        let full = WidthInfo {
            width: 1.0,
            ..wider.models[0].widths[0].clone()
        };
        wider.models[0].widths.push(full);
        s.on_status(wider, t0);
        let widths: Vec<usize> = s.models("digits").map(|m| m.widths.len()).collect();
        assert_eq!(
            widths,
            vec![2, 1],
            "b (online, two widths) before a (offline)"
        );
        assert_eq!(s.models("other").count(), 0);
    }

    #[test]
    fn the_router_sees_the_reported_load_plus_what_was_assigned_since() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        s.on_status(info("a", true, 1), t0);
        let outstanding = |s: &mut ClusterState| s.observation("digits").0.devices[0].outstanding;
        s.record_assignment("a", request("r1"), 0, (0.5, 1), t0);
        assert_eq!(outstanding(&mut s), 1, "before any report: the ledger");
        let mut t = telemetry("a", &[]);
        t.outstanding = 3;
        s.on_telemetry(t, t0 + Duration::from_millis(10));
        assert_eq!(outstanding(&mut s), 3, "the agent's own figure");
        s.record_assignment(
            "a",
            request("r2"),
            0,
            (0.5, 1),
            t0 + Duration::from_millis(20),
        );
        s.record_assignment(
            "a",
            request("r3"),
            0,
            (0.5, 1),
            t0 + Duration::from_millis(30),
        );
        assert_eq!(outstanding(&mut s), 5, "plus two assigned since");
        let mut t = telemetry("a", &[&key("r1"), &key("r2")]);
        t.outstanding = 1;
        s.on_telemetry(t, t0 + Duration::from_millis(40));
        assert_eq!(outstanding(&mut s), 1, "the next report replaces both");
    }
}
