//! The actor-critic: one small MLP that scores each candidate (the shared per-device encoder),
//! and a critic that pools the candidates' encodings.
//!
//! Actor: `logit_k = L3(relu(L2(relu(L1(x_k))))) + S(x_k)`, softmax over the valid candidates
//! `k`; `S` is a linear skip that can start as the greedy heuristic's cost
//! ([`PolicyWeights::greedy_prior`]), so the MLP learns a correction to greedy.
//! Critic: `v = C3(relu(C2(mean_k relu(C1(x_k)))))`.
//!
//! Training runs on candle (autograd, Adam). Deciding runs on [`PolicyWeights`], a plain copy
//! of the same weights: candle dispatches each op for some microseconds, too slow for 20k
//! decisions a second with a dozen ops per decision, while these loops take a few.

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::StandardNormal;

use super::features::{ACCURACY_FEATURE, COST_FEATURES, COST_FEATURE_SCALE, FEATURES};

/// A dense layer, weights `[outputs][inputs]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Inputs.
    pub inputs: usize,
    /// Outputs.
    pub outputs: usize,
    /// Weights, `outputs * inputs`.
    pub weight: Vec<f32>,
    /// Biases, `outputs`.
    pub bias: Vec<f32>,
}

impl Dense {
    /// Orthogonal init scaled by `gain`, zero bias (as CleanRL's `layer_init`).
    fn orthogonal(inputs: usize, outputs: usize, gain: f32, rng: &mut StdRng) -> Self {
        let (rows, cols) = (inputs.min(outputs), inputs.max(outputs));
        let mut q: Vec<Vec<f32>> = Vec::with_capacity(rows);
        while q.len() < rows {
            let mut v: Vec<f32> = (0..cols).map(|_| rng.sample(StandardNormal)).collect();
            for u in &q {
                let dot: f32 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            if norm > 1e-6 {
                q.push(v.into_iter().map(|a| a / norm).collect());
            }
        }
        let mut weight = vec![0.0; inputs * outputs];
        for o in 0..outputs {
            for i in 0..inputs {
                weight[o * inputs + i] = gain * if outputs <= inputs { q[o][i] } else { q[i][o] };
            }
        }
        Self {
            inputs,
            outputs,
            weight,
            bias: vec![0.0; outputs],
        }
    }

    fn forward(&self, x: &[f32], y: &mut [f32], relu: bool) {
        for (o, out) in y.iter_mut().enumerate().take(self.outputs) {
            let row = &self.weight[o * self.inputs..(o + 1) * self.inputs];
            let mut acc = self.bias[o];
            for (w, v) in row.iter().zip(x) {
                acc += w * v;
            }
            *out = if relu { acc.max(0.0) } else { acc };
        }
    }

    /// [`Dense::forward`] of [`LANES`] candidates at once: lane `l` of `x[i]` is input `i` of
    /// candidate `l`. Each lane gets the same operations in the same order as `forward` (bias,
    /// then `+= w·x` over the inputs in order; no fused multiply-add), so the results are
    /// bit-identical; the lanes make the inner loop a vector operation the compiler emits as
    /// SIMD, and independent, where `forward`'s dot product is one serial chain of additions.
    /// Two outputs are accumulated together, so that twice as many independent additions are
    /// in flight.
    fn forward_lanes(&self, x: &[Lanes], y: &mut [Lanes], relu: bool) {
        let n = self.inputs;
        let x = &x[..n];
        let finish = |mut acc: Lanes| {
            if relu {
                for a in &mut acc {
                    *a = a.max(0.0);
                }
            }
            acc
        };
        let mut pairs = y[..self.outputs].chunks_exact_mut(2);
        for (p, out) in (&mut pairs).enumerate() {
            let o = 2 * p;
            let (row0, row1) = (
                &self.weight[o * n..(o + 1) * n],
                &self.weight[(o + 1) * n..(o + 2) * n],
            );
            let mut acc0 = [self.bias[o]; LANES];
            let mut acc1 = [self.bias[o + 1]; LANES];
            for ((&w0, &w1), v) in row0.iter().zip(row1).zip(x) {
                for l in 0..LANES {
                    acc0[l] += w0 * v[l];
                    acc1[l] += w1 * v[l];
                }
            }
            out[0] = finish(acc0);
            out[1] = finish(acc1);
        }
        if let [out] = pairs.into_remainder() {
            let o = self.outputs - 1;
            let row = &self.weight[o * n..(o + 1) * n];
            let mut acc = [self.bias[o]; LANES];
            for (&w, v) in row.iter().zip(x) {
                for (a, &v) in acc.iter_mut().zip(v) {
                    *a += w * v;
                }
            }
            *out = finish(acc);
        }
    }
}

/// Candidates scored together by [`PolicyWeights::logits`].
pub const LANES: usize = 16;
/// One value per candidate of a block.
type Lanes = [f32; LANES];

/// Names of the layers, in [`PolicyWeights::layers`] order (the checkpoint's tensor names).
pub const LAYER_NAMES: [&str; 7] = [
    "actor.0",
    "actor.1",
    "actor.2",
    "critic.0",
    "critic.1",
    "critic.2",
    "actor.skip",
];

/// The policy's weights as plain vectors: what a checkpoint holds and what decides.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyWeights {
    /// Actor layers then critic layers, as [`LAYER_NAMES`].
    pub layers: Vec<Dense>,
}

