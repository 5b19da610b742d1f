//! What `/metrics` exports for a snapshot: names, labels and values (the helpers and the
//! fleet fixture are shared with the scrape tests).

use std::{sync::Arc, time::Instant};

use prometheus_parse::{Sample, Scrape, Value};
use tokio::sync::watch;

use super::Metrics;
use crate::{
    counters::Counters,
    http::snapshot::{
        tests::{batch, decision, info, key, telemetry},
        Monitor, Snapshot,
    },
    online::OnlineView,
    state::ClusterState,
};

/// One scrape of a server whose core published `s`.
pub(super) fn render(s: &Snapshot) -> String {
    let (_core, snapshots) = watch::channel(Arc::new(s.clone()));
    Metrics::new(snapshots).scrape()
}

pub(super) fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition")
}

pub(super) fn find<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name} with {labels:?} in the scrape"))
}

pub(super) fn value(sample: &Sample) -> f64 {
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        _ => panic!("{} is not a plain value", sample.metric),
    }
}

/// A fleet of `agents` agents as a busy coordinator sees it: batches at two widths, three
/// kinds of placement each, every other agent with a GPU, every tenth offline, a refusal,
/// 1,000 requests received and online refinement after an update.
pub(super) fn fleet(agents: usize) -> Snapshot {
    let now = Instant::now();
    let mut cluster = ClusterState::default();
    let mut monitor = Monitor::new("c", "ppo:efficiency+online", 0);
    for i in 0..agents {
        let id = format!("agent-{i:03}");
        let mut status = info(&id);
        status.online = i % 10 != 9;
        cluster.on_status(status, now);
        let wide = slim_protocol::BatchRecord {
            width: 1.0,
            ..batch(8, 1.0, 20.0)
        };
        let mut t = telemetry(&id, 1, vec![batch(4, 2.0, 10.0), wide]);
        if i % 2 == 0 {
            t.gpu_util = Some(0.5);
            t.vram_used_bytes = Some(1 << 30);
            t.vram_total_bytes = Some(8 << 30);
            t.energy_source = slim_protocol::EnergySource::Nvml;
        }
        monitor.on_telemetry(&t, now, 0);
        cluster.on_telemetry(t, now);
        for (n, (width, size)) in [(0.25, 1), (0.5, 4), (1.0, 8)].into_iter().enumerate() {
            monitor.on_decision(&decision(&id, width, size), &key(&format!("{i}-{n}")), now);
        }
    }
    let mut counters = Counters {
        received: 1_000,
        routed: 990,
        ..Counters::default()
    };
    counters.refused(slim_protocol::ErrorCode::NoCapacity);
    let mut s = monitor.snapshot(&cluster, &counters, true, now, 0);
    let mut online = OnlineView::default();
    online.stats.updates = 3;
    online.last_update = Some(slim_router::ppo::online::UpdateReport {
        reward_mean: -0.25,
        cost_mean: 2.5,
        kl: 0.001,
        ..Default::default()
    });
    s.online = Some(online);
    s
}

#[test]
fn an_empty_coordinator_still_exports_its_policy_and_every_refusal_reason() {
    let s = Monitor::new("c", "least-loaded", 0).snapshot(
        &ClusterState::default(),
        &Counters::default(),
        true,
        Instant::now(),
        0,
    );
    let scrape = parse(&render(&s));
    assert_eq!(
        value(find(
            &scrape,
            "slim_router_info",
            &[("policy", "least-loaded")]
        )),
        1.0
    );
    let reasons = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "nv_inference_request_failure")
        .count();
    assert_eq!(reasons, slim_protocol::ErrorCode::ALL.len());
    assert_eq!(value(find(&scrape, "slim_agents_online", &[])), 0.0);
}

#[test]
fn online_refinement_is_exported_only_while_it_runs() {
    let mut s = Monitor::new("c", "ppo:efficiency+online", 0).snapshot(
        &ClusterState::default(),
        &Counters::default(),
        true,
        Instant::now(),
        0,
    );
    assert!(!render(&s).contains("slim_router_online"));
    let mut online = OnlineView::default();
    online.stats.updates = 3;
    online.stats.rejected = 1;
    online.stats.transitions = 800;
    online.stats.expired = 7;
    online.stats.pending = 12;
    online.saves = 3;
    s.online = Some(online.clone());
    let scrape = parse(&render(&s));
    for (name, want) in [
        ("slim_router_online_updates_total", 3.0),
        ("slim_router_online_rejected_total", 1.0),
        ("slim_router_online_transitions_total", 800.0),
        ("slim_router_online_expired_total", 7.0),
        ("slim_router_online_pending", 12.0),
        ("slim_router_online_checkpoint_writes_total", 3.0),
    ] {
        assert_eq!(value(find(&scrape, name, &[])), want, "{name}");
    }
    assert!(
        !scrape
            .samples
            .iter()
            .any(|x| x.metric == "slim_router_reward_mean"),
        "no update yet, no reward window"
    );
    online.last_update = Some(slim_router::ppo::online::UpdateReport {
        reward_mean: -0.25,
        cost_mean: 2.5,
        kl: 0.001,
        ..Default::default()
    });
    s.online = Some(online);
    let scrape = parse(&render(&s));
    assert_eq!(value(find(&scrape, "slim_router_reward_mean", &[])), -0.25);
    assert_eq!(value(find(&scrape, "slim_router_cost_mean", &[])), 2.5);
}

