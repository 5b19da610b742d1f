//! `/metrics`: the snapshot in Prometheus text format, with Triton's names where the meaning
//! matches (see `docs/monitoring.md`).

use prometheus::{
    core::Collector, CounterVec, Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use slim_protocol::WidthKey;

use super::snapshot::Snapshot;
use crate::online::OnlineView;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A registry built afresh for one scrape: every value comes from the snapshot, so counters
/// are set to their running totals rather than incremented in place.
struct Scrape(Registry);

impl Scrape {
    fn add<C: Collector + Clone + 'static>(&self, metric: C) -> C {
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric
    }

    fn int_counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> CounterVec {
        self.add(CounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn int_gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }
}

/// Renders the snapshot as Prometheus text (format 0.0.4).
pub fn render(s: &Snapshot) -> String {
    let r = Scrape(Registry::new());
    let failure = r.int_counter(
        "nv_inference_request_failure",
        "Failed requests by reason: coordinator refusals by error code (agent=\"\"), and error replies sent by agents (reason=\"agent_error\").",
        &["agent", "reason"],
    );
    for (code, n) in &s.counters.refused {
        failure.with_label_values(&["", code]).inc_by(*n);
    }

    batch_metrics(&r, s);
    agent_metrics(&r, s, &failure);
    router_metrics(&r, s);
    coordinator_metrics(&r, s);
    if let Some(online) = &s.online {
        online_metrics(&r, online);
    }

    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&r.0.gather(), &mut out)
        .expect("text encoding cannot fail");
    String::from_utf8(out).expect("text encoder writes UTF-8")
}

