//! The core driven without a broker: inputs in, effects out, time moved by hand.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use slim_protocol::{
    decode, encode, AgentInfo, Assignment, CoordinatorStatus, Decisions, ErrorCode, InferRequest,
    Telemetry, Tensor, Topics, PROTOCOL_VERSION,
};

use super::{Clock, Core, Effect, Input};
use crate::{config::CoordinatorConfig, routing::Routing, state::tests::agent_info};

/// A clock the test moves.
#[derive(Clone)]
pub(super) struct ManualClock(Arc<Mutex<(Instant, u64)>>);

impl ManualClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new((Instant::now(), 1_000_000))))
    }

    pub(super) fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap();
        t.0 += by;
        t.1 += by.as_millis() as u64;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.0.lock().unwrap().0
    }

    fn wall_ms(&self) -> u64 {
        self.0.lock().unwrap().1
    }
}

pub(super) struct Harness {
    pub(super) core: Core,
    pub(super) clock: ManualClock,
    pub(super) topics: Topics,
}

impl Harness {
    pub(super) fn new(config: CoordinatorConfig) -> Self {
        let clock = ManualClock::new();
        let topics = Topics::new(&config.topic_prefix);
        let routing = Routing::build(&config).unwrap();
        let core = Core::new(config, routing, None, Box::new(clock.clone()));
        let mut h = Self {
            core,
            clock,
            topics,
        };
        h.input(Input::Connected { reconnect: false });
        h
    }

    pub(super) fn input(&mut self, input: Input) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.core.handle(input, &mut effects);
        effects
    }

    pub(super) fn message(&mut self, topic: String, payload: Vec<u8>) -> Vec<Effect> {
        self.input(Input::Message {
            topic,
            payload: Bytes::from(payload),
        })
    }

    pub(super) fn status(&mut self, info: AgentInfo) -> Vec<Effect> {
        let topic = self.topics.status(&info.agent);
        self.message(topic, encode(&info))
    }

    pub(super) fn telemetry(&mut self, agent: &str, seq: u64) -> Vec<Effect> {
        let topic = self.topics.telemetry(agent);
        self.message(topic, encode(&Telemetry::idle(agent, seq)))
    }

    pub(super) fn request(&mut self, id: &str, model: &str) -> Vec<Effect> {
        let mut r = InferRequest::new(id, model, Tensor::from_u8(vec![1, 8, 8], vec![0; 64]));
        r.reply_to = Some("replies/c".into());
        let topic = self.topics.request(model);
        self.message(topic, encode(&r))
    }

    pub(super) fn tick_after(&mut self, wait: Duration) -> Vec<Effect> {
        self.clock.advance(wait);
        self.input(Input::Tick)
    }
}

/// The assignments among `effects`, as (agent, decoded assignment).
pub(super) fn assignments(effects: &[Effect]) -> Vec<(String, Assignment)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Assign { agent, payload } => Some((agent.clone(), decode(payload).unwrap())),
            _ => None,
        })
        .collect()
}

