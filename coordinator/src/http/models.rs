//! Per-model figures over the last minute: latency percentiles of each part of a request's life
//! the coordinator can see, the width mix the agents served and the accuracy it implies, and
//! energy per result.

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;
use slim_protocol::{BatchRecord, EnergySource, ModelInfo, WidthKey};

use super::window::{Percentiles, Window, WINDOW_MS};

/// Model families tracked at most (names come from the agents' telemetry).
pub const MAX_MODELS: usize = 64;

/// One batch an agent ran, as its telemetry reported it.
#[derive(Debug, Clone)]
pub struct BatchSample {
    /// Agent that ran it.
    pub agent: Arc<str>,
    /// Its width.
    pub width: WidthKey,
    /// Requests in it.
    pub size: u32,
    /// Mean queue time of its requests, ms.
    pub queue_ms: f32,
    /// Its compute time, ms.
    pub compute_ms: f32,
    /// Its energy, J.
    pub energy_j: f32,
    /// Where the agent's energy figures come from.
    pub source: EnergySource,
}

impl BatchSample {
    /// The sample of `b`, run by `agent` whose energy comes from `source`.
    pub fn new(agent: Arc<str>, b: &BatchRecord, source: EnergySource) -> Self {
        Self {
            agent,
            width: WidthKey::of(b.width),
            size: u32::from(b.batch_size.max(1)),
            queue_ms: b.queue_ms.max(0.0),
            compute_ms: b.compute_ms.max(0.0),
            energy_j: b.energy_j.max(0.0),
            source,
        }
    }
}

/// The windows of one model family.
#[derive(Debug, Default)]
pub struct ModelStats {
    /// Batches run.
    pub batches: Window<BatchSample>,
    /// Client's send time to arrival here, per request that carried `sent_at_ms`.
    pub client_hop: Window<f32>,
    /// Arrival here to the assignment, per first placement.
    pub coordinator: Window<f32>,
    /// Arrival here to the agent's done notice in telemetry.
    pub done_notice: Window<f32>,
}

impl ModelStats {
    /// Drops what is older than the window.
    pub fn prune(&mut self, now_ms: u64) {
        self.batches.prune(now_ms);
        self.client_hop.prune(now_ms);
        self.coordinator.prune(now_ms);
        self.done_notice.prune(now_ms);
    }
}

/// p50/p95/p99 of each measured part, ms; `null` where nothing was measured in the window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LatencyView {
    /// The client's `sent_at_ms` to the request's arrival at the coordinator: one broker hop,
    /// read on two clocks (client and coordinator), so it includes their offset.
    pub client_to_coordinator: Option<Percentiles>,
    /// Arrival at the coordinator to the assignment handed to its MQTT client (validation,
    /// parking, routing); first placements only.
    pub in_coordinator: Option<Percentiles>,
    /// Agent-side: the agent's receipt of the assignment to its batch starting (a batch's mean).
    pub agent_queue: Option<Percentiles>,
    /// Agent-side: the batch's compute time.
    pub agent_compute: Option<Percentiles>,
    /// Agent-side: queue + compute.
    pub agent_total: Option<Percentiles>,
    /// Arrival at the coordinator to the agent's telemetry reporting the request done: an upper
    /// bound of everything after the client's send, late by up to one telemetry interval.
    pub arrival_to_done_notice: Option<Percentiles>,
}

/// One width's share of what a model's agents served in the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WidthShare {
    /// Width.
    pub width: f32,
    /// Requests served at it.
    pub inferences: u64,
    /// Share of the model's requests, 0..1.
    pub share: f32,
    /// Top-1 accuracy the agents announce for it.
    pub top1: Option<f32>,
    /// `measured` or `cited`, as announced.
    pub accuracy_source: Option<String>,
}

/// One model family over the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelView {
    /// Family name.
    pub model: String,
    /// Window length, s.
    pub window_s: u64,
    /// Latency percentiles per part.
    pub latency: LatencyView,
    /// Requests the agents reported served in the window.
    pub inferences: u64,
    /// Width mix of those requests, ascending width.
    pub widths: Vec<WidthShare>,
    /// Top-1 accuracy the mix implies (Σ share × top1), when every served width's accuracy is
    /// measured.
    pub accuracy: Option<f32>,
    /// Why `accuracy` is null, when it is.
    pub accuracy_note: Option<String>,
    /// Energy per served request, J.
    pub energy_per_result_j: Option<f32>,
    /// Source of that energy: `nvml`, `ina3221`, `rapl`, `model`, `none`, or `mixed`.
    pub energy_source: String,
}

