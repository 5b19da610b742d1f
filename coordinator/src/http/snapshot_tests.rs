//! Tests of the monitor and its snapshot (shared helpers are used by the metrics tests).
use super::*;
use slim_protocol::{BatchRecord, QueueStat, PROTOCOL_VERSION};

/// An online agent serving digits at width 0.5 (shared with the cluster-state tests).
pub(crate) use crate::state::tests::agent_info as info;

pub(crate) fn telemetry(agent: &str, seq: u64, batches: Vec<BatchRecord>) -> Telemetry {
    Telemetry {
        at_ms: 0,
        cpu_util: 0.25,
        ram_used_bytes: 1_000,
        ram_total_bytes: 4_000,
        power_w: 7.5,
        energy_j: 120.0,
        queues: vec![QueueStat {
            model: "digits".into(),
            width: 0.5,
            depth: 3,
            oldest_wait_ms: 2.0,
            instances: 1,
        }],
        outstanding: 3,
        completed: 42,
        errors: 2,
        batches,
        ..Telemetry::idle(agent, seq)
    }
}

pub(crate) fn batch(size: u16, queue_ms: f32, compute_ms: f32) -> BatchRecord {
    BatchRecord {
        model: "digits".into(),
        width: 0.5,
        batch_size: size,
        queue_ms,
        compute_ms,
        energy_j: 0.1,
        requests: vec![],
    }
}

pub(crate) fn decision(agent: &str, width: f32, batch: u16) -> Decision {
    Decision {
        v: PROTOCOL_VERSION,
        request_id: "r".into(),
        model: "digits".into(),
        agent: agent.into(),
        width,
        batch_size: batch,
        router: "least-loaded".into(),
        at_ms: 0,
        candidates: 1,
        agent_outstanding: 0,
        attempt: 0,
    }
}

pub(crate) fn key(id: &str) -> RequestKey {
    RequestKey::new("client/replies", id)
}

#[test]
fn batch_totals_sum_per_request_and_ignore_a_redelivered_report() {
    let mut m = Monitor::new("c", "least-loaded", 0);
    let t = telemetry("a", 1, vec![batch(4, 2.0, 10.0), batch(1, 0.0, 5.0)]);
    m.on_telemetry(&t, Instant::now(), 0);
    m.on_telemetry(&t, Instant::now(), 0);
    let totals = &m.batches.values().next().unwrap();
    assert_eq!(totals.executions, 2);
    assert_eq!(totals.inferences, 5);
    assert_eq!(totals.queue_us, 8_000.0);
    assert_eq!(totals.compute_us, 45_000.0);
}

#[test]
fn history_has_one_sample_per_second_with_throughput_latency_and_width_mix() {
    let mut m = Monitor::new("c", "least-loaded", 10_000);
    let now = Instant::now();
    m.on_telemetry(&telemetry("a", 1, vec![batch(2, 1.0, 3.0)]), now, 10_000);
    m.on_decision(&decision("a", 0.25, 8), &key("x"), now);
    m.on_decision(&decision("a", 1.0, 8), &key("y"), now);
    m.tick(10_500);
    assert!(m.history.samples.is_empty(), "the second is not over");
    m.tick(12_100);
    let history = &m.history.samples;
    assert_eq!(history.len(), 2);
    let first = &history[0];
    assert_eq!(first.at_ms, 10_000);
    assert_eq!(first.completed, 2);
    assert_eq!(first.latency_ms, Some(4.0));
    assert_eq!(first.queue_ms, Some(1.0));
    assert_eq!(first.compute_ms, Some(3.0));
    assert_eq!(first.widths.get("0.25"), Some(&1));
    assert_eq!(first.widths.get("1"), Some(&1));
    assert_eq!(history[1].completed, 0);
    assert_eq!(history[1].latency_ms, None);
}

#[test]
fn only_the_latest_hundred_decisions_are_kept() {
    let mut m = Monitor::new("c", "least-loaded", 0);
    for i in 0..150 {
        let mut d = decision("a", 0.5, 1);
        d.request_id = format!("r{i}");
        m.on_decision(&d, &key(&d.request_id), Instant::now());
    }
    let s = m.snapshot(
        &ClusterState::default(),
        &Counters::default(),
        false,
        Instant::now(),
        0,
    );
    assert_eq!(s.decisions.len(), RECENT_DECISIONS);
    assert_eq!(s.decisions.last().unwrap().request_id, "r149");
    assert_eq!(s.decisions[0].request_id, "r50");
    assert!(s.decisions.iter().all(|d| d.agent == "a" && d.width == 0.5));
    assert_eq!(s.decision_counts[0].count, 150);
}

