//! The trained policy behind the [`Router`] interface.

use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::checkpoint::{Checkpoint, CheckpointError};
use super::features::Candidates;
use super::net::{PolicyWeights, Scratch};
use crate::{Observation, Route, RouteRequest, Router};

/// The valid candidates of one decision and the policy's logits for them, in reusable buffers.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scored {
    /// The candidates.
    pub candidates: Candidates,
    /// One logit per candidate.
    pub logits: Vec<f32>,
    scratch: Scratch,
}

impl Scored {
    /// Builds and scores the candidates of `request` with `weights`; false when there is none.
    pub fn score(
        &mut self,
        weights: &PolicyWeights,
        observation: &Observation,
        request: &RouteRequest,
    ) -> bool {
        self.candidates.fill(observation, request);
        if self.candidates.is_empty() {
            return false;
        }
        let n = self.candidates.len();
        weights.logits(
            &self.candidates.features,
            n,
            &mut self.logits,
            &mut self.scratch,
        );
        true
    }
}

/// Routes with a PPO policy: the most likely valid candidate (greedy decoding), or a sample
/// when built with [`PpoRouter::sampling`].
#[derive(Debug)]
pub struct PpoRouter {
    weights: PolicyWeights,
    scored: Scored,
    sample: Option<StdRng>,
    name: String,
}

impl PpoRouter {
    /// A deterministic router with `weights`.
    pub fn new(weights: PolicyWeights) -> Self {
        Self {
            weights,
            scored: Scored::default(),
            sample: None,
            name: "ppo".into(),
        }
    }

    /// A router that samples from the policy, seeded (for exploration and online refinement).
    pub fn sampling(weights: PolicyWeights, seed: u64) -> Self {
        Self {
            sample: Some(StdRng::seed_from_u64(seed)),
            ..Self::new(weights)
        }
    }

    /// The same router under another name (for reports that relabel a checkpoint).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Loads a checkpoint written by `slim train`.
    pub fn load(path: &Path, _seed: u64) -> Result<Self, CheckpointError> {
        let checkpoint = Checkpoint::load(path)?;
        let mut router = Self::new(checkpoint.weights);
        router.name = format!("ppo:{}", checkpoint.meta.preset);
        Ok(router)
    }
}

/// Index of a draw from the softmax of `logits`.
pub(crate) fn sample_index(logits: &[f32], rng: &mut StdRng) -> (usize, f32) {
    use rand::Rng;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let mut u = rng.gen::<f32>() * total;
    let mut pick = logits.len() - 1;
    for (i, l) in logits.iter().enumerate() {
        u -= (l - max).exp();
        if u <= 0.0 {
            pick = i;
            break;
        }
    }
    let logp = logits[pick] - max - total.ln();
    (pick, logp)
}

impl Router for PpoRouter {
    fn name(&self) -> &str {
        &self.name
    }

    fn route(&mut self, observation: &Observation, request: &RouteRequest) -> Option<Route> {
        if !self.scored.score(&self.weights, observation, request) {
            return None;
        }
        let logits = &self.scored.logits;
        let pick = match self.sample.as_mut() {
            Some(rng) => sample_index(logits, rng).0,
            // The first of equal maxima, as greedy breaks ties toward the lower index.
            None => {
                logits
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
                        if l > best.1 {
                            (i, l)
                        } else {
                            best
                        }
                    })
                    .0
            }
        };
        Some(self.scored.candidates.routes[pick])
    }
}
