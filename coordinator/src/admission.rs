//! Admission: whether an agent can take another request, estimated here, so that a flood is
//! refused at the coordinator instead of piling up on the way to the agent.
//!
//! An agent refuses what passes its own bound (`max_queued`), but it can only refuse what has
//! reached it. Past the system's knee the requests on the way (in the broker's queue for the
//! agent, in its MQTT client) grew without bound, and every one of them was still carried,
//! decoded and refused or served seconds later; on the 2-core bench this cut the served rate to
//! a third of the knee's. So the coordinator estimates what each agent holds or has on the way,
//! and stops assigning to an agent whose estimate reaches the bound it announced
//! (`AgentInfo::max_queued`); when every agent that could take a request is there, the request
//! gets `overloaded` at once.
//!
//! The estimate is the coordinator's ledger for the agent (its assignments the agent has not
//! reported answered or refused: held by the agent or on the way) less what the agent is
//! expected to have answered since its last report, at the rate it answered this
//! coordinator's requests over the report interval before (refused ones leave the ledger at the
//! report that lists them, but do not count toward the rate: a rate that counted them grew with
//! the flood and let it through to the agent). That rate is the agent's capacity only if the agent
//! was busy through that interval, so an agent is masked only when its previous report already
//! said it held at least half its bound and its latest still does: an agent that keeps up is
//! never masked, however its answers lag in the ledger (up to a report interval's worth), and
//! one that just turned busy is masked from its second busy report on. Both the ledger and the
//! rate are this coordinator's own, so each member of a coordinator group admits against its
//! own share; their sum can still pass the agent's bound, which the agent then refuses.

use std::time::Duration;

/// One agent's bound and drain rate, as its status and telemetry give them.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// The bound the agent announced; `None`: never masked.
    limit: Option<u32>,
    /// This coordinator's requests the agent answered per second over its last report
    /// interval, when it was busy through it; `None` otherwise.
    drained_per_s: Option<f32>,
    /// Agent clock of its latest report's last page, and whether that report said it held at
    /// least half its bound.
    last: Option<(u64, bool)>,
    /// This coordinator's requests reported answered since that report.
    drained: u64,
    /// Masked in the router's views as unable to take more.
    pub full: bool,
}

impl Admission {
    /// Takes the bound the agent announced.
    pub fn set_limit(&mut self, limit: Option<u32>) {
        self.limit = limit;
    }

    /// Counts `n` of this coordinator's requests that a report (any page) listed answered
    /// (refusals leave the ledger too, but refusing is not serving: they do not count).
    pub fn note_served(&mut self, n: usize) {
        self.drained += n as u64;
    }

    /// Takes a report's last page: the agent held `reported` requests, on its clock `at_ms`.
    pub fn on_report(&mut self, reported: u32, at_ms: u64) {
        match self.last {
            // The same report again (a redelivered last page): nothing new.
            Some((before_ms, _)) if at_ms == before_ms => return,
            Some((before_ms, busy)) if at_ms > before_ms => {
                self.drained_per_s = busy
                    .then(|| (self.drained as f64 * 1000.0 / (at_ms - before_ms) as f64) as f32);
            }
            // The agent restarted, or its clock went back: start over.
            Some(_) => self.drained_per_s = None,
            None => {}
        }
        self.drained = 0;
        self.last = Some((at_ms, self.half_full(reported)));
    }

    fn half_full(&self, reported: u32) -> bool {
        self.limit
            .is_some_and(|limit| u64::from(reported) * 2 >= u64::from(limit))
    }

    /// Requests the agent holds or has on the way: `ledger` (this coordinator's assignments
    /// not reported answered or refused) less what it answers at its recent rate in
    /// `since_report`.
    pub fn estimate(&self, ledger: usize, since_report: Duration) -> f64 {
        let drained = f64::from(self.drained_per_s.unwrap_or(0.0)) * since_report.as_secs_f64();
        (ledger as f64 - drained).max(0.0)
    }