/// Agent `a` serving digits (widths 0.25 and 1, measured) and cifar (width 0.5, cited).
fn two_family_info() -> slim_protocol::AgentInfo {
    use slim_protocol::{ModelInfo, WidthInfo};
    let width = |width, top1, source: &str| WidthInfo {
        width,
        top1,
        accuracy_source: source.into(),
        flops: 1,
        params: 1,
    };
    let mut info = info("a");
    info.models = vec![
        ModelInfo {
            name: "digits".into(),
            input_shape: vec![1, 8, 8],
            classes: 10,
            widths: vec![width(0.25, 0.9, "measured"), width(1.0, 0.98, "measured")],
        },
        ModelInfo {
            name: "cifar".into(),
            input_shape: vec![3, 32, 32],
            classes: 100,
            widths: vec![width(0.5, 0.703, "cited")],
        },
    ];
    info
}

fn record(
    model: &str,
    width: f32,
    size: u16,
    queue: f32,
    compute: f32,
    energy: f32,
) -> BatchRecord {
    BatchRecord {
        model: model.into(),
        width,
        batch_size: size,
        queue_ms: queue,
        compute_ms: compute,
        energy_j: energy,
        requests: vec![],
    }
}

/// Three requests arrive, are placed 1, 3 and 2 ms later, and the agent reports four digits
/// inferences and one cifar inference, then all three done, in its first telemetry report.
fn known_sequence() -> (Monitor, ClusterState, Instant) {
    let t0 = Instant::now();
    let ms = |n| t0 + std::time::Duration::from_millis(n);
    let mut cluster = ClusterState::default();
    cluster.on_status(two_family_info(), t0);
    let mut m = Monitor::new("c", "random", 100_000);
    let requests = [
        ("r1", "digits", Some(99_996), 0.25, 1),
        ("r2", "digits", Some(99_996), 1.0, 3),
        ("r3", "cifar", None, 0.5, 2),
    ];
    for (id, model, sent, _, _) in requests {
        m.on_arrival(&key(id), model, sent, t0, 100_000);
    }
    for (id, model, _, width, after) in requests {
        let mut d = decision("a", width, 1);
        (d.request_id, d.model, d.at_ms) = (id.into(), model.into(), 100_000 + after);
        m.on_decision(&d, &key(id), ms(after));
    }
    m.tick(101_000);
    let mut t = telemetry(
        "a",
        1,
        vec![
            record("digits", 0.25, 3, 2.0, 4.0, 0.3),
            record("digits", 1.0, 1, 10.0, 20.0, 0.5),
            record("cifar", 0.5, 1, 1.0, 50.0, 2.0),
        ],
    );
    (t.at_ms, t.done) = (50_000, ["r1", "r2", "r3"].map(|id| key(id).wire()).to_vec());
    m.on_telemetry(&t, ms(1000), 101_000);
    cluster.on_telemetry(t, ms(1000));
    let mut t = telemetry("a", 2, vec![]);
    (t.at_ms, t.power_w, t.energy_j) = (51_000, 9.0, 128.0);
    m.on_telemetry(&t, ms(2000), 102_000);
    m.tick(102_100);
    (m, cluster, ms(2100))
}

fn close(json: &serde_json::Value, expected: f64) -> bool {
    json.as_f64().is_some_and(|v| (v - expected).abs() < 1e-3)
}

