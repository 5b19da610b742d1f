//! Paired percentile bootstrap: confidence intervals for the difference between two routers run
//! on the same seeds, and the verdict they support.

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

/// Resamples per interval.
pub const RESAMPLES: usize = 4000;
/// Seed of the resampling (fixed, so a report is reproducible).
const BOOTSTRAP_SEED: u64 = 0xB007_5742;

/// A point estimate and its 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// The statistic on the observed pairs.
    pub estimate: f64,
    /// 2.5th percentile of the bootstrap distribution.
    pub lo: f64,
    /// 97.5th percentile.
    pub hi: f64,
}

/// What an interval says about "a − b" for a metric where lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// The whole interval is below zero: a is lower (better).
    Better,
    /// The whole interval is above zero.
    Worse,
    /// The interval contains zero.
    NoSignificantDifference,
}

impl Verdict {
    /// The words the reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::NoSignificantDifference => "no significant difference",
        }
    }
}

impl Interval {
    /// The verdict on a difference `a − b` of a lower-is-better metric.
    pub fn verdict(&self) -> Verdict {
        if self.hi < 0.0 {
            Verdict::Better
        } else if self.lo > 0.0 {
            Verdict::Worse
        } else {
            Verdict::NoSignificantDifference
        }
    }

    /// `estimate [lo, hi]` with `decimals` decimals.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.*} [{:.*}, {:.*}]",
            decimals, self.estimate, decimals, self.lo, decimals, self.hi
        )
    }
}

/// 95 % interval of `stat` over pairs `(a[i], b[i])` resampled with replacement.
pub fn paired(a: &[f64], b: &[f64], stat: impl Fn(&[f64], &[f64]) -> f64) -> Interval {
    assert_eq!(a.len(), b.len(), "pairs need the same seeds");
    let n = a.len();
    let estimate = stat(a, b);
    if n < 2 {
        return Interval {
            estimate,
            lo: estimate,
            hi: estimate,
        };
    }
    let mut rng = StdRng::seed_from_u64(BOOTSTRAP_SEED);
    let (mut ra, mut rb) = (vec![0.0; n], vec![0.0; n]);
    let mut draws: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            for k in 0..n {
                let i = rng.gen_range(0..n);
                ra[k] = a[i];
                rb[k] = b[i];
            }
            stat(&ra, &rb)
        })
        .collect();
    draws.sort_by(f64::total_cmp);
    let at = |q: f64| draws[((RESAMPLES - 1) as f64 * q).round() as usize];
    Interval {
        estimate,
        lo: at(0.025),
        hi: at(0.975),
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Interval of the mean paired difference `mean(a − b)`.
pub fn mean_difference(a: &[f64], b: &[f64]) -> Interval {
    paired(a, b, |a, b| mean(a) - mean(b))
}

/// Interval of the cut of `a` against `b`, percent: `100 · (1 − mean(a) / mean(b))` (positive
/// when a is lower).
pub fn cut_percent(a: &[f64], b: &[f64]) -> Interval {
    paired(a, b, |a, b| 100.0 * (1.0 - mean(a) / mean(b).max(1e-300)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consistent_gap_is_significant_and_noise_is_not() {
        let b: Vec<f64> = (0..20).map(|i| 10.0 + f64::from(i % 5)).collect();
        let better: Vec<f64> = b.iter().map(|x| x - 1.0).collect();
        let d = mean_difference(&better, &b);
        assert!((d.estimate + 1.0).abs() < 1e-12 && d.hi < 0.0);
        assert_eq!(d.verdict(), Verdict::Better);
        assert_eq!(mean_difference(&b, &better).verdict(), Verdict::Worse);
        // Differences of ±1 alternating: mean 0, interval around it.
        let noisy: Vec<f64> = b
            .iter()
            .enumerate()
            .map(|(i, x)| if i % 2 == 0 { x + 1.0 } else { x - 1.0 })
            .collect();
        let d = mean_difference(&noisy, &b);
        assert!(d.lo < 0.0 && d.hi > 0.0);
        assert_eq!(d.verdict(), Verdict::NoSignificantDifference);
    }

    #[test]
    fn the_cut_interval_contains_its_estimate_and_is_reproducible() {
        let b: Vec<f64> = (0..20).map(|i| 100.0 + f64::from(i)).collect();
        let a: Vec<f64> = b
            .iter()
            .enumerate()
            .map(|(i, x)| x * if i % 3 == 0 { 0.4 } else { 0.6 })
            .collect();
        let c = cut_percent(&a, &b);
        assert!(
            c.lo <= c.estimate && c.estimate <= c.hi && c.lo > 30.0 && c.hi < 60.0,
            "{c:?}"
        );
        assert_eq!(c, cut_percent(&a, &b));
    }
}
