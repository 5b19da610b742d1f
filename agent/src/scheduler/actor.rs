//! The scheduler actor: owns the queues, the model instances, the refusal counts and the
//! durable store's record of accepted requests; forms batches, runs them off the async threads
//! and hands results to the outbox. Everything else talks to it through [`SchedulerHandle`].

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use slim_protocol::{
    encode, BatchRecord, ErrorCode, ErrorReply, InferResult, QueueStat, RequestKey, Timings,
    PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    instances::{InstancePolicy, ScaleDecision, ScaleInput},
    replay::{ReplayCache, ReplayLimits},
    unreported::Unreported,
    Batch, Batcher, QueueKey, Queued,
};
use crate::{
    model::{top_k, Instance},
    outbox::Outbox,
    telemetry::{BatchAttribution, EnergyMeter},
    validate::ValidAssignment,
};

/// Fixed settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Agent id, put in every result.
    pub agent: String,
    /// When to add and drop instances.
    pub policy: InstancePolicy,
    /// Batch size used to measure a new instance's memory (the largest batch it will run).
    pub max_batch: usize,
    /// How batches are paced when the agent emulates another device.
    pub pace: super::Pace,
    /// Durable store: answered requests are removed from it.
    pub store: Option<crate::store::Store>,
    /// Energy rule for per-batch energy; the actor attributes the power the telemetry task
    /// measures with it (see [`SchedulerHandle::attribute_power`]).
    pub energy: EnergyMeter,
    /// Most requests queued or running at once; beyond it assignments are answered
    /// `overloaded`.
    pub max_queued: usize,
}

/// Instances loaded before the agent starts serving, with their measured bytes.
pub type WarmInstances = Vec<(QueueKey, Instance, u64)>;

/// Loads one instance of every (model, width) of `families`, within `budget_bytes`, so the
/// first requests of each queue do not wait for a load (which takes seconds on a busy device
/// and showed as the demo's p99). Blocking: run it off the async threads.
pub fn warm_instances(
    families: &[std::sync::Arc<crate::model::ModelFamily>],
    max_batch: usize,
    budget_bytes: u64,
) -> WarmInstances {
    let mut used = 0;
    let mut warm = Vec::new();
    for family in families {
        for plan in family.plans() {
            let key = QueueKey::new(family.name(), plan.entry.width);
            match super::memory::load_measured(family, plan, max_batch) {
                Ok((instance, bytes)) if used + bytes <= budget_bytes => {
                    used += bytes;
                    warm.push((key, instance, bytes));
                }
                Ok(_) => {
                    tracing::info!(model = %key.model, width = key.width(), "memory budget reached: later instances load on demand");
                    return warm;
                }
                Err(e) => {
                    tracing::warn!(model = %key.model, width = key.width(), error = %e, "warm-up load failed; it loads on demand")
                }
            }
        }
    }
    warm
}

/// Assignments waiting for the actor to take them; beyond this the session answers
/// `overloaded` instead of queuing more.
const ASSIGN_CHANNEL_CAPACITY: usize = 1024;

/// What the scheduler reports to telemetry; batch records and done ids are drained by the read.
#[derive(Debug, Default, Clone)]
pub struct SchedulerReport {
    /// Per-queue state.
    pub queues: Vec<QueueStat>,
    /// Accepted and not yet answered.
    pub outstanding: u32,
    /// Answered since start.
    pub completed: u64,
    /// Requests that failed inside the agent since start.
    pub failed: u64,
    /// Duplicates of queued or running requests ignored since start.
    pub duplicates: u64,
    /// Repeats of answered requests answered again from the replay cache since start.
    pub replayed: u64,
    /// Assignments answered `overloaded` since start.
    pub overloaded: u64,
    /// Assignments the session refused before they reached a queue, by code, since start.
    pub rejections: HashMap<ErrorCode, u64>,
    /// Answered keys and batch records dropped unreported since start.
    pub unreported_dropped: u64,
    /// Batches since the previous report, one page of them (see [`super::unreported`]).
    pub batches: Vec<BatchRecord>,
    /// Keys of requests answered since the previous report, one page of them.
    pub done: Vec<String>,
    /// Keys of assignments refused since the last report (this page's share).
    pub refused: Vec<String>,
    /// More batch records or answered keys wait for the next page.
    pub more: bool,
    /// Memory taken by all loaded instances, bytes (measured when each loaded).
    pub instance_memory_bytes: u64,
    /// The budget for it, bytes.
    pub memory_budget_bytes: u64,
    /// Most instances loaded at the same time since start.
    pub peak_instances: usize,
    /// Most memory instances took at the same time since start, bytes.
    pub peak_instance_memory_bytes: u64,
    /// Batches since start whose real compute took longer than the emulated device's latency.
    pub pace_misses: u64,
    /// Batches run since start (failed ones included).
    pub batches_run: u64,
}

