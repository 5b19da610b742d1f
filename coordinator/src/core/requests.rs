//! A client's request: validation, repeats, bounds, and placement on an agent.

use std::time::{Duration, Instant};

use bytes::Bytes;
use slim_protocol::{AgentTopic, ErrorCode, InferRequest, Refusal, MAX_RETRY_AFTER_MS};
use slim_router::{allowed_widths, Route};

use super::{
    records::{self, AssignmentFields, DecisionFigures},
    Core, Effect, LogLines, Parked,
};
use crate::{
    state::request_bytes,
    validate::{check_against_model, decode_request, ValidRequest},
};

impl Core {
    pub(super) fn on_message(&mut self, topic: &str, payload: &Bytes, now: Instant) {
        if self.topics.is_request(topic) {
            self.counters.received += 1;
            self.on_request(topic, payload, now);
            return;
        }
        if let Some(id) = self.topics.parse_coordinator_status(topic) {
            return self.on_coordinator_status(topic, &id, payload);
        }
        match self.topics.parse_agent(topic) {
            Some(AgentTopic::Status(agent)) => self.on_status_payload(topic, &agent, payload, now),
            Some(AgentTopic::Telemetry(agent)) => {
                self.on_telemetry_payload(topic, &agent, payload, now)
            }
            _ => {}
        }
    }

    fn on_request(&mut self, topic: &str, payload: &Bytes, now: Instant) {
        let model = self.topics.parse_request(topic).unwrap_or_default();
        let valid =
            match decode_request(payload, model, self.config.max_payload_bytes, &self.topics) {
                Ok(valid) => valid,
                Err(refusal) => return self.refuse(refusal, topic),
            };
        if self.on_repeat(&valid, now) {
            return;
        }
        let sent_at = valid.request.sent_at_ms;
        let wall_ms = self.clock.wall_ms();
        self.monitor
            .on_arrival(&valid.key, &valid.request.model, sent_at, now, wall_ms);
        if let Some(refusal) = self.over_bound(&valid) {
            return self.refuse(refusal, topic);
        }
        match self.check_model(&valid) {
            Some(Ok(())) => {}
            Some(Err(refusal)) => return self.refuse(refusal, topic),
            None if self.warming_up(now) => {
                tracing::debug!(id = %valid.key.id, model = %valid.request.model, "model not announced yet: parked while the fleet's status arrives");
                return self.park(valid, 0, now);
            }
            None => return self.refuse_unknown_model(&valid),
        }
        // A new request of an announced model: its arrival rate is part of what routers see.
        self.cluster.note_arrival(&valid.request.model, now);
        self.held.0 += 1;
        self.held.1 += request_bytes(&valid.request);
        self.place(valid, 0, now, now);
    }

    /// Handles a request whose key this coordinator already holds or answered; false when the
    /// key is new to it. A repeat soon after the assignment is an MQTT redelivery and is
    /// ignored; a later one is a client's retry after a lost message, and the assignment goes
    /// to the same agent again (it ignores what it is still running and replays a cached
    /// answer). A request that was refused, or answered longer ago than the answer window, is
    /// routed again.
    fn on_repeat(&mut self, valid: &ValidRequest, now: Instant) -> bool {
        let resend_after = Duration::from_millis(self.config.resend_after_ms);
        let target = if let Some((agent, p)) = self.cluster.holder(&valid.key) {
            if now.saturating_duration_since(p.assigned_at) < resend_after {
                None
            } else {
                Some((agent.to_string(), p.width, p.batch_size, p.attempt))
            }
        } else if let Some(by) = self.cluster.answered_by(&valid.key, now) {
            match by.width {
                Some(width) => Some((by.agent.to_string(), width, self.config.batch_size, 0)),
                // Answered before this coordinator started: route it like a new request.
                None => return false,
            }
        } else if self.parked.iter().any(|p| p.valid.key == valid.key) {
            None
        } else {
            return false;
        };
        let Some((agent, width, batch_size, attempt)) = target else {
            self.counters.duplicates += 1;
            tracing::debug!(id = %valid.key.id, "duplicate request ignored");
            return true;
        };
        self.counters.resent += 1;
        if self.logs.requests.allow(now, LogLines::REQUESTS) {
            tracing::info!(id = %valid.key.id, %agent, "a retried request is sent again to the agent that holds or answered it");
        }
        let (payload, request) =
            self.assignment(valid.request.clone(), &agent, width, batch_size, attempt);
        self.cluster
            .record_assignment(&agent, request, attempt, (width, batch_size), now);
        self.effects.push(Effect::Assign { agent, payload });
        true
    }

