//! Agents' retained status and telemetry.

use std::time::Instant;

use slim_protocol::{
    decode, limits, AgentInfo, CoordinatorStatus, ErrorCode, ErrorReply, Telemetry,
};

use super::{Core, Effect, LogLines, MAX_GROUP_MEMBERS};
use crate::state::LedgerCleanup;

impl Core {
    pub(super) fn on_status_payload(
        &mut self,
        topic: &str,
        agent: &str,
        payload: &[u8],
        now: Instant,
    ) {
        if payload.is_empty() {
            // A cleared retained status (`mosquitto_pub -r -n -t …/status`, or a tool retiring
            // an agent): the agent is gone, as if it had said so.
            if let Some(info) = self.cluster.info(agent) {
                let info = AgentInfo {
                    online: false,
                    ..info.clone()
                };
                self.on_status(topic, agent, info, now);
            }
            return;
        }
        match decode::<AgentInfo>(payload) {
            Ok(info) => self.on_status(topic, agent, info, now),
            Err(e) => self.bad_agent_message(topic, &e.to_string()),
        }
    }

    pub(super) fn on_telemetry_payload(
        &mut self,
        topic: &str,
        agent: &str,
        payload: &[u8],
        now: Instant,
    ) {
        match decode::<Telemetry>(payload) {
            Ok(t) => self.on_telemetry(topic, agent, t, now),
            Err(e) => self.bad_agent_message(topic, &e.to_string()),
        }
    }

    fn on_status(&mut self, topic: &str, agent: &str, info: AgentInfo, now: Instant) {
        if info.agent != agent {
            let message = format!("status names agent {:?}", limits::shorten(&info.agent));
            return self.bad_agent_message(topic, &message);
        }
        if let Err(e) = info.check() {
            return self.bad_agent_message(topic, &e.to_string());
        }
        if !self.cluster.knows(agent) && self.cluster.len() >= self.config.max_agents {
            let message = format!(
                "the coordinator already tracks {} agents (max_agents)",
                self.config.max_agents
            );
            return self.bad_agent_message(topic, &message);
        }
        let orphans = self.cluster.on_status(info, now);
        self.counters.agents_online = self.cluster.online_count();
        self.reroute(orphans, now);
        self.unpark(now);
    }

    fn on_telemetry(&mut self, topic: &str, agent: &str, t: Telemetry, now: Instant) {
        if t.agent != agent {
            let message = format!("telemetry names agent {:?}", limits::shorten(&t.agent));
            return self.bad_agent_message(topic, &message);
        }
        if !self.cluster.knows(agent) {
            // Telemetry before status (or from an agent never announced) carries nothing to use.
            return;
        }
        if let Err(e) = t.check() {
            return self.bad_agent_message(topic, &e.to_string());
        }
        let wall_ms = self.clock.wall_ms();
        self.monitor.on_telemetry(&t, now, wall_ms);
        self.routing.on_telemetry(&t);
        let cleanup = self.cluster.on_telemetry(t, now);
        self.count_cleanup(cleanup);
        self.counters.agents_online = self.cluster.online_count();
        self.unpark(now);
    }

    /// A coordinator's retained status (this one's own included): the group view.
    pub(super) fn on_coordinator_status(&mut self, topic: &str, id: &str, payload: &[u8]) {
        if payload.is_empty() {
            // A cleared retained status: that coordinator was retired.
            self.group.remove(id);
            return;
        }
        let status = match decode::<CoordinatorStatus>(payload) {
            Ok(status) => status,
            Err(e) => return self.bad_agent_message(topic, &e.to_string()),
        };
        if status.id != id {
            let message = format!("status names coordinator {:?}", limits::shorten(&status.id));
            return self.bad_agent_message(topic, &message);
        }
        if let Err(e) = status.check() {
            return self.bad_agent_message(topic, &e.to_string());
        }
        if !self.group.contains_key(id) && self.group.len() >= MAX_GROUP_MEMBERS {
            let message = format!("more than {MAX_GROUP_MEMBERS} coordinators announced");
            return self.bad_agent_message(topic, &message);
        }
        if self.group.get(id).is_none_or(|s| s.online != status.online) {
            tracing::info!(
                coordinator = id,
                online = status.online,
                "coordinator group member"
            );
        }
        self.group.insert(id.to_string(), status);
    }

    pub(super) fn count_cleanup(&mut self, cleanup: LedgerCleanup) {
        if cleanup == LedgerCleanup::default() {
            return;
        }
        tracing::info!(
            reconciled = cleanup.reconciled,
            expired = cleanup.expired,
            "ledger entries dropped: their agents do not hold them"
        );
        self.counters.ledger_reconciled += cleanup.reconciled as u64;
        self.counters.ledger_expired += cleanup.expired as u64;
    }

    /// A status or telemetry message that cannot be used: counted, logged and dead-lettered.
    pub(super) fn bad_agent_message(&mut self, topic: &str, error: &str) {
        self.counters.agent_messages_refused += 1;
        let now = self.clock.now();
        if self
            .logs
            .agent_messages
            .allow(now, LogLines::AGENT_MESSAGES)
        {
            tracing::warn!(topic = %limits::shorten(topic), error, "agent message refused");
        }
        let reply = ErrorReply::new(None, ErrorCode::Malformed, error, "coordinator")
            .on_topic(limits::shorten(topic));
        self.effects.push(Effect::Reply {
            to: self.topics.dead_letters(),
            reply,
        });
    }
}
