//! The PPO ablation of issue #16 (item 4): which part of the PPO router earns its keep?
//!
//! - [`VARIANTS`]: prior only (the greedy prior, no learning), from scratch (no prior), and
//!   prior + PPO at gamma 0, 0.5 and 0.9; each a change to [`PpoConfig::default`], trained with
//!   `slim train` from the TOML [`Variant::config_toml`] writes (plus [`Variant::train_flags`]).
//! - [`Family`]: the held-out scenario families the variants are compared on: shifting load
//!   (bursts and a step change in rate, no fleet events), churn (a device slowing down and one
//!   leaving, steady rate), and the mixed `Scenario::sample` draws `slim eval` reports as
//!   "shifting + churn".
//! - [`Spread`] and [`pooled_difference`]: a variant's figures over its training seeds, and the
//!   paired interval of (variant − best heuristic) with each evaluation seed's variant cost the
//!   mean over the training seeds' checkpoints.

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::bootstrap::{mean_difference, Interval, Verdict};
use crate::fleet::Fleet;
use crate::ppo::PpoConfig;
use crate::sim::{Burst, FleetEvent, FleetEventKind, RateStep, Scenario};

/// Evaluation seeds the issue's bar asks for.
pub const BAR_MIN_SEEDS: u64 = 20;

/// One arm of the ablation: a change to the default training configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    /// Folder and row name (`bench/ablations.sh` trains into `DIR/<name>/seed-<s>.safetensors`).
    pub name: &'static str,
    /// What it is, for the report.
    pub what: &'static str,
    /// Whether the actor starts as the greedy prior (`greedy_prior = Some(20)`).
    pub prior: bool,
    /// Whether PPO updates the policy (learning rate > 0); `false` is the prior only.
    pub trains: bool,
    /// Discount per decision.
    pub gamma: f32,
}

/// The variants, in report order.
pub const VARIANTS: [Variant; 5] = [
    Variant {
        name: "prior-only",
        what: "greedy prior, no PPO update (learning rate 0)",
        prior: true,
        trains: false,
        gamma: 0.5,
    },
    Variant {
        name: "scratch",
        what: "PPO from scratch (no greedy prior), gamma 0.5",
        prior: false,
        trains: true,
        gamma: 0.5,
    },
    Variant {
        name: "prior-ppo-gamma0",
        what: "greedy prior + PPO, gamma 0",
        prior: true,
        trains: true,
        gamma: 0.0,
    },
    Variant {
        name: "prior-ppo-gamma0.5",
        what: "greedy prior + PPO, gamma 0.5 (the default)",
        prior: true,
        trains: true,
        gamma: 0.5,
    },
    Variant {
        name: "prior-ppo-gamma0.9",
        what: "greedy prior + PPO, gamma 0.9",
        prior: true,
        trains: true,
        gamma: 0.9,
    },
];

/// The flag of `slim train` that starts from scratch: TOML has no null, so a config file cannot
/// set `greedy_prior` to `None` (a missing key takes the default, the prior).
pub const NO_PRIOR_FLAG: &str = "--no-greedy-prior";

