//! Message types, one per topic. Field names are the wire names.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Tensor, PROTOCOL_VERSION};

/// A client's inference request, published on `{prefix}/requests/{model}`. `D` holds the
/// tensor's bytes: shared [`Bytes`], or `&[u8]` borrowed from the payload while it is decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "D: AsRef<[u8]>"))]
pub struct InferRequest<D = Bytes> {
    /// Protocol version; must equal [`PROTOCOL_VERSION`].
    pub v: u16,
    /// Client-chosen unique id. A redelivered request with the same id is answered once.
    pub id: String,
    /// Model family name, e.g. `digits`.
    pub model: String,
    /// Topic the answer ([`InferResult`] or [`crate::ErrorReply`]) is published to.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// One sample (encoded after `reply_to`, so a truncated tensor still leaves the
    /// reply address readable): `[C,H,W]` or `[1,C,H,W]`. `f32` is model-ready, `u8` is raw pixels.
    pub input: Tensor<D>,
    /// Pin a width (e.g. 0.5) instead of letting the router choose.
    #[serde(default)]
    pub width: Option<f32>,
    /// Lowest acceptable top-1 accuracy of the width used, as a fraction.
    #[serde(default)]
    pub min_accuracy: Option<f32>,
    /// Latency budget in milliseconds; the router prefers placements that meet it.
    #[serde(default)]
    pub deadline_ms: Option<u32>,
    /// How many classes to return (default 5).
    #[serde(default)]
    pub top_k: Option<u16>,
    /// Client clock when sent, milliseconds since the Unix epoch (informational).
    #[serde(default)]
    pub sent_at_ms: Option<u64>,
}

impl InferRequest {
    /// A request with only the required fields set.
    pub fn new(id: impl Into<String>, model: impl Into<String>, input: Tensor) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: id.into(),
            model: model.into(),
            input,
            reply_to: None,
            width: None,
            min_accuracy: None,
            deadline_ms: None,
            top_k: None,
            sent_at_ms: None,
        }
    }
}

impl<D> InferRequest<D> {
    /// The same request with its tensor's bytes mapped by `f`.
    pub fn map_data<E>(self, f: impl FnOnce(D) -> E) -> InferRequest<E> {
        InferRequest {
            v: self.v,
            id: self.id,
            model: self.model,
            reply_to: self.reply_to,
            input: self.input.map_data(f),
            width: self.width,
            min_accuracy: self.min_accuracy,
            deadline_ms: self.deadline_ms,
            top_k: self.top_k,
            sent_at_ms: self.sent_at_ms,
        }
    }
}

/// The coordinator's placement of one request, sent on `{prefix}/agents/{agent}/assign`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Protocol version.
    pub v: u16,
    /// The request, as the client sent it.
    pub request: InferRequest,
    /// Width to run it at.
    pub width: f32,
    /// Largest batch the agent may form for this request's queue.
    pub batch_size: u16,
    /// Longest the agent may hold the request to fill a batch, in milliseconds.
    pub max_queue_delay_ms: u32,
    /// Name of the router that decided.
    pub router: String,
    /// Coordinator clock at decision time.
    pub assigned_at_ms: u64,
    /// 0 for the first placement, +1 for every re-route after an agent was lost.
    #[serde(default)]
    pub attempt: u16,
    /// HMAC-SHA256 signature by the coordinator ([`crate::AssignmentKey`]), when the deployment
    /// has an assignment key. Left out otherwise.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub mac: Option<Vec<u8>>,
}

/// One class and its softmax probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    /// Class index in the model's output.
    pub class: u32,
    /// Class name from the model manifest.
    pub label: String,
    /// Softmax probability.
    pub score: f32,
}

/// Where a latency was spent, in milliseconds, measured on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// From arrival at the agent to the start of its batch.
    pub queue_ms: f32,
    /// Running the batch.
    pub compute_ms: f32,
    /// From arrival at the agent to the result being handed to MQTT.
    pub total_ms: f32,
}