    /// Checks `valid` against its model as the agents announce it: it passes if any agent's
    /// announcement (online agents first) accepts it, so a width or shape that only some agents
    /// serve yet is routable; otherwise the refusal from the first. `None` when no known agent
    /// announces the model.
    pub(super) fn check_model(&self, valid: &ValidRequest) -> Option<Result<(), Refusal>> {
        let mut first = None;
        for model in self.cluster.models(&valid.request.model) {
            match check_against_model(valid, model) {
                Ok(()) => return Some(Ok(())),
                Err(refusal) => {
                    first.get_or_insert(refusal);
                }
            }
        }
        first.map(Err)
    }

    /// The encoded (signed, when there is a key) assignment of `request` to `agent`, and the
    /// request back.
    fn assignment(
        &mut self,
        request: InferRequest,
        agent: &str,
        width: f32,
        batch_size: u16,
        attempt: u16,
    ) -> (Bytes, InferRequest) {
        let fields = AssignmentFields {
            width,
            batch_size,
            max_queue_delay_ms: self.config.max_queue_delay_ms,
            assigned_at_ms: self.clock.wall_ms(),
            attempt,
        };
        let key = self.assignment_key.as_ref();
        records::assignment(request, &mut self.router_name, agent, fields, key)
    }

    /// An `overloaded` refusal when holding `valid` would pass a configured bound.
    fn over_bound(&self, valid: &ValidRequest) -> Option<Refusal> {
        let (count, bytes) = self.held;
        let max_bytes = self.config.max_held_mb as usize * 1024 * 1024;
        let why = if count >= self.config.max_held_requests {
            format!("the coordinator holds {count} unanswered requests, its limit")
        } else if bytes + request_bytes(&valid.request) > max_bytes {
            format!(
                "the coordinator holds {} MiB of unanswered requests, its limit is {} MiB",
                bytes / (1024 * 1024),
                self.config.max_held_mb
            )
        } else {
            return None;
        };
        let mut refusal = Refusal::new(ErrorCode::Overloaded, format!("{why}; retry later"));
        refusal.id = Some(valid.key.id.clone());
        refusal.reply_to = Some(valid.key.reply_to.clone());
        Some(refusal)
    }

    fn warming_up(&self, now: Instant) -> bool {
        let warmup = Duration::from_millis(self.config.fleet_warmup_ms);
        self.connected_since
            .is_none_or(|since| now.saturating_duration_since(since) < warmup)
    }

    pub(super) fn refuse_unknown_model(&mut self, valid: &ValidRequest) {
        let message = format!("no agent serves model {:?}", valid.request.model);
        self.refuse_request(
            &valid.key,
            &valid.request.model,
            ErrorCode::UnknownModel,
            message,
        );
    }

    /// Routes `valid` (placed `attempt` times before, on agents that were lost): an assignment
    /// and a decision, a refusal, or parked while no agent serves its model.
    /// `waiting_since` is when it began to wait for an agent: `now`, or when it was parked for
    /// a request that was parked before (its park timeout runs from then).
    pub(super) fn place(
        &mut self,
        valid: ValidRequest,
        attempt: u16,
        waiting_since: Instant,
        now: Instant,
    ) {
        if attempt > self.config.max_attempts {
            let message = format!("gave up after {attempt} placements on agents that were lost");
            return self.refuse_request(
                &valid.key,
                &valid.request.model,
                ErrorCode::NoCapacity,
                message,
            );
        }
        match self.choose(&valid, now) {
            Choice::NoAgent => self
                .parked
                .push_back(Parked::new(valid, attempt, waiting_since)),
            Choice::NoneEligible { candidates } => {
                let message = format!(
                    "router {} found no eligible (agent, width, batch) among {} online agents \
                     (the ppo router needs agents that publish a device profile)",
                    self.routing.name(),
                    candidates
                );
                self.refuse_request(
                    &valid.key,
                    &valid.request.model,
                    ErrorCode::NoCapacity,
                    message,
                );
            }
            // Re-routed from a lost agent, which may have answered it: never refused (see
            // `time_out_parked`); it waits for an agent with room.
            Choice::Full { .. } if attempt > 0 => {
                self.parked
                    .push_back(Parked::new(valid, attempt, waiting_since))
            }
            Choice::Full { full, candidates } => {
                self.counters.shed += 1;
                let retry_after_ms = self.retry_after_ms(&valid.request.model, now);
                let message = format!(
                    "{full} of the {candidates} agents serving model {:?} could take this request \
                     but hold as many requests as their bound (max_queued), and no other can; \
                     retry in {retry_after_ms} ms",
                    valid.request.model
                );
                let mut refusal = Refusal::new(ErrorCode::Overloaded, message);
                refusal.retry_after_ms = Some(retry_after_ms);
                self.refuse_keyed(&valid.key, &valid.request.model, refusal);
            }
            Choice::Chosen(placement) => self.dispatch(valid, placement, attempt, now),
        }
    }