enum Command {
    Done(Box<Finished>),
    Loaded(QueueKey, Result<(Instance, u64), String>),
    Report(oneshot::Sender<SchedulerReport>),
    Rejected(ErrorCode, Option<String>),
    Rejections(oneshot::Sender<HashMap<ErrorCode, u64>>),
    Pacing(oneshot::Sender<PaceCount>),
    ForgetStored(RequestKey),
    Power(f32),
}

struct Finished {
    key: QueueKey,
    state: Instance,
    items: Vec<Queued<ValidAssignment>>,
    started_at: Instant,
    compute: Duration,
    energy: crate::telemetry::BatchToken,
    /// Threads the batch ran on (its family's executor), for the energy model.
    threads: usize,
    /// How it was paced to the emulated device.
    hold: super::Hold,
    outcome: Result<Vec<Vec<f32>>, String>,
}

/// Cheap, clonable handle to the scheduler actor.
#[derive(Clone, Debug)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Command>,
    assign_tx: mpsc::Sender<Box<ValidAssignment>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Done(_) => "Done",
            Command::Loaded(..) => "Loaded",
            Command::Report(_) => "Report",
            Command::Rejected(..) => "Rejected",
            Command::Rejections(_) => "Rejections",
            Command::Pacing(_) => "Pacing",
            Command::ForgetStored(_) => "ForgetStored",
            Command::Power(_) => "Power",
        })
    }
}

impl SchedulerHandle {
    /// Queues a validated assignment; hands it back when the actor's inbox is full.
    pub fn assign(&self, assignment: ValidAssignment) -> Result<(), Box<ValidAssignment>> {
        self.assign_tx
            .try_send(Box::new(assignment))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
            })
    }

    /// Current state, draining batch records and done ids.
    pub async fn report(&self) -> SchedulerReport {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Report(tx)).is_err() {
            return SchedulerReport::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Counts an assignment refused before it reached a queue (invalid, or the inbox full);
    /// its key, when it had a valid one, is reported as refused.
    pub fn rejected(&self, code: ErrorCode, key: Option<&RequestKey>) {
        let _ = self
            .tx
            .send(Command::Rejected(code, key.map(RequestKey::wire)));
    }

    /// Attributes `watts` (the latest telemetry window's average power) to the batches in
    /// flight from now on.
    pub fn attribute_power(&self, watts: f32) {
        let _ = self.tx.send(Command::Power(watts));
    }

    /// Removes a stored request by its raw stored key (see [`crate::store::Store::forget_raw`]):
    /// one an earlier run accepted that can no longer be served, or that was stored under an
    /// older key format and is stored again under its key when queued.
    pub fn forget_stored(&self, key: RequestKey) {
        let _ = self.tx.send(Command::ForgetStored(key));
    }

    /// Refused assignments by code since start, without draining anything. Counts every
    /// [`Self::rejected`] sent before the call. Empty once the actor has stopped.
    pub async fn rejections(&self) -> HashMap<ErrorCode, u64> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Rejections(tx)).is_err() {
            return HashMap::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Batches run and batches that missed their emulated pace since start, without draining
    /// anything. Zero once the actor has stopped.
    pub async fn pacing(&self) -> PaceCount {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Pacing(tx)).is_err() {
            return PaceCount::default();
        }
        rx.await.unwrap_or_default()
    }
}

/// How many batches ran, and how many of them took longer than the emulated device would have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaceCount {
    /// Batches run since start.
    pub batches: u64,
    /// Of those, batches whose real compute exceeded the emulated device's latency.
    pub missed: u64,
}

