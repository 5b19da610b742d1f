//! Admission driven through the core: a flood is refused at the coordinator once every agent
//! that could take a request is at its announced bound, and placement resumes as the agents
//! drain.

use std::time::Duration;

use slim_protocol::{encode, ErrorCode, RequestKey, Telemetry};

use super::{
    tests::{assignments, replies, Harness},
    Effect,
};
use crate::{config::CoordinatorConfig, state::tests::agent_info};

/// What one of a1's reports says.
#[derive(Default)]
struct Report<'a> {
    seq: u64,
    outstanding: u32,
    done: &'a [&'a str],
    refused: &'a [&'a str],
    at_ms: u64,
}

fn report(h: &mut Harness, r: Report<'_>) {
    let keys = |ids: &[&str]| -> Vec<String> {
        ids.iter()
            .map(|id| RequestKey::new("replies/c", *id).wire())
            .collect()
    };
    let mut t = Telemetry::idle("a1", r.seq);
    t.outstanding = r.outstanding;
    t.at_ms = r.at_ms;
    t.done = keys(r.done);
    t.refused = keys(r.refused);
    // Reports come after the assignments before them (the ledger reconciles on that order).
    h.clock.advance(Duration::from_millis(1));
    let topic = h.topics.telemetry("a1");
    h.message(topic, encode(&t));
}

/// An idle moment: what follows comes after what went before.
fn pause(h: &mut Harness) {
    h.clock.advance(Duration::from_millis(1));
}

/// One agent bound to `max_queued`, which reported once, idle.
fn harness_with_bound(max_queued: u32) -> Harness {
    let mut h = Harness::new(CoordinatorConfig::default());
    let mut info = agent_info("a1");
    info.max_queued = Some(max_queued);
    h.status(info);
    let at_ms = 1_000;
    report(
        &mut h,
        Report {
            seq: 1,
            at_ms,
            ..Default::default()
        },
    );
    pause(&mut h);
    h
}

/// a1 bound to 1, holding r0 through two reports: masked.
fn masked_with_r0() -> Harness {
    let mut h = harness_with_bound(1);
    assert!(assigned(&mut h, "r0"));
    for (seq, at_ms) in [(2, 2_000), (3, 3_000)] {
        let held = Report {
            seq,
            outstanding: 1,
            at_ms,
            ..Default::default()
        };
        report(&mut h, held);
    }
    h
}

fn assigned(h: &mut Harness, id: &str) -> bool {
    !assignments(&h.request(id, "digits")).is_empty()
}

#[test]
fn a_flood_is_refused_at_the_coordinator_once_the_agent_is_busy_at_its_bound() {
    let mut h = harness_with_bound(4);
    for i in 0..6 {
        // The agent keeps up by its last report (it held nothing): nothing is refused here,
        // the agent's own bound is the guard.
        assert!(assigned(&mut h, &format!("r{i}")));
    }
    // It says it holds 4, its bound, and refused r4 and r5; it was idle before this report,
    // so how fast it drains is not known yet: still not masked.
    let refused = &["r4", "r5"];
    report(
        &mut h,
        Report {
            seq: 2,
            outstanding: 4,
            refused,
            at_ms: 2_000,
            ..Default::default()
        },
    );
    assert!(assigned(&mut h, "r6"));
    // Busy through a whole interval, having answered one: masked, and refused here.
    // It holds r1, r2, r3 and r6.
    let done = &["r0"];
    report(
        &mut h,
        Report {
            seq: 3,
            outstanding: 4,
            done,
            at_ms: 3_000,
            ..Default::default()
        },
    );
    let effects = h.request("r7", "digits");
    assert!(assignments(&effects).is_empty(), "{effects:?}");
    assert_eq!(
        replies(&effects),
        vec![("replies/c".into(), ErrorCode::Overloaded, Some("r7".into()))]
    );
    assert_eq!(h.core.counters().shed, 1);
    // It answered three more: room again.
    let done = &["r1", "r2", "r3"];
    report(
        &mut h,
        Report {
            seq: 4,
            outstanding: 1,
            done,
            at_ms: 4_000,
            ..Default::default()
        },
    );
    assert!(assigned(&mut h, "r8"));
    assert_eq!(h.core.counters().shed, 1);
}

