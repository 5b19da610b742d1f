//! One online update: clipped PPO on a batch of transitions, behind a KL guard.

use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use super::learner::{softmax, Transition};
use super::OnlineConfig;
use crate::ppo::config::PpoConfig;
use crate::ppo::net::{CandleNet, PolicyWeights, Scratch};
use crate::ppo::update::{gae, step, LossParams, Sample};

/// An update to run: it owns its inputs, so it can run on any thread.
#[derive(Debug, Clone)]
pub struct RefineJob {
    pub(crate) policy: PolicyWeights,
    pub(crate) batch: Vec<Transition>,
    pub(crate) training: PpoConfig,
    pub(crate) config: OnlineConfig,
    pub(crate) seed: u64,
}

/// What an update did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateReport {
    /// Transitions in the batch.
    pub transitions: usize,
    /// Mean reward of the batch.
    pub reward_mean: f32,
    /// Mean request cost of the batch (the preset's cost, lower is better).
    pub cost_mean: f32,
    /// Gradient steps taken.
    pub steps: usize,
    /// Mean approx_kl of the steps.
    pub approx_kl: f32,
    /// Mean KL(old ‖ new) over the batch's decisions after the update.
    pub kl: f32,
    /// Mean fraction of clipped ratios.
    pub clipfrac: f32,
    /// Policy loss of the last step.
    pub policy_loss: f32,
    /// Value loss of the last step.
    pub value_loss: f32,
    /// Entropy of the last step.
    pub entropy: f32,
    /// Whether the new weights were kept.
    pub applied: bool,
    /// Why not, when they were not.
    pub refused: Option<String>,
}

/// The result of a [`RefineJob`]: new weights unless the guard refused them.
#[derive(Debug, Clone)]
pub struct Refined {
    /// The updated policy, or `None` when refused.
    pub weights: Option<PolicyWeights>,
    /// Diagnostics.
    pub report: UpdateReport,
}

impl RefineJob {
    /// Transitions in the job.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Runs the update: CPU work, to be kept off any latency-sensitive thread (docs/router.md
    /// gives measured times).
    pub fn run(self) -> Refined {
        match self.update() {
            Ok(refined) => refined,
            Err(e) => Refined {
                weights: None,
                report: UpdateReport {
                    transitions: self.batch.len(),
                    refused: Some(format!("update failed: {e}")),
                    ..self.summary()
                },
            },
        }
    }

    fn summary(&self) -> UpdateReport {
        let n = self.batch.len().max(1) as f32;
        UpdateReport {
            transitions: self.batch.len(),
            reward_mean: self.batch.iter().map(|t| t.reward).sum::<f32>() / n,
            cost_mean: self.batch.iter().map(|t| t.cost).sum::<f32>() / n,
            ..UpdateReport::default()
        }
    }

    /// The critic's values, value targets and advantages of the batch, in batch order. As in
    /// offline training, the target is the GAE(λ) return under the checkpoint's gamma and λ over
    /// the decisions in routing order; the stream goes on after the batch, so its last decision
    /// bootstraps from its own value.
    pub(crate) fn targets(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut scratch = Scratch::default();
        let values: Vec<f32> = self
            .batch
            .iter()
            .map(|t| self.policy.value(&t.features, t.candidates(), &mut scratch))
            .collect();
        let mut order: Vec<usize> = (0..self.batch.len()).collect();
        order.sort_by_key(|&i| self.batch[i].seq);
        let rewards: Vec<f32> = order.iter().map(|&i| self.batch[i].reward).collect();
        let sorted: Vec<f32> = order.iter().map(|&i| values[i]).collect();
        let dones = vec![false; order.len()];
        let bootstrap = sorted.last().copied().unwrap_or(0.0);
        let (t, l) = (self.training.gamma, self.training.gae_lambda);
        let (adv_sorted, ret_sorted) = gae(&rewards, &sorted, &dones, bootstrap, t, l);
        let (mut adv, mut ret) = (vec![0.0; order.len()], vec![0.0; order.len()]);
        for (k, &i) in order.iter().enumerate() {
            adv[i] = adv_sorted[k];
            ret[i] = ret_sorted[k];
        }
        (values, ret, adv)
    }