/// Inferences, batches and agent-side time per (agent, model, width), as Triton counts them.
fn batch_metrics(r: &Scrape, s: &Snapshot) {
    let count = r.int_counter(
        "nv_inference_count",
        "Inferences run (requests in batches), per agent, model and width.",
        &["agent", "model", "width"],
    );
    let exec_count = r.int_counter(
        "nv_inference_exec_count",
        "Batches run, per agent, model and width.",
        &["agent", "model", "width"],
    );
    let queue_us = r.counter(
        "nv_inference_queue_duration_us",
        "Cumulative time requests waited in the agent's queue, microseconds.",
        &["agent", "model", "width"],
    );
    let compute_us = r.counter(
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute time of requests (each request counts its batch's time), microseconds.",
        &["agent", "model", "width"],
    );
    let request_us = r.counter(
        "nv_inference_request_duration_us",
        "Cumulative agent-side request time (queue + compute), microseconds.",
        &["agent", "model", "width"],
    );
    for b in &s.batches {
        let width = WidthKey::of(b.width).to_string();
        let labels = [b.agent.as_str(), b.model.as_str(), width.as_str()];
        count.with_label_values(&labels).inc_by(b.inferences);
        exec_count.with_label_values(&labels).inc_by(b.executions);
        queue_us.with_label_values(&labels).inc_by(b.queue_us);
        compute_us.with_label_values(&labels).inc_by(b.compute_us);
        request_us
            .with_label_values(&labels)
            .inc_by(b.queue_us + b.compute_us);
    }
}

/// Each agent's device: requests answered and failed, utilization, memory, power and energy.
/// Long only because it declares one metric (name and help) per device reading, next to the
/// line that sets it.
fn agent_metrics(r: &Scrape, s: &Snapshot, failure: &IntCounterVec) {
    let success = r.int_counter(
        "nv_inference_request_success",
        "Requests answered with a result, per agent (from its telemetry, since the agent started).",
        &["agent"],
    );
    let pending = r.int_gauge(
        "nv_inference_pending_request_count",
        "Requests waiting in the agent's queues.",
        &["agent"],
    );
    let cpu_util = r.gauge(
        "nv_cpu_utilization",
        "CPU utilization of the agent's device, 0..1.",
        &["agent"],
    );
    let cpu_used = r.int_gauge(
        "nv_cpu_memory_used_bytes",
        "RAM in use on the agent's device.",
        &["agent"],
    );
    let cpu_total = r.int_gauge(
        "nv_cpu_memory_total_bytes",
        "RAM in total on the agent's device.",
        &["agent"],
    );
    let gpu_util = r.gauge(
        "nv_gpu_utilization",
        "GPU utilization of the agent's device, 0..1 (agents with a readable GPU only).",
        &["agent"],
    );
    let gpu_used = r.int_gauge(
        "nv_gpu_memory_used_bytes",
        "GPU memory in use (agents with a readable GPU only).",
        &["agent"],
    );
    let gpu_total = r.int_gauge(
        "nv_gpu_memory_total_bytes",
        "GPU memory in total (agents with a readable GPU only).",
        &["agent"],
    );
    let power = r.gauge(
        "nv_gpu_power_usage",
        "Power drawn by the agent's device now, watts; energy_source says whether it is measured or modelled.",
        &["agent", "energy_source"],
    );
    let energy = r.counter(
        "nv_energy_consumption",
        "Energy used by the agent's device since the agent started, joules.",
        &["agent", "energy_source"],
    );
    let agent_online = r.int_gauge(
        "slim_agent_online",
        "1 when the agent is online and routable, else 0.",
        &["agent", "backend"],
    );
    let outstanding = r.int_gauge(
        "slim_agent_outstanding_requests",
        "Requests the coordinator placed on the agent and has not seen answered.",
        &["agent"],
    );
    for a in &s.agents {
        let agent = [a.id.as_str()];
        agent_online
            .with_label_values(&[a.id.as_str(), a.backend.as_str()])
            .set(i64::from(a.online));
        outstanding
            .with_label_values(&agent)
            .set(a.outstanding as i64);
        let Some(t) = &a.telemetry else { continue };
        success.with_label_values(&agent).inc_by(t.completed);
        failure
            .with_label_values(&[a.id.as_str(), "agent_error"])
            .inc_by(t.errors);
        let source = serde_json::to_value(t.energy_source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        energy
            .with_label_values(&[a.id.as_str(), source.as_str()])
            .inc_by(t.energy_j.max(0.0));
        if !a.online {
            continue; // a lost agent's gauges would only repeat stale readings
        }
        pending
            .with_label_values(&agent)
            .set(i64::from(t.queue_depth));
        cpu_util
            .with_label_values(&agent)
            .set(f64::from(t.cpu_util));
        cpu_used
            .with_label_values(&agent)
            .set(t.ram_used_bytes as i64);
        cpu_total
            .with_label_values(&agent)
            .set(t.ram_total_bytes as i64);
        if let Some(u) = t.gpu_util {
            gpu_util.with_label_values(&agent).set(f64::from(u));
        }
        if let Some(v) = t.vram_used_bytes {
            gpu_used.with_label_values(&agent).set(v as i64);
        }
        if let Some(v) = t.vram_total_bytes {
            gpu_total.with_label_values(&agent).set(v as i64);
        }
        power
            .with_label_values(&[a.id.as_str(), source.as_str()])
            .set(f64::from(t.power_w));
    }
}

/// The router's placements per (agent, width, batch) and its name.
fn router_metrics(r: &Scrape, s: &Snapshot) {
    let decisions = r.int_counter(
        "slim_router_decisions_total",
        "Placements per chosen agent, width and batch size.",
        &["agent", "width", "batch"],
    );
    for d in &s.decision_counts {
        let width = WidthKey::of(d.width).to_string();
        decisions
            .with_label_values(&[d.agent.as_str(), width.as_str(), &d.batch.to_string()])
            .inc_by(d.count);
    }
    r.int_gauge(
        "slim_router_info",
        "The routing policy in use (value is always 1).",
        &["policy"],
    )
    .with_label_values(&[s.coordinator.router.as_str()])
    .set(1);
}

/// The coordinator's own counters and gauges.
fn coordinator_metrics(r: &Scrape, s: &Snapshot) {
    let plain = |name: &str, help: &str, value: u64| {
        r.int_counter(name, help, &[])
            .with_label_values(&[] as &[&str])
            .inc_by(value)
    };
    plain(
        "slim_requests_received_total",
        "Requests received on the request topics.",
        s.counters.received,
    );
    plain(
        "slim_requests_duplicate_total",
        "Redelivered requests ignored.",
        s.counters.duplicates,
    );
    plain(
        "slim_router_placements_total",
        "Placements published (first placements and re-routes).",
        s.counters.routed,
    );
    plain(
        "slim_router_reroutes_total",
        "Requests routed again after their agent was lost.",
        s.counters.rerouted,
    );
    plain(
        "slim_router_reroutes_abandoned_total",
        "Re-routed requests that found no agent within the park timeout, left to the client's retry (never refused: the lost agent may have answered them).",
        s.counters.reroutes_abandoned,
    );
    plain(
        "slim_requests_resent_total",
        "Retried requests sent again to the agent that holds or answered them.",
        s.counters.resent,
    );
    plain(
        "slim_coordinator_mqtt_reconnects_total",
        "Reconnections to the broker after the first connection.",
        s.counters.reconnects,
    );
    plain(
        "slim_agent_messages_refused_total",
        "Agent status or telemetry refused: identity mismatch, limits, undecodable, or too many agents.",
        s.counters.agent_messages_refused,
    );
    plain(
        "slim_ledger_reconciled_total",
        "Ledger entries dropped because the agent's own outstanding count showed them gone.",
        s.counters.ledger_reconciled,
    );
    plain(
        "slim_ledger_expired_total",
        "Ledger entries dropped after ledger_ttl_ms without an answer.",
        s.counters.ledger_expired,
    );
    let gauge = |name: &str, help: &str, value: i64| {
        r.int_gauge(name, help, &[])
            .with_label_values(&[] as &[&str])
            .set(value)
    };
    gauge(
        "slim_agents_online",
        "Agents online and routable.",
        s.agents.iter().filter(|a| a.online).count() as i64,
    );
    gauge(
        "slim_coordinator_connected",
        "1 when the coordinator is connected to the broker.",
        i64::from(s.coordinator.connected),
    );
}

/// Online refinement's counters and its latest update (only while it runs).
fn online_metrics(r: &Scrape, online: &OnlineView) {
    let st = &online.stats;
    let counter = |name: &str, help: &str, value: u64| {
        r.int_counter(name, help, &[])
            .with_label_values(&[] as &[&str])
            .inc_by(value)
    };
    counter(
        "slim_router_online_updates_total",
        "Online policy updates applied.",
        st.updates,
    );
    counter(
        "slim_router_online_rejected_total",
        "Online policy updates refused by the KL guard (or with weights not finite); the policy was kept.",
        st.rejected,
    );
    counter(
        "slim_router_online_transitions_total",
        "Live decisions whose reward arrived (from agent telemetry).",
        st.transitions,
    );
    counter(
        "slim_router_online_expired_total",
        "Remembered decisions whose reward never came (timed out, or placed again first).",
        st.expired,
    );
    counter(
        "slim_router_online_untracked_total",
        "Decisions routed but not remembered (memory bound reached, or a full batch waiting).",
        st.untracked,
    );
    counter(
        "slim_router_online_invalid_total",
        "Telemetry batch figures that could not be a reward (not finite).",
        st.invalid,
    );
    counter(
        "slim_router_online_checkpoint_writes_total",
        "Refined checkpoints written (--online-save).",
        online.saves,
    );
    counter(
        "slim_router_online_checkpoint_write_errors_total",
        "Refined checkpoints that could not be written.",
        online.save_errors,
    );
    let gauge = |name: &str, help: &str, value: f64| {
        r.gauge(name, help, &[])
            .with_label_values(&[] as &[&str])
            .set(value)
    };
    gauge(
        "slim_router_online_pending",
        "Decisions waiting for their reward.",
        st.pending as f64,
    );
    if let Some(last) = &online.last_update {
        gauge(
            "slim_router_reward_mean",
            "Mean live reward of the latest online update's batch (the training reward: higher is better).",
            f64::from(last.reward_mean),
        );
        gauge(
            "slim_router_cost_mean",
            "Mean request cost of the latest online update's batch (the preset's cost: lower is better).",
            f64::from(last.cost_mean),
        );
        gauge(
            "slim_router_online_kl",
            "KL(old || new) of the latest online update over its batch.",
            f64::from(last.kl),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use prometheus_parse::{Sample, Scrape, Value};

    use super::*;
    use crate::{
        counters::Counters,
        http::snapshot::{
            tests::{batch, decision, info, telemetry},
            Monitor,
        },
        state::ClusterState,
    };

    fn parse(text: &str) -> Scrape {
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition")
    }

    fn find<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Sample {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} with {labels:?} in the scrape"))
    }

    fn value(sample: &Sample) -> f64 {
        match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{} is not a plain value", sample.metric),
        }
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
        let s =
            Monitor::new("c", "random", 0).snapshot(&cluster, &Counters::default(), true, now, 0);
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
}
