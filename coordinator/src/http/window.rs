//! Sliding windows of timed samples and weighted percentiles over them. Pure: the caller passes
//! the clock (coordinator wall clock, ms).

use std::collections::VecDeque;

use serde::Serialize;

/// How far back the per-model and per-agent figures look.
pub const WINDOW_MS: u64 = 60_000;
/// Samples kept per window; beyond it the oldest go first, so at high rates a window covers
/// the latest `MAX_SAMPLES` samples rather than the whole minute.
pub const MAX_SAMPLES: usize = 8192;

/// The latest samples of one kind, at most [`WINDOW_MS`] old and at most [`MAX_SAMPLES`].
#[derive(Debug, Clone)]
pub struct Window<T> {
    samples: VecDeque<(u64, T)>,
}

impl<T> Default for Window<T> {
    fn default() -> Self {
        Self {
            samples: VecDeque::new(),
        }
    }
}

impl<T> Window<T> {
    /// Adds a sample taken at `at_ms`.
    pub fn push(&mut self, at_ms: u64, sample: T) {
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((at_ms, sample));
    }

    /// Drops samples older than the window as of `now_ms`.
    pub fn prune(&mut self, now_ms: u64) {
        let oldest = now_ms.saturating_sub(WINDOW_MS);
        while self.samples.front().is_some_and(|(at, _)| *at < oldest) {
            self.samples.pop_front();
        }
    }

    /// The samples, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> + Clone {
        self.samples.iter().map(|(_, s)| s)
    }

    /// True when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// p50 / p95 / p99 of a duration over a window, in ms, nearest-rank.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    /// Requests counted.
    pub n: u64,
    /// Median.
    pub p50: f32,
    /// 95th percentile.
    pub p95: f32,
    /// 99th percentile.
    pub p99: f32,
}

impl Percentiles {
    /// Weighted nearest-rank percentiles of `(value, weight)` pairs; `None` when the weights
    /// sum to 0. A value of weight k counts as k requests (a batch's figure, once per request).
    pub fn of(mut values: Vec<(f32, u32)>) -> Option<Self> {
        values.retain(|(v, w)| v.is_finite() && *w > 0);
        values.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n: u64 = values.iter().map(|(_, w)| u64::from(*w)).sum();
        if n == 0 {
            return None;
        }
        let rank = |q: f64| -> f32 {
            let target = ((q * n as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (v, w) in &values {
                seen += u64::from(*w);
                if seen >= target {
                    return *v;
                }
            }
            values.last().map_or(0.0, |(v, _)| *v)
        };
        Some(Self {
            n,
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_and_weighted() {
        let values = (1..=100).map(|v| (v as f32, 1)).collect();
        let p = Percentiles::of(values).unwrap();
        assert_eq!((p.n, p.p50, p.p95, p.p99), (100, 50.0, 95.0, 99.0));
        // A batch of 19 at 1 ms and one request at 10 ms: p50 and p95 are 1, p99 is 10.
        let p = Percentiles::of(vec![(10.0, 1), (1.0, 19)]).unwrap();
        assert_eq!((p.n, p.p50, p.p95, p.p99), (20, 1.0, 1.0, 10.0));
        assert_eq!(Percentiles::of(vec![(f32::NAN, 3), (2.0, 0)]), None);
    }

    #[test]
    fn a_window_forgets_old_samples_and_keeps_at_most_its_capacity() {
        let mut w = Window::default();
        w.push(0, 1);
        w.push(30_000, 2);
        w.prune(61_000);
        assert_eq!(w.iter().copied().collect::<Vec<_>>(), vec![2]);
        for i in 0..MAX_SAMPLES + 5 {
            w.push(61_000, i);
        }
        assert_eq!(w.iter().count(), MAX_SAMPLES);
        assert_eq!(w.iter().next(), Some(&5));
    }
}
