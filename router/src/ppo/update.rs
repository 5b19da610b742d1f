//! One clipped-PPO gradient step on a minibatch: the loss shared by offline training
//! ([`super::train`]) and online refinement ([`super::online`]).

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer};

use super::config::PpoConfig;
use super::features::FEATURES;
use super::net::CandleNet;

/// One decision as an update sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample<'a> {
    /// Features of its valid candidates, `n * FEATURES` (padding is added by [`step`]).
    pub features: &'a [f32],
    /// Index of the chosen candidate.
    pub action: u32,
    /// Log-probability of that choice under the policy that made it.
    pub logp: f32,
    /// Value estimate when the update started (the centre of the value clip).
    pub value: f32,
    /// Target of the value loss.
    pub ret: f32,
    /// Advantage of the choice.
    pub adv: f32,
}

/// The loss's hyperparameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LossParams {
    clip_coef: f32,
    clip_vloss: bool,
    ent_coef: f32,
    vf_coef: f32,
    max_grad_norm: f32,
    norm_adv: bool,
}

impl From<&PpoConfig> for LossParams {
    fn from(c: &PpoConfig) -> Self {
        Self {
            clip_coef: c.clip_coef,
            clip_vloss: c.clip_vloss,
            ent_coef: c.ent_coef,
            vf_coef: c.vf_coef,
            max_grad_norm: c.max_grad_norm,
            norm_adv: c.norm_adv,
        }
    }
}

/// Diagnostics of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct StepStats {
    pub policy_loss: f32,
    pub value_loss: f32,
    pub entropy: f32,
    /// Approximate KL between the policy that chose and the one before this step (`(r-1) - ln r`).
    pub approx_kl: f32,
    /// Fraction of ratios outside the clip.
    pub clipfrac: f32,
}