impl Variant {
    /// The variant called `name`.
    pub fn by_name(name: &str) -> Option<&'static Variant> {
        VARIANTS.iter().find(|v| v.name == name)
    }

    /// The variant a checkpoint trained with `config` belongs to, if any.
    pub fn of(config: &PpoConfig) -> Option<&'static Variant> {
        VARIANTS.iter().find(|v| v.matches(config))
    }

    /// Whether `config` is this variant's (prior on or off, learning or not, its gamma).
    pub fn matches(&self, config: &PpoConfig) -> bool {
        config.greedy_prior.is_some() == self.prior
            && (config.learning_rate > 0.0) == self.trains
            && config.gamma == self.gamma
    }

    /// The training configuration: `base` with this variant's changes.
    pub fn config(&self, base: &PpoConfig) -> PpoConfig {
        let default_prior = PpoConfig::default().greedy_prior;
        PpoConfig {
            gamma: self.gamma,
            greedy_prior: if self.prior {
                base.greedy_prior.or(default_prior)
            } else {
                None
            },
            learning_rate: if self.trains { base.learning_rate } else { 0.0 },
            ..base.clone()
        }
    }

    /// The `--config` file of `slim train` for this variant: the three knobs it sets, the rest
    /// left to [`PpoConfig::default`]; with [`Variant::train_flags`] it gives exactly
    /// [`Variant::config`]`(PpoConfig::default())` (`--steps` and `--seed` are set on the
    /// command line).
    pub fn config_toml(&self) -> String {
        let config = self.config(&PpoConfig::default());
        let flags: String = self.train_flags().iter().map(|f| format!(" {f}")).collect();
        let mut text = format!(
            "# {}: {}\n# Written by `slim eval --ablation-plan`; train with `slim train --config FILE{flags}`.\n",
            self.name, self.what
        );
        let _ = writeln!(text, "gamma = {:?}", config.gamma);
        let _ = writeln!(text, "learning_rate = {:?}", config.learning_rate);
        match config.greedy_prior {
            Some(sharpness) => {
                let _ = writeln!(text, "greedy_prior = {sharpness:?}");
            }
            None => text.push_str(
                "# greedy_prior = None cannot be written in TOML (a missing key means the default \
                 prior): the flag above sets it.\n",
            ),
        }
        text
    }

    /// Extra `slim train` flags the config file cannot express.
    pub fn train_flags(&self) -> &'static [&'static str] {
        if self.prior {
            &[]
        } else {
            &[NO_PRIOR_FLAG]
        }
    }
}

/// A family of held-out scenarios, all built on [`Scenario::sample`]'s workload of a seed (load,
/// model mix, deadlines, floors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Bursts (×2–4) and a step change in rate (×0.5–0.8 or ×1.2–1.8), no fleet events.
    ShiftingLoad,
    /// Steady rate; one device slows down ×2–6 and one leaves (rejoining after a fifth of the
    /// run with probability ½).
    Churn,
    /// [`Scenario::sample`] as drawn (each of the above with some probability): the column
    /// `slim eval` calls "shifting + churn".
    Mixed,
}

/// The families, in report order.
pub const FAMILIES: [Family; 3] = [Family::ShiftingLoad, Family::Churn, Family::Mixed];

impl Family {
    /// Name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::ShiftingLoad => "shifting load",
            Family::Churn => "churn",
            Family::Mixed => "mixed (slim eval's shifting + churn)",
        }
    }

    /// The scenario of `seed` with `requests` requests.
    pub fn scenario(self, fleet: &Fleet, requests: usize, seed: u64) -> Scenario {
        let mut s = Scenario::sample(fleet, requests, seed);
        if self == Family::Mixed {
            return s;
        }
        let mut rng = StdRng::seed_from_u64(seed ^ 0xAB1A_7105);
        let horizon_ms = requests as f64 / s.rate_per_s.max(1e-9) * 1000.0;
        match self {
            Family::ShiftingLoad => {
                s.events.clear();
                s.burst = Some(Burst {
                    factor: rng.gen_range(2.0..4.0),
                    mean_on_ms: horizon_ms * 0.05,
                    mean_off_ms: horizon_ms * 0.2,
                });
                let factor = if rng.gen_bool(0.5) {
                    rng.gen_range(0.5..0.8)
                } else {
                    rng.gen_range(1.2..1.8)
                };
                s.step = Some(RateStep {
                    at_ms: horizon_ms * rng.gen_range(0.2..0.6),
                    factor,
                });
            }
            Family::Churn => {
                s.burst = None;
                s.step = None;
                s.events.clear();
                let n = fleet.devices.len();
                if n > 1 {
                    s.events.push(FleetEvent {
                        at_ms: horizon_ms * rng.gen_range(0.1..0.7),
                        device: rng.gen_range(0..n),
                        kind: FleetEventKind::Slowdown(rng.gen_range(2.0..6.0)),
                    });
                    let (device, at_ms) =
                        (rng.gen_range(0..n), horizon_ms * rng.gen_range(0.1..0.7));
                    s.events.push(FleetEvent {
                        at_ms,
                        device,
                        kind: FleetEventKind::Leave,
                    });
                    if rng.gen_bool(0.5) {
                        s.events.push(FleetEvent {
                            at_ms: at_ms + horizon_ms * 0.2,
                            device,
                            kind: FleetEventKind::Join,
                        });
                    }
                    s.events.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
                }
            }
            Family::Mixed => unreachable!(),
        }
        s
    }
}

