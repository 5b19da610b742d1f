//! Reward presets: how much latency, energy, accuracy and deadline misses cost.
//!
//! A request's cost is `latency/L + energy/E` weighted, plus accuracy lost in percentage points
//! and a fixed charge per missed deadline. `L` and `E` are the model's [`Scales`], so a preset
//! means the same on a fleet of Jetsons and on a fleet of desktop GPUs. The reward is the negative
//! cost.

use serde::{Deserialize, Serialize};

use crate::Scales;

/// Named weightings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum RewardPreset {
    /// Latency and energy only: drives to the slimmest width (the paper's 96% / 97% result).
    Efficiency,
    /// Latency and energy, with accuracy worth as much as a reference latency per point lost.
    Balanced,
    /// Accuracy first; latency and energy break ties.
    Accuracy,
}

impl RewardPreset {
    /// The preset's weights.
    pub fn weights(self) -> RewardWeights {
        match self {
            RewardPreset::Efficiency => RewardWeights {
                latency: 1.0,
                energy: 1.0,
                accuracy: 0.0,
                deadline: 1.0,
            },
            RewardPreset::Balanced => RewardWeights {
                latency: 1.0,
                energy: 1.0,
                accuracy: 1.0,
                deadline: 1.0,
            },
            RewardPreset::Accuracy => RewardWeights {
                latency: 0.1,
                energy: 0.1,
                accuracy: 10.0,
                deadline: 1.0,
            },
        }
    }

    /// The name used on the command line and in checkpoints.
    pub fn as_str(self) -> &'static str {
        match self {
            RewardPreset::Efficiency => "efficiency",
            RewardPreset::Balanced => "balanced",
            RewardPreset::Accuracy => "accuracy",
        }
    }
}

/// Weights of the request cost terms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardWeights {
    /// Per reference latency (end-to-end: queueing plus compute).
    pub latency: f32,
    /// Per reference energy.
    pub energy: f32,
    /// Per percentage point of top-1 accuracy below 100%.
    pub accuracy: f32,
    /// Per missed deadline.
    pub deadline: f32,
}

impl Default for RewardWeights {
    fn default() -> Self {
        RewardPreset::Balanced.weights()
    }
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// End-to-end latency, ms.
    pub latency_ms: f32,
    /// Energy attributed to it, mJ.
    pub energy_mj: f32,
    /// Top-1 accuracy of the width it ran at.
    pub top1: f32,
    /// Whether it met its deadline; `None` when it had none.
    pub deadline_met: Option<bool>,
}

impl RewardWeights {
    /// Cost of `outcome` for a model with reference `scales`.
    pub fn cost(&self, outcome: &Outcome, scales: &Scales) -> f32 {
        self.latency * outcome.latency_ms / scales.latency_ms
            + self.energy * outcome.energy_mj / scales.energy_mj
            + self.accuracy * (1.0 - outcome.top1) * 100.0
            + self.deadline * f32::from(u8::from(outcome.deadline_met == Some(false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_ignores_accuracy_and_accuracy_weighs_it_most() {
        let scales = Scales {
            latency_ms: 10.0,
            energy_mj: 100.0,
        };
        let slim = Outcome {
            latency_ms: 2.0,
            energy_mj: 10.0,
            top1: 0.90,
            deadline_met: None,
        };
        let wide = Outcome {
            latency_ms: 10.0,
            energy_mj: 100.0,
            top1: 0.99,
            deadline_met: Some(true),
        };
        let eff = RewardPreset::Efficiency.weights();
        assert!(eff.cost(&slim, &scales) < eff.cost(&wide, &scales));
        let acc = RewardPreset::Accuracy.weights();
        assert!(acc.cost(&slim, &scales) > acc.cost(&wide, &scales));
        let missed = Outcome {
            deadline_met: Some(false),
            ..wide
        };
        assert!(eff.cost(&missed, &scales) > eff.cost(&wide, &scales));
    }
}
