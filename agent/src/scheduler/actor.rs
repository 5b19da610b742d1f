//! The scheduler actor: owns the queues and the model instances, forms batches, runs them off
//! the async threads and hands results to the outbox.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use slim_protocol::{
    encode, BatchRecord, ErrorCode, ErrorReply, InferResult, QueueStat, RecentIds, Timings,
    PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot};
use tract_onnx::tract_core::runtime::State;

use super::{Batch, Batcher, QueueKey, Queued};
use crate::{model::top_k, outbox::Outbox, telemetry::EnergyMeter, validate::ValidAssignment};

/// Fixed settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Agent id, put in every result.
    pub agent: String,
    /// Instances per (model, width).
    pub instances_per_width: usize,
    /// Emulated slowdown factor (1 = off).
    pub slowdown: f32,
    /// Energy model for per-batch energy.
    pub energy: EnergyMeter,
}

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
    /// Duplicates ignored since start.
    pub duplicates: u64,
    /// Batches since the previous report.
    pub batches: Vec<BatchRecord>,
    /// Requests answered since the previous report.
    pub done: Vec<String>,
}

enum Command {
    Assign(Box<ValidAssignment>),
    Done(Box<Finished>),
    Report(oneshot::Sender<SchedulerReport>),
}

struct Finished {
    key: QueueKey,
    state: Box<dyn State>,
    items: Vec<Queued<ValidAssignment>>,
    started_at: Instant,
    compute: Duration,
    outcome: Result<Vec<Vec<f32>>, String>,
}

/// Cheap, clonable handle to the scheduler actor.
#[derive(Clone, Debug)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Assign(_) => "Assign",
            Command::Done(_) => "Done",
            Command::Report(_) => "Report",
        })
    }
}

impl SchedulerHandle {
    /// Queues a validated assignment.
    pub fn assign(&self, assignment: ValidAssignment) {
        let _ = self.tx.send(Command::Assign(Box::new(assignment)));
    }

    /// Current state, draining batch records and done ids.
    pub async fn report(&self) -> SchedulerReport {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Report(tx)).is_err() {
            return SchedulerReport::default();
        }
        rx.await.unwrap_or_default()
    }
}

/// Starts the actor on the current tokio runtime.
pub fn spawn_scheduler(
    config: SchedulerConfig,
    outbox: Outbox,
) -> (SchedulerHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let actor = Actor {
        config,
        outbox,
        batcher: Batcher::default(),
        free: HashMap::new(),
        loaded: HashMap::new(),
        recent: RecentIds::new(100_000),
        running: 0,
        report: SchedulerReport::default(),
        self_tx: tx.clone(),
    };
    (SchedulerHandle { tx }, tokio::spawn(actor.run(rx)))
}