    fn update(&self) -> candle_core::Result<Refined> {
        let mut report = self.summary();
        if self.batch.is_empty() {
            report.refused = Some("empty batch".into());
            return Ok(Refined {
                weights: None,
                report,
            });
        }
        let net = CandleNet::new(&self.policy)?;
        self.optimize(&net, &mut report)?;
        let weights = net.weights()?;
        report.kl = mean_kl(&self.policy, &weights, &self.batch);
        report.refused = self.refusal(&weights, &report);
        report.applied = report.refused.is_none();
        Ok(Refined {
            weights: report.applied.then_some(weights),
            report,
        })
    }

    /// The update epochs on the batch: shuffled minibatches of clipped-PPO steps on `net`,
    /// stopped early past the target KL; counts the steps and their diagnostics in `report`.
    fn optimize(&self, net: &CandleNet, report: &mut UpdateReport) -> candle_core::Result<()> {
        let (values, ret, adv) = self.targets();
        let width = self
            .batch
            .iter()
            .map(Transition::candidates)
            .max()
            .unwrap_or(1);
        let mut optimizer = AdamW::new(
            net.all_vars(),
            ParamsAdamW {
                lr: self.config.learning_rate,
                eps: 1e-5,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let params = LossParams::from(&self.training);
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut order: Vec<usize> = (0..self.batch.len()).collect();
        let mb = self.config.minibatch.clamp(1, self.batch.len());
        let (mut kls, mut clips) = (0.0f32, 0.0f32);
        'epochs: for _ in 0..self.config.epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(mb) {
                let samples: Vec<Sample<'_>> = chunk
                    .iter()
                    .map(|&i| {
                        let t = &self.batch[i];
                        Sample {
                            features: &t.features,
                            action: t.action,
                            logp: t.logp,
                            value: values[i],
                            ret: ret[i],
                            adv: adv[i],
                        }
                    })
                    .collect();
                let s = step(net, &mut optimizer, &samples, width, &params)?;
                report.steps += 1;
                report.policy_loss = s.policy_loss;
                report.value_loss = s.value_loss;
                report.entropy = s.entropy;
                kls += s.approx_kl;
                clips += s.clipfrac;
                if f64::from(s.approx_kl) > self.config.target_kl {
                    break 'epochs;
                }
            }
        }
        report.approx_kl = kls / report.steps.max(1) as f32;
        report.clipfrac = clips / report.steps.max(1) as f32;
        Ok(())
    }

    /// Why the guard refuses `weights` (not finite, or too far from the old policy by
    /// `report.kl`), or `None` when it keeps them.
    fn refusal(&self, weights: &PolicyWeights, report: &UpdateReport) -> Option<String> {
        let finite = weights
            .layers
            .iter()
            .all(|l| l.weight.iter().chain(&l.bias).all(|v| v.is_finite()));
        if !finite || !report.kl.is_finite() {
            Some("the update produced weights that are not finite".into())
        } else if f64::from(report.kl) > self.config.max_kl {
            Some(format!(
                "KL {:.4} between the old and new policy exceeds max_kl {}",
                report.kl, self.config.max_kl
            ))
        } else {
            None
        }
    }
}

/// Mean over `batch` of KL(old ‖ new) between the two policies' candidate distributions.
fn mean_kl(old: &PolicyWeights, new: &PolicyWeights, batch: &[Transition]) -> f32 {
    let (mut scratch, mut logits) = (Scratch::default(), Vec::new());
    let mut total = 0.0f32;
    for t in batch {
        let n = t.candidates();
        old.logits(&t.features, n, &mut logits, &mut scratch);
        let p = softmax(&logits);
        new.logits(&t.features, n, &mut logits, &mut scratch);
        let q = softmax(&logits);
        total += p
            .iter()
            .zip(&q)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, q)| p * (p.ln() - q.max(1e-30).ln()))
            .sum::<f32>();
    }
    total / batch.len().max(1) as f32
}
