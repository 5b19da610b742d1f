//! Online refinement in the coordinator: the thin wiring around the pure
//! [`OnlineLearner`]. Telemetry batch records become rewards; updates run on tokio's blocking
//! pool (one at a time), so routing never waits for training; the refined checkpoint is
//! written from there too.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use slim_protocol::{now_ms, Telemetry};
use slim_router::ppo::online::{
    Measured, OnlineConfig, OnlineLearner, OnlineStats, Refined, UpdateReport,
};
use slim_router::ppo::{Checkpoint, CheckpointMeta, OnlineMeta};
use slim_router::{Observation, Route, RouteRequest};
use tokio::sync::oneshot;

use crate::config::OnlineSettings;

/// What `/metrics` and `/api/v1/state` show of online refinement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OnlineView {
    /// The learner's totals.
    pub stats: OnlineStats,
    /// The latest update (applied or refused).
    pub last_update: Option<UpdateReport>,
    /// An update is running now.
    pub updating: bool,
    /// Refined checkpoints written.
    pub saves: u64,
    /// Refined checkpoints that could not be written.
    pub save_errors: u64,
    /// How long the latest update took, ms (on the blocking pool, not the routing loop).
    pub last_update_ms: Option<f64>,
}

/// A finished update and, when a checkpoint was due, whether it was written.
struct Finished {
    refined: Refined,
    update_ms: f64,
    saved: Option<Result<PathBuf, String>>,
}

/// Where refined checkpoints go and what they say about themselves.
struct SaveTo {
    path: PathBuf,
    meta: CheckpointMeta,
    base_policy: String,
}

/// The learner, the update in flight, and where refined checkpoints go.
pub struct OnlineRefinement {
    learner: OnlineLearner,
    config: OnlineConfig,
    save: Option<SaveTo>,
    running: Option<oneshot::Receiver<Finished>>,
    saves: u64,
    save_errors: u64,
    last_update_ms: Option<f64>,
}

impl OnlineRefinement {
    /// Refinement of `checkpoint` (loaded from `path`) with `settings`.
    pub fn new(checkpoint: Checkpoint, path: &Path, settings: &OnlineSettings, seed: u64) -> Self {
        let save = settings.save.clone().map(|save| SaveTo {
            path: save,
            base_policy: checkpoint
                .meta
                .online
                .as_ref()
                .map(|o| o.base_policy.clone())
                .unwrap_or_else(|| path.display().to_string()),
            meta: checkpoint.meta.clone(),
        });
        Self {
            learner: OnlineLearner::new(checkpoint, settings.learner.clone(), seed),
            config: settings.learner.clone(),
            save,
            running: None,
            saves: 0,
            save_errors: 0,
            last_update_ms: None,
        }
    }

    /// The router's name, `ppo:<preset>+online`.
    pub fn name(&self) -> &str {
        self.learner.name()
    }

    /// Places a request (sampling the policy) and remembers the decision under `key`.
    pub fn route(
        &mut self,
        observation: &Observation,
        request: &RouteRequest,
        key: &str,
        now: Instant,
    ) -> Option<Route> {
        self.learner.route(observation, request, key, now)
    }

    /// Turns the batch records of `telemetry` into rewards, and starts an update when a batch
    /// of them is ready.
    pub fn on_telemetry(&mut self, telemetry: &Telemetry) {
        for batch in &telemetry.batches {
            let measured = Measured {
                queue_ms: batch.queue_ms,
                compute_ms: batch.compute_ms,
                batch_energy_j: batch.energy_j,
                batch_size: batch.batch_size,
            };
            for key in &batch.requests {
                self.learner.complete(key, &measured);
            }
        }
        self.start_update();
    }

