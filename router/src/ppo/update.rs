//! One clipped-PPO gradient step on a minibatch: the loss shared by offline training
//! ([`super::train`]) and online refinement ([`super::online`]).

use candle_core::{DType, Device, Tensor};
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
    let x = Tensor::from_vec(x, (m, width, FEATURES), dev)?;
    let mask = Tensor::from_vec(mask, (m, width), dev)?;
    let actions = Tensor::from_vec(
        samples.iter().map(|s| s.action).collect::<Vec<u32>>(),
        (m, 1),
        dev,
    )?;
    let old_logp = Tensor::from_vec(column(|s| s.logp), m, dev)?;
    let old_v = Tensor::from_vec(column(|s| s.value), m, dev)?;
    let ret = Tensor::from_vec(column(|s| s.ret), m, dev)?;
    let adv = Tensor::from_vec(adv, m, dev)?;

    let logp_all = candle_nn::ops::log_softmax(&net.masked_logits(&x, &mask)?, 1)?;
    let logp = logp_all.gather(&actions, 1)?.squeeze(1)?;
    let entropy = logp_all
        .exp()?
        .mul(&logp_all)?
        .mul(&mask)?
        .sum(1)?
        .neg()?
        .mean_all()?;
    let log_ratio = (&logp - &old_logp)?;
    let ratio = log_ratio.exp()?;
    let c = f64::from(params.clip_coef);
    let pg1 = adv.neg()?.mul(&ratio)?;
    let pg2 = adv.neg()?.mul(&ratio.clamp(1.0 - c, 1.0 + c)?)?;
    let policy_loss = pg1.maximum(&pg2)?.mean_all()?;
    let values = net.values(&x, &mask)?;
    let value_loss = if params.clip_vloss {
        let unclipped = (&values - &ret)?.sqr()?;
        let clipped = (&old_v + (&values - &old_v)?.clamp(-c, c)?)?;
        let clipped = (clipped - &ret)?.sqr()?;
        (unclipped.maximum(&clipped)?.mean_all()? * 0.5)?
    } else {
        ((&values - &ret)?.sqr()?.mean_all()? * 0.5)?
    };
    let loss = ((&policy_loss - (&entropy * f64::from(params.ent_coef))?)?
        + (&value_loss * f64::from(params.vf_coef))?)?;

    let mut grads = loss.backward()?;
    let vars = net.all_vars();
    let mut norm_sq = 0.0f32;
    for v in &vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            norm_sq += g.sqr()?.sum_all()?.to_scalar::<f32>()?;
        }
    }
    let norm = norm_sq.sqrt();
    if norm > params.max_grad_norm {
        let scale = f64::from(params.max_grad_norm / (norm + 1e-6));
        for v in &vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    optimizer.step(&grads)?;

    Ok(StepStats {
        policy_loss: policy_loss.to_scalar()?,
        value_loss: value_loss.to_scalar()?,
        entropy: entropy.to_scalar()?,
        approx_kl: ((&ratio - 1.0)? - &log_ratio)?
            .mean_all()?
            .to_scalar::<f32>()?,
        clipfrac: (&ratio - 1.0)?
            .abs()?
            .gt(c)?
            .to_dtype(DType::F32)?
            .mean_all()?
            .to_scalar::<f32>()?,
    })
}
