//! The pure half of `slim demo --compare`, part two: the plain sentence under the table. It
//! claims a difference between routers only where one run per router supports it: at least
//! [`NOISE_SHARE`] apart and a 95 % bootstrap interval over requests that excludes zero.

use std::fmt::Write as _;

use slim_router::eval::bootstrap::Interval;

use super::rows::{mean, p50, p99, Row};

/// Bootstrap resamples per comparison.
const RESAMPLES: usize = 1000;
/// A difference smaller than this share of the larger value is noise, whatever its interval
/// says: one run per router on a shared machine does not see run-to-run variation.
pub const NOISE_SHARE: f64 = 0.10;

/// SplitMix64, enough to resample with a fixed seed.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// 95 % percentile bootstrap interval of `stat(a) − stat(b)`, resampling each run's requests
/// independently (the runs are not paired request by request).
fn interval(a: &[f64], b: &[f64], stat: fn(&mut [f64]) -> f64) -> Interval {
    let estimate = stat(&mut a.to_vec()) - stat(&mut b.to_vec());
    let mut rng = SplitMix(0x5117_C0DE);
    let (mut ra, mut rb) = (a.to_vec(), b.to_vec());
    let mut diffs: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            for x in ra.iter_mut() {
                *x = a[rng.below(a.len())];
            }
            for x in rb.iter_mut() {
                *x = b[rng.below(b.len())];
            }
            stat(&mut ra) - stat(&mut rb)
        })
        .collect();
    diffs.sort_by(f64::total_cmp);
    let at = |p: f64| diffs[((RESAMPLES - 1) as f64 * p).round() as usize];
    Interval {
        estimate,
        lo: at(0.025),
        hi: at(0.975),
    }
}

/// Whether `a` is clearly lower than `b`: the interval of the difference lies below zero and
/// the difference is at least [`NOISE_SHARE`] of `b`.
fn clearly_lower(a: &[f64], b: &[f64], stat: fn(&mut [f64]) -> f64) -> bool {
    let i = interval(a, b, stat);
    let reference = stat(&mut b.to_vec()).abs();
    i.hi < 0.0 && -i.estimate >= NOISE_SHARE * reference
}

/// A router's figure for one metric, with the per-request values behind it.
type Figure<'a> = (&'a Row, f64, &'a [f64]);

fn shown(r: &Figure<'_>, unit: &str) -> String {
    format!("{} ({:.2} {unit})", r.0.name, r.1)
}

/// One metric, lower is better: which routers are lowest, within noise of each other, and
/// which are clearly higher.
fn metric_sentence(
    what: &str,
    unit: &str,
    mut figures: Vec<Figure<'_>>,
    stat: fn(&mut [f64]) -> f64,
) -> String {
    figures.sort_by(|a, b| a.1.total_cmp(&b.1));
    let Some(best) = figures.first().copied() else {
        return format!("{what}: no router has figures.");
    };
    let (tied, higher): (Vec<Figure<'_>>, Vec<Figure<'_>>) = figures
        .iter()
        .copied()
        .partition(|r| !clearly_lower(best.2, r.2, stat));
    if higher.is_empty() {
        let hi = figures.last().map_or(best.1, |r| r.1);
        return format!(
            "{what}: all within noise of each other ({:.2}–{hi:.2} {unit}).",
            best.1
        );
    }
    let others: Vec<String> = tied[1..].iter().map(|r| shown(r, unit)).collect();
    let mut s = format!("{what}: lowest is {}", shown(&best, unit));
    if !others.is_empty() {
        let _ = write!(s, "; within noise of it: {}", others.join(", "));
    }
    let higher: Vec<String> = higher.iter().map(|r| shown(r, unit)).collect();
    let _ = write!(s, "; clearly higher: {}.", higher.join(", "));
    s
}