/// The error replies among `effects`, as (topic, code, request id).
pub(super) fn replies(effects: &[Effect]) -> Vec<(String, ErrorCode, Option<String>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply { to, reply } => Some((to.clone(), reply.code, reply.id.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_request_is_assigned_to_an_online_agent_with_a_decision_record_at_the_next_tick() {
    let mut h = Harness::new(CoordinatorConfig::default());
    assert!(h.status(agent_info("a1")).is_empty());
    let effects = h.request("r1", "digits");
    let assigned = assignments(&effects);
    assert_eq!(assigned.len(), 1, "{effects:?}");
    assert_eq!(assigned[0].0, "a1");
    assert_eq!(assigned[0].1.request.id, "r1");
    assert_eq!(assigned[0].1.width, 0.5);
    assert!(
        batches(&effects).is_empty(),
        "the record waits: {effects:?}"
    );
    assert_eq!(assignments(&h.request("r2", "digits")).len(), 1);
    let ticked = h.tick_after(Duration::from_millis(200));
    let sent = batches(&ticked);
    assert_eq!(sent.len(), 1, "{ticked:?}");
    assert_eq!(sent[0].coordinator, CoordinatorConfig::default().id);
    let decisions = &sent[0].decisions;
    let ids: Vec<&str> = decisions.iter().map(|d| d.request_id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2"], "both, in order");
    assert!(batches(&h.tick_after(Duration::from_millis(200))).is_empty());
    let d = &decisions[0];
    assert_eq!((d.agent.as_str(), d.request_id.as_str()), ("a1", "r1"));
    assert_eq!(
        (d.model.as_str(), d.router.as_str()),
        ("digits", "least-loaded")
    );
    assert_eq!((d.width, d.candidates, d.attempt), (0.5, 1, 0));
    let c = h.core.counters();
    assert_eq!((c.received, c.routed, c.agents_online), (2, 2, 1));
}

#[test]
fn a_full_batch_of_decision_records_goes_out_without_waiting_for_the_tick() {
    let mut h = Harness::new(CoordinatorConfig::default());
    h.status(agent_info("a1"));
    let mut out = Vec::new();
    for i in 0..slim_protocol::limits::MAX_DECISIONS_PER_MESSAGE {
        out.extend(batches(&h.request(&format!("r{i}"), "digits")));
    }
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].decisions.len(),
        slim_protocol::limits::MAX_DECISIONS_PER_MESSAGE
    );
    assert!(batches(&h.tick_after(Duration::from_millis(200))).is_empty());
}

#[test]
fn a_graceful_shutdown_flushes_the_open_batch_of_decision_records() {
    let mut h = Harness::new(CoordinatorConfig::default());
    h.status(agent_info("a1"));
    h.request("r1", "digits");
    let mut effects = Vec::new();
    h.core.flush_decisions(&mut effects);
    let sent = batches(&effects);
    assert_eq!(sent.len(), 1, "{effects:?}");
    assert_eq!(sent[0].decisions[0].request_id, "r1");
    effects.clear();
    h.core.flush_decisions(&mut effects);
    assert!(effects.is_empty(), "nothing left: {effects:?}");
}

/// The decision batches among `effects`.
fn batches(effects: &[Effect]) -> Vec<Decisions> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Decision { payload } => Some(decode(payload).unwrap()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_redelivery_is_ignored_and_a_later_retry_goes_to_the_same_agent() {
    let mut h = Harness::new(CoordinatorConfig::default());
    h.status(agent_info("a1"));
    h.status(agent_info("a2"));
    let first = assignments(&h.request("r1", "digits"));
    assert!(h.request("r1", "digits").is_empty());
    assert_eq!(h.core.counters().duplicates, 1);

    h.clock.advance(Duration::from_millis(1500));
    let again = assignments(&h.request("r1", "digits"));
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].0, first[0].0,
        "a retry goes to the agent that holds it"
    );
    assert_eq!(h.core.counters().resent, 1);
    assert_eq!(h.core.counters().routed, 1);
}

/// A request as a socket read delivers it: a slice of a larger buffer that other messages share.
fn request_in_a_read_buffer(h: &Harness, id: &str) -> (String, Bytes, Bytes) {
    let mut r = InferRequest::new(id, "digits", Tensor::from_u8(vec![1, 8, 8], vec![7; 64]));
    r.reply_to = Some("replies/c".into());
    let encoded = encode(&r);
    let mut read = vec![0xc0; 100];
    read.extend_from_slice(&encoded);
    read.extend_from_slice(&[0xc0; 100]);
    let read = Bytes::from(read);
    let payload = read.slice(100..100 + encoded.len());
    (h.topics.request("digits"), read, payload)
}

/// True when `inner`'s bytes lie inside `outer`'s buffer (shared, not a copy).
pub(super) fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (outer, inner) = (outer.as_ptr_range(), inner.as_ptr_range());
    outer.start <= inner.start && inner.end <= outer.end
}

