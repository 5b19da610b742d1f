//! Online refinement: the PPO policy keeps learning from the rewards of live requests.
//!
//! The [`OnlineLearner`]
//! samples a candidate from the policy (exploration) and remembers the candidates' features,
//! the chosen index and its log-probability under a key the caller picks (the coordinator uses
//! the request's dedup key). When the request's batch is reported ([`Measured`]), its reward is
//! computed exactly as in training (the checkpoint's [`RewardWeights`](crate::reward::RewardWeights)
//! and [`PpoConfig::reward`](super::PpoConfig::reward)) and the decision becomes a
//! [`Transition`]. Every `batch` transitions, [`OnlineLearner::take_job`] hands out a
//! [`RefineJob`]: a few epochs of the same clipped PPO loss as training, with training's value
//! target (the GAE(λ) return under the checkpoint's gamma, over the batch's decisions in routing
//! order) at a small learning rate, stopped early when a
//! minibatch's approx_kl passes `target_kl`, and refused as a whole when the exact mean KL
//! between the old and new policy on the batch passes `max_kl` or a weight is not finite. The job
//! runs anywhere (it owns its data); [`OnlineLearner::apply`] installs the result.
//!
//! Decisions whose reward never comes expire after `pending_timeout_ms`; the features kept are
//! bounded by `max_memory_mb`, past which new decisions are routed but not remembered.

mod learner;
mod refine;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use learner::{Measured, OnlineLearner, OnlineStats, Transition};
pub use refine::{RefineJob, Refined, UpdateReport};

/// Settings of online refinement (the rest, the loss and the reward, come from the checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineConfig {
    /// Completed transitions per update.
    pub batch: usize,
    /// Adam learning rate of each update (training's default is 3e-3; online is gentler).
    pub learning_rate: f64,
    /// Passes over each batch.
    pub epochs: usize,
    /// Minibatch size, in transitions.
    pub minibatch: usize,
    /// Stop an update's epochs when a minibatch's approx_kl passes this.
    pub target_kl: f64,
    /// Refuse an update whose mean KL(old ‖ new) over its batch passes this.
    pub max_kl: f64,
    /// A decision whose reward has not come after this long is dropped, milliseconds.
    pub pending_timeout_ms: u64,
    /// Most memory for remembered decisions (their candidates' features), MiB.
    pub max_memory_mb: usize,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        Self {
            batch: 256,
            learning_rate: 1e-4,
            epochs: 4,
            minibatch: 64,
            target_kl: 0.01,
            max_kl: 0.05,
            pending_timeout_ms: 60_000,
            max_memory_mb: 64,
        }
    }
}

impl OnlineConfig {
    /// Why these settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.batch == 0 {
            return Err("the online batch must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(format!(
                "the online learning rate must be a positive number, not {}",
                self.learning_rate
            ));
        }
        if self.epochs == 0 || self.minibatch == 0 {
            return Err("online epochs and minibatch must be at least 1".into());
        }
        if !(self.max_kl >= 0.0 && self.target_kl >= 0.0) {
            return Err("online target_kl and max_kl must not be negative".into());
        }
        Ok(())
    }
}