/// The plain statement under the table: losses, then latency, energy and accuracy, claiming a
/// difference only where the numbers support one.
pub fn takeaway(rows: &[Row]) -> String {
    let mut parts = Vec::new();
    let failing: Vec<String> = rows
        .iter()
        .filter(|r| r.lost + r.errored > 0)
        .map(|r| {
            format!(
                "{} lost {} and got {} errors of {} sent",
                r.name, r.lost, r.errored, r.sent
            )
        })
        .collect();
    if failing.is_empty() {
        parts.push("Every router answered every request.".to_string());
    } else {
        parts.push(format!("{}.", failing.join("; ")));
    }
    let answered: Vec<&Row> = rows.iter().filter(|r| r.answered > 1).collect();
    let latency = |value: fn(&Row) -> f64| -> Vec<Figure<'_>> {
        answered
            .iter()
            .map(|r| (*r, value(r), r.latencies.as_slice()))
            .collect()
    };
    parts.push(metric_sentence(
        "p50 latency",
        "ms",
        latency(|r| r.p50_ms),
        p50,
    ));
    parts.push(metric_sentence(
        "p99 latency",
        "ms",
        latency(|r| r.p99_ms),
        p99,
    ));
    let energy: Vec<Figure<'_>> = answered
        .iter()
        .filter(|r| r.energies_mj.len() > 1)
        .map(|r| (*r, r.energy_mj, r.energies_mj.as_slice()))
        .collect();
    parts.push(metric_sentence("Energy per result", "mJ", energy, mean));
    let acc: Vec<(&str, f64)> = rows
        .iter()
        .filter_map(|r| r.top1.map(|a| (r.name.as_str(), a)))
        .collect();
    let lo = acc.iter().min_by(|a, b| a.1.total_cmp(&b.1));
    let hi = acc.iter().max_by(|a, b| a.1.total_cmp(&b.1));
    if let (Some(lo), Some(hi)) = (lo, hi) {
        if hi.1 - lo.1 < 0.005 {
            parts.push(format!(
                "Implied top-1 within half a point for all ({:.2}–{:.2} %).",
                100.0 * lo.1,
                100.0 * hi.1
            ));
        } else {
            parts.push(format!(
                "Implied top-1 follows the widths chosen: {:.2} % ({}) to {:.2} % ({}).",
                100.0 * lo.1,
                lo.0,
                100.0 * hi.1,
                hi.0
            ));
        }
    }
    parts.push(format!(
        "(One run per router: a difference counts only when it is at least {:.0} % and its 95 % bootstrap interval over requests excludes zero; run-to-run variation is not in that interval, so rerun before trusting a gap.)",
        100.0 * NOISE_SHARE
    ));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::demo::compare::rows::tests::{answers, run, spread};
    use crate::commands::demo::compare::rows::RouterRun;

    #[test]
    fn routers_within_noise_are_called_so() {
        let rows: Vec<Row> = [("random", 2.0), ("greedy", 2.05), ("ppo:efficiency", 1.98)]
            .iter()
            .map(|(n, c)| Row::of(&run(n, answers(&spread(*c), 0.5, 0.02, Some(0.97)))))
            .collect();
        let s = takeaway(&rows);
        assert!(s.starts_with("Every router answered every request."), "{s}");
        assert!(s.contains("p50 latency: all within noise"), "{s}");
        assert!(s.contains("Energy per result: all within noise"), "{s}");
        assert!(s.contains("Implied top-1 within half a point"), "{s}");
        assert!(!s.contains("clearly"), "{s}");
    }

    #[test]
    fn clear_differences_name_the_best_and_the_worse() {
        let rows = vec![
            Row::of(&RouterRun {
                lost: 3,
                sent: 203,
                ..run("random", answers(&spread(10.0), 1.0, 0.05, Some(0.99)))
            }),
            Row::of(&run("greedy", answers(&spread(2.0), 0.5, 0.02, Some(0.98)))),
            Row::of(&run(
                "ppo:efficiency",
                answers(&spread(2.1), 0.25, 0.01, Some(0.95)),
            )),
        ];
        let s = takeaway(&rows);
        assert!(
            s.contains("random lost 3 and got 0 errors of 203 sent"),
            "{s}"
        );
        assert!(
            s.contains("p50 latency: lowest is greedy (2.00 ms); within noise of it: ppo:efficiency (2.10 ms); clearly higher: random (10.01 ms)."),
            "{s}"
        );
        assert!(s.contains("Energy per result: lowest is ppo:efficiency (10.00 mJ); clearly higher: greedy (20.00 mJ), random (50.00 mJ)."), "{s}");
        assert!(
            s.contains("95.00 % (ppo:efficiency) to 99.00 % (random)"),
            "{s}"
        );
    }

    #[test]
    fn a_small_but_consistent_gap_is_still_noise() {
        // 5 % apart: the interval excludes zero, but one run cannot tell that from run noise.
        let a = spread(2.0);
        let b: Vec<f64> = a.iter().map(|v| v * 1.05).collect();
        assert!(interval(&a, &b, p50).hi < 0.0);
        assert!(!clearly_lower(&a, &b, p50));
        assert!(clearly_lower(&a, &spread(2.5), p50));
    }
}
