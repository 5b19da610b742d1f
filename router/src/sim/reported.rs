//! What a live coordinator knows of a device: its latest telemetry report plus the requests
//! assigned to it since (coordinator/src/state.rs, `AgentEntry::routing_outstanding`). With a
//! calibration that names the agents' telemetry interval, the simulator shows routers this view
//! instead of the device's exact state.

/// One (model, width) queue as a report gives it (the agent's `QueueStat`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueState {
    /// Requests waiting.
    pub depth: u32,
    /// How long the oldest has waited, ms.
    pub oldest_wait_ms: f32,
}

/// A device's state as of its latest report.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Requests queued or running.
    pub outstanding: u32,
    /// Requests queued.
    pub queue_depth: u32,
    /// Busy share of its instances.
    pub util: f32,
    /// Power draw, W.
    pub power_w: f32,
    /// Each (model, width) queue, in the simulator's queue order (empty before the first report).
    pub queues: Vec<QueueState>,
}

impl Snapshot {
    /// Queue `q` as reported (empty when the report has none).
    pub fn queue(&self, q: usize) -> QueueState {
        self.queues.get(q).copied().unwrap_or_default()
    }
}

/// The coordinator's view of one device between reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// When the next report arrives, ms.
    next_at: f64,
    /// The latest report.
    pub latest: Snapshot,
    /// Requests assigned since the latest report.
    assigned_since: u32,
    /// Smoothed compute time per request from the batches it finished (the coordinator's
    /// `per_request_ms`), ms.
    per_request_ms: Option<f32>,
    /// The same, as of the latest report.
    reported_per_request_ms: Option<f32>,
}

impl Reported {
    /// A device whose first report arrives at `first_at` ms; until then it reports idle.
    pub fn new(first_at: f64) -> Self {
        Self {
            next_at: first_at,
            latest: Snapshot {
                outstanding: 0,
                queue_depth: 0,
                util: 0.0,
                power_w: 0.0,
                queues: Vec::new(),
            },
            assigned_since: 0,
            per_request_ms: None,
            reported_per_request_ms: None,
        }
    }

    /// The phase of device `d`'s reports: spread over the interval (golden-ratio steps), as
    /// agents started at different times would be.
    pub fn first_report_at(d: usize, interval_ms: f64) -> f64 {
        interval_ms * ((d as f64 + 1.0) * 0.618_033_988_75).fract()
    }

    /// Takes a report if one was due by `now` (the device's state now stands for its state at
    /// the report: the simulator reads it lazily, at the next decision).
    pub fn refresh(&mut self, now: f64, interval_ms: f64, state: impl FnOnce() -> Snapshot) {
        if now < self.next_at {
            return;
        }
        self.latest = state();
        self.assigned_since = 0;
        self.reported_per_request_ms = self.per_request_ms;
        let missed = ((now - self.next_at) / interval_ms).floor() + 1.0;
        self.next_at += missed * interval_ms;
    }

    /// One more request assigned to the device.
    pub fn assigned(&mut self) {
        self.assigned_since += 1;
    }

    /// A batch of `n` finished in `latency_ms`.
    pub fn finished(&mut self, latency_ms: f32, n: usize) {
        let per_request = latency_ms / n.max(1) as f32;
        self.per_request_ms = Some(
            self.per_request_ms
                .map_or(per_request, |p| 0.8 * p + 0.2 * per_request),
        );
    }

    /// Outstanding requests as the router sees them.
    pub fn outstanding(&self) -> u32 {
        self.latest.outstanding.saturating_add(self.assigned_since)
    }

    /// Backlog as the router sees it: outstanding × compute per request, ms.
    pub fn backlog_ms(&self) -> f32 {
        self.outstanding() as f32 * self.reported_per_request_ms.unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(outstanding: u32) -> Snapshot {
        Snapshot {
            outstanding,
            queue_depth: outstanding,
            util: 1.0,
            power_w: 20.0,
            queues: vec![QueueState {
                depth: outstanding,
                oldest_wait_ms: 1.0,
            }],
        }
    }

    #[test]
    fn between_reports_the_view_counts_assignments_and_never_completions() {
        let mut r = Reported::new(100.0);
        r.refresh(50.0, 500.0, || state(9));
        assert_eq!(r.outstanding(), 0, "no report before 100 ms");
        r.assigned();
        r.assigned();
        assert_eq!(r.outstanding(), 2);
        r.refresh(120.0, 500.0, || state(1));
        assert_eq!(r.outstanding(), 1, "the report replaces the count");
        assert_eq!(r.latest.queue(0).depth, 1, "queues as of the report");
        assert_eq!(
            r.latest.queue(3),
            QueueState::default(),
            "not in the report"
        );
        r.assigned();
        r.refresh(599.0, 500.0, || state(0));
        assert_eq!(r.outstanding(), 2, "next report at 600 ms");
        // three intervals skipped: the next one is due at 2100 ms
        r.refresh(1700.0, 500.0, || state(4));
        assert_eq!(r.outstanding(), 4);
        r.refresh(2099.0, 500.0, || state(7));
        assert_eq!(r.outstanding(), 4);
        r.refresh(2100.0, 500.0, || state(7));
        assert_eq!(r.outstanding(), 7);
    }

    #[test]
    fn backlog_uses_the_per_request_time_as_of_the_latest_report() {
        let mut r = Reported::new(0.0);
        r.finished(8.0, 4); // 2 ms per request
        r.assigned();
        assert_eq!(r.backlog_ms(), 0.0, "not reported yet");
        r.refresh(0.0, 100.0, || state(3));
        assert_eq!(r.backlog_ms(), 6.0);
        r.finished(12.0, 1); // smoothed: 0.8 × 2 + 0.2 × 12 = 4
        r.assigned();
        assert_eq!(r.backlog_ms(), 8.0, "4 outstanding × 2 ms");
        r.refresh(100.0, 100.0, || state(1));
        assert!((r.backlog_ms() - 4.0).abs() < 1e-6);
    }

    #[test]
    fn report_phases_differ_between_devices_and_stay_within_the_interval() {
        let phases: Vec<f64> = (0..5)
            .map(|d| Reported::first_report_at(d, 1000.0))
            .collect();
        assert!(
            phases.iter().all(|p| (0.0..1000.0).contains(p)),
            "{phases:?}"
        );
        for (i, a) in phases.iter().enumerate() {
            for b in &phases[i + 1..] {
                assert!((a - b).abs() > 1.0, "{phases:?}");
            }
        }
    }
}