/// Where an energy figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergySource {
    /// NVIDIA NVML total-energy counter or power readings.
    Nvml,
    /// Jetson INA3221 power rails in sysfs.
    Ina3221,
    /// Intel/AMD RAPL energy counters of the CPU packages (`/sys/class/powercap`).
    Rapl,
    /// Estimated: idle + utilization × (max − idle) from the device profile.
    Model,
    /// No figure is available.
    None,
}

impl EnergySource {
    /// True for a figure read from a sensor (`nvml`, `ina3221`, `rapl`), false for the `model`
    /// estimate and for `none`.
    pub fn is_measured(self) -> bool {
        matches!(self, Self::Nvml | Self::Ina3221 | Self::Rapl)
    }
}

/// The answer to a request, published on its `reply_to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferResult {
    /// Protocol version.
    pub v: u16,
    /// The request's id.
    pub id: String,
    /// Model family.
    pub model: String,
    /// Agent that ran it.
    pub agent: String,
    /// Width it ran at.
    pub width: f32,
    /// Size of the batch it ran in.
    pub batch_size: u16,
    /// Top-k classes, best first.
    pub top_k: Vec<ClassScore>,
    /// Top-1 accuracy of this width, from the model manifest.
    pub accuracy: f32,
    /// Agent-side timings.
    pub timings: Timings,
    /// This request's share of the batch's energy, in joules.
    pub energy_j: f32,
    /// Where the energy figure came from.
    pub energy_source: EnergySource,
    /// Router that placed it.
    pub router: String,
    /// True when the agent emulates a slower device (see [`Emulation`]).
    #[serde(default)]
    pub emulated: bool,
}

/// Per-width facts about a model, as the agent serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WidthInfo {
    /// Width multiplier, e.g. 0.25.
    pub width: f32,
    /// Top-1 accuracy, as a fraction.
    pub top1: f32,
    /// `measured` or `cited`, with the split or citation in the manifest.
    pub accuracy_source: String,
    /// FLOPs for one sample.
    pub flops: u64,
    /// Parameter count.
    pub params: u64,
}

/// A model family an agent can run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Family name, used in request topics.
    pub name: String,
    /// Sample shape `[C,H,W]`.
    pub input_shape: Vec<u32>,
    /// Number of classes.
    pub classes: u32,
    /// Widths available, ascending.
    pub widths: Vec<WidthInfo>,
}

/// The hardware an agent runs on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Host name.
    pub hostname: String,
    /// `cpu`, `gpu` or `jetson`.
    pub kind: String,
    /// CPU brand string.
    pub cpu_model: String,
    /// Logical cores the agent may use.
    pub cpu_cores: u32,
    /// Total RAM.
    pub ram_bytes: u64,
    /// GPU name, when there is one.
    #[serde(default)]
    pub gpu: Option<String>,
    /// Total VRAM, when there is a discrete GPU.
    #[serde(default)]
    pub vram_bytes: Option<u64>,
}

/// How an agent stands for another device, for testing heterogeneity on one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Emulation {
    /// Slowdown factor (≥ 1). Without `profile`, every batch takes this many times its real
    /// compute time; with it, this many times the profile's latency.
    pub slowdown: f32,
    /// Name of the device profile every batch is paced to (its latency for the batch's model,
    /// width and size, times `slowdown`), when pacing to a profile. The agent's published
    /// `profile` is then that device's.
    #[serde(default)]
    pub profile: Option<String>,
}

/// One measured (or derived) operating point of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfilePoint {
    /// Model family.
    pub model: String,
    /// Width.
    pub width: f32,
    /// Batch size.
    pub batch: u16,
    /// Mean latency of one batch, milliseconds.
    pub latency_ms: f32,
    /// Mean power while running, watts, where a sensor or model gives one.
    #[serde(default)]
    pub power_w: Option<f32>,
}

/// Latency and power of a device per model × width × batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceProfile {
    /// Profile name, e.g. `jetson-orin-nano`.
    pub name: String,
    /// `measured` (by `slim profile`) or `derived` (from cited figures).
    pub source: String,
    /// Power when idle, watts.
    pub idle_power_w: f32,
    /// Power at full utilization, watts.
    pub max_power_w: f32,
    /// Operating points.
    pub points: Vec<ProfilePoint>,
}