/// Mean, extremes and sample standard deviation of a variant's figure over its training seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Sample standard deviation (n − 1; 0 for fewer than two values).
    pub sd: f64,
}

impl Spread {
    /// The spread of `values` (all NaN when empty).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self {
                mean: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                sd: f64::NAN,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n < 2 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        Self {
            mean,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            sd,
        }
    }
}

/// Per evaluation seed, the mean over `checkpoints` (one cost vector per training seed, each over
/// the same evaluation seeds).
pub fn seed_means(checkpoints: &[Vec<f64>]) -> Vec<f64> {
    let n = checkpoints.first().map_or(0, Vec::len);
    assert!(
        checkpoints.iter().all(|c| c.len() == n),
        "every checkpoint must run the same evaluation seeds"
    );
    (0..n)
        .map(|i| checkpoints.iter().map(|c| c[i]).sum::<f64>() / checkpoints.len() as f64)
        .collect()
}

/// 95 % paired bootstrap interval of (variant − heuristic) mean cost over the evaluation seeds,
/// the variant's cost on a seed being the mean over its training seeds' checkpoints. It resamples
/// evaluation seeds only: with three training seeds, their spread is reported beside it
/// ([`Spread`] of the per-checkpoint differences), not folded into it.
pub fn pooled_difference(checkpoints: &[Vec<f64>], heuristic: &[f64]) -> Interval {
    mean_difference(&seed_means(checkpoints), heuristic)
}

