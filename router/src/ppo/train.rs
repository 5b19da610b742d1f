//! The PPO training loop (after CleanRL's `ppo.py`).

use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::config::PpoConfig;
use super::features::{Candidates, FEATURES};
use super::net::{CandleNet, PolicyWeights, Scratch};
use super::router::{sample_index, PpoRouter};
use super::update::{gae, step, LossParams, Sample};
use crate::fleet::Fleet;
use crate::reward::RewardWeights;
use crate::sim::{Scenario, Simulator};

/// First seed of the validation scenarios used to keep the best policy during training
/// (training uses `seed·1_000_003 + episode`, evaluation `9_000_000_000 + i`).
pub const VALIDATION_SEED_BASE: u64 = 8_000_000_000;

/// Mean request cost of the deterministic `policy` on the validation scenarios.
pub fn validation_cost(
    fleet: &Fleet,
    config: &PpoConfig,
    weights: &RewardWeights,
    policy: &PolicyWeights,
) -> f64 {
    let mut router = PpoRouter::new(policy.clone());
    let (mut total, mut count) = (0.0, 0usize);
    for i in 0..config.validation_seeds {
        let seed = VALIDATION_SEED_BASE + i;
        let mut scenario = Scenario::sample(fleet, config.validation_requests, seed);
        scenario.batch_sizes.clone_from(&config.batch_sizes);
        let mut sim = Simulator::new(fleet, &scenario, seed);
        let summary = sim.run(&mut router, weights);
        total += summary.mean_cost * summary.completed as f64;
        count += summary.completed;
    }
    total / count.max(1) as f64
}

/// Diagnostics of one update.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IterationStats {
    /// Update number, from 1.
    pub iteration: usize,
    /// Updates in the whole run.
    pub iterations: usize,
    /// Decisions so far.
    pub steps: usize,
    /// Mean request cost in this rollout (lower is better).
    pub mean_cost: f32,
    /// Learning rate used.
    pub learning_rate: f64,
    /// Policy loss.
    pub policy_loss: f32,
    /// Value loss.
    pub value_loss: f32,
    /// Mean policy entropy.
    pub entropy: f32,
    /// Approximate KL between the old and new policy (`(r - 1) - ln r`).
    pub approx_kl: f32,
    /// Fraction of ratios clipped.
    pub clipfrac: f32,
    /// Explained variance of the value function on the rollout.
    pub explained_variance: f32,
    /// Validation cost of the deterministic policy after this update, when validated.
    pub validation_cost: Option<f64>,
}

struct Rollout {
    k: usize,
    /// Features, `k * FEATURES` per decision (valid candidates first, then zeros).
    features: Vec<f32>,
    /// Valid candidates per decision.
    counts: Vec<usize>,
    actions: Vec<u32>,
    logps: Vec<f32>,
    values: Vec<f32>,
    rewards: Vec<f32>,
    dones: Vec<bool>,
    costs: Vec<f32>,
}

impl Rollout {
    fn new(k: usize) -> Self {
        Self {
            k,
            features: Vec::new(),
            counts: Vec::new(),
            actions: Vec::new(),
            logps: Vec::new(),
            values: Vec::new(),
            rewards: Vec::new(),
            dones: Vec::new(),
            costs: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.actions.len()
    }

    /// Decision `i` as an update sees it, with its advantage and value target.
    fn sample(&self, i: usize, adv: f32, ret: f32) -> Sample<'_> {
        let k = self.k;
        Sample {
            features: &self.features[i * k * FEATURES..(i * k + self.counts[i]) * FEATURES],
            action: self.actions[i],
            logp: self.logps[i],
            value: self.values[i],
            ret,
            adv,
        }
    }
}

/// Largest number of candidates one decision can have on `fleet`.
fn max_candidates(fleet: &Fleet, config: &PpoConfig) -> usize {
    let widths = fleet
        .models
        .iter()
        .map(|m| m.widths.len())
        .max()
        .unwrap_or(1);
    fleet.devices.len() * widths * config.batch_sizes.len()
}

