//! Admission driven through the core: a flood is refused at the coordinator once every agent
//! that serves the model is at its announced bound, and placement resumes as the agents answer.

use std::time::Duration;

use slim_protocol::{encode, ErrorCode, RequestKey, Telemetry};

use super::tests::{assignments, replies, Harness};
use crate::{config::CoordinatorConfig, state::tests::agent_info};

/// An agent's report: it holds `outstanding`, answered `completed` since start (the keys of
/// `done` since the last report), on its clock `at_ms`.
fn report(h: &mut Harness, seq: u64, outstanding: u32, completed: u64, done: &[&str], at_ms: u64) {
    let mut t = Telemetry::idle("a1", seq);
    t.outstanding = outstanding;
    t.completed = completed;
    t.at_ms = at_ms;
    t.done = done
        .iter()
        .map(|id| RequestKey::new("replies/c", *id).wire())
        .collect();
    let topic = h.topics.telemetry("a1");
    h.message(topic, encode(&t));
}

fn harness_with_bound(max_queued: u32) -> Harness {
    let mut h = Harness::new(CoordinatorConfig::default());
    let mut info = agent_info("a1");
    info.max_queued = Some(max_queued);
    h.status(info);
    report(&mut h, 1, 0, 0, &[], 1_000);
    h
}

#[test]
fn a_flood_is_refused_at_the_coordinator_once_the_agent_is_at_its_bound() {
    let mut h = harness_with_bound(4);
    for i in 0..6 {
        // The agent keeps up by its last report (it held nothing): nothing is refused here,
        // the agent's own bound is the guard.
        assert_eq!(assignments(&h.request(&format!("r{i}"), "digits")).len(), 1);
    }
    // Now it says it holds 4, its bound, and answered nothing yet.
    report(&mut h, 2, 4, 0, &[], 2_000);
    let effects = h.request("r6", "digits");
    assert!(assignments(&effects).is_empty(), "{effects:?}");
    assert_eq!(
        replies(&effects),
        vec![("replies/c".into(), ErrorCode::Overloaded, Some("r6".into()))]
    );
    assert_eq!(h.core.counters().shed, 1);
    // It answered three: room again.
    report(&mut h, 3, 2, 3, &["r0", "r1", "r2"], 3_000);
    assert_eq!(assignments(&h.request("r7", "digits")).len(), 1);
    assert_eq!(h.core.counters().shed, 1);
}

#[test]
fn the_agent_is_expected_to_answer_between_reports_at_its_recent_rate() {
    let mut h = harness_with_bound(4);
    for i in 0..4 {
        h.request(&format!("r{i}"), "digits");
    }
    // Full, and answering 1 000 requests a second over the last report interval.
    report(&mut h, 2, 4, 1_000, &[], 2_000);
    assert_eq!(replies(&h.request("r4", "digits")).len(), 1);
    // 5 ms later about 5 of the 4 held are answered, though no report said so yet.
    h.clock.advance(Duration::from_millis(5));
    assert_eq!(assignments(&h.request("r5", "digits")).len(), 1);
}
