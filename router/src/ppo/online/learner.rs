//! The live side of online refinement: sampled decisions, remembered until their reward comes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::refine::{RefineJob, Refined, UpdateReport};
use super::OnlineConfig;
use crate::ppo::checkpoint::Checkpoint;
use crate::ppo::config::PpoConfig;
use crate::ppo::features::FEATURES;
use crate::ppo::net::PolicyWeights;
use crate::ppo::router::{sample_index, Scored};
use crate::reward::{Outcome, RewardWeights};
use crate::{Observation, Route, RouteRequest, Scales};

/// A decision with its reward: what an update learns from.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Features of the decision's candidates, `n * FEATURES`.
    pub(crate) features: Vec<f32>,
    /// Index of the chosen candidate.
    pub(crate) action: u32,
    /// Its log-probability under the policy that chose it.
    pub(crate) logp: f32,
    /// Its reward.
    pub(crate) reward: f32,
    /// The request's cost (the reward before clipping and scaling).
    pub(crate) cost: f32,
    /// The decision's number, in routing order (orders the batch for the value target).
    pub(crate) seq: u64,
}

impl Transition {
    /// Number of candidates the decision had.
    pub fn candidates(&self) -> usize {
        self.features.len() / FEATURES
    }

    /// Its reward.
    pub fn reward(&self) -> f32 {
        self.reward
    }
}

/// What the agent measured of the batch a request ran in (a telemetry `BatchRecord`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Time the request waited in the agent's queue, ms (the batch's mean).
    pub queue_ms: f32,
    /// Compute time of the batch, ms.
    pub compute_ms: f32,
    /// Energy of the whole batch, joules.
    pub batch_energy_j: f32,
    /// Requests in the batch.
    pub batch_size: u16,
}

/// A decision waiting for its reward.
#[derive(Debug)]
struct Tracked {
    features: Vec<f32>,
    action: u32,
    logp: f32,
    scales: Scales,
    top1: f32,
    deadline_ms: Option<u32>,
    at: Instant,
    seq: u64,
}

/// Running totals of the learner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OnlineStats {
    /// Decisions taken.
    pub decisions: u64,
    /// Decisions routed but not remembered (memory bound reached, or a full batch waiting).
    pub untracked: u64,
    /// Decisions whose reward arrived.
    pub transitions: u64,
    /// Remembered decisions whose reward never came (timed out, or the request was placed
    /// again before it was answered).
    pub expired: u64,
    /// Reports that could not be a reward (a figure not finite).
    pub invalid: u64,
    /// Updates applied.
    pub updates: u64,
    /// Updates refused by the KL guard (or with weights not finite).
    pub rejected: u64,
    /// Decisions remembered now.
    pub pending: usize,
    /// Transitions waiting for the next update.
    pub ready: usize,
}

/// Samples decisions from the policy, turns live measurements into rewards and collects them
/// into batches for [`RefineJob`]s. Pure: the caller passes the clock.
#[derive(Debug)]
pub struct OnlineLearner {
    policy: PolicyWeights,
    reward_weights: RewardWeights,
    training: PpoConfig,
    config: OnlineConfig,
    name: String,
    seed: u64,
    rng: StdRng,
    scored: Scored,
    pending: HashMap<String, Tracked>,
    ready: Vec<Transition>,
    /// Features held by `pending` and `ready`, floats.
    stored: usize,
    /// Most floats `stored` may reach (`max_memory_mb`).
    budget: usize,
    stats: OnlineStats,
    last: Option<UpdateReport>,
}

impl OnlineLearner {
    /// A learner starting from `checkpoint`, whose reward weights and loss settings it keeps.
    pub fn new(checkpoint: Checkpoint, config: OnlineConfig, seed: u64) -> Self {
        let budget = config.max_memory_mb.saturating_mul(1 << 20) / std::mem::size_of::<f32>();
        Self {
            name: format!("ppo:{}+online", checkpoint.meta.preset),
            config,
            policy: checkpoint.weights,
            reward_weights: checkpoint.meta.weights,
            training: checkpoint.meta.config,
            seed,
            rng: StdRng::seed_from_u64(seed),
            scored: Scored::default(),
            pending: HashMap::new(),
            ready: Vec::new(),
            stored: 0,
            budget,
            stats: OnlineStats::default(),
            last: None,
        }
    }

    /// Name for decisions and metrics: `ppo:<preset>+online`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current policy.
    pub fn policy(&self) -> &PolicyWeights {
        &self.policy
    }

    /// Running totals.
    pub fn stats(&self) -> OnlineStats {
        OnlineStats {
            pending: self.pending.len(),
            ready: self.ready.len(),
            ..self.stats
        }
    }

    /// The latest update's report.
    pub fn last_update(&self) -> Option<&UpdateReport> {
        self.last.as_ref()
    }