/// Reusable buffers for [`PolicyWeights`] forward passes.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    h1: Vec<f32>,
    h2: Vec<f32>,
    pooled: Vec<f32>,
    x_lanes: Vec<Lanes>,
    h1_lanes: Vec<Lanes>,
    h2_lanes: Vec<Lanes>,
}

impl PolicyWeights {
    /// Fresh weights with `hidden` units, seeded; the policy head starts near uniform (gain 0.01).
    pub fn init(hidden: usize, rng: &mut StdRng) -> Self {
        let s2 = std::f32::consts::SQRT_2;
        Self {
            layers: vec![
                Dense::orthogonal(FEATURES, hidden, s2, rng),
                Dense::orthogonal(hidden, hidden, s2, rng),
                Dense::orthogonal(hidden, 1, 0.01, rng),
                Dense::orthogonal(FEATURES, hidden, s2, rng),
                Dense::orthogonal(hidden, hidden, s2, rng),
                Dense::orthogonal(hidden, 1, 1.0, rng),
                Dense {
                    inputs: FEATURES,
                    outputs: 1,
                    weight: vec![0.0; FEATURES],
                    bias: vec![0.0],
                },
            ],
        }
    }

    /// Sets the linear skip to `-sharpness ×` the greedy cost of `weights` (in the cost
    /// features' units), so the policy's most likely candidate starts as greedy's choice.
    pub fn greedy_prior(&mut self, weights: &crate::reward::RewardWeights, sharpness: f32) {
        // The MLP's output layer starts at zero, so the first argmax is exactly greedy's.
        let head = &mut self.layers[2];
        head.weight.iter_mut().for_each(|w| *w = 0.0);
        head.bias.iter_mut().for_each(|b| *b = 0.0);
        let skip = &mut self.layers[6].weight;
        skip.iter_mut().for_each(|w| *w = 0.0);
        skip[COST_FEATURES] = -sharpness * weights.latency * COST_FEATURE_SCALE;
        skip[COST_FEATURES + 1] = -sharpness * weights.energy * COST_FEATURE_SCALE;
        skip[COST_FEATURES + 2] = -sharpness * weights.deadline;
        // The feature is (1 - top1) * 10; the cost counts percentage points.
        skip[ACCURACY_FEATURE] = -sharpness * weights.accuracy * 10.0;
    }

    /// Hidden width.
    pub fn hidden(&self) -> usize {
        self.layers[0].outputs
    }

    /// Logits of `n` candidates whose features are `features` (`n * FEATURES`), into `logits`.
    ///
    /// Runs [`LANES`] candidates at a time through each layer; bit-identical to
    /// [`PolicyWeights::logits_one_by_one`] (checked by a unit test), several times faster.
    pub fn logits(&self, features: &[f32], n: usize, logits: &mut Vec<f32>, scratch: &mut Scratch) {
        let h = self.hidden();
        let zero = [0.0f32; LANES];
        scratch.x_lanes.resize(FEATURES, zero);
        scratch.h1_lanes.resize(h, zero);
        scratch.h2_lanes.resize(h, zero);
        logits.clear();
        let (mut out, mut skip) = ([zero], [zero]);
        for start in (0..n).step_by(LANES) {
            let m = (n - start).min(LANES);
            let block = &features[start * FEATURES..(start + m) * FEATURES];
            for (i, lanes) in scratch.x_lanes.iter_mut().enumerate() {
                for (l, x) in lanes.iter_mut().enumerate() {
                    *x = if l < m { block[l * FEATURES + i] } else { 0.0 };
                }
            }
            self.layers[0].forward_lanes(&scratch.x_lanes, &mut scratch.h1_lanes, true);
            self.layers[1].forward_lanes(&scratch.h1_lanes, &mut scratch.h2_lanes, true);
            self.layers[2].forward_lanes(&scratch.h2_lanes, &mut out, false);
            self.layers[6].forward_lanes(&scratch.x_lanes, &mut skip, false);
            logits.extend((0..m).map(|l| out[0][l] + skip[0][l]));
        }
    }

