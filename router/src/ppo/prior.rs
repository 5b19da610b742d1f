//! Is a checkpoint more than its greedy prior? Training starts the actor as the greedy cost of
//! the preset's weights ([`PolicyWeights::greedy_prior`]) and keeps the best policy on
//! validation; when no update helped, the checkpoint written *is* that prior, which decides as
//! the greedy-weighted heuristic does. Reports must then call it the prior, not PPO.
//!
//! [`PolicyWeights::greedy_prior`]: super::net::PolicyWeights::greedy_prior

use serde::Serialize;

use super::checkpoint::Checkpoint;

/// How far a checkpoint's actor is from the greedy prior of its own preset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PriorCheck {
    /// Largest absolute weight or bias of the actor's output layer (0 in the prior: the MLP adds
    /// nothing to the greedy cost).
    pub head_max_abs: f32,
    /// Relative L2 distance between the actor's linear skip and the prior's (0 in the prior).
    pub skip_change: f32,
    /// Whether the checkpoint was trained from a greedy prior at all.
    pub had_prior: bool,
}

impl PriorCheck {
    /// Compares `checkpoint`'s actor with the greedy prior of its preset's weights and sharpness.
    pub fn of(checkpoint: &Checkpoint) -> Self {
        let weights = &checkpoint.weights;
        let head = &weights.layers[2];
        let head_max_abs = head
            .weight
            .iter()
            .chain(&head.bias)
            .fold(0.0f32, |m, v| m.max(v.abs()));
        let sharpness = checkpoint.meta.config.greedy_prior;
        let mut prior = weights.clone();
        prior.greedy_prior(&checkpoint.meta.weights, sharpness.unwrap_or(0.0));
        let (a, b) = (&weights.layers[6].weight, &prior.layers[6].weight);
        let diff: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let norm: f32 = b.iter().map(|y| y * y).sum();
        Self {
            head_max_abs,
            skip_change: (diff / norm.max(1e-12)).sqrt(),
            had_prior: sharpness.is_some(),
        }
    }

    /// Whether the actor equals the prior: the head all zero and the skip unchanged (to 1e-6).
    pub fn is_prior(&self) -> bool {
        self.had_prior && self.head_max_abs == 0.0 && self.skip_change < 1e-6
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        if self.is_prior() {
            "actor head all zero and skip equal to the greedy prior: this checkpoint is the prior \
             (it decides as greedy-weighted does), not a trained correction"
                .into()
        } else {
            format!(
                "differs from its greedy prior: actor head max |w| {:.3e}, skip changed by {:.2}% \
                 (relative L2)",
                self.head_max_abs,
                100.0 * self.skip_change
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ppo::checkpoint::tests::meta;
    use crate::ppo::net::PolicyWeights;
    use rand::{rngs::StdRng, SeedableRng};

    fn checkpoint_of(prior: bool, nudge: f32) -> Checkpoint {
        let meta = meta();
        let mut weights = PolicyWeights::init(8, &mut StdRng::seed_from_u64(1));
        if prior {
            weights.greedy_prior(&meta.weights, meta.config.greedy_prior.unwrap());
        }
        weights.layers[2].bias[0] += nudge;
        Checkpoint { weights, meta }
    }

    #[test]
    fn a_checkpoint_equal_to_its_prior_is_recognised() {
        let check = PriorCheck::of(&checkpoint_of(true, 0.0));
        assert!(check.is_prior(), "{check:?}");
        assert!(check.describe().contains("is the prior"));
    }

    #[test]
    fn a_trained_correction_or_a_random_init_is_not_the_prior() {
        assert!(!PriorCheck::of(&checkpoint_of(true, 0.01)).is_prior());
        let random = PriorCheck::of(&checkpoint_of(false, 0.0));
        assert!(!random.is_prior() && random.head_max_abs > 0.0);
    }
}