/// GAE(λ) advantages and the value target (advantage + value, the λ-return under `gamma`) of a
/// sequence of decisions. `dones[t]` ends an episode after decision `t` (no bootstrap); the last
/// decision, when not done, bootstraps from `bootstrap`. Offline training and online refinement
/// both take their value target from here, so the critic learns the same quantity in both.
pub(crate) fn gae(
    rewards: &[f32],
    values: &[f32],
    dones: &[bool],
    bootstrap: f32,
    gamma: f32,
    lambda: f32,
) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut last = 0.0;
    for t in (0..n).rev() {
        let next_nonterminal = if dones[t] { 0.0 } else { 1.0 };
        let next_value = if t + 1 == n { bootstrap } else { values[t + 1] };
        let delta = rewards[t] + gamma * next_value * next_nonterminal - values[t];
        last = delta + gamma * lambda * next_nonterminal * last;
        adv[t] = last;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// Advantages normalized to zero mean and unit standard deviation (when there are two or more).
fn normalized(adv: &mut [f32]) {
    let m = adv.len();
    if m < 2 {
        return;
    }
    let mean = adv.iter().sum::<f32>() / m as f32;
    let std = (adv.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / (m - 1) as f32).sqrt();
    adv.iter_mut().for_each(|a| *a = (*a - mean) / (std + 1e-8));
}

/// One gradient step of the clipped PPO loss (policy, value, entropy) on `samples`, each padded
/// to `width` candidates (masked), with global gradient-norm clipping.
pub(crate) fn step(
    net: &CandleNet,
    optimizer: &mut AdamW,
    samples: &[Sample<'_>],
    width: usize,
    params: &LossParams,
) -> candle_core::Result<StepStats> {
    let batch = Batch::new(samples, width, params)?;
    let loss = Loss::of(net, &batch, params)?;
    let total = ((&loss.policy - (&loss.entropy * f64::from(params.ent_coef))?)?
        + (&loss.value * f64::from(params.vf_coef))?)?;
    let mut grads = total.backward()?;
    clip_grad_norm(&mut grads, &net.all_vars(), params.max_grad_norm)?;
    optimizer.step(&grads)?;
    loss.stats(f64::from(params.clip_coef))
}

/// A minibatch as tensors: candidates padded to a common width and masked.
struct Batch {
    /// Features `[m, width, FEATURES]`.
    x: Tensor,
    /// 1 for a real candidate, 0 for padding, `[m, width]`.
    mask: Tensor,
    /// Chosen candidates, `[m, 1]`.
    actions: Tensor,
    old_logp: Tensor,
    old_v: Tensor,
    ret: Tensor,
    /// Advantages, normalized when the loss says so.
    adv: Tensor,
}

impl Batch {
    fn new(samples: &[Sample<'_>], width: usize, params: &LossParams) -> candle_core::Result<Self> {
        let m = samples.len();
        let mut x = Vec::with_capacity(m * width * FEATURES);
        let mut mask = Vec::with_capacity(m * width);
        for s in samples {
            let n = (s.features.len() / FEATURES).min(width);
            x.extend_from_slice(&s.features[..n * FEATURES]);
            x.resize(x.len() + (width - n) * FEATURES, 0.0);
            mask.extend((0..width).map(|i| if i < n { 1.0f32 } else { 0.0 }));
        }
        let mut adv: Vec<f32> = samples.iter().map(|s| s.adv).collect();
        if params.norm_adv {
            normalized(&mut adv);
        }
        let column = |f: fn(&Sample<'_>) -> f32| samples.iter().map(f).collect::<Vec<f32>>();
        let dev = &Device::Cpu;
        Ok(Self {
            x: Tensor::from_vec(x, (m, width, FEATURES), dev)?,
            mask: Tensor::from_vec(mask, (m, width), dev)?,
            actions: Tensor::from_vec(
                samples.iter().map(|s| s.action).collect::<Vec<u32>>(),
                (m, 1),
                dev,
            )?,
            old_logp: Tensor::from_vec(column(|s| s.logp), m, dev)?,
            old_v: Tensor::from_vec(column(|s| s.value), m, dev)?,
            ret: Tensor::from_vec(column(|s| s.ret), m, dev)?,
            adv: Tensor::from_vec(adv, m, dev)?,
        })
    }
}

/// The loss terms of one minibatch, and the probability ratios they came from.
struct Loss {
    policy: Tensor,
    value: Tensor,
    entropy: Tensor,
    ratio: Tensor,
    log_ratio: Tensor,
}

impl Loss {
    fn of(net: &CandleNet, b: &Batch, params: &LossParams) -> candle_core::Result<Self> {
        let logp_all = candle_nn::ops::log_softmax(&net.masked_logits(&b.x, &b.mask)?, 1)?;
        let logp = logp_all.gather(&b.actions, 1)?.squeeze(1)?;
        let entropy = logp_all
            .exp()?
            .mul(&logp_all)?
            .mul(&b.mask)?
            .sum(1)?
            .neg()?
            .mean_all()?;
        let log_ratio = (&logp - &b.old_logp)?;
        let ratio = log_ratio.exp()?;
        let c = f64::from(params.clip_coef);
        let pg1 = b.adv.neg()?.mul(&ratio)?;
        let pg2 = b.adv.neg()?.mul(&ratio.clamp(1.0 - c, 1.0 + c)?)?;
        let policy = pg1.maximum(&pg2)?.mean_all()?;
        let values = net.values(&b.x, &b.mask)?;
        let value = if params.clip_vloss {
            let unclipped = (&values - &b.ret)?.sqr()?;
            let clipped = (&b.old_v + (&values - &b.old_v)?.clamp(-c, c)?)?;
            let clipped = (clipped - &b.ret)?.sqr()?;
            (unclipped.maximum(&clipped)?.mean_all()? * 0.5)?
        } else {
            ((&values - &b.ret)?.sqr()?.mean_all()? * 0.5)?
        };
        Ok(Self {
            policy,
            value,
            entropy,
            ratio,
            log_ratio,
        })
    }

    /// The step's diagnostics; `clip` is the ratio clip.
    fn stats(&self, clip: f64) -> candle_core::Result<StepStats> {
        Ok(StepStats {
            policy_loss: self.policy.to_scalar()?,
            value_loss: self.value.to_scalar()?,
            entropy: self.entropy.to_scalar()?,
            approx_kl: ((&self.ratio - 1.0)? - &self.log_ratio)?
                .mean_all()?
                .to_scalar::<f32>()?,
            clipfrac: (&self.ratio - 1.0)?
                .abs()?
                .gt(clip)?
                .to_dtype(DType::F32)?
                .mean_all()?
                .to_scalar::<f32>()?,
        })
    }
}

/// Scales `grads` of `vars` down so that their global L2 norm is at most `max_norm`.
fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f32) -> candle_core::Result<()> {
    let mut norm_sq = 0.0f32;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            norm_sq += g.sqr()?.sum_all()?.to_scalar::<f32>()?;
        }
    }
    let norm = norm_sq.sqrt();
    if norm > max_norm {
        let scale = f64::from(max_norm / (norm + 1e-6));
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ppo::net::PolicyWeights;
    use candle_nn::ParamsAdamW;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    #[test]
    fn gae_with_lambda_one_and_no_bootstrap_gives_discounted_returns() {
        let (adv, ret) = gae(&[1.0, 2.0, 4.0], &[0.5; 3], &[false; 3], 0.0, 0.5, 1.0);
        assert_eq!(
            ret,
            vec![1.0 + 0.5 * 2.0 + 0.25 * 4.0, 2.0 + 0.5 * 4.0, 4.0]
        );
        assert_eq!(adv, vec![2.5, 3.5, 3.5]);
        // An episode end stops the discounting; the bootstrap feeds only the last decision.
        let (_, ret) = gae(&[1.0, 1.0], &[0.0, 0.0], &[true, false], 10.0, 0.5, 1.0);
        assert_eq!(ret, vec![1.0, 6.0]);
    }

    /// Mean entropy of the policy after `steps` updates on zero advantages (only the entropy and
    /// value terms pull).
    fn entropy_after(ent_coef: f32, steps: usize) -> f32 {
        let mut rng = StdRng::seed_from_u64(3);
        let mut policy = PolicyWeights::init(8, &mut rng);
        // A peaked policy (a strong linear skip), so there is entropy to gain.
        policy.layers[6].weight.iter_mut().for_each(|w| *w = 2.0);
        let net = CandleNet::new(&policy).unwrap();
        let mut opt = AdamW::new(
            net.all_vars(),
            ParamsAdamW {
                lr: 1e-2,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        let features: Vec<Vec<f32>> = (0..16)
            .map(|_| {
                (0..4 * FEATURES)
                    .map(|_| rng.gen_range(-2.0..2.0))
                    .collect()
            })
            .collect();
        let samples: Vec<Sample<'_>> = features
            .iter()
            .map(|f| Sample {
                features: f,
                action: 0,
                logp: (0.25f32).ln(),
                value: 0.0,
                ret: 0.0,
                adv: 0.0,
            })
            .collect();
        let params = LossParams {
            ent_coef,
            norm_adv: false,
            ..LossParams::from(&PpoConfig::default())
        };
        let mut last = 0.0;
        for _ in 0..steps {
            last = step(&net, &mut opt, &samples, 4, &params).unwrap().entropy;
        }
        last
    }

    #[test]
    fn the_default_entropy_bonus_is_on_and_raises_entropy() {
        assert!(PpoConfig::default().ent_coef > 0.0);
        let without = entropy_after(0.0, 30);
        let with = entropy_after(1.0, 30);
        assert!(with > without + 1e-3, "{with} vs {without}");
    }
}
