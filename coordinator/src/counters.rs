//! What the coordinator counts; each event logs and counts in one place.

use std::collections::HashMap;

use slim_protocol::ErrorCode;

/// Running totals since start.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counters {
    /// Requests received on the request topics.
    pub received: u64,
    /// Placements published (first placements and re-routes).
    pub routed: u64,
    /// Re-routes after an agent was lost.
    pub rerouted: u64,
    /// Agents online now.
    pub agents_online: usize,
    /// Redelivered requests ignored.
    pub duplicates: u64,
    /// Re-routed requests (from lost agents) that found no agent within the park timeout and
    /// were left to the client's retry instead of refused.
    pub reroutes_abandoned: u64,
    /// Requests refused `overloaded` at once because every agent that could take them was at
    /// its bound (admission; also counted in `refused`).
    pub shed: u64,
    /// Retried requests sent again to the agent that holds or answered them.
    pub resent: u64,
    /// MQTT reconnects after the first connection.
    pub reconnects: u64,
    /// Agent status or telemetry, or a coordinator's status, refused (identity mismatch,
    /// limits, undecodable, too many agents or coordinators).
    pub agent_messages_refused: u64,
    /// Ledger entries dropped because the agent's own outstanding count showed them gone.
    pub ledger_reconciled: u64,
    /// Ledger entries dropped after the ledger TTL.
    pub ledger_expired: u64,
    /// Refusals by error code.
    pub refused: HashMap<ErrorCode, u64>,
}

impl Counters {
    /// Records a refusal.
    pub fn refused(&mut self, code: ErrorCode) {
        *self.refused.entry(code).or_default() += 1;
    }

    /// Total refusals.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}