#[test]
fn the_tensor_is_copied_once_into_the_assignment_and_never_holds_the_read_buffer() {
    let mut h = Harness::new(CoordinatorConfig::default());
    // Parked while the fleet is unknown: it owns a copy of its tensor, not the read buffer.
    let (topic, read, payload) = request_in_a_read_buffer(&h, "early");
    assert!(h.input(Input::Message { topic, payload }).is_empty());
    let parked = &h.core.parked[0].valid.request.input.data;
    assert_eq!(parked.as_ref(), [7; 64]);
    assert!(!within(&read, parked), "a parked request copies its tensor");
    let effects = h.status(agent_info("a1"));
    assert_eq!(assignments(&effects).len(), 1, "{effects:?}");
    // Routed at once: the ledger's request shares the assignment's copy of the tensor.
    let (topic, read, payload) = request_in_a_read_buffer(&h, "r1");
    let effects = h.input(Input::Message { topic, payload });
    let [Effect::Assign { payload, .. }] = &effects[..] else {
        panic!("one assignment: {effects:?}")
    };
    let sent: Assignment = decode(payload).unwrap();
    assert_eq!(
        (sent.request.id.as_str(), sent.request.input.data.as_ref()),
        ("r1", &[7; 64][..])
    );
    let key = slim_protocol::RequestKey::new("replies/c", "r1");
    let (_, held) = h.core.cluster.holder(&key).unwrap();
    assert!(
        within(payload, &held.request.input.data),
        "shares the assignment"
    );
    assert!(!within(&read, &held.request.input.data));
    // A client's retry is sent again from its own message: the ledger moves to the new copy.
    h.clock
        .advance(Duration::from_millis(h.core.config.resend_after_ms + 1));
    let (topic, read, payload) = request_in_a_read_buffer(&h, "r1");
    let effects = h.input(Input::Message { topic, payload });
    let [Effect::Assign { payload, .. }] = &effects[..] else {
        panic!("the retry is sent again: {effects:?}")
    };
    let (_, held) = h.core.cluster.holder(&key).unwrap();
    assert!(
        within(payload, &held.request.input.data),
        "shares the new assignment"
    );
    assert!(!within(&read, &held.request.input.data));
}

#[test]
fn a_request_before_the_fleet_announces_is_parked_then_placed() {
    let mut h = Harness::new(CoordinatorConfig::default());
    assert!(
        h.request("r1", "digits").is_empty(),
        "parked while warming up"
    );
    let effects = h.status(agent_info("a1"));
    let assigned = assignments(&effects);
    assert_eq!(assigned.len(), 1, "{effects:?}");
    assert_eq!(assigned[0].1.request.id, "r1");
}

#[test]
fn an_unknown_model_is_refused_after_the_warmup_and_a_parked_one_at_the_park_timeout() {
    let config = CoordinatorConfig::default();
    let park = Duration::from_millis(config.park_timeout_ms);
    let mut h = Harness::new(config);
    assert!(h.request("early", "nosuch").is_empty());
    h.clock.advance(Duration::from_secs(4));
    let late = replies(&h.request("late", "nosuch"));
    assert_eq!(
        late,
        vec![(
            "replies/c".to_string(),
            ErrorCode::UnknownModel,
            Some("late".into())
        )]
    );
    let timed_out = replies(&h.tick_after(park));
    assert_eq!(
        timed_out,
        vec![(
            "replies/c".to_string(),
            ErrorCode::UnknownModel,
            Some("early".into())
        )]
    );
    assert_eq!(h.core.counters().refused_total(), 2);
}

#[test]
fn a_silent_agents_requests_are_routed_again_to_a_live_one() {
    let config = CoordinatorConfig::default();
    let timeout = Duration::from_millis(config.telemetry_timeout_ms);
    let mut h = Harness::new(config);
    h.status(agent_info("a1"));
    assert_eq!(assignments(&h.request("r1", "digits"))[0].0, "a1");
    h.status(agent_info("a2"));
    h.clock.advance(timeout);
    h.telemetry("a2", 1);
    let effects = h.tick_after(Duration::from_millis(200));
    let moved = assignments(&effects);
    assert_eq!(moved.len(), 1, "{effects:?}");
    assert_eq!(moved[0].0, "a2");
    assert_eq!(moved[0].1.attempt, 1);
    let c = h.core.counters();
    assert_eq!((c.rerouted, c.agents_online), (1, 1));
}

#[test]
fn silence_while_the_coordinator_is_disconnected_takes_no_agent_offline() {
    let config = CoordinatorConfig::default();
    let timeout = Duration::from_millis(config.telemetry_timeout_ms);
    let mut h = Harness::new(config);
    h.status(agent_info("a1"));
    h.request("r1", "digits");
    h.input(Input::Disconnected);
    // Only r1's decision record goes out: nothing is re-routed or refused.
    let effects = h.tick_after(timeout * 3);
    assert_eq!(effects.len(), 1, "{effects:?}");
    let ids: Vec<String> = batches(&effects)[0]
        .decisions
        .iter()
        .map(|d| d.request_id.clone())
        .collect();
    assert_eq!(ids, ["r1"]);
    assert_eq!(h.core.counters().agents_online, 1);
    h.input(Input::Connected { reconnect: true });
    assert!(h.tick_after(Duration::from_millis(200)).is_empty());
    assert_eq!(h.core.counters().reconnects, 1);
    assert_eq!(h.core.counters().rerouted, 0);
}