/// Plays whole episodes with `policy` until the rollout holds `steps_per_rollout` decisions.
fn collect(
    fleet: &Fleet,
    config: &PpoConfig,
    weights: &RewardWeights,
    policy: &PolicyWeights,
    rng: &mut StdRng,
    episode: &mut u64,
) -> Rollout {
    let mut rollout = Rollout::new(max_candidates(fleet, config));
    let mut candidates = Candidates::default();
    let mut logits = Vec::new();
    let mut scratch = Scratch::default();
    while rollout.len() < config.steps_per_rollout {
        let seed = config.seed.wrapping_mul(1_000_003).wrapping_add(*episode);
        *episode += 1;
        let mut scenario = Scenario::sample(fleet, config.requests_per_episode, seed);
        scenario.batch_sizes.clone_from(&config.batch_sizes);
        let mut sim = Simulator::new(fleet, &scenario, seed);
        let scales = sim.scales().to_vec();
        let start = rollout.len();
        let mut step_of_decision: Vec<Option<usize>> = Vec::new();
        loop {
            let more = sim.next_decision();
            for c in sim.drain_completions() {
                if let Some(Some(step)) = step_of_decision.get(c.decision as usize) {
                    let cost = weights.cost(&c.outcome, &scales[c.model]);
                    rollout.costs[*step] += cost;
                    rollout.rewards[*step] += config.reward(cost);
                }
            }
            if !more {
                break;
            }
            let (observation, request) = sim.observation();
            candidates.fill(observation, request);
            if candidates.is_empty() {
                step_of_decision.push(None);
                sim.apply(None);
                continue;
            }
            let n = candidates.len().min(rollout.k);
            policy.logits(&candidates.features, n, &mut logits, &mut scratch);
            let (action, logp) = sample_index(&logits, rng);
            let value = policy.value(&candidates.features, n, &mut scratch);
            step_of_decision.push(Some(rollout.len()));
            rollout
                .features
                .extend_from_slice(&candidates.features[..n * FEATURES]);
            rollout
                .features
                .resize(rollout.features.len() + (rollout.k - n) * FEATURES, 0.0);
            rollout.counts.push(n);
            rollout.actions.push(action as u32);
            rollout.logps.push(logp);
            rollout.values.push(value);
            rollout.rewards.push(0.0);
            rollout.costs.push(0.0);
            rollout.dones.push(false);
            sim.apply(Some(candidates.routes[action]));
        }
        if rollout.len() > start {
            let last = rollout.len() - 1;
            rollout.dones[last] = true;
        }
    }
    rollout
}

/// GAE advantages and returns; an episode's last decision bootstraps from 0 (rollouts hold
/// whole episodes).
fn advantages(rollout: &Rollout, config: &PpoConfig) -> (Vec<f32>, Vec<f32>) {
    gae(
        &rollout.rewards,
        &rollout.values,
        &rollout.dones,
        0.0,
        config.gamma,
        config.gae_lambda,
    )
}

fn explained_variance(pred: &[f32], target: &[f32]) -> f32 {
    let n = target.len().max(1) as f32;
    let mean = target.iter().sum::<f32>() / n;
    let var_y = target.iter().map(|y| (y - mean).powi(2)).sum::<f32>() / n;
    let resid: Vec<f32> = target.iter().zip(pred).map(|(y, p)| y - p).collect();
    let mean_r = resid.iter().sum::<f32>() / n;
    let var_r = resid.iter().map(|r| (r - mean_r).powi(2)).sum::<f32>() / n;
    if var_y == 0.0 {
        f32::NAN
    } else {
        1.0 - var_r / var_y
    }
}

/// Trains a policy on `fleet` for `weights`; `progress` sees every update's diagnostics (and,
/// when validating, an update 0 with the initial policy's validation cost).
pub fn train(
    fleet: &Fleet,
    config: &PpoConfig,
    weights: &RewardWeights,
    mut progress: impl FnMut(&IterationStats),
) -> candle_core::Result<(PolicyWeights, Vec<IterationStats>)> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut policy = PolicyWeights::init(config.hidden, &mut rng);
    if let Some(sharpness) = config.greedy_prior {
        policy.greedy_prior(weights, sharpness);
    }
    let validate = config.validate_every > 0 && config.validation_seeds > 0;
    let iterations = config.total_steps.div_ceil(config.steps_per_rollout).max(1);
    let mut best = validate.then(|| {
        let cost = validation_cost(fleet, config, weights, &policy);
        // Update 0: the initial policy's validation cost (not part of the history).
        progress(&IterationStats {
            iterations,
            validation_cost: Some(cost),
            ..Default::default()
        });
        (cost, policy.clone())
    });
    let net = CandleNet::new(&policy)?;
    let mut optimizer = adam(&net, config.learning_rate)?;
    let mut history = Vec::with_capacity(iterations);
    let (mut steps, mut episode) = (0, 0u64);
    for iteration in 1..=iterations {
        let learning_rate = learning_rate_at(config, iteration, iterations);
        optimizer.set_learning_rate(learning_rate);
        let rollout = collect(fleet, config, weights, &policy, &mut rng, &mut episode);
        steps += rollout.len();
        let mut stats = IterationStats {
            iteration,
            iterations,
            steps,
            learning_rate,
            ..Default::default()
        };
        optimize(&net, &mut optimizer, &rollout, config, &mut rng, &mut stats)?;
        policy = net.weights()?;
        if let Some((best_cost, best_policy)) = best.as_mut() {
            if iteration % config.validate_every == 0 || iteration == iterations {
                let cost = validation_cost(fleet, config, weights, &policy);
                stats.validation_cost = Some(cost);
                if cost < *best_cost {
                    *best_cost = cost;
                    *best_policy = policy.clone();
                }
            }
        }
        progress(&stats);
        history.push(stats);
    }
    if let Some((_, best_policy)) = best {
        policy = best_policy;
    }
    Ok((policy, history))
}