/// Starts the actor on the current tokio runtime, with `warm` instances already loaded.
pub fn spawn_scheduler(
    config: SchedulerConfig,
    outbox: Outbox,
    warm: WarmInstances,
) -> (SchedulerHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (assign_tx, assign_rx) = mpsc::channel(ASSIGN_CHANNEL_CAPACITY);
    let mut actor = Actor {
        energy: BatchAttribution::new(&config.energy),
        config,
        outbox,
        batcher: Batcher::default(),
        free: HashMap::new(),
        loaded: HashMap::new(),
        loading: HashMap::new(),
        instance_bytes: HashMap::new(),
        memory_used: 0,
        running_batches: 0,
        inflight: HashSet::new(),
        replay: ReplayCache::new(ReplayLimits::default()),
        running: 0,
        report: SchedulerReport::default(),
        unreported: Unreported::default(),
        self_tx: tx.clone(),
    };
    let now = Instant::now();
    for (key, instance, bytes) in warm {
        actor.memory_used += bytes;
        actor.instance_bytes.insert(key.clone(), bytes);
        *actor.loaded.entry(key.clone()).or_default() += 1;
        actor.free.entry(key).or_default().push((instance, now));
    }
    (
        SchedulerHandle { tx, assign_tx },
        tokio::spawn(actor.run(rx, assign_rx)),
    )
}

/// A loaded instance waiting for work, and since when.
type IdleInstance = (Instance, Instant);

