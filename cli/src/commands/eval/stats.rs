//! The pure arithmetic of `slim eval`: per-run metrics, mean ± std over seeds, CDFs.

use slim_router::sim::RequestRecord;

/// Mean and sample standard deviation of a few values.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MeanStd {
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator; 0 for a single value).
    pub std: f64,
}

impl MeanStd {
    /// Mean and sample standard deviation of `values` (zeros when empty).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self::default();
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n < 2 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        Self { mean, std }
    }

    /// `mean ± std` with `decimals` decimals.
    pub fn show(&self, decimals: usize) -> String {
        format!("{:.*} ± {:.*}", decimals, self.mean, decimals, self.std)
    }
}

/// Two-sided 95 % quantile of Student's t with `df` degrees of freedom (the normal 1.96 beyond
/// 30; a table, since the only crate that computes it would pull in a linear-algebra library).
pub fn t95(df: usize) -> f64 {
    const T95: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T95[df - 1],
        _ => 1.96,
    }
}

/// Mean of independent runs with its 95 % confidence interval (Student's t).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MeanCi {
    /// Arithmetic mean.
    pub mean: f64,
    /// Half-width of the interval (NaN for fewer than two runs).
    pub half: f64,
    /// Runs.
    pub n: usize,
}

impl MeanCi {
    /// The mean of the finite `values` and its interval.
    pub fn of(values: &[f64]) -> Self {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let n = finite.len();
        if n == 0 {
            return Self {
                mean: f64::NAN,
                half: f64::NAN,
                n,
            };
        }
        let m = MeanStd::of(&finite);
        let half = if n < 2 {
            f64::NAN
        } else {
            t95(n - 1) * m.std / (n as f64).sqrt()
        };
        Self {
            mean: m.mean,
            half,
            n,
        }
    }

    /// `mean [lo, hi]` with `decimals` decimals; `—` without values, the mean alone for one.
    pub fn show(&self, decimals: usize) -> String {
        match self.n {
            0 => "—".into(),
            1 => format!("{:.*}", decimals, self.mean),
            _ => format!(
                "{:.*} [{:.*}, {:.*}]",
                decimals,
                self.mean,
                decimals,
                self.mean - self.half,
                decimals,
                self.mean + self.half
            ),
        }
    }
}

/// What one run (one seed) of one router measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunMetrics {
    /// Mean end-to-end latency, ms.
    pub latency_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// Mean energy per request, mJ.
    pub energy_mj: f64,
    /// Mean top-1 accuracy of the widths that ran (0–1).
    pub accuracy: f64,
    /// Finished requests per second of (simulated or wall) time.
    pub throughput: f64,
    /// Fraction of requests with a deadline that met it (1 when none had one).
    pub attainment: f64,
    /// Mean width.
    pub width: f64,
}

impl RunMetrics {
    /// Metrics of simulator records over a run that lasted `duration_ms`.
    pub fn from_records(records: &[RequestRecord], duration_ms: f64) -> Self {
        let n = records.len();
        if n == 0 {
            return Self::default();
        }
        let nf = n as f64;
        let mut latencies: Vec<f64> = records
            .iter()
            .map(|r| f64::from(r.outcome.latency_ms))
            .collect();
        latencies.sort_by(f64::total_cmp);
        let with_deadline = records
            .iter()
            .filter(|r| r.outcome.deadline_met.is_some())
            .count();
        let met = records
            .iter()
            .filter(|r| r.outcome.deadline_met == Some(true))
            .count();
        Self {
            latency_ms: latencies.iter().sum::<f64>() / nf,
            p95_ms: percentile(&latencies, 0.95),
            energy_mj: records
                .iter()
                .map(|r| f64::from(r.outcome.energy_mj))
                .sum::<f64>()
                / nf,
            accuracy: records
                .iter()
                .map(|r| f64::from(r.outcome.top1))
                .sum::<f64>()
                / nf,
            throughput: nf / (duration_ms / 1000.0).max(1e-9),
            attainment: if with_deadline == 0 {
                1.0
            } else {
                met as f64 / with_deadline as f64
            },
            width: records.iter().map(|r| f64::from(r.width)).sum::<f64>() / nf,
        }
    }
}

/// Every metric of several runs, as mean ± std over the runs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Aggregate {
    /// Runs aggregated.
    pub runs: usize,
    /// Mean latency, ms.
    pub latency_ms: MeanStd,
    /// 95th percentile latency, ms.
    pub p95_ms: MeanStd,
    /// Energy per request, mJ.
    pub energy_mj: MeanStd,
    /// Accuracy (0–1).
    pub accuracy: MeanStd,
    /// Throughput, requests/s.
    pub throughput: MeanStd,
    /// Deadline attainment (0–1).
    pub attainment: MeanStd,
    /// Width.
    pub width: MeanStd,
}

impl Aggregate {
    /// Mean ± std over `runs` of each metric.
    pub fn of(runs: &[RunMetrics]) -> Self {
        let field =
            |f: fn(&RunMetrics) -> f64| MeanStd::of(&runs.iter().map(f).collect::<Vec<_>>());
        Self {
            runs: runs.len(),
            latency_ms: field(|r| r.latency_ms),
            p95_ms: field(|r| r.p95_ms),
            energy_mj: field(|r| r.energy_mj),
            accuracy: field(|r| r.accuracy),
            throughput: field(|r| r.throughput),
            attainment: field(|r| r.attainment),
            width: field(|r| r.width),
        }
    }
}

