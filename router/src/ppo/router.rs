//! The trained policy behind the [`Router`] interface.

use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::checkpoint::{Checkpoint, CheckpointError};
use super::features::Candidates;
use super::net::{PolicyWeights, Scratch};
use crate::cached::{self, Class, Leaf, Ranked, ScoreCache};
use crate::{DeviceView, Observation, Route, RouteRequest, Router, Scales};

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

/// A device's most likely candidate.
#[derive(Debug, Clone, Copy)]
struct Likeliest {
    logit: f32,
    route: Route,
}

impl Ranked for Likeliest {
    fn beats(&self, other: &Self) -> bool {
        self.logit > other.logit
    }
}

/// The buffers that score one device's candidates.
#[derive(Debug, Default)]
struct DeviceScorer {
    candidates: Candidates,
    logits: Vec<f32>,
    scratch: Scratch,
}

impl DeviceScorer {
    /// Device `i`'s most likely candidate: the first of equal maxima, as the full scan's fold
    /// (from negative infinity) finds it within the device.
    fn score(
        &mut self,
        weights: &PolicyWeights,
        (i, device, scales): (usize, &DeviceView, &Scales),
        request: &RouteRequest,
    ) -> Leaf<Likeliest> {
        self.candidates.routes.clear();
        self.candidates.features.clear();
        self.candidates.push_device(i, device, scales, request);
        if self.candidates.is_empty() {
            return Leaf::Empty;
        }
        let n = self.candidates.len();
        weights.logits(
            &self.candidates.features,
            n,
            &mut self.logits,
            &mut self.scratch,
        );
        if self.logits.iter().any(|l| l.is_nan()) {
            return Leaf::Unordered;
        }
        let (k, logit) = argmax(&self.logits);
        Leaf::Best(Likeliest {
            logit,
            route: self.candidates.routes[k],
        })
    }
}

/// PPO's greedy pick over `logits`: the index of the largest logit and that logit.
///
/// Ties go to the first of equal maxima (the lowest index); when no logit is above negative
/// infinity (an empty slice, all `-inf`, or NaN throughout) it is index 0 with negative
/// infinity. NaN never wins, as `>` against it is false.
pub fn argmax(logits: &[f32]) -> (usize, f32) {
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
}

/// Routes with a PPO policy: the most likely valid candidate (greedy decoding), or a sample
/// when built with [`PpoRouter::sampling`].
///
/// Deciding by argmax on an observation whose devices carry versions (the coordinator's),
/// it keeps each device's most likely candidate per constraint class and rescores only the
/// devices that changed since (`router/src/cached.rs`); the pick is the full scan's, exactly.
#[derive(Debug)]
pub struct PpoRouter {
    weights: PolicyWeights,
    scored: Scored,
    sample: Option<StdRng>,
    name: String,
    cache: ScoreCache<Likeliest>,
    device: DeviceScorer,
}

impl PpoRouter {
    /// A deterministic router with `weights`.
    pub fn new(weights: PolicyWeights) -> Self {
        Self {
            weights,
            scored: Scored::default(),
            sample: None,
            name: "ppo".into(),
            cache: ScoreCache::default(),
            device: DeviceScorer::default(),
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
        if self.sample.is_none() && cached::tracked(observation) {
            let Self {
                weights,
                cache,
                device,
                ..
            } = self;
            let class = Class::of(request, true);
            let best = cache.best(observation, request, class, true, |i, d, scales| {
                device.score(weights, (i, d, scales), request)
            });
            if let Ok(best) = best {
                return best.map(|b| b.route);
            }
        }
        self.route_full(observation, request)
    }
}

impl PpoRouter {
    /// Scores every candidate of the observation (the path without a cache).
    fn route_full(&mut self, observation: &Observation, request: &RouteRequest) -> Option<Route> {
        if !self.scored.score(&self.weights, observation, request) {
            return None;
        }
        let logits = &self.scored.logits;
        let pick = match self.sample.as_mut() {
            Some(rng) => sample_index(logits, rng).0,
            // The first of equal maxima, as greedy breaks ties toward the lower index.
            None => argmax(logits).0,
        };
        Some(self.scored.candidates.routes[pick])
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::ppo::net::Dense;
    use crate::reward::RewardPreset;

    #[test]
    fn the_cached_logits_pick_what_the_full_scan_picks() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut weights = PolicyWeights::init(32, &mut rng);
        weights.greedy_prior(&RewardPreset::Balanced.weights(), 2.0);
        // A head that is not zero, so the MLP (not only the linear skip) decides.
        let trained = PolicyWeights::init(32, &mut rng);
        weights.layers[2] = Dense {
            weight: trained.layers[2].weight.iter().map(|w| w * 300.0).collect(),
            ..trained.layers[2].clone()
        };
        let mut full = PpoRouter::new(weights.clone());
        let mut cached = PpoRouter::new(weights);
        crate::cached::tests::compare(&mut cached, &mut full, |r| r.cache.rescored());
    }

    #[test]
    fn a_sampling_router_scores_in_full() {
        let mut rng = StdRng::seed_from_u64(6);
        let weights = PolicyWeights::init(8, &mut rng);
        let (observation, _) = crate::cached::tests::fleet(6, &mut rng);
        let mut router = PpoRouter::sampling(weights, 1);
        for _ in 0..20 {
            router
                .route(&observation, &RouteRequest::default())
                .unwrap();
        }
        assert_eq!(router.cache.rescored(), 0);
    }
}