struct Actor {
    config: SchedulerConfig,
    outbox: Outbox,
    batcher: Batcher<ValidAssignment>,
    free: HashMap<QueueKey, Vec<Box<dyn State>>>,
    loaded: HashMap<QueueKey, usize>,
    recent: RecentIds,
    running: usize,
    report: SchedulerReport,
    self_tx: mpsc::UnboundedSender<Command>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        loop {
            let deadline = self.batcher.next_deadline();
            let command = match deadline {
                Some(at) => tokio::select! {
                    c = rx.recv() => c,
                    _ = tokio::time::sleep_until(at.into()) => { self.dispatch(); continue; }
                },
                None => rx.recv().await,
            };
            let Some(command) = command else { break };
            match command {
                Command::Assign(a) => self.enqueue(*a),
                Command::Done(f) => self.finish(*f),
                Command::Report(tx) => {
                    let _ = tx.send(self.take_report());
                }
            }
            self.dispatch();
        }
    }

    fn enqueue(&mut self, a: ValidAssignment) {
        if !self.recent.insert(&a.request.id) {
            self.report.duplicates += 1;
            tracing::debug!(id = %a.request.id, "duplicate request ignored: already accepted");
            return;
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

    fn has_instance(&self, key: &QueueKey) -> bool {
        self.free.get(key).is_some_and(|f| !f.is_empty())
            || self.loaded.get(key).copied().unwrap_or(0) < self.config.instances_per_width
    }

    fn dispatch(&mut self) {
        let now = Instant::now();
        loop {
            let free = &self.free;
            let loaded = &self.loaded;
            let limit = self.config.instances_per_width;
            let next = self.batcher.next_batch(now, |k| {
                free.get(k).is_some_and(|f| !f.is_empty())
                    || loaded.get(k).copied().unwrap_or(0) < limit
            });
            let Some(batch) = next else { break };
            debug_assert!(self.has_instance(&batch.key));
            self.start(batch);
        }
    }

    fn take_state(
        &mut self,
        key: &QueueKey,
        batch: &Batch<ValidAssignment>,
    ) -> Result<Box<dyn State>, String> {
        if let Some(state) = self.free.get_mut(key).and_then(Vec::pop) {
            return Ok(state);
        }
        let family = &batch.items[0].item.family;
        let plan = family
            .plan(key.width())
            .ok_or_else(|| format!("width {} vanished", key.width()))?;
        let state = plan.spawn_state().map_err(|e| e.to_string())?;
        *self.loaded.entry(key.clone()).or_default() += 1;
        tracing::info!(model = %key.model, width = key.width(), instances = self.loaded[key], "model instance loaded");
        Ok(state)
    }

    fn start(&mut self, batch: Batch<ValidAssignment>) {
        let key = batch.key.clone();
        let mut state = match self.take_state(&key, &batch) {
            Ok(s) => s,
            Err(e) => {
                for q in batch.items {
                    self.fail(&q.item, ErrorCode::Internal, &e);
                }
                return;
            }
        };
        self.running += batch.items.len();
        let tx = self.self_tx.clone();
        let slowdown = self.config.slowdown;
        tokio::task::spawn_blocking(move || {
            let family = batch.items[0].item.family.clone();
            let samples: Vec<Vec<f32>> =
                batch.items.iter().map(|q| q.item.sample.clone()).collect();
            let started_at = Instant::now();
            let outcome = family
                .run_batch(state.as_mut(), &samples)
                .map_err(|e| e.to_string());
            let real = started_at.elapsed();
            if slowdown > 1.0 {
                std::thread::sleep(real.mul_f32(slowdown - 1.0));
            }
            let _ = tx.send(Command::Done(Box::new(Finished {
                key,
                state,
                items: batch.items,
                started_at,
                compute: started_at.elapsed(),
                outcome,
            })));
        });
    }

    fn finish(&mut self, f: Finished) {
        self.running -= f.items.len();
        self.free.entry(f.key.clone()).or_default().push(f.state);
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
        let batch_energy = self
            .config
            .energy
            .batch_energy_j(f.compute.as_secs_f64(), 1);
        let mut queue_ms_sum = 0.0;
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
                emulated: self.config.slowdown > 1.0,
            };
            self.outbox.send(a.reply_to.clone(), encode(&result));
            self.report.completed += 1;
            self.report.done.push(a.request.id.clone());
        }
        self.report.batches.push(BatchRecord {
            model: f.key.model.clone(),
            width: f.key.width(),
            batch_size: n as u16,
            queue_ms: queue_ms_sum / n as f32,
            compute_ms,
            energy_j: batch_energy,
        });
    }

    fn fail(&mut self, a: &ValidAssignment, code: ErrorCode, message: &str) {
        self.report.failed += 1;
        self.report.done.push(a.request.id.clone());
        let reply = ErrorReply::new(
            Some(a.request.id.clone()),
            code,
            message,
            format!("agent:{}", self.config.agent),
        );
        self.outbox.send(a.reply_to.clone(), encode(&reply));
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
        SchedulerReport {
            queues,
            outstanding: (self.batcher.len() + self.running) as u32,
            completed: self.report.completed,
            failed: self.report.failed,
            duplicates: self.report.duplicates,
            batches: std::mem::take(&mut self.report.batches),
            done: std::mem::take(&mut self.report.done),
        }
    }
}