/// The value below which a fraction `p` of `sorted` lies (nearest rank; 0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize]
}

/// The empirical CDF of `values` at `points` evenly spaced quantiles, as (value, fraction ≤
/// value) pairs in increasing order; the last pair is (max, 1).
pub fn cdf(values: &[f64], points: usize) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() || points == 0 {
        return Vec::new();
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let points = points.min(n).max(1);
    (1..=points)
        .map(|i| {
            // rank of the i-th of `points` evenly spaced quantiles, 1-based, the last is n
            let rank = (i * n).div_ceil(points);
            (sorted[rank - 1], rank as f64 / n as f64)
        })
        .collect()
}

/// Percentage cut of `value` against `baseline` (positive: lower than the baseline).
pub fn cut_percent(value: f64, baseline: f64) -> f64 {
    if baseline == 0.0 {
        f64::NAN
    } else {
        100.0 * (1.0 - value / baseline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mean_of_three_runs_gets_a_student_t_interval() {
        // mean 2, sample std 1, n 3: half-width 4.303 / sqrt(3)
        let ci = MeanCi::of(&[1.0, 2.0, 3.0]);
        assert!((ci.mean - 2.0).abs() < 1e-12);
        assert!((ci.half - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(ci.show(2), "2.00 [-0.48, 4.48]");
        assert_eq!(MeanCi::of(&[5.0]).show(1), "5.0");
        assert_eq!(MeanCi::of(&[f64::NAN]).show(1), "—");
        assert_eq!(MeanCi::of(&[1.0, f64::NAN, 3.0]).n, 2);
        assert_eq!(t95(1000), 1.96);
    }
    use slim_router::reward::Outcome;

    fn record(
        latency_ms: f32,
        energy_mj: f32,
        top1: f32,
        deadline_met: Option<bool>,
    ) -> RequestRecord {
        RequestRecord {
            arrival_ms: 0.0,
            model: 0,
            device: 0,
            width: 0.5,
            batch: 1,
            outcome: Outcome {
                latency_ms,
                energy_mj,
                top1,
                deadline_met,
            },
        }
    }

    #[test]
    fn mean_and_sample_standard_deviation_over_seeds() {
        let m = MeanStd::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((m.mean - 5.0).abs() < 1e-12);
        // sum of squares 32 over n - 1 = 7
        assert!((m.std - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(
            MeanStd::of(&[3.0]),
            MeanStd {
                mean: 3.0,
                std: 0.0
            }
        );
        assert_eq!(MeanStd::of(&[]), MeanStd::default());
        assert_eq!(m.show(1), "5.0 ± 2.1");
    }

    #[test]
    fn the_cdf_rises_to_one_at_the_largest_value() {
        let values: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let c = cdf(&values, 5);
        assert_eq!(
            c,
            vec![(2.0, 0.2), (4.0, 0.4), (6.0, 0.6), (8.0, 0.8), (10.0, 1.0)]
        );
        // more points than values: one point per value
        assert_eq!(cdf(&[1.0, 3.0], 100), vec![(1.0, 0.5), (3.0, 1.0)]);
        assert!(cdf(&[], 10).is_empty());
        assert!(cdf(&[f64::NAN], 10).is_empty());
    }

    #[test]
    fn run_metrics_count_deadline_attainment_only_over_requests_with_a_deadline() {
        let records = [
            record(10.0, 2.0, 0.8, Some(true)),
            record(30.0, 4.0, 0.6, Some(false)),
            record(20.0, 6.0, 0.7, None),
        ];
        let m = RunMetrics::from_records(&records, 1500.0);
        assert!((m.latency_ms - 20.0).abs() < 1e-9);
        assert!((m.energy_mj - 4.0).abs() < 1e-9);
        assert!((m.accuracy - 0.7).abs() < 1e-6);
        assert!((m.throughput - 2.0).abs() < 1e-9);
        assert!((m.attainment - 0.5).abs() < 1e-12);
        assert_eq!(m.p95_ms, 30.0);
        let none = RunMetrics::from_records(&[record(1.0, 1.0, 1.0, None)], 1.0);
        assert_eq!(none.attainment, 1.0);
    }

    #[test]
    fn aggregates_are_taken_per_metric_over_runs() {
        let a = RunMetrics {
            latency_ms: 10.0,
            energy_mj: 1.0,
            ..Default::default()
        };
        let b = RunMetrics {
            latency_ms: 20.0,
            energy_mj: 3.0,
            ..Default::default()
        };
        let agg = Aggregate::of(&[a, b]);
        assert_eq!(agg.runs, 2);
        assert!((agg.latency_ms.mean - 15.0).abs() < 1e-12);
        assert!((agg.energy_mj.mean - 2.0).abs() < 1e-12);
        assert!((agg.latency_ms.std - 50f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn a_cut_is_positive_when_lower_than_the_baseline() {
        assert!((cut_percent(3.55, 100.0) - 96.45).abs() < 1e-9);
        assert!(cut_percent(200.0, 100.0) < 0.0);
        assert!(cut_percent(1.0, 0.0).is_nan());
    }
}