    /// The same logits as [`PolicyWeights::logits`], one candidate at a time: the reference
    /// the blocked pass is checked against, and what deciding ran before it.
    pub fn logits_one_by_one(
        &self,
        features: &[f32],
        n: usize,
        logits: &mut Vec<f32>,
        scratch: &mut Scratch,
    ) {
        let h = self.hidden();
        scratch.h1.resize(h, 0.0);
        scratch.h2.resize(h, 0.0);
        logits.clear();
        let mut out = [0.0f32];
        for k in 0..n {
            let x = &features[k * FEATURES..(k + 1) * FEATURES];
            self.layers[0].forward(x, &mut scratch.h1, true);
            self.layers[1].forward(&scratch.h1, &mut scratch.h2, true);
            self.layers[2].forward(&scratch.h2, &mut out, false);
            let mut skip = [0.0f32];
            self.layers[6].forward(x, &mut skip, false);
            logits.push(out[0] + skip[0]);
        }
    }

    /// The critic's value of a decision with `n` candidates.
    pub fn value(&self, features: &[f32], n: usize, scratch: &mut Scratch) -> f32 {
        let h = self.hidden();
        scratch.h1.resize(h, 0.0);
        scratch.h2.resize(h, 0.0);
        scratch.pooled.clear();
        scratch.pooled.resize(h, 0.0);
        for k in 0..n {
            let x = &features[k * FEATURES..(k + 1) * FEATURES];
            self.layers[3].forward(x, &mut scratch.h1, true);
            scratch
                .pooled
                .iter_mut()
                .zip(&scratch.h1)
                .for_each(|(p, v)| *p += v);
        }
        let inv = 1.0 / n.max(1) as f32;
        scratch.pooled.iter_mut().for_each(|p| *p *= inv);
        self.layers[4].forward(&scratch.pooled, &mut scratch.h2, true);
        let mut out = [0.0f32];
        self.layers[5].forward(&scratch.h2, &mut out, false);
        out[0]
    }
}

/// The same network as candle variables, for training.
pub struct CandleNet {
    /// `(weight [out, in], bias [out])` per layer, as [`LAYER_NAMES`].
    pub vars: Vec<(Var, Var)>,
}

impl CandleNet {
    /// Variables holding `weights`.
    pub fn new(weights: &PolicyWeights) -> candle_core::Result<Self> {
        let vars = weights
            .layers
            .iter()
            .map(|l| {
                Ok((
                    Var::from_tensor(&Tensor::from_slice(
                        &l.weight,
                        (l.outputs, l.inputs),
                        &Device::Cpu,
                    )?)?,
                    Var::from_tensor(&Tensor::from_slice(&l.bias, l.outputs, &Device::Cpu)?)?,
                ))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { vars })
    }

    /// All variables, for the optimizer.
    pub fn all_vars(&self) -> Vec<Var> {
        self.vars
            .iter()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect()
    }

    fn linear(&self, layer: usize, x: &Tensor) -> candle_core::Result<Tensor> {
        let (w, b) = &self.vars[layer];
        x.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())
    }

    /// Logits `[m, k]` of features `[m, k, FEATURES]`, with masked candidates (mask 0) at -1e9.
    pub fn masked_logits(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (m, k, f) = x.dims3()?;
        let flat = x.reshape((m * k, f))?;
        let h = self.linear(0, &flat)?.relu()?;
        let h = self.linear(1, &h)?.relu()?;
        let logits = (self.linear(2, &h)? + self.linear(6, &flat)?)?.reshape((m, k))?;
        logits.mul(mask)?.add(&mask.affine(1e9, -1e9)?)
    }

    /// Values `[m]` of features `[m, k, FEATURES]` pooled over the valid candidates.
    pub fn values(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (m, k, f) = x.dims3()?;
        let h = self.linear(3, &x.reshape((m * k, f))?)?.relu()?;
        let h = h.reshape((m, k, ()))?.broadcast_mul(&mask.unsqueeze(2)?)?;
        let count = mask.sum_keepdim(1)?.clamp(1.0, f64::MAX)?;
        let pooled = h.sum(1)?.broadcast_div(&count)?;
        let h = self.linear(4, &pooled)?.relu()?;
        self.linear(5, &h)?.squeeze(1)
    }