    /// Drops decisions whose reward never came, installs a finished update, starts the next.
    pub fn tick(&mut self, now: Instant) {
        let expired = self.learner.expire(now);
        if expired > 0 {
            tracing::debug!(
                expired,
                "online refinement: decisions without a reward dropped"
            );
        }
        if let Some(rx) = self.running.as_mut() {
            match rx.try_recv() {
                Ok(finished) => {
                    self.running = None;
                    self.finish(finished);
                }
                Err(oneshot::error::TryRecvError::Empty) => return,
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.running = None;
                    tracing::error!("online refinement: an update stopped without a result");
                }
            }
        }
        self.start_update();
    }

    /// What monitoring shows.
    pub fn view(&self) -> OnlineView {
        OnlineView {
            stats: self.learner.stats(),
            last_update: self.learner.last_update().cloned(),
            updating: self.running.is_some(),
            saves: self.saves,
            save_errors: self.save_errors,
            last_update_ms: self.last_update_ms,
        }
    }

    fn finish(&mut self, finished: Finished) {
        let report = &finished.refined.report;
        self.last_update_ms = Some(finished.update_ms);
        if report.applied {
            tracing::info!(
                transitions = report.transitions,
                update_ms = finished.update_ms,
                reward_mean = report.reward_mean,
                cost_mean = report.cost_mean,
                kl = report.kl,
                steps = report.steps,
                "online refinement: update applied"
            );
        } else {
            tracing::warn!(
                transitions = report.transitions,
                reason = report.refused.as_deref().unwrap_or(""),
                "online refinement: update refused, the policy is unchanged"
            );
        }
        match finished.saved {
            Some(Ok(path)) => {
                self.saves += 1;
                tracing::debug!(path = %path.display(), "refined checkpoint written");
            }
            Some(Err(e)) => {
                self.save_errors += 1;
                tracing::error!(error = %e, "cannot write the refined checkpoint");
            }
            None => {}
        }
        self.learner.apply(finished.refined);
    }

    fn start_update(&mut self) {
        if self.running.is_some() {
            return;
        }
        let Some(job) = self.learner.take_job() else {
            return;
        };
        let stats = self.learner.stats();
        // What the checkpoint will say if this update is applied.
        let save = self.save.as_ref().map(|s| {
            let previous = s.meta.online.as_ref();
            let online = OnlineMeta {
                base_policy: s.base_policy.clone(),
                updates: previous.map_or(0, |p| p.updates) + stats.updates + 1,
                rejected: previous.map_or(0, |p| p.rejected) + stats.rejected,
                transitions: previous.map_or(0, |p| p.transitions) + stats.transitions,
                expired: previous.map_or(0, |p| p.expired) + stats.expired,
                config: self.config.clone(),
                reward_mean: 0.0,
                written_at_ms: 0,
            };
            (s.path.clone(), s.meta.clone(), online)
        });
        let (tx, rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let refined = job.run();
            let update_ms = started.elapsed().as_secs_f64() * 1000.0;
            let saved = match (&refined.weights, save) {
                (Some(weights), Some((path, mut meta, mut online))) => {
                    online.reward_mean = refined.report.reward_mean;
                    online.written_at_ms = now_ms();
                    meta.online = Some(online);
                    let checkpoint = Checkpoint {
                        weights: weights.clone(),
                        meta,
                    };
                    Some(
                        checkpoint
                            .save(&path)
                            .map(|()| path)
                            .map_err(|e| e.to_string()),
                    )
                }
                _ => None,
            };
            let _ = tx.send(Finished {
                refined,
                update_ms,
                saved,
            });
        });
        self.running = Some(rx);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use slim_protocol::{BatchRecord, RequestKey};
    use slim_router::{BatchOption, DeviceView, WidthOption};

    use super::*;

    fn policy() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../router/policies/efficiency.safetensors")
    }

    fn device(agent: &str, latency_ms: f32) -> DeviceView {
        DeviceView {
            agent: agent.into(),
            online: true,
            outstanding: 0,
            queue_depth: 0,
            backlog_ms: 0.0,
            instances: 1,
            cpu_util: 0.1,
            gpu_util: None,
            mem_free_bytes: 1 << 30,
            power_w: 10.0,
            max_batch: 8,
            slowdown: 1.0,
            version: 0,
            arrival_rate_per_s: 0.0,
            widths: vec![WidthOption {
                width: 0.5,
                top1: 0.9,
                flops: 1000,
                recent_latency_ms: None,
                queue_depth: 0,
                oldest_wait_ms: 0.0,
                batches: vec![BatchOption {
                    batch: 1,
                    latency_ms,
                    power_w: 10.0,
                    mem_bytes: 0,
                }],
            }],
        }
    }

    fn telemetry(requests: Vec<String>) -> Telemetry {
        Telemetry {
            at_ms: 0,
            cpu_util: 0.1,
            ram_used_bytes: 1,
            ram_total_bytes: 2,
            power_w: 10.0,
            energy_j: 1.0,
            batches: vec![BatchRecord {
                model: "digits".into(),
                width: 0.5,
                batch_size: requests.len() as u16,
                queue_ms: 1.0,
                compute_ms: 2.0,
                energy_j: 0.01,
                requests,
            }],
            ..Telemetry::idle("a", 1)
        }
    }

    /// Rewards from telemetry start an update off the calling task, the tick installs it, and
    /// the refined checkpoint is written and says so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn telemetry_rewards_drive_an_update_and_a_saved_checkpoint() {
        let dir = tempfile::Builder::new()
            .prefix("slim-coordinator-online-")
            .tempdir()
            .unwrap();
        let save = dir.path().join("refined.safetensors");
        let settings = OnlineSettings {
            enabled: true,
            save: Some(save.clone()),
            learner: OnlineConfig {
                batch: 8,
                ..OnlineConfig::default()
            },
        };
        let checkpoint = Checkpoint::load(&policy()).unwrap();
        let mut online = OnlineRefinement::new(checkpoint, &policy(), &settings, 1);
        assert_eq!(online.name(), "ppo:efficiency+online");
        let observation = Observation {
            devices: vec![device("a", 1.0), device("b", 3.0)],
        };
        let now = Instant::now();
        let keys: Vec<String> = (0..8)
            .map(|i| RequestKey::new("replies/c", format!("r{i}")).wire())
            .collect();
        for key in &keys {
            online
                .route(&observation, &RouteRequest::default(), key, now)
                .unwrap();
        }
        // A report naming unknown requests, or none, changes nothing.
        online.on_telemetry(&telemetry(vec!["someone else".into()]));
        assert_eq!(online.view().stats.transitions, 0);
        online.on_telemetry(&telemetry(keys));
        assert!(online.view().updating, "the update runs in the background");
        let deadline = Instant::now() + Duration::from_secs(30);
        while online.view().updating {
            assert!(Instant::now() < deadline, "the update never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
            online.tick(Instant::now());
        }
        let view = online.view();
        assert_eq!(view.stats.transitions, 8);
        assert_eq!(
            (view.stats.updates, view.stats.rejected),
            (1, 0),
            "{view:?}"
        );
        assert_eq!((view.saves, view.save_errors), (1, 0));
        let refined = Checkpoint::load(&save).unwrap();
        let meta = refined.meta.online.clone().unwrap();
        assert_eq!((meta.updates, meta.transitions), (1, 8));
        assert!(meta.base_policy.ends_with("efficiency.safetensors"));
        assert_eq!(refined.meta.preset, "efficiency");
    }

    #[test]
    fn decisions_whose_reward_never_comes_expire_on_the_tick() {
        let checkpoint = Checkpoint::load(&policy()).unwrap();
        let settings = OnlineSettings {
            enabled: true,
            ..OnlineSettings::default()
        };
        let mut online = OnlineRefinement::new(checkpoint, &policy(), &settings, 1);
        let observation = Observation {
            devices: vec![device("a", 1.0)],
        };
        let now = Instant::now();
        online
            .route(&observation, &RouteRequest::default(), "k", now)
            .unwrap();
        assert_eq!(online.view().stats.pending, 1);
        online.tick(now + Duration::from_millis(settings.learner.pending_timeout_ms + 1));
        let stats = online.view().stats;
        assert_eq!((stats.pending, stats.expired), (0, 1));
    }
}
