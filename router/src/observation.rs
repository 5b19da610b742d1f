//! What a router sees: the devices that can serve a request, and the request's constraints.
//!
//! The live coordinator fills these from agent status (profiles) and telemetry; the simulator fills
//! them from its own state. Every field says where a coordinator gets it.

/// Cost of running one batch of a given size at one width on one device, from its profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchOption {
    /// Largest batch the agent may form for this choice.
    pub batch: u16,
    /// Compute latency of one full batch of this size at real speed (slowdown 1), ms, from the device
    /// profile (interpolated between profiled batch sizes).
    pub latency_ms: f32,
    /// Device power while running this batch, watts, from the profile.
    pub power_w: f32,
    /// Memory an instance needs to run a batch this size (weights plus activations), bytes.
    pub mem_bytes: u64,
}

impl BatchOption {
    /// Energy of one request when the batch runs full, millijoules (W × ms = mJ).
    pub fn energy_per_request_mj(&self) -> f32 {
        self.power_w * self.latency_ms / f32::from(self.batch.max(1))
    }
}

/// One width of the requested model on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct WidthOption {
    /// Width multiplier.
    pub width: f32,
    /// Top-1 accuracy, fraction (from the model manifest).
    pub top1: f32,
    /// FLOPs per sample (from the model manifest).
    pub flops: u64,
    /// Recent mean compute latency of a batch at this width on this device, ms, if observed
    /// (telemetry batch records; an exponential moving average in the simulator).
    pub recent_latency_ms: Option<f32>,
    /// The batch sizes this device offers at this width and what each costs, ascending by batch.
    /// Empty when the device has no profile: routers then fall back to their configured batch size.
    pub batches: Vec<BatchOption>,
    /// Requests of the requested model waiting at this width on this device: the agent's
    /// `QueueStat::depth` for this (model, width) at its last telemetry (0 when it lists no such
    /// queue); the simulator's queue length, exact or as of the latest report when it models a
    /// telemetry interval.
    pub queue_depth: u32,
    /// How long the oldest request waiting at this width has waited, ms (0 when none waits): the
    /// batching timer's state. The agents' batcher starts a batch when it is full or its oldest
    /// request has waited the maximum queue delay, on a free instance; with the default delay of
    /// 0 it is work-conserving, so a request waits only while every instance is busy and this age
    /// says how long the queue has been blocked (with a delay set, also how far its timer has
    /// run). The coordinator reads `QueueStat::oldest_wait_ms` from the last telemetry (as of
    /// that report, not aged since: telemetry does not say whether the head was dispatched in
    /// between); the simulator knows it (or takes it as of the latest report).
    pub oldest_wait_ms: f32,
}

impl WidthOption {
    /// The option for the largest profiled batch not above `batch` (or the smallest one).
    pub fn batch_option(&self, batch: u16) -> Option<&BatchOption> {
        self.batches
            .iter()
            .rev()
            .find(|b| b.batch <= batch)
            .or(self.batches.first())
    }
}

/// One device able to serve the requested model.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceView {
    /// Agent id.
    pub agent: String,
    /// False when the device is known but must not be chosen (offline, draining): routers mask it.
    pub online: bool,
    /// Requests assigned to it and not yet answered (the coordinator counts its own assignments).
    pub outstanding: u32,
    /// Requests waiting in its queues at its last telemetry (sum of `QueueStat::depth`).
    pub queue_depth: u32,
    /// Estimated milliseconds of work queued and running on it, summed over instances: the
    /// coordinator estimates it as outstanding requests × recent per-request latency; the
    /// simulator knows it.
    pub backlog_ms: f32,
    /// Model instances (concurrent batches) it runs for this model.
    pub instances: u16,
    /// CPU utilization 0..1.
    pub cpu_util: f32,
    /// GPU utilization 0..1, if it has one (in the simulator: busy instances / instances).
    pub gpu_util: Option<f32>,
    /// Free memory for new model instances, bytes (VRAM, or RAM on CPUs and Jetsons).
    pub mem_free_bytes: u64,
    /// Power now, watts (NVML, INA3221 rails, or the profile's power model).
    pub power_w: f32,
    /// Largest batch it forms.
    pub max_batch: u16,
    /// Slowdown factor against its profile: 1 = profiled speed; emulated slowdown, or observed
    /// recent latency divided by profiled latency.
    pub slowdown: f32,
    /// The requested model's widths on this device, ascending.
    pub widths: Vec<WidthOption>,
    /// Recent arrival rate of the requested model at the router, requests/s: an
    /// [`ArrivalRate`] estimate (the same on every device of one observation). The coordinator
    /// counts the new requests it routes (not re-placements); the simulator counts its arrivals
    /// with the same estimator, in simulated time.
    pub arrival_rate_per_s: f32,
    /// Change stamp, for routers that cache per-device scores between requests
    /// (docs/router.md, "Per-decision cost"). A producer that keeps views between requests
    /// gives a device a new stamp, never used before by that producer, whenever anything in
    /// this view changes (the coordinator's `ClusterState` does); routers then rescore only the
    /// devices whose stamp differs from the one they scored. `0` means not tracked: the device
    /// is rescored on every request (the simulator and hand-built observations use it).
    pub version: u64,
}