#[test]
fn gpu_metrics_appear_only_for_agents_that_report_a_gpu() {
    let now = Instant::now();
    let mut cluster = ClusterState::default();
    cluster.on_status(info("cpu-box"), now);
    cluster.on_status(info("gpu-box"), now);
    cluster.on_telemetry(telemetry("cpu-box", 1, vec![]), now);
    let mut gpu = telemetry("gpu-box", 1, vec![]);
    gpu.gpu_util = Some(0.75);
    gpu.vram_used_bytes = Some(2);
    gpu.vram_total_bytes = Some(8);
    gpu.energy_source = slim_protocol::EnergySource::Nvml;
    cluster.on_telemetry(gpu, now);
    let s = Monitor::new("c", "random", 0).snapshot(&cluster, &Counters::default(), true, now, 0);
    let scrape = parse(&render(&s));
    assert_eq!(
        value(find(&scrape, "nv_gpu_utilization", &[("agent", "gpu-box")])),
        0.75
    );
    assert!(!scrape
        .samples
        .iter()
        .any(|s| s.metric == "nv_gpu_utilization" && s.labels.get("agent") == Some("cpu-box")));
    assert_eq!(
        value(find(
            &scrape,
            "nv_energy_consumption",
            &[("agent", "gpu-box"), ("energy_source", "nvml")]
        )),
        120.0
    );
    assert_eq!(
        value(find(
            &scrape,
            "nv_gpu_memory_total_bytes",
            &[("agent", "gpu-box")]
        )),
        8.0
    );
}

#[test]
fn durations_and_decisions_are_exported_with_triton_names_and_router_labels() {
    let now = Instant::now();
    let mut cluster = ClusterState::default();
    cluster.on_status(info("a"), now);
    let mut monitor = Monitor::new("c", "least-loaded", 0);
    let t = telemetry("a", 1, vec![batch(4, 2.0, 10.0)]);
    monitor.on_telemetry(&t, now, 0);
    cluster.on_telemetry(t, now);
    let key = slim_protocol::RequestKey::new("r", "1");
    monitor.on_decision(&decision("a", 0.5, 8), &key, now);
    monitor.on_decision(&decision("a", 0.5, 8), &key, now);
    let mut counters = Counters::default();
    counters.refused(slim_protocol::ErrorCode::NoCapacity);
    let scrape = parse(&render(
        &monitor.snapshot(&cluster, &counters, true, now, 0),
    ));
    let per_width = [("agent", "a"), ("model", "digits"), ("width", "0.5")];
    assert_eq!(
        value(find(&scrape, "nv_inference_queue_duration_us", &per_width)),
        8_000.0
    );
    assert_eq!(
        value(find(
            &scrape,
            "nv_inference_compute_infer_duration_us",
            &per_width
        )),
        40_000.0
    );
    assert_eq!(
        value(find(
            &scrape,
            "nv_inference_request_duration_us",
            &per_width
        )),
        48_000.0
    );
    assert_eq!(value(find(&scrape, "nv_inference_count", &per_width)), 4.0);
    assert_eq!(
        value(find(&scrape, "nv_inference_exec_count", &per_width)),
        1.0
    );
    assert_eq!(
        value(find(
            &scrape,
            "slim_router_decisions_total",
            &[("agent", "a"), ("width", "0.5"), ("batch", "8")]
        )),
        2.0
    );
    assert_eq!(
        value(find(
            &scrape,
            "nv_inference_request_failure",
            &[("reason", "no_capacity")]
        )),
        1.0
    );
    assert_eq!(
        value(find(
            &scrape,
            "nv_inference_request_failure",
            &[("agent", "a"), ("reason", "agent_error")]
        )),
        2.0
    );
    assert_eq!(
        value(find(
            &scrape,
            "nv_inference_request_success",
            &[("agent", "a")]
        )),
        42.0
    );
    assert_eq!(
        value(find(&scrape, "nv_cpu_utilization", &[("agent", "a")])),
        0.25
    );
    assert_eq!(
        value(find(
            &scrape,
            "nv_inference_pending_request_count",
            &[("agent", "a")]
        )),
        3.0
    );
    assert_eq!(
        value(find(
            &scrape,
            "nv_gpu_power_usage",
            &[("agent", "a"), ("energy_source", "model")]
        )),
        7.5
    );
    assert!(matches!(
        find(&scrape, "nv_inference_queue_duration_us", &per_width).value,
        Value::Counter(_)
    ));
}
