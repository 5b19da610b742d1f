//! Does a router keep up with the offered load? A run keeps up when its queues stay bounded:
//! it serves at least [`MIN_SERVED`] of the offered rate, and the mean latency of the requests
//! that arrived in the second half of the run is at most [`MAX_GROWTH`] × that of the first
//! half (plus a small absolute slack). An unbounded queue grows for as long as the run lasts, so
//! its second half waits about three times as long as its first.
//!
//! The served rate is the requests finished over the run's length less the drain a bounded
//! queue always has: the longest latency among requests that arrived in the first half. A
//! stable run's last requests wait no longer than its earlier ones, so its served rate equals
//! the offered one even when a run is short next to its slowest device's batch; an overloaded
//! run's last requests wait far longer than its first half's, and its served rate falls.

use serde::Serialize;

use crate::sim::RequestRecord;

/// Smallest served / offered rate of a run that keeps up.
pub const MIN_SERVED: f64 = 0.99;
/// Largest second-half / first-half mean latency of a run that keeps up.
pub const MAX_GROWTH: f64 = 1.5;

/// The keep-up test of one run.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct KeepUp {
    /// Requests that arrived per second of arrivals.
    pub offered_per_s: f64,
    /// Requests finished per second of the run, less the drain a bounded queue has (see the
    /// module's documentation).
    pub served_per_s: f64,
    /// Mean latency of the requests that arrived in the first half, ms.
    pub first_half_ms: f64,
    /// Mean latency of those that arrived in the second half, ms.
    pub second_half_ms: f64,
    /// Whether the run kept up.
    pub keeps_up: bool,
}

impl KeepUp {
    /// The test on `records` of a run where `arrived` requests arrived and the last one finished
    /// at `end_ms`; `slack_ms` is the absolute latency growth always allowed (a fraction of the
    /// models' reference latency, so microsecond jitter does not fail a run).
    pub fn of(records: &[RequestRecord], arrived: usize, end_ms: f64, slack_ms: f64) -> Self {
        let span_ms = records
            .iter()
            .map(|r| r.arrival_ms)
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let offered_per_s = arrived as f64 / (span_ms / 1000.0);
        let drain_ms = records
            .iter()
            .filter(|r| r.arrival_ms < span_ms / 2.0)
            .map(|r| f64::from(r.outcome.latency_ms))
            .fold(0.0f64, f64::max);
        let served_per_s = records.len() as f64 / ((end_ms - drain_ms).max(span_ms) / 1000.0);
        let half = |second: bool| {
            let (sum, n) = records
                .iter()
                .filter(|r| (r.arrival_ms >= span_ms / 2.0) == second)
                .fold((0.0, 0usize), |(s, n), r| {
                    (s + f64::from(r.outcome.latency_ms), n + 1)
                });
            sum / n.max(1) as f64
        };
        let (first_half_ms, second_half_ms) = (half(false), half(true));
        let keeps_up = arrived > 0
            && served_per_s >= MIN_SERVED * offered_per_s
            && second_half_ms <= MAX_GROWTH * first_half_ms + slack_ms;
        Self {
            offered_per_s,
            served_per_s,
            first_half_ms,
            second_half_ms,
            keeps_up,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::Outcome;

    fn record(arrival_ms: f64, latency_ms: f32) -> RequestRecord {
        RequestRecord {
            arrival_ms,
            model: 0,
            device: 0,
            width: 1.0,
            batch: 1,
            outcome: Outcome {
                latency_ms,
                energy_mj: 1.0,
                top1: 0.9,
                deadline_met: None,
            },
        }
    }

    #[test]
    fn a_steady_queue_keeps_up_and_a_growing_one_does_not() {
        let steady: Vec<RequestRecord> = (0..1000).map(|i| record(f64::from(i), 2.0)).collect();
        let k = KeepUp::of(&steady, 1000, 1001.0, 0.1);
        assert!(k.keeps_up, "{k:?}");
        // Each request waits for all before it: latency grows with time, the drain is long.
        let growing: Vec<RequestRecord> = (0..1000)
            .map(|i| record(f64::from(i), 1.0 + 0.5 * i as f32))
            .collect();
        let k = KeepUp::of(&growing, 1000, 1499.5, 0.1);
        assert!(
            !k.keeps_up && k.second_half_ms > 2.0 * k.first_half_ms,
            "{k:?}"
        );
    }

    #[test]
    fn dropped_requests_or_a_long_drain_fail_the_throughput_test() {
        let some: Vec<RequestRecord> = (0..900).map(|i| record(f64::from(i), 2.0)).collect();
        assert!(!KeepUp::of(&some, 1000, 901.0, 0.1).keeps_up);
        let all: Vec<RequestRecord> = (0..1000).map(|i| record(f64::from(i), 2.0)).collect();
        assert!(!KeepUp::of(&all, 1000, 1100.0, 0.1).keeps_up);
        // A short run whose slowest request (here one of 50 ms, repeated) outlasts the arrivals
        // still keeps up: that drain is no longer than the first half's.
        let slow: Vec<RequestRecord> = (0..1000)
            .map(|i| record(f64::from(i), if i % 100 == 0 { 50.0 } else { 2.0 }))
            .collect();
        assert!(KeepUp::of(&slow, 1000, 1049.0, 0.1).keeps_up);
    }
}
