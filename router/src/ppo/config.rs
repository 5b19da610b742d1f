//! Every PPO hyperparameter, in one place.

use serde::{Deserialize, Serialize};

/// PPO hyperparameters (CleanRL's defaults where they apply, tuned for short router episodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Seed of the policy init, action sampling, minibatch shuffling and training scenarios.
    pub seed: u64,
    /// Environment steps (routing decisions) to train for.
    pub total_steps: usize,
    /// Decisions collected per policy update (whole episodes, so at least this many).
    pub steps_per_rollout: usize,
    /// Requests per training episode (each episode is a fresh [`Scenario::sample`](crate::sim::Scenario::sample)).
    pub requests_per_episode: usize,
    /// Width of the hidden layers of the shared candidate encoder.
    pub hidden: usize,
    /// Adam learning rate at the start; annealed linearly to 0 when `anneal_lr`.
    pub learning_rate: f64,
    /// Anneal the learning rate linearly to 0 over training.
    pub anneal_lr: bool,
    /// Discount per decision.
    pub gamma: f32,
    /// GAE λ.
    pub gae_lambda: f32,
    /// Minibatch size, in decisions.
    pub minibatch_size: usize,
    /// Passes over each rollout.
    pub update_epochs: usize,
    /// Normalize advantages per minibatch.
    pub norm_adv: bool,
    /// Policy ratio clip.
    pub clip_coef: f32,
    /// Clip the value loss around the old values with `clip_coef` too.
    pub clip_vloss: bool,
    /// Entropy bonus: the loss subtracts `ent_coef ×` the policy's mean entropy, which keeps
    /// the sampled policy exploring (0 turns it off).
    pub ent_coef: f32,
    /// Value loss weight.
    pub vf_coef: f32,
    /// Global gradient-norm clip.
    pub max_grad_norm: f32,
    /// Stop the epochs of an update early when approx_kl exceeds this.
    pub target_kl: Option<f32>,
    /// Rewards are `-min(cost, cost_clip) * reward_scale`.
    pub reward_scale: f32,
    /// Largest request cost counted, so an overloaded queue does not swamp the value function.
    pub cost_clip: f32,
    /// Batch sizes the policy chooses among.
    pub batch_sizes: Vec<u16>,
    /// Start the actor's linear skip as `-sharpness ×` the greedy cost of the preset's weights
    /// (so PPO refines greedy instead of starting from uniform); `None` starts it at zero.
    pub greedy_prior: Option<f32>,
    /// Evaluate the deterministic policy every this many updates (and before the first) on
    /// validation scenarios and keep the best; 0 keeps the last policy.
    pub validate_every: usize,
    /// Validation scenarios (seeds `VALIDATION_SEED_BASE + i`, disjoint from training and
    /// evaluation seeds).
    pub validation_seeds: u64,
    /// Requests per validation scenario.
    pub validation_requests: usize,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            total_steps: 100_000,
            steps_per_rollout: 4096,
            requests_per_episode: 1024,
            hidden: 32,
            learning_rate: 3e-3,
            anneal_lr: true,
            gamma: 0.5,
            gae_lambda: 0.9,
            minibatch_size: 512,
            update_epochs: 4,
            norm_adv: true,
            clip_coef: 0.2,
            clip_vloss: true,
            ent_coef: 0.01,
            vf_coef: 0.5,
            max_grad_norm: 0.5,
            target_kl: Some(0.02),
            reward_scale: 0.1,
            cost_clip: 100.0,
            batch_sizes: vec![1, 4, 8, 16],
            greedy_prior: Some(20.0),
            validate_every: 5,
            validation_seeds: 3,
            validation_requests: 3000,
        }
    }
}

impl PpoConfig {
    /// The reward of a request that cost `cost`: `-min(cost, cost_clip) * reward_scale`. Training
    /// and online refinement both use it, so simulated and live rewards agree.
    pub fn reward(&self, cost: f32) -> f32 {
        -cost.min(self.cost_clip) * self.reward_scale
    }
}