/// An agent's retained announcement on `{prefix}/agents/{agent}/status`; its last will has `online = false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Protocol version.
    pub v: u16,
    /// Agent id.
    pub agent: String,
    /// False in the last will and on clean shutdown.
    pub online: bool,
    /// Agent clock at start.
    pub started_at_ms: u64,
    /// Inference backend in use: `cpu` or `cuda`.
    pub backend: String,
    /// Why this backend was chosen (e.g. the CUDA fallback reason).
    pub backend_reason: String,
    /// Hardware.
    pub device: DeviceInfo,
    /// Models served.
    pub models: Vec<ModelInfo>,
    /// Largest batch the agent will form.
    pub max_batch: u16,
    /// Slower-device emulation, when enabled.
    #[serde(default)]
    pub emulation: Option<Emulation>,
    /// The device profile, when one was measured or configured.
    #[serde(default)]
    pub profile: Option<DeviceProfile>,
    /// Threads each running batch uses (agents running the same hardware differ by it).
    #[serde(default = "one_thread")]
    pub threads: u16,
    /// True when the agent keeps accepted requests across its own restarts (it has a state
    /// store); the coordinator then leaves them to it instead of routing them again.
    #[serde(default)]
    pub durable: bool,
    /// Most requests the agent holds at once, queued or running (its `max_queued`); it
    /// refuses further assignments with `overloaded`. A coordinator that knows it stops
    /// assigning to the agent while its estimate of what the agent holds or has on the way
    /// reaches it, and refuses at once instead. Absent: no bound announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
    /// Most batches of one (model, width) the agent runs at the same time: the instances one
    /// queue can reach (its per-(model, width) limit and its utilization ceiling), bounded by
    /// the `max_instances` of the device a paced agent emulates. The simulator's devices apply
    /// it device-wide. Routers divide the agent's backlog by it. Absent (agents before it): the
    /// coordinator counts the instances loaded for the agent's waiting queues, 1 when none
    /// waits. 0 is read as 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u16>,
}

/// Queue state of one (model, width).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStat {
    /// Model family.
    pub model: String,
    /// Width.
    pub width: f32,
    /// Requests waiting.
    pub depth: u32,
    /// How long the oldest has waited, milliseconds.
    pub oldest_wait_ms: f32,
    /// Model instances loaded for this (model, width).
    pub instances: u16,
}

/// One batch the agent ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Model family.
    pub model: String,
    /// Width.
    pub width: f32,
    /// Requests in the batch.
    pub batch_size: u16,
    /// Mean queue time of its requests, milliseconds.
    pub queue_ms: f32,
    /// Compute time, milliseconds.
    pub compute_ms: f32,
    /// Energy attributed to the batch, joules.
    pub energy_j: f32,
    /// Its requests, each as its key ([`crate::RequestKey::wire`]: `reply_to`, NUL, `id`), so
    /// the coordinator can credit the batch's latency and energy to the decisions that placed
    /// them (online refinement). Left out when empty, and by older agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<String>,
}