#[test]
fn requests_over_the_held_bound_are_refused_overloaded() {
    let mut h = Harness::new(CoordinatorConfig {
        max_held_requests: 2,
        ..CoordinatorConfig::default()
    });
    h.status(agent_info("a1"));
    assert_eq!(assignments(&h.request("r1", "digits")).len(), 1);
    assert_eq!(assignments(&h.request("r2", "digits")).len(), 1);
    let refused = replies(&h.request("r3", "digits"));
    assert_eq!(
        refused,
        vec![(
            "replies/c".to_string(),
            ErrorCode::Overloaded,
            Some("r3".into())
        )]
    );
}

#[test]
fn an_undecodable_request_and_a_spoofed_status_are_dead_lettered_and_counted() {
    let mut h = Harness::new(CoordinatorConfig::default());
    let dead = h.topics.dead_letters();
    let topic = h.topics.request("digits");
    let malformed = replies(&h.message(topic, vec![0xc1, 0x00]));
    assert_eq!(malformed, vec![(dead.clone(), ErrorCode::Malformed, None)]);

    let topic = h.topics.status("a1");
    let spoofed = replies(&h.message(topic, encode(&agent_info("a2"))));
    assert_eq!(spoofed, vec![(dead, ErrorCode::Malformed, None)]);
    let c = h.core.counters();
    assert_eq!((c.agent_messages_refused, c.agents_online), (1, 0));
    assert_eq!(c.refused.get(&ErrorCode::Malformed), Some(&1));
}

fn coordinator_status(id: &str, online: bool) -> CoordinatorStatus {
    CoordinatorStatus {
        v: PROTOCOL_VERSION,
        id: id.into(),
        online,
        router: "least-loaded".into(),
        started_at_ms: 1,
    }
}

#[test]
fn each_group_member_is_tracked_by_its_own_status_and_a_spoofed_one_is_refused() {
    let mut h = Harness::new(CoordinatorConfig::default());
    for (id, online) in [("c1", true), ("c2", true), ("c2", false)] {
        let topic = h.topics.coordinator_status(id);
        assert!(h
            .message(topic, encode(&coordinator_status(id, online)))
            .is_empty());
    }
    let group: Vec<(String, bool)> = h.core.group().map(|s| (s.id.clone(), s.online)).collect();
    assert_eq!(group, vec![("c1".into(), true), ("c2".into(), false)]);
    assert_eq!(h.core.snapshot().group.len(), 2);

    let topic = h.topics.coordinator_status("c1");
    let spoofed = replies(&h.message(topic, encode(&coordinator_status("c3", false))));
    assert_eq!(spoofed.len(), 1);
    assert!(h.core.group().all(|s| s.id != "c3"));
    assert!(h.core.group().any(|s| s.id == "c1" && s.online));
}

#[test]
fn a_cleared_retained_status_retires_the_agent_without_an_error() {
    let config = CoordinatorConfig::default();
    let mut h = Harness::new(config);
    h.status(agent_info("a1"));
    h.status(agent_info("a2"));
    let first = assignments(&h.request("r1", "digits"));
    let holder = first[0].0.clone();
    let other = if holder == "a1" { "a2" } else { "a1" };
    let topic = h.topics.status(&holder);
    let moved = assignments(&h.message(topic, Vec::new()));
    assert_eq!(moved.len(), 1, "its request goes to the other agent");
    assert_eq!(moved[0].0, other);
    let c = h.core.counters();
    assert_eq!((c.agents_online, c.agent_messages_refused), (1, 0));
    let topic = h.topics.status("never-seen");
    assert!(h.message(topic, Vec::new()).is_empty());
    assert_eq!(h.core.counters().agent_messages_refused, 0);
}

#[test]
fn an_oversized_request_is_refused_without_being_decoded() {
    let mut h = Harness::new(CoordinatorConfig::default());
    let topic = h.topics.request("digits");
    let refusal = slim_protocol::Refusal::new(ErrorCode::TooLarge, "too big");
    let effects = replies(&h.input(Input::Oversize { topic, refusal }));
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].1, ErrorCode::TooLarge);
    assert_eq!(h.core.counters().received, 1);
}