#[test]
fn the_snapshot_carries_latency_per_part_width_mix_accuracy_and_power_for_known_events() {
    let (m, cluster, now) = known_sequence();
    let s = m.snapshot(&cluster, &Counters::default(), true, now, 102_100);
    let json = serde_json::to_value(&s).unwrap();
    let digits = &json["models"][1];
    assert_eq!(digits["model"], "digits");
    let lat = &digits["latency"];
    let p = |part: &str, q: &str| lat[part][q].clone();
    assert_eq!(
        (
            p("client_to_coordinator", "n"),
            p("client_to_coordinator", "p99")
        ),
        (2.into(), 4.0.into())
    );
    assert!(close(&p("in_coordinator", "p50"), 1.0) && close(&p("in_coordinator", "p99"), 3.0));
    // Queue 2 ms for a batch of 3 and 10 ms for a batch of 1: four requests.
    assert_eq!(p("agent_queue", "n"), 4);
    assert_eq!(
        (p("agent_queue", "p50"), p("agent_queue", "p95")),
        (2.0.into(), 10.0.into())
    );
    assert_eq!(
        (p("agent_compute", "p50"), p("agent_compute", "p99")),
        (4.0.into(), 20.0.into())
    );
    assert_eq!(
        (p("agent_total", "p50"), p("agent_total", "p99")),
        (6.0.into(), 30.0.into())
    );
    assert_eq!(p("arrival_to_done_notice", "n"), 2);
    assert!(close(&p("arrival_to_done_notice", "p50"), 1000.0));
    assert_eq!(digits["inferences"], 4);
    assert_eq!(digits["widths"][0]["width"], 0.25);
    assert!(
        close(&digits["widths"][0]["share"], 0.75) && close(&digits["widths"][1]["share"], 0.25)
    );
    assert!(
        close(&digits["accuracy"], 0.75 * 0.9 + 0.25 * 0.98),
        "{}",
        digits["accuracy"]
    );
    assert!(digits["accuracy_note"].is_null());
    assert!(close(&digits["energy_per_result_j"], 0.2));
    assert_eq!(digits["energy_source"], "model");
    let cifar = &json["models"][0];
    assert_eq!(cifar["model"], "cifar");
    assert!(cifar["accuracy"].is_null());
    assert!(cifar["accuracy_note"]
        .as_str()
        .unwrap()
        .contains("accuracy cited for width 0.5, not measured"));
    assert!(
        cifar["latency"]["client_to_coordinator"].is_null(),
        "r3 carried no sent_at_ms"
    );
    assert!(close(&cifar["latency"]["in_coordinator"]["p50"], 2.0));
    let agent = &json["agents"][0];
    assert_eq!(agent["telemetry_interval_ms"], 1000);
    assert_eq!(
        (
            agent["latency"]["n"].clone(),
            agent["latency"]["p99"].clone()
        ),
        (5.into(), 51.0.into())
    );
    let power = &json["power"][0];
    assert_eq!(
        (
            power["agent"].clone(),
            power["energy_source"].clone(),
            power["measured"].clone()
        ),
        ("a".into(), "model".into(), false.into())
    );
    let points: Vec<(f64, f64)> = power["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["power_w"].as_f64().unwrap(),
                p["energy_j"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(points, vec![(7.5, 120.0), (9.0, 128.0)]);
    let history = &json["history"];
    assert!(close(&history[0]["client_hop_ms"], 4.0) && close(&history[0]["coordinator_ms"], 2.0));
    assert_eq!(history[1]["completed"], 5);
    assert!(close(&history[1]["queue_ms"], 3.4) && close(&history[1]["compute_ms"], 16.4));
}

/// Under load an agent sends several pages per telemetry tick, with the same readings; each
/// once added a power point, and the interval between them (0) hid the agent's real one.
#[test]
fn a_further_page_of_a_report_adds_no_power_point_and_keeps_the_interval() {
    let (mut m, cluster, now) = known_sequence();
    let mut page = telemetry("a", 3, vec![batch(2, 1.0, 2.0)]);
    (page.at_ms, page.power_w, page.energy_j) = (51_000, 9.0, 128.0);
    m.on_telemetry(&page, now, 102_200);
    let s = m.snapshot(&cluster, &Counters::default(), true, now, 102_200);
    assert_eq!(s.power[0].points.len(), 2);
    assert_eq!(s.agents[0].telemetry_interval_ms, Some(1000));
}

#[test]
fn the_last_minute_is_forgotten_and_an_idle_model_says_why_it_has_no_accuracy() {
    let (mut m, cluster, now) = known_sequence();
    m.tick(170_000);
    let s = m.snapshot(&cluster, &Counters::default(), true, now, 170_000);
    let digits = s.models.iter().find(|v| v.model == "digits").unwrap();
    assert_eq!(digits.inferences, 0);
    assert_eq!(digits.latency, crate::http::LatencyView::default());
    assert_eq!(digits.accuracy, None);
    assert_eq!(
        digits.accuracy_note.as_deref(),
        Some("no request served in the window")
    );
    assert!(s.power[0].points.is_empty());
}
