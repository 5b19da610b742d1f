//! One rule for whether an agent is alive, used by the coordinator (which re-routes a silent
//! agent's work) and by `slim status` (which shows it).

use std::time::Duration;

/// How long an agent may go without telemetry before it counts as silent, unless configured
/// otherwise (`telemetry_timeout_ms` in the coordinator). Agents report every second by default.
pub const DEFAULT_TELEMETRY_TIMEOUT_MS: u64 = 5000;

/// What is known of an agent's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It announced itself online and reported within the timeout.
    Online,
    /// It announced itself online but has not reported for longer than the timeout (hung,
    /// cut off, or dead without its last will having arrived yet).
    Silent,
    /// Its retained status says offline (a clean stop, or its last will).
    Offline,
}

impl Liveness {
    /// The liveness of an agent whose retained status says `announced_online`, last heard from
    /// `since_heard` ago, under `timeout`.
    pub fn of(announced_online: bool, since_heard: Duration, timeout: Duration) -> Self {
        match (announced_online, since_heard > timeout) {
            (false, _) => Self::Offline,
            (true, true) => Self::Silent,
            (true, false) => Self::Online,
        }
    }

    /// The word `slim status` and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Silent => "silent",
            Self::Offline => "offline",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_is_silent_only_after_the_timeout_and_offline_only_by_its_status() {
        let timeout = Duration::from_millis(DEFAULT_TELEMETRY_TIMEOUT_MS);
        let just = timeout;
        let past = timeout + Duration::from_millis(1);
        assert_eq!(Liveness::of(true, just, timeout), Liveness::Online);
        assert_eq!(Liveness::of(true, past, timeout), Liveness::Silent);
        assert_eq!(
            Liveness::of(false, Duration::ZERO, timeout),
            Liveness::Offline
        );
    }
}
