//! The coordinator's decision core, free of I/O (the shape of rumqttc's `MqttState`): it takes
//! one [`Input`] at a time (a message, a (re)connection, a tick) and returns the [`Effect`]s to
//! perform (assignments, decisions, error replies). The service's thin loop feeds it from the
//! MQTT sessions and publishes what it returns; unit tests drive it directly, without a broker
//! and with a hand-moved [`Clock`].
//!
//! It alone owns the cluster state, the router, the parked requests and the counters.

mod decision_batch;
mod fleet;
mod records;
mod requests;
mod tick;

#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, VecDeque},
    time::Instant,
};

use bytes::Bytes;
use decision_batch::DecisionBatch;
use slim_mqtt::LogBudget;
use slim_protocol::{
    now_ms, AssignmentKey, CoordinatorStatus, ErrorCode, ErrorReply, Refusal, RequestKey, Topics,
};
use slim_router::RouteRequest;

use crate::{
    config::CoordinatorConfig,
    counters::Counters,
    http::{Monitor, Snapshot},
    routing::Routing,
    state::ClusterState,
    validate::ValidRequest,
};

/// What the core reacts to.
#[derive(Debug)]
pub enum Input {
    /// A publish within the size limit.
    Message { topic: String, payload: Bytes },
    /// A publish over the size limit: only its length and a peek at its address are kept.
    Oversize { topic: String, refusal: Refusal },
    /// A connection to the broker was (re)established; `reconnect` is false for its first.
    Connected { reconnect: bool },
    /// A connection to the broker was lost.
    Disconnected,
    /// The periodic tick (every 200 ms in the service): liveness, expiry, park timeouts.
    Tick,
}

/// What the core asks the service to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// An encoded [`slim_protocol::Assignment`] for `agent`, on its assign topic (QoS 1). Encoded
    /// here, from the tensor bytes of the message the request arrived in: the ledger's copy of
    /// the request shares this payload's copy of its tensor, so the tensor is copied once.
    Assign { agent: String, payload: Bytes },
    /// An encoded [`slim_protocol::Decisions`] batch of decision records, on the decisions
    /// topic (QoS 0): when the batch is full, and at each tick. Encoded here so that the records
    /// borrow the requests' strings instead of copying them.
    Decision { payload: Vec<u8> },
    /// An error reply on a validated reply topic, or on the dead-letter topic (QoS 1).
    Reply { to: String, reply: ErrorReply },
}

/// Where the core reads the time: the system's clocks in the service, a hand-moved one in tests.
pub trait Clock: Send {
    /// Monotonic time.
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds since the Unix epoch.
    fn wall_ms(&self) -> u64;
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_ms(&self) -> u64 {
        now_ms()
    }
}

/// Coordinators of the deployment tracked for the group view; statuses of more are refused.
pub const MAX_GROUP_MEMBERS: usize = 64;

/// A request waiting for an agent that can take it.
#[derive(Debug)]
struct Parked {
    valid: ValidRequest,
    attempt: u16,
    since: Instant,
}

impl Parked {
    /// Parks `valid`, its tensor copied out of the message it arrived in if it still shares it
    /// (a request may wait here for the whole park timeout, and that buffer can be the whole
    /// socket read); a request parked again is not copied again.
    fn new(mut valid: ValidRequest, attempt: u16, since: Instant) -> Self {
        valid.own_tensor();
        Self {
            valid,
            attempt,
            since,
        }
    }
}

/// The coordinator's state and decisions.
pub struct Core {
    config: CoordinatorConfig,
    topics: Topics,
    routing: Routing,
    cluster: ClusterState,
    parked: VecDeque<Parked>,
    /// Signs assignments, when the deployment has a key.
    assignment_key: Option<AssignmentKey>,
    /// Requests held (ledger + parked) and their bytes, recounted every tick and raised by
    /// each request accepted in between.
    held: (usize, usize),
    /// When a connection last came up; requests for models nobody has announced yet are parked
    /// for `fleet_warmup_ms` after it, while the fleet's retained status arrives.
    connected_since: Option<Instant>,
    /// Whether the broker connection is up: agents' silence while it is down is not theirs.
    connected: bool,
    counters: Counters,
    monitor: Monitor,
    /// The deployment's coordinators by id, as their retained status last said.
    group: BTreeMap<String, CoordinatorStatus>,
    clock: Box<dyn Clock>,
    /// Effects of the input being handled.
    effects: Vec<Effect>,
    /// The router's name, lent to each assignment and decision record.
    router_name: String,
    /// Decision records not published yet.
    decisions: DecisionBatch,
    /// The constraints handed to the router, rewritten for each request.
    route_request: RouteRequest,
    /// Bounds the log lines that per-request events write (refusals, refused agent messages,
    /// re-sends and re-routes): a flood is summarised, the counters hold every one.
    logs: LogLines,
}