/// Arrivals counted per update of an [`ArrivalRate`] (an update also happens after
/// [`ARRIVAL_MAX_WINDOW_MS`] with fewer).
pub const ARRIVAL_UPDATE_COUNT: u32 = 32;
/// Longest an [`ArrivalRate`] counts before it updates, ms.
pub const ARRIVAL_MAX_WINDOW_MS: f64 = 1000.0;
/// Shortest window an [`ArrivalRate`] made with [`ArrivalRate::with_min_window`] for the live
/// coordinator samples, ms. Requests reach a coordinator in bursts (a broker flushes what it
/// queued for the connection at once): 32 arrivals could span a fraction of a millisecond and
/// read as tens of thousands per second, and every such swing of more than
/// [`ARRIVAL_PUBLISH_CHANGE`] restamped every device view of the model, so PPO rescored the
/// whole fleet (`slim bench --saturate`, 500 emulated agents: about 150 full rescorings a
/// second, two thirds of the coordinator's time). A 100 ms floor bounds that to 10 a second
/// per model and measures the rate over the bursts. The simulator's arrivals never come in
/// same-instant clumps (its `burst` scenario raises a Poisson rate); it keeps no floor.
pub const LIVE_ARRIVAL_MIN_WINDOW_MS: f64 = 100.0;
/// Relative change of the estimate below which an [`ArrivalRate`] keeps publishing the old
/// value, so that device views (and cached scores) change only when the rate really moves.
pub const ARRIVAL_PUBLISH_CHANGE: f32 = 0.1;

/// A model's recent arrival rate, estimated the same way by the coordinator and the simulator
/// (the coordinator with a 100 ms minimum window, [`LIVE_ARRIVAL_MIN_WINDOW_MS`]).
///
/// Arrivals are counted from the last update; after [`ARRIVAL_UPDATE_COUNT`] of them, or at the
/// first arrival [`ARRIVAL_MAX_WINDOW_MS`] or more after it, the count over the time since
/// becomes the new sample, averaged with the estimate before (weight 1/2 each; the first sample
/// is taken as is). Counting arrivals rather than a fixed window keeps the estimate scale-free:
/// a simulated run of a few milliseconds and a live cluster at 5 requests/s both update it. The
/// published rate follows the estimate only when they differ by more than
/// [`ARRIVAL_PUBLISH_CHANGE`] (relative), so a steady stream does not invalidate the router's
/// per-device score cache on every request. The live coordinator's estimator also waits
/// [`LIVE_ARRIVAL_MIN_WINDOW_MS`] between updates, over its bursty arrivals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrivalRate {
    min_window_ms: f64,
    since_ms: Option<f64>,
    count: u32,
    estimate_per_s: Option<f64>,
    published_per_s: f32,
}

impl Default for ArrivalRate {
    fn default() -> Self {
        Self::new()
    }
}

impl ArrivalRate {
    /// No arrival seen: rate 0.
    pub fn new() -> Self {
        Self::with_min_window(0.0)
    }

    /// No arrival seen; each sample also spans at least `min_window_ms` (see
    /// [`LIVE_ARRIVAL_MIN_WINDOW_MS`]), capped at [`ARRIVAL_MAX_WINDOW_MS`].
    pub fn with_min_window(min_window_ms: f64) -> Self {
        Self {
            min_window_ms: min_window_ms.clamp(0.0, ARRIVAL_MAX_WINDOW_MS),
            since_ms: None,
            count: 0,
            estimate_per_s: None,
            published_per_s: 0.0,
        }
    }