/// Whether a variant clears the issue's bar on a family: its pooled interval lies below zero
/// (better than the best heuristic on the preset's cost) over at least [`BAR_MIN_SEEDS`]
/// evaluation seeds, and no training seed's own interval says "worse".
pub fn meets_bar(pooled: &Interval, per_seed: &[Interval], eval_seeds: u64) -> bool {
    eval_seeds >= BAR_MIN_SEEDS
        && pooled.verdict() == Verdict::Better
        && per_seed.iter().all(|i| i.verdict() != Verdict::Worse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::tests::tiny_fleet;

    #[test]
    fn the_variants_are_the_issues_arms_and_their_configs_say_so() {
        let names: Vec<&str> = VARIANTS.iter().map(|v| v.name).collect();
        assert_eq!(
            names,
            [
                "prior-only",
                "scratch",
                "prior-ppo-gamma0",
                "prior-ppo-gamma0.5",
                "prior-ppo-gamma0.9"
            ]
        );
        let base = PpoConfig::default();
        for v in &VARIANTS {
            let c = v.config(&base);
            assert_eq!(Variant::of(&c), Some(v), "{}", v.name);
            assert_eq!(Variant::by_name(v.name), Some(v));
            // Everything but the three knobs stays the default.
            let reset = PpoConfig {
                gamma: base.gamma,
                greedy_prior: base.greedy_prior,
                learning_rate: base.learning_rate,
                ..c.clone()
            };
            assert_eq!(reset, base, "{}", v.name);
        }
        let scratch = Variant::by_name("scratch").unwrap().config(&base);
        assert_eq!(scratch.greedy_prior, None);
        assert_eq!(
            Variant::by_name("prior-only")
                .unwrap()
                .config(&base)
                .learning_rate,
            0.0
        );
        assert_eq!(
            Variant::by_name("prior-ppo-gamma0.9")
                .unwrap()
                .config(&base)
                .gamma,
            0.9
        );
        // The shipped default config is the gamma-0.5 arm, not the prior or scratch.
        assert_eq!(Variant::of(&base).unwrap().name, "prior-ppo-gamma0.5");
    }

    #[test]
    fn each_config_file_plus_its_flags_gives_the_variants_config() {
        let base = PpoConfig::default();
        for v in &VARIANTS {
            let text = v.config_toml();
            let mut parsed: PpoConfig = toml::from_str(&text).expect(v.name);
            if v.train_flags().contains(&NO_PRIOR_FLAG) {
                // What the file alone gives: TOML cannot say None, so without the flag the
                // scratch arm would silently train from the prior.
                assert_eq!(parsed.greedy_prior, base.greedy_prior);
                assert!(text.contains("cannot be written in TOML"));
                parsed.greedy_prior = None;
            }
            assert_eq!(parsed, v.config(&base), "{}", v.name);
        }
    }

    #[test]
    fn the_families_shift_the_load_or_churn_the_fleet_and_nothing_else() {
        let fleet = tiny_fleet();
        let mut rejoined = 0;
        for seed in 0..40u64 {
            let seed = crate::eval::eval_seed(seed);
            let mixed = Family::Mixed.scenario(&fleet, 600, seed);
            assert_eq!(mixed, Scenario::sample(&fleet, 600, seed));
            let shifting = Family::ShiftingLoad.scenario(&fleet, 600, seed);
            let churn = Family::Churn.scenario(&fleet, 600, seed);
            for s in [&shifting, &churn] {
                // The workload is the sampled one.
                assert_eq!(s.rate_per_s, mixed.rate_per_s);
                assert_eq!(s.model_mix, mixed.model_mix);
                assert_eq!(s.deadline_prob, mixed.deadline_prob);
                assert_eq!(s.floor_prob, mixed.floor_prob);
            }
            assert!(shifting.events.is_empty());
            let step = shifting.step.expect("a step");
            assert!((step.factor - 1.0).abs() >= 0.2 - 1e-12, "{step:?}");
            assert!(shifting.burst.expect("bursts").factor >= 2.0);
            assert!(churn.burst.is_none() && churn.step.is_none());
            assert!(churn
                .events
                .iter()
                .any(|e| matches!(e.kind, FleetEventKind::Slowdown(k) if k >= 2.0)));
            assert!(churn.events.iter().any(|e| e.kind == FleetEventKind::Leave));
            assert!(churn.events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
            rejoined += usize::from(churn.events.iter().any(|e| e.kind == FleetEventKind::Join));
            // Deterministic per seed.
            assert_eq!(churn, Family::Churn.scenario(&fleet, 600, seed));
        }
        assert!((8..=32).contains(&rejoined), "{rejoined} of 40 rejoined");
    }

    #[test]
    fn the_spread_and_the_pooled_interval_are_over_the_right_axes() {
        let s = Spread::of(&[1.0, 2.0, 6.0]);
        assert_eq!((s.mean, s.min, s.max), (3.0, 1.0, 6.0));
        assert!((s.sd - 7.0f64.sqrt()).abs() < 1e-12);
        assert_eq!(Spread::of(&[4.0]).sd, 0.0);
        assert!(Spread::of(&[]).mean.is_nan());

        let heuristic: Vec<f64> = (0..20).map(|i| 1.0 + 0.1 * f64::from(i % 7)).collect();
        // Two training seeds 0.2 better on every evaluation seed, one 0.1 worse: pooled −0.1.
        let better: Vec<f64> = heuristic.iter().map(|h| h - 0.2).collect();
        let worse: Vec<f64> = heuristic.iter().map(|h| h + 0.1).collect();
        let ckpts = vec![better.clone(), better, worse];
        assert_eq!(seed_means(&ckpts).len(), 20);
        let pooled = pooled_difference(&ckpts, &heuristic);
        assert!((pooled.estimate + 0.1).abs() < 1e-12, "{pooled:?}");
        assert_eq!(pooled.verdict(), Verdict::Better);
        let per_seed: Vec<Interval> = ckpts
            .iter()
            .map(|c| mean_difference(c, &heuristic))
            .collect();
        // Better pooled, but one training seed is significantly worse: the bar is not met.
        assert!(!meets_bar(&pooled, &per_seed, 20));
        assert!(meets_bar(&pooled, &per_seed[..2], 20));
        // Too few evaluation seeds never meet it.
        assert!(!meets_bar(&pooled, &per_seed[..2], 19));
        // A pooled "no significant difference" does not either.
        let noise: Vec<f64> = heuristic
            .iter()
            .enumerate()
            .map(|(i, h)| if i % 2 == 0 { h + 0.3 } else { h - 0.3 })
            .collect();
        let flat = pooled_difference(std::slice::from_ref(&noise), &heuristic);
        assert_eq!(flat.verdict(), Verdict::NoSignificantDifference);
        assert!(!meets_bar(&flat, &[], 20));
    }

    #[test]
    #[should_panic(expected = "same evaluation seeds")]
    fn checkpoints_on_different_seed_counts_are_refused() {
        let _ = seed_means(&[vec![1.0, 2.0], vec![1.0]]);
    }
}
