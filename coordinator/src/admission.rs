//! Admission: whether an agent can take another request, estimated here, so that a flood is
//! refused at the coordinator instead of piling up on the way to the agent.
//!
//! An agent refuses what passes its own bound (`max_queued`), but it can only refuse what has
//! reached it. Past the system's knee the requests on the way (in the broker's queue for the
//! agent, in its MQTT client) grow without bound, and every one of them is still carried,
//! decoded and refused or served seconds later; on the 2-core bench this cut the served rate
//! to a third of the knee's. So the coordinator estimates what each agent holds or has on the
//! way, and stops assigning to an agent whose estimate reaches the bound it announced
//! (`AgentInfo::max_queued`); when every agent that serves a model is there, the request gets
//! `overloaded` at once.
//!
//! The estimate is the coordinator's ledger for the agent (its assignments not yet reported
//! answered: held by the agent or on the way) less what the agent is expected to have answered
//! since its last report, at the rate it answered over the report before. That rate is the
//! agent's capacity only while the agent was busy, so the estimate is used only while the
//! agent's own last report said it held at least half its bound: an agent that keeps up is
//! never masked, however its answers lag in the ledger (up to a report interval's worth). The
//! estimate counts this coordinator's assignments only; with several coordinators in a group
//! the agent's own bound still refuses the rest.

use std::time::Duration;

/// One agent's bound and answer rate, as its status and telemetry give them.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// The bound the agent announced; `None`: never masked.
    limit: Option<u32>,
    /// Requests it answered per second over its last report interval.
    served_per_s: f32,
    /// `completed` and agent clock of its latest report's last page.
    last: Option<(u64, u64)>,
    /// Masked in the router's views as unable to take more.
    pub full: bool,
}

impl Admission {
    /// Takes the bound the agent announced.
    pub fn set_limit(&mut self, limit: Option<u32>) {
        self.limit = limit;
    }

    /// Takes a report's last page: `completed` requests since the agent started, on its clock
    /// `at_ms`.
    pub fn on_report(&mut self, completed: u64, at_ms: u64) {
        if let Some((before, before_ms)) = self.last {
            if completed >= before && at_ms > before_ms {
                let rate = (completed - before) as f64 * 1000.0 / (at_ms - before_ms) as f64;
                self.served_per_s = rate as f32;
            } else {
                // The agent restarted (or its clock went back): start over.
                self.served_per_s = 0.0;
            }
        }
        self.last = Some((completed, at_ms));
    }

    /// Requests the agent holds or has on the way: `ledger` (this coordinator's assignments
    /// not reported answered) less what it answered at its recent rate in `since_report`.
    pub fn estimate(&self, ledger: usize, since_report: Duration) -> f64 {
        let answered = f64::from(self.served_per_s) * since_report.as_secs_f64();
        (ledger as f64 - answered).max(0.0)
    }

    /// Whether the agent, which held `reported` requests at its last report, is at its bound
    /// by the estimate.
    pub fn at_limit(&self, reported: u32, ledger: usize, since_report: Duration) -> bool {
        self.limit.is_some_and(|limit| {
            u64::from(reported) * 2 >= u64::from(limit)
                && self.estimate(ledger, since_report) >= f64::from(limit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_without_a_bound_is_never_at_its_limit() {
        let a = Admission::default();
        assert!(!a.at_limit(1_000_000, 1_000_000, Duration::ZERO));
    }

    #[test]
    fn an_agent_that_keeps_up_is_never_at_its_limit() {
        let mut a = Admission::default();
        a.set_limit(Some(100));
        // It held 49 at its last report: however many answers are not reported yet.
        assert!(!a.at_limit(49, 100_000, Duration::ZERO));
        assert!(a.at_limit(50, 100, Duration::ZERO));
    }

    #[test]
    fn the_ledger_counts_until_the_agent_reports_a_rate() {
        let mut a = Admission::default();
        a.set_limit(Some(100));
        assert!(!a.at_limit(100, 99, Duration::from_secs(5)));
        assert!(a.at_limit(100, 100, Duration::from_secs(5)));
        // One report gives no rate yet.
        a.on_report(0, 1_000);
        assert!(a.at_limit(100, 100, Duration::from_secs(5)));
    }

    #[test]
    fn what_the_agent_answers_between_reports_is_expected_at_its_recent_rate() {
        let mut a = Admission::default();
        a.set_limit(Some(100));
        a.on_report(0, 1_000);
        a.on_report(500, 2_000); // 500 answers a second
        assert!(a.at_limit(100, 150, Duration::ZERO));
        // 100 ms later it has answered about 50 of them.
        assert!(!a.at_limit(100, 149, Duration::from_millis(100)));
        assert!((a.estimate(150, Duration::from_millis(100)) - 100.0).abs() < 1e-6);
        // Never below zero.
        assert_eq!(a.estimate(10, Duration::from_secs(10)), 0.0);
    }

    #[test]
    fn a_restarted_agent_starts_its_rate_over() {
        let mut a = Admission::default();
        a.set_limit(Some(10));
        a.on_report(1_000, 1_000);
        a.on_report(2_000, 2_000);
        assert!(!a.at_limit(10, 10, Duration::from_millis(100)));
        a.on_report(5, 3_000);
        assert!(a.at_limit(10, 10, Duration::from_millis(100)));
    }
}