    /// Counts an arrival at `now_ms` (a clock that never goes back); true when the published
    /// rate changed.
    pub fn arrive(&mut self, now_ms: f64) -> bool {
        let Some(since) = self.since_ms else {
            self.since_ms = Some(now_ms);
            return false;
        };
        self.count += 1;
        let elapsed = now_ms - since;
        let short = self.count < ARRIVAL_UPDATE_COUNT || elapsed < self.min_window_ms;
        if short && elapsed < ARRIVAL_MAX_WINDOW_MS {
            return false;
        }
        let sample = f64::from(self.count) * 1000.0 / elapsed.max(1e-6);
        let estimate = self
            .estimate_per_s
            .map_or(sample, |e| 0.5 * e + 0.5 * sample);
        self.estimate_per_s = Some(estimate);
        self.since_ms = Some(now_ms);
        self.count = 0;
        let published = f64::from(self.published_per_s);
        let moved = published <= 0.0
            || (estimate / published - 1.0).abs() > f64::from(ARRIVAL_PUBLISH_CHANGE);
        if moved {
            self.published_per_s = estimate as f32;
        }
        moved
    }

    /// The published rate, requests/s (0 before the first update).
    pub fn rate_per_s(&self) -> f32 {
        self.published_per_s
    }
}

/// The cluster as seen for one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Devices that serve the requested model; those with `online == false` are masked.
    pub devices: Vec<DeviceView>,
}

/// A request's constraints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteRequest {
    /// Model family.
    pub model: String,
    /// Width pinned by the client.
    pub width: Option<f32>,
    /// Accuracy floor, fraction.
    pub min_accuracy: Option<f32>,
    /// Latency budget, ms.
    pub deadline_ms: Option<u32>,
}

/// The widths of `device` that `request` allows: the pinned one, or those meeting its accuracy
/// floor; none when the device is offline.
pub fn eligible_widths<'a>(
    device: &'a DeviceView,
    request: &'a RouteRequest,
) -> impl Iterator<Item = &'a WidthOption> + 'a {
    allowed_widths(device, request).filter(move |_| device.online)
}

/// The widths of `device` that `request` allows, whether or not the device is online (a
/// coordinator asks this of agents it masked as full: would one of them take the request?).
pub fn allowed_widths<'a>(
    device: &'a DeviceView,
    request: &'a RouteRequest,
) -> impl Iterator<Item = &'a WidthOption> + 'a {
    device.widths.iter().filter(move |w| {
        let pinned_ok = request.width.is_none_or(|pin| (pin - w.width).abs() < 1e-3);
        let accuracy_ok = request.min_accuracy.is_none_or(|floor| w.top1 >= floor);
        pinned_ok && accuracy_ok
    })
}

/// Whether a batch of `option` fits in `device`'s free memory.
pub fn batch_fits(device: &DeviceView, option: &BatchOption) -> bool {
    option.mem_bytes <= device.mem_free_bytes
}

/// Per-model reference scales that make latency and energy comparable across models and fleets:
/// the mean, over online devices, of the widest width's batch-1 latency and energy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    /// Reference latency, ms.
    pub latency_ms: f32,
    /// Reference energy per request, mJ.
    pub energy_mj: f32,
}

impl Scales {
    /// Scales from the devices in `observation`; 1 ms and 1 mJ when none has a profile.
    pub fn from_observation(observation: &Observation) -> Self {
        Self::from_contributions(observation.devices.iter().filter_map(Self::contribution))
    }

    /// What `device` adds to the scales: its widest width's batch-1 latency and energy, when it
    /// is online and has a profile.
    pub fn contribution(device: &DeviceView) -> Option<(f32, f32)> {
        if !device.online {
            return None;
        }
        let b = device.widths.last().and_then(|w| w.batches.first())?;
        Some((b.latency_ms, b.energy_per_request_mj()))
    }