#[test]
fn the_agent_is_expected_to_drain_between_reports_at_its_recent_rate() {
    let mut h = harness_with_bound(4);
    for i in 0..8 {
        h.request(&format!("r{i}"), "digits");
    }
    report(
        &mut h,
        Report {
            seq: 2,
            outstanding: 4,
            at_ms: 2_000,
            ..Default::default()
        },
    );
    // Busy through the interval, draining 4 in 10 ms: 400 a second.
    let done = &["r0", "r1", "r2", "r3"];
    report(
        &mut h,
        Report {
            seq: 3,
            outstanding: 4,
            done,
            at_ms: 2_010,
            ..Default::default()
        },
    );
    // Refused, and asked to hold the model's requests until the agent is expected to have
    // room: 1 over its bound at 400 a second, 2.5 ms, rounded up.
    let effects = h.request("r8", "digits");
    let retry: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply { reply, .. } => Some((reply.code, reply.retry_after_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(retry, vec![(ErrorCode::Overloaded, Some(3))]);
    // 5 ms later about 2 of the 4 held are drained, though no report said so yet.
    h.clock.advance(Duration::from_millis(5));
    let effects = h.request("r9", "digits");
    assert_eq!(assignments(&effects).len(), 1, "{:?}", replies(&effects));
}

#[test]
fn a_request_no_masked_agent_could_take_is_not_called_overloaded() {
    let mut h = masked_with_r0();
    // The only agent serves width 0.5; a request pinned to 0.25 is not a question of room.
    let mut r = slim_protocol::InferRequest::new(
        "pinned",
        "digits",
        slim_protocol::Tensor::from_u8(vec![1, 8, 8], vec![0; 64]),
    );
    r.reply_to = Some("replies/c".into());
    r.width = Some(0.25);
    let topic = h.topics.request("digits");
    let effects = h.message(topic, encode(&r));
    let codes: Vec<ErrorCode> = replies(&effects).into_iter().map(|r| r.1).collect();
    assert!(!codes.contains(&ErrorCode::Overloaded), "{effects:?}");
    assert_eq!(h.core.counters().shed, 0);
}

#[test]
fn refused_assignments_leave_the_ledger_and_a_retry_is_routed_again() {
    let mut h = harness_with_bound(4);
    assert!(assigned(&mut h, "r0"));
    let refused = &["r0"];
    report(
        &mut h,
        Report {
            seq: 2,
            refused,
            at_ms: 2_000,
            ..Default::default()
        },
    );
    // Not answered: a repeat after the resend window is a new placement, not a resend.
    h.clock.advance(Duration::from_secs(2));
    assert!(assigned(&mut h, "r0"));
    let c = h.core.counters();
    assert_eq!((c.routed, c.resent), (2, 0));
}

#[test]
fn a_request_rerouted_from_a_lost_agent_waits_rather_than_being_refused_overloaded() {
    let mut h = masked_with_r0();
    // a1 is masked; a2 joins and takes r1.
    h.status(agent_info("a2"));
    let effects = h.request("r1", "digits");
    assert_eq!(assignments(&effects)[0].0, "a2");
    // a2 leaves: r1 could only go to a1, which is full. It may have been answered by a2, so
    // it waits instead of being refused.
    let mut gone = agent_info("a2");
    gone.online = false;
    let effects = h.status(gone);
    assert!(replies(&effects).is_empty(), "{effects:?}");
    assert_eq!(h.core.counters().shed, 0);
    // a1 answers r0: r1 is placed there.
    let done = &["r0"];
    report(
        &mut h,
        Report {
            seq: 4,
            done,
            at_ms: 4_000,
            ..Default::default()
        },
    );
    let c = h.core.counters();
    assert_eq!((c.rerouted, c.shed), (1, 0));
    assert_eq!(c.routed, 3, "r0, r1, and r1 again on a1");
}

#[test]
fn a_rerouted_request_waiting_for_a_full_agent_is_left_to_the_client_at_the_park_timeout() {
    let mut h = masked_with_r0();
    h.status(agent_info("a2"));
    assert_eq!(assignments(&h.request("r1", "digits"))[0].0, "a2");
    let mut gone = agent_info("a2");
    gone.online = false;
    h.status(gone);
    // a1 stays full and keeps reporting (each report tries the parked requests again): the
    // park timeout runs from when r1 was first parked, not from the last try.
    let park_ms = h.core.config.park_timeout_ms;
    let mut effects = Vec::new();
    for seq in 4..(4 + park_ms / 500 + 4) {
        h.clock.advance(Duration::from_millis(500));
        report(
            &mut h,
            Report {
                seq,
                outstanding: 1,
                at_ms: seq * 1_000,
                ..Default::default()
            },
        );
        effects.extend(h.tick_after(Duration::from_millis(1)));
    }
    assert!(assignments(&effects).is_empty(), "{effects:?}");
    assert!(replies(&effects).is_empty(), "never refused: {effects:?}");
    let c = h.core.counters();
    assert_eq!((c.rerouted, c.reroutes_abandoned), (1, 1));
    assert!(h.core.parked.is_empty());
}