struct Actor {
    config: SchedulerConfig,
    outbox: Outbox,
    batcher: Batcher<ValidAssignment>,
    free: HashMap<QueueKey, Vec<IdleInstance>>,
    loaded: HashMap<QueueKey, usize>,
    loading: HashMap<QueueKey, ()>,
    instance_bytes: HashMap<QueueKey, u64>,
    memory_used: u64,
    running_batches: usize,
    /// Keys of the requests queued or running.
    inflight: HashSet<RequestKey>,
    /// Answers recently sent, for repeats of answered requests.
    replay: ReplayCache,
    running: usize,
    report: SchedulerReport,
    /// Answered keys and batch records not reported yet.
    unreported: Unreported,
    /// Splits measured power among the batches in flight.
    energy: BatchAttribution,
    self_tx: mpsc::UnboundedSender<Command>,
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut assignments: mpsc::Receiver<Box<ValidAssignment>>,
    ) {
        loop {
            let wake = self.next_wake(Instant::now());
            let command = tokio::select! {
                c = rx.recv() => c,
                Some(a) = assignments.recv() => {
                    self.enqueue(*a);
                    self.dispatch();
                    continue;
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    self.dispatch();
                    continue;
                }
            };
            let Some(command) = command else { break };
            match command {
                Command::Done(f) => self.finish(*f),
                Command::Loaded(key, outcome) => self.on_loaded(key, outcome),
                Command::Report(tx) => {
                    let _ = tx.send(self.take_report());
                }
                Command::Rejected(code, key) => {
                    *self.report.rejections.entry(code).or_default() += 1;
                    if let Some(key) = key {
                        self.unreported.refused(key);
                    }
                    continue;
                }
                Command::Rejections(tx) => {
                    let _ = tx.send(self.report.rejections.clone());
                    continue;
                }
                Command::Pacing(tx) => {
                    let _ = tx.send(PaceCount {
                        batches: self.report.batches_run,
                        missed: self.report.pace_misses,
                    });
                    continue;
                }
                Command::Power(watts) => {
                    self.energy.set_power(watts);
                    continue;
                }
                Command::ForgetStored(key) => {
                    if let Some(store) = &self.config.store {
                        if let Err(e) = store.forget_raw(&key) {
                            tracing::error!(id = %key.id, error = %e, "cannot remove a stored request");
                        }
                    }
                    continue;
                }
            }
            self.dispatch();
        }
    }

    /// The next moment something may need doing without a new command: a queue's delay runs
    /// out, a waiting queue may deserve another instance, or an idle instance may be dropped.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + Duration::from_secs(1);
        if let Some(deadline) = self.batcher.next_deadline() {
            wake = wake.min(deadline);
        }
        if !self.batcher.is_empty() {
            wake = wake.min(now + self.config.policy.scale_up_wait / 2);
        }
        wake.max(now)
    }

    fn enqueue(&mut self, a: ValidAssignment) {
        if self.inflight.contains(&a.key) {
            self.report.duplicates += 1;
            tracing::debug!(id = %a.request.id, "duplicate request ignored: already queued or running");
            return;
        }
        if let Some(answer) = self.replay.get(&a.key, Instant::now()) {
            self.report.replayed += 1;
            tracing::debug!(id = %a.request.id, "repeat of an answered request: answer sent again");
            self.outbox.send(a.key.reply_to.clone(), answer.to_vec());
            return;
        }
        let held = self.batcher.len() + self.running;
        if held >= self.config.max_queued {
            self.report.overloaded += 1;
            let message = format!(
                "agent {} holds {held} requests, its limit (max_queued); retry later",
                self.config.agent
            );
            self.reply_error(&a, ErrorCode::Overloaded, &message);
            self.unreported.refused(a.key.wire());
            return;
        }
        self.inflight.insert(a.key.clone());
        // Stored only once accepted: a redelivered duplicate never re-enters the store.
        if let (Some(store), Some(payload)) = (&self.config.store, &a.payload) {
            if let Err(e) = store.accept(&a.key, payload) {
                tracing::error!(error = %e, "cannot persist an accepted request");
            }
        }
        let key = QueueKey::new(a.family.name(), a.width);
        let queued = Queued {
            enqueued_at: a.received_at,
            max_batch: a.batch_size as usize,
            max_delay: Duration::from_millis(a.max_queue_delay_ms as u64),
            item: a,
        };
        self.batcher.push(key, queued);
    }

    fn dispatch(&mut self) {
        let now = Instant::now();
        self.replay.expire(now);
        let lanes = self.config.pace.max_running_batches();
        while self.running_batches < lanes {
            let free = &self.free;
            let next = self
                .batcher
                .next_batch(now, |k| free.get(k).is_some_and(|f| !f.is_empty()));
            let Some(batch) = next else { break };
            let state = self
                .free
                .get_mut(&batch.key)
                .and_then(Vec::pop)
                .map(|(state, _)| state)
                .expect("a free instance was checked for");
            self.start(batch, state);
        }
        self.scale(now);
    }

    /// Loads instances for queues that wait, and drops instances that idle.
    fn scale(&mut self, now: Instant) {
        for snapshot in self.batcher.snapshot(now) {
            let key = snapshot.key;
            let has_free = self.free.get(&key).is_some_and(|f| !f.is_empty());
            if has_free || self.loading.contains_key(&key) {
                continue;
            }
            let input = ScaleInput {
                loaded: self.loaded.get(&key).copied().unwrap_or(0),
                oldest_wait: snapshot.oldest_wait,
                memory_used: self.memory_used,
                instance_bytes: self.instance_bytes.get(&key).copied(),
                running_batches: self.running_batches,
            };
            match self.config.policy.decide(input) {
                ScaleDecision::Add => self.load_instance(key),
                // A queue with no instance at all makes room by dropping idle instances elsewhere.
                ScaleDecision::NoMemory if input.loaded == 0 => self.drop_idle(now, true),
                _ => {}
            }
        }
        self.drop_idle(now, false);
    }

    fn drop_idle(&mut self, now: Instant, every_idle: bool) {
        let policy = &self.config.policy;
        for (key, free) in self.free.iter_mut() {
            let before = free.len();
            free.retain(|(_, idle_since)| {
                !(every_idle || policy.should_drop(now.saturating_duration_since(*idle_since)))
            });
            let dropped = before - free.len();
            if dropped > 0 {
                let bytes = self.instance_bytes.get(key).copied().unwrap_or(0);
                self.memory_used = self.memory_used.saturating_sub(bytes * dropped as u64);
                if let Some(n) = self.loaded.get_mut(key) {
                    *n -= dropped;
                }
                tracing::info!(model = %key.model, width = key.width(), dropped, "idle model instances dropped");
            }
        }
    }

    fn load_instance(&mut self, key: QueueKey) {
        let Some(family) = self.batcher.head(&key).map(|a| a.family.clone()) else {
            return;
        };
        let Some(plan) = family.plan(key.width()).cloned() else {
            return;
        };
        // Reserve the measured size (when known) until the load reports back.
        self.memory_used += self.instance_bytes.get(&key).copied().unwrap_or(0);
        *self.loaded.entry(key.clone()).or_default() += 1;
        self.loading.insert(key.clone(), ());
        let tx = self.self_tx.clone();
        let batch = self.config.max_batch;
        tokio::task::spawn_blocking(move || {
            let outcome = super::memory::load_measured(&family, &plan, batch);
            let _ = tx.send(Command::Loaded(key, outcome));
        });
    }

    fn on_loaded(&mut self, key: QueueKey, outcome: Result<(Instance, u64), String>) {
        self.loading.remove(&key);
        let reserved = self.instance_bytes.get(&key).copied().unwrap_or(0);
        self.memory_used = self.memory_used.saturating_sub(reserved);
        let (state, measured) = match outcome {
            Ok(ok) => ok,
            Err(e) => {
                if let Some(n) = self.loaded.get_mut(&key) {
                    *n -= 1;
                }
                tracing::error!(model = %key.model, width = key.width(), error = %e, "model instance failed to load");
                for q in self.batcher.drain_queue(&key) {
                    self.fail(&q.item, ErrorCode::Internal, &e);
                }
                return;
            }
        };
        let bytes = {
            let known = self.instance_bytes.entry(key.clone()).or_insert(measured);
            *known = (*known).max(measured);
            *known
        };
        if self.memory_used + bytes > self.config.policy.memory_budget_bytes {
            tracing::warn!(model = %key.model, width = key.width(), bytes, "the new instance is larger than the budget left: unloaded");
            if let Some(n) = self.loaded.get_mut(&key) {
                *n -= 1;
            }
            return;
        }
        self.memory_used += bytes;
        let instances: usize = self.loaded.values().sum();
        self.report.peak_instances = self.report.peak_instances.max(instances);
        self.report.peak_instance_memory_bytes =
            self.report.peak_instance_memory_bytes.max(self.memory_used);
        tracing::info!(model = %key.model, width = key.width(), instances = self.loaded[&key], bytes, "model instance loaded");
        self.free
            .entry(key)
            .or_default()
            .push((state, Instant::now()));
    }

    fn start(&mut self, batch: Batch<ValidAssignment>, mut state: Instance) {
        let key = batch.key.clone();
        self.running_batches += 1;
        let energy = self.energy.begin_batch();
        self.running += batch.items.len();
        let tx = self.self_tx.clone();
        let pace = self.config.pace.clone();
        tokio::task::spawn_blocking(move || {
            let family = batch.items[0].item.family.clone();
            let threads = family.threads();
            let samples: Vec<Vec<f32>> =
                batch.items.iter().map(|q| q.item.sample.clone()).collect();
            let started_at = Instant::now();
            let outcome = family
                .run_batch(&mut state, &samples)
                .map_err(|e| e.to_string());
            let hold = pace.hold(&key.model, key.width(), samples.len(), started_at.elapsed());
            if !hold.sleep.is_zero() {
                std::thread::sleep(hold.sleep);
            }
            let _ = tx.send(Command::Done(Box::new(Finished {
                key,
                state,
                items: batch.items,
                started_at,
                compute: started_at.elapsed(),
                energy,
                threads,
                hold,
                outcome,
            })));
        });
    }

    fn finish(&mut self, f: Finished) {
        self.report.batches_run += 1;
        self.running -= f.items.len();
        self.running_batches -= 1;
        self.free
            .entry(f.key.clone())
            .or_default()
            .push((f.state, Instant::now()));
        let logits = match f.outcome {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(model = %f.key.model, width = f.key.width(), error = %e, "batch failed");
                for q in &f.items {
                    self.fail(&q.item, ErrorCode::Internal, &e);
                }
                return;
            }
        };
        let n = f.items.len();
        let compute_ms = f.compute.as_secs_f32() * 1000.0;
        let batch_energy = self.batch_energy(f.energy, &f.key, n, f.compute, f.threads, f.hold);
        let mut queue_ms_sum = 0.0;
        let mut requests = Vec::with_capacity(n);
        for (q, row) in f.items.iter().zip(logits) {
            let a = &q.item;
            let queue_ms = f
                .started_at
                .saturating_duration_since(a.received_at)
                .as_secs_f32()
                * 1000.0;
            queue_ms_sum += queue_ms;
            let k = a.request.top_k.unwrap_or(5).max(1) as usize;
            let accuracy = a.family.plan(a.width).map(|p| p.entry.top1).unwrap_or(0.0);
            let result = InferResult {
                v: PROTOCOL_VERSION,
                id: a.request.id.clone(),
                model: a.request.model.clone(),
                agent: self.config.agent.clone(),
                width: a.width,
                batch_size: n as u16,
                top_k: top_k(&row, &a.family.manifest.classes, k),
                accuracy,
                timings: Timings {
                    queue_ms,
                    compute_ms,
                    total_ms: a.received_at.elapsed().as_secs_f32() * 1000.0,
                },
                energy_j: batch_energy / n as f32,
                energy_source: self.config.energy.source,
                router: a.router.clone(),
                emulated: self.config.pace.is_emulated(),
            };
            let payload = encode(&result);
            self.replay
                .insert(a.key.clone(), payload.clone(), f.started_at + f.compute);
            self.outbox.send(a.key.reply_to.clone(), payload);
            self.inflight.remove(&a.key);
            self.forget(&a.key);
            self.report.completed += 1;
            self.unreported.done(a.key.wire());
            requests.push(a.key.wire());
        }
        self.unreported.batch(BatchRecord {
            model: f.key.model.clone(),
            width: f.key.width(),
            batch_size: n as u16,
            queue_ms: queue_ms_sum / n as f32,
            compute_ms,
            energy_j: batch_energy,
            requests,
        });
    }

    /// The batch's energy: the emulated device's profiled power over the paced time when
    /// pacing to a profile, else the meter's figure. Counts a missed pace.
    fn batch_energy(
        &mut self,
        token: crate::telemetry::BatchToken,
        key: &QueueKey,
        batch: usize,
        compute: Duration,
        threads: usize,
        hold: super::Hold,
    ) -> f32 {
        let seconds = compute.as_secs_f64();
        let metered = self.energy.finish_batch(token, seconds, threads).joules;
        if hold.missed {
            if self.report.pace_misses == 0 {
                tracing::warn!(model = %key.model, width = key.width(), batch, compute_ms = seconds * 1000.0, "a batch took longer than the emulated device's latency: this host is too slow for the emulation (raise the slowdown)");
            }
            self.report.pace_misses += 1;
        }
        match hold.power_w {
            Some(watts) => watts * seconds as f32,
            None => metered,
        }
    }

    fn fail(&mut self, a: &ValidAssignment, code: ErrorCode, message: &str) {
        self.report.failed += 1;
        self.unreported.done(a.key.wire());
        self.reply_error(a, code, message);
        self.inflight.remove(&a.key);
        self.forget(&a.key);
    }

    fn reply_error(&self, a: &ValidAssignment, code: ErrorCode, message: &str) {
        let reply = ErrorReply::new(
            Some(a.key.id.clone()),
            code,
            message,
            format!("agent:{}", self.config.agent),
        );
        self.outbox.send(a.key.reply_to.clone(), encode(&reply));
    }

    fn forget(&self, key: &RequestKey) {
        if let Some(store) = &self.config.store {
            if let Err(e) = store.answered(key) {
                tracing::error!(id = %key.id, error = %e, "cannot mark a request answered in the store");
            }
        }
    }

    fn take_report(&mut self) -> SchedulerReport {
        let now = Instant::now();
        let queues = self
            .batcher
            .snapshot(now)
            .into_iter()
            .map(|s| QueueStat {
                model: s.key.model.clone(),
                width: s.key.width(),
                depth: s.depth as u32,
                oldest_wait_ms: s.oldest_wait.as_secs_f32() * 1000.0,
                instances: self.loaded.get(&s.key).copied().unwrap_or(0) as u16,
            })
            .collect();
        let page = self.unreported.page();
        SchedulerReport {
            queues,
            outstanding: (self.batcher.len() + self.running) as u32,
            completed: self.report.completed,
            failed: self.report.failed,
            duplicates: self.report.duplicates,
            replayed: self.report.replayed,
            overloaded: self.report.overloaded,
            rejections: self.report.rejections.clone(),
            unreported_dropped: self.unreported.dropped(),
            batches: page.batches,
            done: page.done,
            refused: page.refused,
            more: page.more,
            instance_memory_bytes: self.memory_used,
            memory_budget_bytes: self.config.policy.memory_budget_bytes,
            peak_instances: self.report.peak_instances,
            peak_instance_memory_bytes: self.report.peak_instance_memory_bytes,
            pace_misses: self.report.pace_misses,
            batches_run: self.report.batches_run,
        }
    }
}

#[cfg(test)]
mod tests;