/// A [`LogBudget`] per kind of per-request event.
struct LogLines {
    refused: LogBudget,
    agent_messages: LogBudget,
    requests: LogBudget,
}

impl LogLines {
    const REFUSED: &'static str = "request refusals";
    const AGENT_MESSAGES: &'static str = "refused agent messages";
    const REQUESTS: &'static str = "re-sent or re-routed requests";

    fn new() -> Self {
        Self {
            refused: LogBudget::per_request(),
            agent_messages: LogBudget::per_request(),
            requests: LogBudget::per_request(),
        }
    }

    /// Summarises what the closed windows skipped.
    fn flush(&mut self, now: Instant) {
        self.refused.flush(now, Self::REFUSED);
        self.agent_messages.flush(now, Self::AGENT_MESSAGES);
        self.requests.flush(now, Self::REQUESTS);
    }
}

impl Core {
    /// A core with an empty cluster; `routing` is the router built from `config`.
    pub fn new(
        config: CoordinatorConfig,
        routing: Routing,
        assignment_key: Option<AssignmentKey>,
        clock: Box<dyn Clock>,
    ) -> Self {
        let monitor = Monitor::new(&config.id, routing.name(), clock.wall_ms());
        let topics = Topics::new(&config.topic_prefix);
        Self {
            router_name: routing.name().to_string(),
            route_request: RouteRequest {
                model: String::new(),
                width: None,
                min_accuracy: None,
                deadline_ms: None,
            },
            topics,
            decisions: DecisionBatch::new(&config.id),
            config,
            routing,
            cluster: ClusterState::default(),
            parked: VecDeque::new(),
            assignment_key,
            held: (0, 0),
            connected_since: None,
            connected: false,
            counters: Counters::default(),
            monitor,
            group: BTreeMap::new(),
            clock,
            effects: Vec::new(),
            logs: LogLines::new(),
        }
    }

    /// Handles one input and appends what to publish to `effects`.
    pub fn handle(&mut self, input: Input, effects: &mut Vec<Effect>) {
        let now = self.clock.now();
        match input {
            Input::Message { topic, payload } => self.on_message(&topic, &payload, now),
            Input::Oversize { topic, refusal } => {
                if self.topics.is_request(&topic) {
                    self.counters.received += 1;
                }
                self.refuse(refusal, &topic)
            }
            Input::Connected { reconnect } => {
                if reconnect {
                    self.counters.reconnects += 1;
                }
                self.connected = true;
                self.connected_since = Some(now);
                // Silence while the coordinator itself was cut off is not the agents'.
                self.cluster.touch_all(now);
            }
            Input::Disconnected => self.connected = false,
            Input::Tick => self.on_tick(now),
        }
        effects.append(&mut self.effects);
    }

    /// The counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The deployment's coordinators as their retained status last said (this one included once
    /// its own status has come back from the broker).
    pub fn group(&self) -> impl Iterator<Item = &CoordinatorStatus> {
        self.group.values()
    }

    /// The router's name, as decisions and status report it.
    pub fn router_name(&self) -> &str {
        self.routing.name()
    }

    /// What the monitoring HTTP server shows, as of now.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.monitor.snapshot(
            &self.cluster,
            &self.counters,
            self.connected,
            self.clock.now(),
            self.clock.wall_ms(),
        );
        snapshot.online = self.routing.online_view();
        snapshot.group = self.group.values().cloned().collect();
        snapshot
    }

    /// Answers a refusal on its (validated) reply topic, or on `{prefix}/errors`.
    fn refuse(&mut self, refusal: Refusal, topic: &str) {
        self.counters.refused(refusal.code);
        let now = self.clock.now();
        if self.logs.refused.allow(now, LogLines::REFUSED) {
            tracing::warn!(code = %refusal.code, id = %refusal.id.as_deref().unwrap_or("-"), topic = %slim_protocol::limits::shorten(topic), "request refused: {}", refusal.message);
        }
        let reply = ErrorReply::new(refusal.id, refusal.code, refusal.message, "coordinator")
            .on_topic(slim_protocol::limits::shorten(topic))
            .retry_after(refusal.retry_after_ms);
        let to = refusal
            .reply_to
            .unwrap_or_else(|| self.topics.dead_letters());
        self.effects.push(Effect::Reply { to, reply });
    }

    /// Refuses a validated request on its own request topic.
    fn refuse_request(&mut self, key: &RequestKey, model: &str, code: ErrorCode, message: String) {
        self.refuse_keyed(key, model, Refusal::new(code, message));
    }

    /// Sends `refusal` to the sender of the validated request `key`, on `model`'s request topic.
    fn refuse_keyed(&mut self, key: &RequestKey, model: &str, mut refusal: Refusal) {
        refusal.id = Some(key.id.clone());
        refusal.reply_to = Some(key.reply_to.clone());
        let topic = self.topics.request(model);
        self.refuse(refusal, &topic);
    }
}