    /// The current weights as plain vectors.
    pub fn weights(&self) -> candle_core::Result<PolicyWeights> {
        let layers = self
            .vars
            .iter()
            .map(|(w, b)| {
                let (outputs, inputs) = w.as_tensor().dims2()?;
                Ok(Dense {
                    inputs,
                    outputs,
                    weight: w
                        .as_tensor()
                        .flatten_all()?
                        .to_dtype(DType::F32)?
                        .to_vec1()?,
                    bias: b.as_tensor().to_vec1()?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(PolicyWeights { layers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_plain_forward_pass_matches_candle() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut weights = PolicyWeights::init(8, &mut rng);
        weights.greedy_prior(&crate::reward::RewardPreset::Balanced.weights(), 0.5);
        weights.layers[2] = Dense::orthogonal(8, 1, 1.0, &mut rng);
        let n = 5;
        let features: Vec<f32> = (0..n * FEATURES)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect();
        let mut logits = Vec::new();
        let mut scratch = Scratch::default();
        weights.logits(&features, n, &mut logits, &mut scratch);
        let value = weights.value(&features, n, &mut scratch);

        let net = CandleNet::new(&weights).unwrap();
        // Pad to 7 candidates; the two padded ones are masked.
        let mut padded = features.clone();
        padded.extend(vec![9.0; 2 * FEATURES]);
        let x = Tensor::from_slice(&padded, (1, 7, FEATURES), &Device::Cpu).unwrap();
        let mask =
            Tensor::from_slice(&[1f32, 1., 1., 1., 1., 0., 0.], (1, 7), &Device::Cpu).unwrap();
        let c_logits: Vec<f32> = net
            .masked_logits(&x, &mask)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let c_value: Vec<f32> = net.values(&x, &mask).unwrap().to_vec1().unwrap();
        for k in 0..n {
            assert!((logits[k] - c_logits[k]).abs() < 1e-4);
        }
        let mut one_by_one = Vec::new();
        weights.logits_one_by_one(&features, n, &mut one_by_one, &mut scratch);
        assert_eq!(one_by_one, logits);
        assert!(c_logits[5] < -1e8);
        assert!((value - c_value[0]).abs() < 1e-4);
        assert_eq!(net.weights().unwrap(), weights);
    }

    #[test]
    fn the_greedy_prior_ignores_the_queue_features() {
        use crate::ppo::features::QUEUE_FEATURES;
        let mut rng = StdRng::seed_from_u64(4);
        let mut weights = PolicyWeights::init(8, &mut rng);
        weights.greedy_prior(&crate::reward::RewardPreset::Balanced.weights(), 20.0);
        assert!(weights.layers[6].weight[QUEUE_FEATURES..]
            .iter()
            .all(|&w| w == 0.0));
        let n = 6;
        let features: Vec<f32> = (0..n * FEATURES).map(|_| rng.gen_range(0.0..1.0)).collect();
        let mut moved = features.clone();
        for row in moved.chunks_mut(FEATURES) {
            row[QUEUE_FEATURES..].iter_mut().for_each(|f| *f += 3.0);
        }
        let (mut a, mut b, mut scratch) = (Vec::new(), Vec::new(), Scratch::default());
        weights.logits(&features, n, &mut a, &mut scratch);
        weights.logits(&moved, n, &mut b, &mut scratch);
        assert_eq!(a, b, "the prior's logits are greedy's cost alone");
    }

    #[test]
    fn the_blocked_forward_pass_is_bit_identical_to_one_candidate_at_a_time() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut weights = PolicyWeights::init(32, &mut rng);
        weights.greedy_prior(&crate::reward::RewardPreset::Efficiency.weights(), 20.0);
        weights.layers[2] = Dense::orthogonal(32, 1, 1.0, &mut rng);
        weights.layers[2].bias[0] = 0.3;
        let mut scratch = Scratch::default();
        let (mut blocked, mut reference) = (Vec::new(), Vec::new());
        // Partial blocks, whole blocks, several blocks; wide-ranging inputs.
        for n in [0, 1, 3, LANES - 1, LANES, LANES + 1, 3 * LANES + 5, 200] {
            let features: Vec<f32> = (0..n * FEATURES)
                .map(|_| rng.gen_range(-1.0f32..1.0) * 10f32.powi(rng.gen_range(-3..4)))
                .collect();
            weights.logits(&features, n, &mut blocked, &mut scratch);
            weights.logits_one_by_one(&features, n, &mut reference, &mut scratch);
            assert_eq!(blocked.len(), n);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&blocked), bits(&reference), "{n} candidates");
            assert!(n < 2 || blocked.iter().any(|&l| l != blocked[0]));
        }
    }
}