    /// Scales from the devices' [`Scales::contribution`]s, in device order (the same sums, in
    /// the same order, as [`Scales::from_observation`]).
    pub fn from_contributions(contributions: impl Iterator<Item = (f32, f32)>) -> Self {
        let (mut lat, mut energy, mut n) = (0.0f32, 0.0f32, 0u32);
        for (l, e) in contributions {
            lat += l;
            energy += e;
            n += 1;
        }
        if n == 0 {
            return Self {
                latency_ms: 1.0,
                energy_mj: 1.0,
            };
        }
        Self {
            latency_ms: (lat / n as f32).max(1e-3),
            energy_mj: (energy / n as f32).max(1e-6),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn device(agent: &str, outstanding: u32) -> DeviceView {
        DeviceView {
            agent: agent.into(),
            online: true,
            outstanding,
            queue_depth: 0,
            backlog_ms: 0.0,
            instances: 1,
            cpu_util: 0.0,
            gpu_util: None,
            mem_free_bytes: 1 << 30,
            power_w: 10.0,
            max_batch: 32,
            slowdown: 1.0,
            version: 0,
            arrival_rate_per_s: 0.0,
            widths: [(0.25, 0.90), (0.5, 0.95), (1.0, 0.99)]
                .into_iter()
                .map(|(width, top1)| WidthOption {
                    width,
                    top1,
                    flops: (width * width * 1e6) as u64,
                    recent_latency_ms: None,
                    queue_depth: 0,
                    oldest_wait_ms: 0.0,
                    batches: [1u16, 4, 16]
                        .into_iter()
                        .map(|batch| BatchOption {
                            batch,
                            latency_ms: 1.0 + width * width * 4.0 * f32::from(batch),
                            power_w: 5.0 + 10.0 * width,
                            mem_bytes: (width * 1e6) as u64 * u64::from(batch),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn pinned_widths_and_accuracy_floors_filter_the_options() {
        let d = device("a", 0);
        let all = RouteRequest::default();
        assert_eq!(eligible_widths(&d, &all).count(), 3);
        let pinned = RouteRequest {
            width: Some(0.5),
            ..Default::default()
        };
        assert_eq!(
            eligible_widths(&d, &pinned)
                .map(|w| w.width)
                .collect::<Vec<_>>(),
            vec![0.5]
        );
        let floor = RouteRequest {
            min_accuracy: Some(0.95),
            ..Default::default()
        };
        assert_eq!(
            eligible_widths(&d, &floor)
                .map(|w| w.width)
                .collect::<Vec<_>>(),
            vec![0.5, 1.0]
        );
    }

    #[test]
    fn the_arrival_rate_tracks_a_steady_stream_and_publishes_only_real_changes() {
        let mut rate = ArrivalRate::new();
        assert_eq!(rate.rate_per_s(), 0.0);
        // 2000 requests/s, one every 0.5 ms: an update every 32 arrivals.
        let mut changes = 0;
        for i in 0..1000 {
            changes += usize::from(rate.arrive(f64::from(i) * 0.5));
        }
        assert!(
            (rate.rate_per_s() - 2000.0).abs() < 1.0,
            "{}",
            rate.rate_per_s()
        );
        assert_eq!(changes, 1, "a steady rate is published once");
        // Four times faster: the estimate follows within a few updates.
        let start = 500.0;
        for i in 0..200 {
            rate.arrive(start + f64::from(i) * 0.125);
        }
        assert!(rate.rate_per_s() > 7000.0, "{}", rate.rate_per_s());
        // A slow stream updates after the longest window: 5 requests/s.
        let mut slow = ArrivalRate::new();
        for i in 0..20 {
            slow.arrive(f64::from(i) * 200.0);
        }
        assert!(
            (slow.rate_per_s() - 5.0).abs() < 0.01,
            "{}",
            slow.rate_per_s()
        );
    }

    #[test]
    fn a_floor_on_the_window_measures_bursts_at_their_mean_and_publishes_rarely() {
        // 6 400 requests/s arriving as bursts of 64 at one instant every 10 ms, for 2 s.
        let burst = |rate: &mut ArrivalRate| -> (usize, Vec<f64>) {
            let (mut changes, mut updates_at) = (0, Vec::new());
            for tick in 0..200 {
                let now = f64::from(tick) * 10.0;
                for _ in 0..64 {
                    if rate.arrive(now) {
                        changes += 1;
                        updates_at.push(now);
                    }
                }
            }
            (changes, updates_at)
        };
        let mut live = ArrivalRate::with_min_window(LIVE_ARRIVAL_MIN_WINDOW_MS);
        let (changes, at) = burst(&mut live);
        assert!(
            (live.rate_per_s() - 6400.0).abs() < 6400.0 * 0.15,
            "{}",
            live.rate_per_s()
        );
        assert!(changes <= 3, "{changes} publishes at {at:?}");
        assert!(at.windows(2).all(|w| w[1] - w[0] >= 100.0), "{at:?}");
        // Without the floor, a sample can span no time at all and the rate swings.
        let mut bare = ArrivalRate::new();
        let (bare_changes, _) = burst(&mut bare);
        assert!(bare_changes > 50, "{bare_changes}");
    }

    #[test]
    fn an_offline_device_has_no_eligible_width() {
        let mut d = device("a", 0);
        d.online = false;
        assert_eq!(eligible_widths(&d, &RouteRequest::default()).count(), 0);
    }
}