    /// The hold a shed request's sender is asked for: until the first masked agent of `model`
    /// is expected to have room, 1 ms to [`MAX_RETRY_AFTER_MS`] (the most, when no masked
    /// agent drains at a known rate: its next report decides).
    fn retry_after_ms(&self, model: &str, now: Instant) -> u32 {
        self.cluster
            .reopens_in(model, now)
            .map_or(MAX_RETRY_AFTER_MS, |wait| {
                let ms = wait.as_micros().div_ceil(1000);
                ms.clamp(1, u128::from(MAX_RETRY_AFTER_MS)) as u32
            })
    }

    /// Asks the router where `valid` runs, among the online agents that serve its model.
    fn choose(&mut self, valid: &ValidRequest, now: Instant) -> Choice {
        let request = &valid.request;
        self.cluster.reopen(now);
        let any_masked = self.cluster.any_masked();
        let (observation, ids) = self.cluster.observation(&request.model);
        if observation.devices.is_empty() {
            return Choice::NoAgent;
        }
        let constraints = &mut self.route_request;
        constraints.model.clone_from(&request.model);
        constraints.width = request.width;
        constraints.min_accuracy = request.min_accuracy;
        constraints.deadline_ms = request.deadline_ms;
        let candidates = observation.devices.len();
        // Agents masked at their bound that would otherwise take this request (none to count,
        // and no scan of the fleet, while no agent is masked).
        let full = if any_masked {
            observation
                .devices
                .iter()
                .filter(|d| !d.online && allowed_widths(d, &*constraints).next().is_some())
                .count()
        } else {
            0
        };
        if full > 0 && observation.devices.iter().all(|d| !d.online) {
            // Every one is masked: refused without asking the router.
            return Choice::Full { full, candidates };
        }
        let route = self
            .routing
            .route(observation, constraints, &valid.key, now);
        let chosen = route.as_ref().map(|r| {
            (
                ids[r.device].clone(),
                observation.devices[r.device].outstanding,
            )
        });
        match (route, chosen) {
            (Some(route), Some((agent, agent_outstanding))) => Choice::Chosen(Placement {
                route,
                agent,
                agent_outstanding,
                candidates,
            }),
            _ if full > 0 => Choice::Full { full, candidates },
            _ => Choice::NoneEligible { candidates },
        }
    }

    /// Sends `valid` to the agent the router chose: the assignment and the decision, recorded
    /// in the ledger, the counters and the monitor.
    fn dispatch(&mut self, valid: ValidRequest, placement: Placement, attempt: u16, now: Instant) {
        let Placement {
            route,
            mut agent,
            agent_outstanding,
            candidates,
        } = placement;
        let figures = DecisionFigures {
            width: route.width,
            batch_size: route.batch_size,
            at_ms: self.clock.wall_ms(),
            candidates: candidates as u16,
            agent_outstanding,
            attempt,
        };
        let ValidRequest { request, key, .. } = valid;
        let (payload, mut request) =
            self.assignment(request, &agent, route.width, route.batch_size, attempt);
        let decided = self.clock.now();
        let monitor = &mut self.monitor;
        let record = records::decision(
            &mut request,
            &mut agent,
            &mut self.router_name,
            figures,
            |decision| monitor.on_decision(decision, &key, decided),
            &mut self.decisions,
        );
        self.cluster.record_keyed(
            &agent,
            key,
            request,
            attempt,
            (route.width, route.batch_size),
            now,
        );
        self.counters.routed += 1;
        self.effects.push(Effect::Assign { agent, payload });
        if let Some(payload) = record {
            self.effects.push(Effect::Decision { payload });
        }
    }
}

/// Where the router would place a request.
enum Choice {
    /// No online agent serves its model.
    NoAgent,
    /// Agents serve it, but the router found none eligible.
    NoneEligible {
        candidates: usize,
    },
    /// None eligible, and `full` of them are masked at their queue bound.
    Full {
        full: usize,
        candidates: usize,
    },
    Chosen(Placement),
}

/// The router's choice for a request.
struct Placement {
    route: Route,
    agent: String,
    /// The agent's outstanding requests as the router saw them.
    agent_outstanding: u32,
    /// Online agents that serve the model.
    candidates: usize,
}