    /// The policy's probability of each candidate of `request` (in
    /// [`Candidates`](crate::ppo::features::Candidates) order; empty when there is none).
    pub fn probabilities(&mut self, observation: &Observation, request: &RouteRequest) -> Vec<f32> {
        if !self.scored.score(&self.policy, observation, request) {
            return Vec::new();
        }
        softmax(&self.scored.logits)
    }

    /// Places `request` by sampling the policy, and remembers the decision under `key` (a
    /// decision already remembered under `key` is dropped as expired).
    pub fn route(
        &mut self,
        observation: &Observation,
        request: &RouteRequest,
        key: &str,
        now: Instant,
    ) -> Option<Route> {
        if !self.scored.score(&self.policy, observation, request) {
            return None;
        }
        let n = self.scored.candidates.len();
        let (pick, logp) = sample_index(&self.scored.logits, &mut self.rng);
        let route = self.scored.candidates.routes[pick];
        self.stats.decisions += 1;
        if let Some(old) = self.pending.remove(key) {
            self.stored -= old.features.len();
            self.stats.expired += 1;
        }
        let size = n * FEATURES;
        if self.ready.len() >= self.config.batch || self.stored + size > self.budget {
            self.stats.untracked += 1;
            return Some(route);
        }
        let top1 = observation.devices[route.device]
            .widths
            .iter()
            .find(|w| (w.width - route.width).abs() < 1e-3)
            .map_or(0.0, |w| w.top1);
        self.pending.insert(
            key.to_string(),
            Tracked {
                features: self.scored.candidates.features[..size].to_vec(),
                action: pick as u32,
                logp,
                scales: Scales::from_observation(observation),
                top1,
                deadline_ms: request.deadline_ms,
                at: now,
                seq: self.stats.decisions,
            },
        );
        self.stored += size;
        Some(route)
    }

    /// The reward of the decision remembered under `key`, now that its batch was `measured`;
    /// `None` when no decision waits under that key or the figures are not usable.
    pub fn complete(&mut self, key: &str, measured: &Measured) -> Option<f32> {
        let tracked = self.pending.remove(key)?;
        let usable = [
            measured.queue_ms,
            measured.compute_ms,
            measured.batch_energy_j,
        ]
        .iter()
        .all(|v| v.is_finite());
        if !usable {
            self.stored -= tracked.features.len();
            self.stats.invalid += 1;
            return None;
        }
        let latency_ms = measured.queue_ms.max(0.0) + measured.compute_ms.max(0.0);
        let outcome = Outcome {
            latency_ms,
            energy_mj: measured.batch_energy_j.max(0.0) * 1000.0
                / f32::from(measured.batch_size.max(1)),
            top1: tracked.top1,
            deadline_met: tracked.deadline_ms.map(|d| latency_ms <= d as f32),
        };
        let cost = self.reward_weights.cost(&outcome, &tracked.scales);
        let reward = self.training.reward(cost);
        self.ready.push(Transition {
            features: tracked.features,
            action: tracked.action,
            logp: tracked.logp,
            reward,
            cost,
            seq: tracked.seq,
        });
        self.stats.transitions += 1;
        Some(reward)
    }

    /// Drops the decisions remembered for longer than the timeout; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let timeout = Duration::from_millis(self.config.pending_timeout_ms);
        let before = self.pending.len();
        let mut freed = 0;
        self.pending.retain(|_, t| {
            let keep = now.saturating_duration_since(t.at) <= timeout;
            if !keep {
                freed += t.features.len();
            }
            keep
        });
        self.stored -= freed;
        let expired = before - self.pending.len();
        self.stats.expired += expired as u64;
        expired
    }

    /// The next update to run, once `batch` transitions are ready: the current policy and every
    /// ready transition.
    pub fn take_job(&mut self) -> Option<RefineJob> {
        if self.ready.len() < self.config.batch {
            return None;
        }
        let batch = std::mem::take(&mut self.ready);
        self.stored -= batch.iter().map(|t| t.features.len()).sum::<usize>();
        let number = self.stats.updates + self.stats.rejected;
        Some(RefineJob {
            policy: self.policy.clone(),
            batch,
            training: self.training.clone(),
            config: self.config.clone(),
            seed: self.seed.wrapping_add(number.wrapping_mul(0x9E37_79B9)),
        })
    }

    /// Sets the memory budget in floats (tests need finer steps than MiB).
    #[cfg(test)]
    pub(super) fn set_memory_floats(&mut self, floats: usize) {
        self.budget = floats;
    }

    /// Installs the result of a job: its weights, unless the guard refused them.
    pub fn apply(&mut self, refined: Refined) {
        match refined.weights {
            Some(weights) => {
                self.policy = weights;
                self.stats.updates += 1;
            }
            None => self.stats.rejected += 1,
        }
        self.last = Some(refined.report);
    }
}

/// Softmax of `logits`.
pub(crate) fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / total).collect()
}
