//! One sample per second for the dashboard's charts: throughput, agent-side queue and compute
//! time, the coordinator-side times of first placements, and decisions per width.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use slim_protocol::WidthKey;

/// One-second history samples kept (five minutes).
pub const HISTORY_SECONDS: usize = 300;

/// One second of activity.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HistorySample {
    /// Start of the second, coordinator clock.
    pub at_ms: u64,
    /// Requests the agents reported finished in this second.
    pub completed: u64,
    /// Mean agent-side latency (queue + compute) of those requests, ms.
    pub latency_ms: Option<f32>,
    /// Mean agent-side queue time of those requests, ms.
    pub queue_ms: Option<f32>,
    /// Mean agent-side compute time of those requests, ms.
    pub compute_ms: Option<f32>,
    /// Mean client send → coordinator arrival of the requests first placed in this second
    /// (those that carried `sent_at_ms`), ms; two clocks.
    pub client_hop_ms: Option<f32>,
    /// Mean coordinator arrival → assignment of the requests first placed in this second, ms.
    pub coordinator_ms: Option<f32>,
    /// Decisions made in this second, by width (`"0.25"`, `"1"`).
    pub widths: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: f64,
    n: u64,
}

impl Mean {
    fn add(&mut self, value: f64, weight: u64) {
        self.sum += value * weight as f64;
        self.n += weight;
    }

    fn get(&self) -> Option<f32> {
        (self.n > 0).then(|| (self.sum / self.n as f64) as f32)
    }
}

#[derive(Debug, Default)]
struct Bucket {
    start_ms: u64,
    queue: Mean,
    compute: Mean,
    client_hop: Mean,
    coordinator: Mean,
    widths: BTreeMap<WidthKey, u64>,
}

impl Bucket {
    fn starting(start_ms: u64) -> Self {
        Self {
            start_ms,
            ..Self::default()
        }
    }

    fn sample(&self) -> HistorySample {
        let total = (self.queue.n > 0)
            .then(|| ((self.queue.sum + self.compute.sum) / self.queue.n as f64) as f32);
        HistorySample {
            at_ms: self.start_ms,
            completed: self.queue.n,
            latency_ms: total,
            queue_ms: self.queue.get(),
            compute_ms: self.compute.get(),
            client_hop_ms: self.client_hop.get(),
            coordinator_ms: self.coordinator.get(),
            widths: self
                .widths
                .iter()
                .map(|(w, n)| (w.to_string(), *n))
                .collect(),
        }
    }
}

/// The samples and the second being filled.
#[derive(Debug)]
pub struct History {
    /// Closed seconds, oldest first.
    pub samples: VecDeque<HistorySample>,
    bucket: Bucket,
}

impl History {
    /// An empty history whose first second starts at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            samples: VecDeque::with_capacity(HISTORY_SECONDS),
            bucket: Bucket::starting(now_ms),
        }
    }

    /// A batch of `size` requests finished with these mean queue and compute times.
    pub fn batch(&mut self, size: u64, queue_ms: f32, compute_ms: f32) {
        self.bucket.queue.add(f64::from(queue_ms), size);
        self.bucket.compute.add(f64::from(compute_ms), size);
    }

    /// A request was first placed after these coordinator-side times.
    pub fn placement(&mut self, client_hop_ms: Option<f32>, coordinator_ms: f32) {
        if let Some(hop) = client_hop_ms {
            self.bucket.client_hop.add(f64::from(hop), 1);
        }
        self.bucket.coordinator.add(f64::from(coordinator_ms), 1);
    }

    /// A decision for `width`.
    pub fn decision(&mut self, width: WidthKey) {
        *self.bucket.widths.entry(width).or_default() += 1;
    }

    /// Closes every whole second up to `now_ms`.
    pub fn tick(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.bucket.start_ms) > 1000 * HISTORY_SECONDS as u64 {
            // Long silence (a suspended process): restart the history rather than fill it.
            self.samples.clear();
            self.bucket = Bucket::starting(now_ms);
            return;
        }
        while now_ms >= self.bucket.start_ms + 1000 {
            if self.samples.len() == HISTORY_SECONDS {
                self.samples.pop_front();
            }
            self.samples.push_back(self.bucket.sample());
            self.bucket = Bucket::starting(self.bucket.start_ms + 1000);
        }
    }
}
