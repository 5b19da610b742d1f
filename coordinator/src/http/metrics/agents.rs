//! Each agent's device: requests answered and failed, utilization, memory, power and energy.

use prometheus::proto::MetricFamily;

use super::family::{Family, Samples};
use crate::http::{snapshot::Snapshot, TelemetryView};

/// The per-agent families, from the snapshot's agents and their latest telemetry.
#[derive(Debug)]
pub(super) struct AgentFamilies {
    success: Family,
    pending: Family,
    cpu_util: Family,
    cpu_used: Family,
    cpu_total: Family,
    gpu_util: Family,
    gpu_used: Family,
    gpu_total: Family,
    power: Family,
    energy: Family,
    online: Family,
    outstanding: Family,
    unreported: Family,
}

impl AgentFamilies {
    /// Long only because it declares one family (name and help) per device reading.
    pub(super) fn new() -> Self {
        let agent = &["agent"];
        let by_source = &["agent", "energy_source"];
        Self {
            success: Family::counter(
                "nv_inference_request_success",
                "Requests answered with a result, per agent (from its telemetry, since the agent started).",
                agent,
            ),
            pending: Family::gauge(
                "nv_inference_pending_request_count",
                "Requests waiting in the agent's queues.",
                agent,
            ),
            cpu_util: Family::gauge(
                "nv_cpu_utilization",
                "CPU utilization of the agent's device, 0..1.",
                agent,
            ),
            cpu_used: Family::gauge(
                "nv_cpu_memory_used_bytes",
                "RAM in use on the agent's device.",
                agent,
            ),
            cpu_total: Family::gauge(
                "nv_cpu_memory_total_bytes",
                "RAM in total on the agent's device.",
                agent,
            ),
            gpu_util: Family::gauge(
                "nv_gpu_utilization",
                "GPU utilization of the agent's device, 0..1 (agents with a readable GPU only).",
                agent,
            ),
            gpu_used: Family::gauge(
                "nv_gpu_memory_used_bytes",
                "GPU memory in use (agents with a readable GPU only).",
                agent,
            ),
            gpu_total: Family::gauge(
                "nv_gpu_memory_total_bytes",
                "GPU memory in total (agents with a readable GPU only).",
                agent,
            ),
            power: Family::gauge(
                "nv_gpu_power_usage",
                "Power drawn by the agent's device now, watts; energy_source says whether it is measured or modelled.",
                by_source,
            ),
            energy: Family::counter(
                "nv_energy_consumption",
                "Energy used by the agent's device since the agent started, joules.",
                by_source,
            ),
            online: Family::gauge(
                "slim_agent_online",
                "1 when the agent is online and routable, else 0.",
                &["agent", "backend"],
            ),
            outstanding: Family::gauge(
                "slim_agent_outstanding_requests",
                "Requests the coordinator placed on the agent and has not seen answered.",
                agent,
            ),
            unreported: Family::counter(
                "slim_agent_unreported_dropped",
                "Answered keys and batch records the agent dropped without reporting them (its backlog of unreported work is bounded), since the agent started.",
                agent,
            ),
        }
    }

    pub(super) fn families(&self) -> [&Family; 13] {
        [
            &self.success,
            &self.pending,
            &self.cpu_util,
            &self.cpu_used,
            &self.cpu_total,
            &self.gpu_util,
            &self.gpu_used,
            &self.gpu_total,
            &self.power,
            &self.energy,
            &self.online,
            &self.outstanding,
            &self.unreported,
        ]
    }

    /// Adds each agent's samples to `out`, and the errors its telemetry reports to `failure`.
    pub(super) fn collect(
        &self,
        s: &Snapshot,
        failure: &mut Samples<'_>,
        out: &mut Vec<MetricFamily>,
    ) {
        let mut online = self.online.samples();
        let mut outstanding = self.outstanding.samples();
        let mut success = self.success.samples();
        let mut energy = self.energy.samples();
        let mut pending = self.pending.samples();
        let mut cpu_util = self.cpu_util.samples();
        let mut cpu_used = self.cpu_used.samples();
        let mut cpu_total = self.cpu_total.samples();
        let mut gpu_util = self.gpu_util.samples();
        let mut gpu_used = self.gpu_used.samples();
        let mut gpu_total = self.gpu_total.samples();
        let mut power = self.power.samples();
        let mut unreported = self.unreported.samples();
        for a in &s.agents {
            let agent = [a.id.as_str()];
            online.set(&[&a.id, &a.backend], f64::from(u8::from(a.online)));
            outstanding.set(&agent, a.outstanding as f64);
            let Some(t) = &a.telemetry else { continue };
            success.add(&agent, t.completed as f64);
            unreported.add(&agent, t.unreported_dropped as f64);
            failure.add(&[&a.id, "agent_error"], t.errors as f64);
            let source = energy_source(t);
            energy.add(&[&a.id, &source], t.energy_j.max(0.0));
            if !a.online {
                continue; // a lost agent's gauges would only repeat stale readings
            }
            pending.set(&agent, f64::from(t.queue_depth));
            cpu_util.set(&agent, f64::from(t.cpu_util));
            cpu_used.set(&agent, t.ram_used_bytes as f64);
            cpu_total.set(&agent, t.ram_total_bytes as f64);
            if let Some(u) = t.gpu_util {
                gpu_util.set(&agent, f64::from(u));
            }
            if let Some(v) = t.vram_used_bytes {
                gpu_used.set(&agent, v as f64);
            }
            if let Some(v) = t.vram_total_bytes {
                gpu_total.set(&agent, v as f64);
            }
            power.set(&[&a.id, &source], f64::from(t.power_w));
        }
        out.extend(
            [
                online,
                outstanding,
                success,
                energy,
                pending,
                cpu_util,
                cpu_used,
                cpu_total,
                gpu_util,
                gpu_used,
                gpu_total,
                power,
                unreported,
            ]
            .map(Samples::finish),
        );
    }
}

/// The label of the telemetry's energy source, as it is spelled on the wire.
fn energy_source(t: &TelemetryView) -> String {
    serde_json::to_value(t.energy_source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