    /// How long until the estimate falls below the bound at the agent's recent rate: when a
    /// masked agent is expected to take requests again. `None` without a bound or a rate, or
    /// when it drained nothing (then its next report decides).
    pub fn reopens_in(&self, ledger: usize, since_report: Duration) -> Option<Duration> {
        let limit = f64::from(self.limit?);
        let rate = f64::from(self.drained_per_s?);
        if rate <= 0.0 {
            return None;
        }
        let excess = self.estimate(ledger, since_report) - limit + 1.0;
        Some(Duration::from_secs_f64(excess.max(0.0) / rate))
    }

    /// Whether the agent, which held `reported` requests at its last report, is at its bound
    /// by the estimate (see the module docs for when the estimate is trusted).
    pub fn at_limit(&self, reported: u32, ledger: usize, since_report: Duration) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        self.half_full(reported)
            && self.drained_per_s.is_some()
            && self.estimate(ledger, since_report) >= f64::from(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound of 100 and two busy reports one second apart, draining `per_s` in between.
    fn busy(per_s: usize) -> Admission {
        let mut a = Admission::default();
        a.set_limit(Some(100));
        a.on_report(100, 1_000);
        a.note_served(per_s);
        a.on_report(100, 2_000);
        a
    }

    #[test]
    fn an_agent_without_a_bound_is_never_at_its_limit() {
        let mut a = Admission::default();
        a.on_report(1_000, 1_000);
        a.on_report(1_000, 2_000);
        assert!(!a.at_limit(1_000_000, 1_000_000, Duration::ZERO));
    }

    #[test]
    fn an_agent_that_keeps_up_is_never_at_its_limit() {
        let a = busy(0);
        // It held 49 at its last report: however many answers are not reported yet.
        assert!(!a.at_limit(49, 100_000, Duration::ZERO));
        assert!(a.at_limit(50, 100, Duration::ZERO));
    }

    #[test]
    fn an_agent_is_masked_only_from_its_second_busy_report() {
        let mut a = Admission::default();
        a.set_limit(Some(100));
        a.on_report(0, 1_000);
        // Idle before: how fast it drains is not known yet, so it is not masked.
        a.on_report(100, 2_000);
        assert!(!a.at_limit(100, 10_000, Duration::ZERO));
        // Busy through the last interval, having drained nothing: masked.
        a.on_report(100, 3_000);
        assert!(a.at_limit(100, 100, Duration::ZERO));
        assert!(!a.at_limit(100, 99, Duration::ZERO));
    }

    #[test]
    fn what_the_agent_drains_between_reports_is_expected_at_its_recent_rate() {
        let a = busy(500); // 500 a second
        assert!(a.at_limit(100, 150, Duration::ZERO));
        // 100 ms later it has drained about 50 of them.
        assert!(!a.at_limit(100, 149, Duration::from_millis(100)));
        assert!((a.estimate(150, Duration::from_millis(100)) - 100.0).abs() < 1e-6);
        // Never below zero.
        assert_eq!(a.estimate(10, Duration::from_secs(10)), 0.0);
    }

    #[test]
    fn a_masked_agent_reopens_when_its_rate_has_drained_the_excess() {
        // 500 a second, bound 100; 150 held: below the bound after 51 more answers, 102 ms.
        let a = busy(500);
        let wait = a.reopens_in(150, Duration::ZERO).unwrap();
        assert!((wait.as_secs_f64() - 0.102).abs() < 1e-6, "{wait:?}");
        assert!(!a.at_limit(100, 150, wait), "open by then");
        assert!(a.at_limit(100, 150, wait.mul_f64(0.9)), "not before");
        // Already below: now.
        assert_eq!(a.reopens_in(50, Duration::ZERO), Some(Duration::ZERO));
        // Drained nothing: only its next report can tell.
        assert_eq!(busy(0).reopens_in(150, Duration::ZERO), None);
        assert_eq!(Admission::default().reopens_in(150, Duration::ZERO), None);
    }

    #[test]
    fn a_redelivered_report_changes_nothing_and_a_restart_starts_over() {
        let mut a = busy(500);
        a.on_report(100, 2_000);
        assert!(
            !a.at_limit(100, 149, Duration::from_millis(100)),
            "rate kept"
        );
        a.on_report(100, 5); // the agent's clock went back: it restarted
        assert!(!a.at_limit(100, 10_000, Duration::ZERO), "no rate yet");
    }
}