/// The optimizer of `net`'s variables, at `learning_rate`.
fn adam(net: &CandleNet, learning_rate: f64) -> candle_core::Result<AdamW> {
    AdamW::new(
        net.all_vars(),
        ParamsAdamW {
            lr: learning_rate,
            eps: 1e-5,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
}

/// The learning rate of update `iteration` (from 1) of `iterations`: annealed linearly to 0
/// when the config says so.
fn learning_rate_at(config: &PpoConfig, iteration: usize, iterations: usize) -> f64 {
    if config.anneal_lr {
        config.learning_rate * (1.0 - (iteration - 1) as f64 / iterations as f64)
    } else {
        config.learning_rate
    }
}

/// The update epochs on `rollout`: shuffled minibatches of clipped-PPO steps, stopped early
/// past the target KL; fills `stats`' rollout figures and losses.
fn optimize(
    net: &CandleNet,
    optimizer: &mut AdamW,
    rollout: &Rollout,
    config: &PpoConfig,
    rng: &mut StdRng,
    stats: &mut IterationStats,
) -> candle_core::Result<()> {
    let (adv, returns) = advantages(rollout, config);
    let n = rollout.len();
    stats.mean_cost = rollout.costs.iter().sum::<f32>() / n.max(1) as f32;
    stats.explained_variance = explained_variance(&rollout.values, &returns);
    let mut order: Vec<usize> = (0..n).collect();
    let mb = config.minibatch_size.min(n).max(1);
    let params = LossParams::from(config);
    let (mut kls, mut clips, mut batches) = (0.0f32, 0.0f32, 0usize);
    'epochs: for _ in 0..config.update_epochs {
        order.shuffle(rng);
        for chunk in order.chunks(mb) {
            let samples: Vec<Sample<'_>> = chunk
                .iter()
                .map(|&i| rollout.sample(i, adv[i], returns[i]))
                .collect();
            let s = step(net, optimizer, &samples, rollout.k, &params)?;
            stats.policy_loss = s.policy_loss;
            stats.value_loss = s.value_loss;
            stats.entropy = s.entropy;
            kls += s.approx_kl;
            clips += s.clipfrac;
            batches += 1;
            if config.target_kl.is_some_and(|t| s.approx_kl > t) {
                break 'epochs;
            }
        }
    }
    stats.approx_kl = kls / batches.max(1) as f32;
    stats.clipfrac = clips / batches.max(1) as f32;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::tests::tiny_fleet;
    use crate::reward::RewardPreset;

    #[test]
    fn training_lowers_the_cost_of_the_policy_on_a_tiny_fleet() {
        let fleet = tiny_fleet();
        let config = PpoConfig {
            total_steps: 12_000,
            steps_per_rollout: 1000,
            requests_per_episode: 250,
            minibatch_size: 250,
            hidden: 16,
            learning_rate: 3e-3,
            greedy_prior: None,
            validate_every: 0,
            ..Default::default()
        };
        let weights = RewardPreset::Efficiency.weights();
        let (_, history) = train(&fleet, &config, &weights, |_| {}).unwrap();
        let first = history[0].mean_cost;
        let last = history.last().unwrap().mean_cost;
        assert!(last < first * 0.8, "cost went from {first} to {last}");
        assert!(history
            .iter()
            .all(|s| s.approx_kl.is_finite() && s.clipfrac >= 0.0));
    }

    #[test]
    fn the_greedy_prior_decides_as_greedy_does() {
        use crate::baselines::GreedyRouter;
        use crate::{Router, RouterSettings};
        let fleet = tiny_fleet();
        for preset in [RewardPreset::Efficiency, RewardPreset::Balanced] {
            let weights = preset.weights();
            let mut policy = PolicyWeights::init(8, &mut StdRng::seed_from_u64(2));
            policy.greedy_prior(&weights, 20.0);
            let mut ppo = PpoRouter::new(policy);
            let mut greedy = GreedyRouter::new(&RouterSettings {
                weights,
                ..Default::default()
            });
            let mut scenario = Scenario::sample(&fleet, 500, 4);
            scenario.batch_sizes = PpoConfig::default().batch_sizes;
            let mut sim = Simulator::new(&fleet, &scenario, 4);
            let (mut same, mut total) = (0, 0);
            while sim.next_decision() {
                let (observation, request) = sim.observation();
                let g = greedy.route(observation, request);
                same += usize::from(ppo.route(observation, request) == g);
                total += 1;
                sim.apply(g);
            }
            assert!(
                same * 100 >= total * 95,
                "{preset:?}: {same} of {total} agree"
            );
        }
    }
}