/// Periodic device and queue report on `{prefix}/agents/{agent}/telemetry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Protocol version.
    pub v: u16,
    /// Agent id.
    pub agent: String,
    /// Increases by one per report.
    pub seq: u64,
    /// Agent clock.
    pub at_ms: u64,
    /// CPU utilization, 0..1.
    pub cpu_util: f32,
    /// RAM in use.
    pub ram_used_bytes: u64,
    /// RAM in total.
    pub ram_total_bytes: u64,
    /// GPU utilization 0..1, where readable.
    #[serde(default)]
    pub gpu_util: Option<f32>,
    /// VRAM in use, where readable.
    #[serde(default)]
    pub vram_used_bytes: Option<u64>,
    /// VRAM in total, where readable.
    #[serde(default)]
    pub vram_total_bytes: Option<u64>,
    /// Power now, watts.
    pub power_w: f32,
    /// Energy since the agent started, joules.
    pub energy_j: f64,
    /// Where the power and energy figures came from.
    pub energy_source: EnergySource,
    /// Queue per (model, width).
    pub queues: Vec<QueueStat>,
    /// Requests accepted and not yet answered.
    pub outstanding: u32,
    /// Requests answered since start.
    pub completed: u64,
    /// Error replies sent since start.
    pub errors: u64,
    /// Batches run since the previous report.
    pub batches: Vec<BatchRecord>,
    /// Requests answered since the previous report, each as its key
    /// ([`crate::RequestKey::wire`]: `reply_to`, NUL, `id`). Paged: at most
    /// [`crate::limits::MAX_REPORT_KEY_BYTES`] of keys (and [`crate::limits::MAX_LIST_LEN`]
    /// entries per list) per report, the rest follow.
    pub done: Vec<String>,
    /// Assignments the agent refused with an error since the previous report (its bound was
    /// reached, its inbox was full, or the assignment was invalid), each as its key: it holds
    /// nothing of them, and the coordinator drops them from its ledger without counting them
    /// answered, so a retry is routed again. Paged with `done`, after it, under the same limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Another page of `done` keys and batch records follows at once (same `at_ms` figures,
    /// next `seq`). The coordinator reconciles its ledger with `outstanding` only on the last
    /// page, when every answer up to then has been listed.
    #[serde(default)]
    pub more: bool,
    /// Answered keys and batch records the agent dropped unreported since start, because more
    /// waited than it keeps (its backlog is bounded).
    #[serde(default)]
    pub unreported_dropped: u64,
    /// True when the agent emulates a slower device.
    #[serde(default)]
    pub emulated: bool,
    /// Batches since start whose real compute took longer than the emulated device's latency
    /// (the host is too slow for the emulation; see [`Emulation`]). 0 when not emulating.
    #[serde(default)]
    pub pace_misses: u64,
}

impl Telemetry {
    /// The report of an idle agent with 1 GiB of RAM: nothing queued, running or answered, no
    /// power drawn (energy source `model`). Emulated agents and tests start from it and set
    /// what they need.
    pub fn idle(agent: impl Into<String>, seq: u64) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            agent: agent.into(),
            seq,
            at_ms: crate::now_ms(),
            cpu_util: 0.0,
            ram_used_bytes: 0,
            ram_total_bytes: 1 << 30,
            gpu_util: None,
            vram_used_bytes: None,
            vram_total_bytes: None,
            power_w: 0.0,
            energy_j: 0.0,
            energy_source: EnergySource::Model,
            queues: Vec::new(),
            outstanding: 0,
            completed: 0,
            errors: 0,
            batches: Vec::new(),
            done: Vec::new(),
            refused: Vec::new(),
            emulated: false,
            pace_misses: 0,
            more: false,
            unreported_dropped: 0,
        }
    }
}

/// The record of one routing decision, on `{prefix}/decisions` inside a [`Decisions`] batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Protocol version.
    pub v: u16,
    /// Request id.
    pub request_id: String,
    /// Model family.
    pub model: String,
    /// Chosen agent.
    pub agent: String,
    /// Chosen width.
    pub width: f32,
    /// Chosen batch size.
    pub batch_size: u16,
    /// Router name.
    pub router: String,
    /// Coordinator clock.
    pub at_ms: u64,
    /// Agents that were online and able to serve the model.
    pub candidates: u16,
    /// Requests outstanding at the chosen agent when it was chosen.
    pub agent_outstanding: u32,
    /// 0 for the first placement, +1 per re-route.
    pub attempt: u16,
}

/// A coordinator's decision records, batched: one message on `{prefix}/decisions` carries up to
/// [`crate::limits::MAX_DECISIONS_PER_MESSAGE`], in the order they were made. A coordinator
/// publishes its batch when it is full and at its next tick (every 200 ms), so a record reaches
/// monitors at most about 200 ms after its placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decisions {
    /// Protocol version.
    pub v: u16,
    /// The coordinator that made them.
    pub coordinator: String,
    /// The records.
    pub decisions: Vec<Decision>,
}

/// A coordinator's retained status on `{prefix}/coordinators/{id}/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorStatus {
    /// Protocol version.
    pub v: u16,
    /// Coordinator id.
    pub id: String,
    /// False in the last will.
    pub online: bool,
    /// Router name.
    pub router: String,
    /// Coordinator clock at start.
    pub started_at_ms: u64,
}

fn one_thread() -> u16 {
    1
}
