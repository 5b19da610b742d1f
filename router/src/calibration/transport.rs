//! The delay a request spends outside the agents, as an empirical distribution.

use serde::{Deserialize, Serialize};

/// Quantiles kept of the measured delays: 0 %, 1 %, …, 100 %.
const QUANTILES: usize = 101;

/// Measured end-to-end latency minus the agent's own time (queue + compute + hand-off), as
/// evenly spaced quantiles; [`Transport::sample`] draws from it by inverse transform with linear
/// interpolation between quantiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transport {
    /// Results it was measured on.
    pub samples: u32,
    /// Mean delay, ms.
    pub mean_ms: f64,
    /// Delays at quantiles 0, 1/(n−1), …, 1, ms (non-decreasing).
    pub quantiles_ms: Vec<f64>,
}

impl Transport {
    /// The distribution of `delays_ms` (negative delays, from clock rounding, count as 0);
    /// `None` without a delay.
    pub fn from_samples(delays_ms: &[f64]) -> Option<Self> {
        if delays_ms.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = delays_ms.iter().map(|d| d.max(0.0)).collect();
        sorted.sort_by(f64::total_cmp);
        let last = (sorted.len() - 1) as f64;
        let quantiles_ms = (0..QUANTILES)
            .map(|i| {
                let at = last * i as f64 / (QUANTILES - 1) as f64;
                let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
                sorted[lo] + (at - lo as f64) * (sorted[hi] - sorted[lo])
            })
            .collect();
        Some(Self {
            samples: sorted.len().try_into().unwrap_or(u32::MAX),
            mean_ms: sorted.iter().sum::<f64>() / sorted.len() as f64,
            quantiles_ms,
        })
    }

    /// Checks what a file could get wrong: at least two quantiles, finite, non-negative and
    /// non-decreasing.
    pub fn check(&self) -> Result<(), String> {
        let q = &self.quantiles_ms;
        if q.len() < 2 {
            return Err("transport needs at least two quantiles".into());
        }
        if q.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err("transport quantiles must be finite and non-negative".into());
        }
        if q.windows(2).any(|w| w[1] < w[0]) {
            return Err("transport quantiles must not decrease".into());
        }
        Ok(())
    }

    /// The mean delay, ms.
    pub fn mean_ms(&self) -> f64 {
        self.mean_ms
    }

    /// The delay at probability `u` in [0, 1], ms.
    pub fn sample(&self, u: f64) -> f64 {
        let q = &self.quantiles_ms;
        let at = u.clamp(0.0, 1.0) * (q.len() - 1) as f64;
        let lo = (at.floor() as usize).min(q.len() - 1);
        let hi = (lo + 1).min(q.len() - 1);
        q[lo] + (at - lo as f64) * (q[hi] - q[lo])
    }

    /// The delay at quantile `p` in [0, 1], ms (the same interpolation as [`Transport::sample`]).
    pub fn quantile(&self, p: f64) -> f64 {
        self.sample(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_the_samples_and_sampling_inverts_them() {
        let delays: Vec<f64> = (0..=100).map(f64::from).collect();
        let t = Transport::from_samples(&delays).unwrap();
        assert_eq!(t.samples, 101);
        assert!((t.mean_ms - 50.0).abs() < 1e-9);
        assert_eq!(t.quantiles_ms.len(), QUANTILES);
        assert!((t.quantile(0.5) - 50.0).abs() < 1e-9);
        assert!((t.quantile(0.95) - 95.0).abs() < 1e-9);
        assert!((t.sample(0.0)).abs() < 1e-9);
        assert!((t.sample(1.0) - 100.0).abs() < 1e-9);
        // between two quantiles: linear
        assert!((t.sample(0.025) - 2.5).abs() < 1e-9);
        t.check().unwrap();
    }

    #[test]
    fn the_mean_of_many_draws_matches_a_skewed_distribution() {
        let delays: Vec<f64> = (0..1000)
            .map(|i| if i % 10 == 0 { 20.0 } else { 1.0 })
            .collect();
        let t = Transport::from_samples(&delays).unwrap();
        let n = 10_000;
        let drawn = (0..n)
            .map(|i| t.sample((i as f64 + 0.5) / n as f64))
            .sum::<f64>()
            / n as f64;
        assert!((drawn - t.mean_ms).abs() < 0.2, "{drawn} vs {}", t.mean_ms);
    }

    #[test]
    fn no_samples_is_no_distribution_and_bad_files_are_refused() {
        assert!(Transport::from_samples(&[]).is_none());
        let single = Transport::from_samples(&[-0.2]).unwrap();
        assert_eq!(single.quantile(0.7), 0.0);
        let mut bad = Transport::from_samples(&[1.0, 2.0]).unwrap();
        bad.quantiles_ms[3] = 100.0;
        assert!(bad.check().unwrap_err().contains("decrease"));
        bad.quantiles_ms = vec![1.0];
        assert!(bad.check().is_err());
        bad.quantiles_ms = vec![f64::NAN, 1.0];
        assert!(bad.check().is_err());
    }
}
