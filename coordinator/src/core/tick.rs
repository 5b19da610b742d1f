//! The periodic tick, and requests waiting for an agent: parked, re-routed, timed out.

use std::time::{Duration, Instant};

use slim_protocol::{ErrorCode, RequestKey};

use super::{Core, Effect, LogLines, Parked};
use crate::{
    state::{request_bytes, Pending},
    validate::ValidRequest,
};

impl Core {
    pub(super) fn on_tick(&mut self, now: Instant) {
        let timeout = Duration::from_millis(self.config.telemetry_timeout_ms);
        let orphans = if self.connected {
            self.cluster.expire(now, timeout)
        } else {
            Vec::new()
        };
        let ttl = Duration::from_millis(self.config.ledger_ttl_ms);
        let cleanup = self.cluster.expire_ledger(now, ttl);
        self.count_cleanup(cleanup);
        self.counters.agents_online = self.cluster.online_count();
        self.reroute(orphans, now);
        self.routing.tick(now);
        self.time_out_parked(now);
        let (count, bytes) = self.cluster.held();
        let parked_bytes: usize = self
            .parked
            .iter()
            .map(|p| request_bytes(&p.valid.request))
            .sum();
        self.held = (count + self.parked.len(), bytes + parked_bytes);
        self.monitor.tick(self.clock.wall_ms());
        self.logs.flush(now);
        let batch = self.decision_batch();
        self.effects.extend(batch);
    }

    /// Appends the open batch of decision records to `effects`, if it holds any (the tick does
    /// this every 200 ms; a graceful shutdown calls it last).
    pub fn flush_decisions(&mut self, effects: &mut Vec<Effect>) {
        effects.extend(self.decision_batch());
    }

    /// The open batch of decision records, encoded, if it holds any; it is empty afterwards.
    fn decision_batch(&mut self) -> Option<Effect> {
        self.decisions
            .take()
            .map(|payload| Effect::Decision { payload })
    }

    /// Answers requests parked longer than the park timeout.
    fn time_out_parked(&mut self, now: Instant) {
        let limit = Duration::from_millis(self.config.park_timeout_ms);
        while self
            .parked
            .front()
            .is_some_and(|p| now.saturating_duration_since(p.since) > limit)
        {
            let p = self.parked.pop_front().expect("front exists");
            if p.attempt > 0 {
                // Re-routed from a lost agent: that agent may have answered it before it was
                // lost (its `done` report died with it), and a durable agent resumes it when it
                // comes back. An error now could follow a result, so the request is left to
                // the client's retry (docs/protocol.md, "Retrying") and counted.
                self.counters.reroutes_abandoned += 1;
                if self.logs.requests.allow(now, LogLines::REQUESTS) {
                    tracing::warn!(id = %p.valid.key.id, "a re-routed request found no agent within the park timeout: left to the client's retry");
                }
                continue;
            }
            if self.cluster.models(&p.valid.request.model).next().is_none() {
                self.refuse_unknown_model(&p.valid);
            } else {
                let message = format!(
                    "no online agent could take model {:?} within {} ms",
                    p.valid.request.model, self.config.park_timeout_ms
                );
                self.refuse_request(
                    &p.valid.key,
                    &p.valid.request.model,
                    ErrorCode::NoCapacity,
                    message,
                );
            }
        }
    }

    /// Places again what a lost agent held.
    pub(super) fn reroute(&mut self, orphans: Vec<Pending>, now: Instant) {
        for p in orphans {
            self.counters.rerouted += 1;
            if self.logs.requests.allow(now, LogLines::REQUESTS) {
                tracing::info!(id = %p.request.id, attempt = p.attempt + 1, "re-routing a request from a lost agent");
            }
            let key = RequestKey::new(
                p.request.reply_to.clone().unwrap_or_default(),
                p.request.id.clone(),
            );
            self.place(ValidRequest::held(p.request, key), p.attempt + 1, now, now);
        }
    }

    pub(super) fn park(&mut self, valid: ValidRequest, attempt: u16, now: Instant) {
        self.held.0 += 1;
        self.held.1 += request_bytes(&valid.request);
        self.parked.push_back(Parked::new(valid, attempt, now));
    }

    /// Tries the parked requests again after the fleet changed.
    pub(super) fn unpark(&mut self, now: Instant) {
        if self.parked.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.parked);
        for p in waiting {
            let Some(checked) = self.check_model(&p.valid) else {
                self.parked.push_back(p);
                continue;
            };
            if let Err(refusal) = checked {
                let topic = self.topics.request(&p.valid.request.model);
                self.refuse(refusal, &topic);
                continue;
            }
            let model = &p.valid.request.model;
            if self.cluster.observation(model).0.devices.is_empty() {
                self.parked.push_back(p);
            } else {
                self.place(p.valid, p.attempt, p.since, now);
            }
        }
    }
}
