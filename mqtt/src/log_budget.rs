//! A bound on the log lines that network traffic can cause.
//!
//! A refusal, a malformed message or a late batch is logged where it happens, but a flood of
//! them (an overloaded coordinator refuses tens of thousands of requests a second) must not
//! turn into as many lines: each is a formatted write to stdout or stderr, which costs more than
//! the refusal itself and starves the work that would end the overload. A [`LogBudget`] lets the
//! first `burst` events of each window through, one line each, counts the rest, and hands the
//! count back once the window has closed, for one summary line. Every event is still counted
//! by its owner's metrics; the budget only decides what reaches the log.

use std::time::{Duration, Instant};

/// How many events of one kind are logged one by one per window; see the module docs.
#[derive(Debug, Clone)]
pub struct LogBudget {
    window: Duration,
    burst: u32,
    /// Start of the current window; `None` before the first event.
    opened: Option<Instant>,
    /// Events logged in the current window.
    logged: u32,
    /// Events not logged since the last summary.
    suppressed: u64,
}

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` events before it were not logged (0: none), so say so with it.
    Log { suppressed: u64 },
    /// Do not log it: it is counted for the next summary.
    Skip,
}

impl LogBudget {
    /// The default for per-request events: 10 lines per 10 s.
    pub const fn per_request() -> Self {
        Self::new(Duration::from_secs(10), 10)
    }

    /// At most `burst` lines per `window`.
    pub const fn new(window: Duration, burst: u32) -> Self {
        Self {
            window,
            burst,
            opened: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether the event happening at `now` may be logged.
    pub fn check(&mut self, now: Instant) -> Verdict {
        self.roll(now);
        if self.logged < self.burst {
            self.logged += 1;
            Verdict::Log {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            Verdict::Skip
        }
    }

    /// Whether the event happening at `now` may be logged; first writes the summary line of
    /// the `what` events skipped before it, if any.
    pub fn allow(&mut self, now: Instant, what: &str) -> bool {
        match self.check(now) {
            Verdict::Log { suppressed } => {
                self.summary_line(what, suppressed);
                true
            }
            Verdict::Skip => false,
        }
    }

    /// Writes the summary line of the `what` events skipped in windows closed by `now`, if any.
    pub fn flush(&mut self, now: Instant, what: &str) {
        if let Some(n) = self.take_summary(now) {
            self.summary_line(what, n);
        }
    }

    fn summary_line(&self, what: &str, skipped: u64) {
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "{skipped} more {what} not logged (at most {} lines per {} s; the metrics count every one)",
                self.burst,
                self.window.as_secs()
            );
        }
    }

    /// Events skipped in windows that have closed by `now`, for a summary line; `None` while
    /// there are none or their window is still open. Call it periodically, so that a flood
    /// that stops is still summarised.
    pub fn take_summary(&mut self, now: Instant) -> Option<u64> {
        self.roll(now);
        if self.logged == 0 && self.suppressed > 0 {
            Some(std::mem::take(&mut self.suppressed))
        } else {
            None
        }
    }

    /// Opens a new window when the current one has passed.
    fn roll(&mut self, now: Instant) {
        let open = self
            .opened
            .is_some_and(|at| now.saturating_duration_since(at) < self.window);
        if !open {
            self.opened = Some(now);
            self.logged = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_the_burst_then_counts_the_rest_for_one_summary() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(Duration::from_secs(10), 3);
        let verdicts: Vec<Verdict> = (0..1000).map(|_| b.check(t0)).collect();
        assert_eq!(verdicts[..3], [Verdict::Log { suppressed: 0 }; 3]);
        assert!(verdicts[3..].iter().all(|v| *v == Verdict::Skip));
        // The window is still open: no summary yet.
        assert_eq!(b.take_summary(t0 + Duration::from_secs(9)), None);
        // Closed: the 997 skipped events are summarised once.
        assert_eq!(b.take_summary(t0 + Duration::from_secs(11)), Some(997));
        assert_eq!(b.take_summary(t0 + Duration::from_secs(30)), None);
    }

    #[test]
    fn the_first_line_of_a_new_window_carries_the_count_not_yet_summarised() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(Duration::from_secs(1), 1);
        assert_eq!(b.check(t0), Verdict::Log { suppressed: 0 });
        assert_eq!(b.check(t0), Verdict::Skip);
        assert_eq!(b.check(t0), Verdict::Skip);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(b.check(later), Verdict::Log { suppressed: 2 });
        // Reported with that line: nothing left for a summary.
        assert_eq!(b.take_summary(later + Duration::from_secs(2)), None);
    }

    #[test]
    fn rare_events_are_all_logged() {
        let t0 = Instant::now();
        let mut b = LogBudget::per_request();
        for i in 0..100 {
            let at = t0 + Duration::from_secs(2 * i);
            assert_eq!(b.check(at), Verdict::Log { suppressed: 0 });
        }
    }
}