fn percentiles<'a>(values: impl Iterator<Item = &'a f32>) -> Option<Percentiles> {
    Percentiles::of(values.map(|v| (*v, 1)).collect())
}

/// Percentiles of queue, compute and their sum over `batches`, each weighted by batch size.
pub fn agent_side<'a>(
    batches: impl Iterator<Item = &'a BatchSample> + Clone,
) -> [Option<Percentiles>; 3] {
    let of = |f: &dyn Fn(&BatchSample) -> f32| {
        Percentiles::of(batches.clone().map(|b| (f(b), b.size)).collect())
    };
    [
        of(&|b| b.queue_ms),
        of(&|b| b.compute_ms),
        of(&|b| b.queue_ms + b.compute_ms),
    ]
}

impl ModelView {
    /// The view of `name` from its windows, with the widths' accuracy from `info`.
    pub fn new(name: &str, stats: &ModelStats, info: Option<&ModelInfo>) -> Self {
        let [agent_queue, agent_compute, agent_total] = agent_side(stats.batches.iter());
        let latency = LatencyView {
            client_to_coordinator: percentiles(stats.client_hop.iter()),
            in_coordinator: percentiles(stats.coordinator.iter()),
            agent_queue,
            agent_compute,
            agent_total,
            arrival_to_done_notice: percentiles(stats.done_notice.iter()),
        };
        let widths = width_mix(stats, info);
        let (accuracy, accuracy_note) = implied_accuracy(name, &widths, info);
        let inferences: u64 = widths.iter().map(|w| w.inferences).sum();
        let energy: f64 = stats.batches.iter().map(|b| f64::from(b.energy_j)).sum();
        Self {
            model: name.to_string(),
            window_s: WINDOW_MS / 1000,
            latency,
            inferences,
            widths,
            accuracy,
            accuracy_note,
            energy_per_result_j: (inferences > 0).then(|| (energy / inferences as f64) as f32),
            energy_source: energy_source(stats),
        }
    }
}

fn width_mix(stats: &ModelStats, info: Option<&ModelInfo>) -> Vec<WidthShare> {
    let mut counts: BTreeMap<WidthKey, u64> = BTreeMap::new();
    for b in stats.batches.iter() {
        *counts.entry(b.width).or_default() += u64::from(b.size);
    }
    let total: u64 = counts.values().sum();
    counts
        .into_iter()
        .map(|(key, n)| {
            let width = key.width();
            let announced =
                info.and_then(|m| m.widths.iter().find(|w| WidthKey::of(w.width) == key));
            WidthShare {
                width,
                inferences: n,
                share: n as f32 / total.max(1) as f32,
                top1: announced.map(|w| w.top1),
                accuracy_source: announced.map(|w| w.accuracy_source.clone()),
            }
        })
        .collect()
}

fn implied_accuracy(
    name: &str,
    widths: &[WidthShare],
    info: Option<&ModelInfo>,
) -> (Option<f32>, Option<String>) {
    if info.is_none() {
        return (None, Some(format!("no agent announces {name:?} now")));
    }
    if widths.is_empty() {
        return (None, Some("no request served in the window".into()));
    }
    let unmeasured: Vec<&WidthShare> = widths
        .iter()
        .filter(|w| w.accuracy_source.as_deref() != Some("measured"))
        .collect();
    if !unmeasured.is_empty() {
        let mut sources: Vec<&str> = unmeasured
            .iter()
            .map(|w| w.accuracy_source.as_deref().unwrap_or("not announced"))
            .collect();
        sources.dedup();
        let list: Vec<String> = unmeasured.iter().map(|w| w.width.to_string()).collect();
        let note = format!(
            "accuracy {} for width {}, not measured on the weights served \
             (see models/{name}/manifest.toml)",
            sources.join("/"),
            list.join(", ")
        );
        return (None, Some(note));
    }
    let sum: f32 = widths.iter().map(|w| w.share * w.top1.unwrap_or(0.0)).sum();
    (Some(sum), None)
}

fn energy_source(stats: &ModelStats) -> String {
    let mut sources = stats.batches.iter().map(|b| b.source);
    let Some(first) = sources.next() else {
        return "none".into();
    };
    if sources.all(|s| s == first) {
        serde_json::to_value(first)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    } else {
        "mixed".into()
    }
}
