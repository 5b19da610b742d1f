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
    /// Change stamp, for routers that cache per-device scores between requests
    /// (docs/router.md, "Per-decision cost"). A producer that keeps views between requests
    /// gives a device a new stamp, never used before by that producer, whenever anything in
    /// this view changes (the coordinator's `ClusterState` does); routers then rescore only the
    /// devices whose stamp differs from the one they scored. `0` means not tracked: the device
    /// is rescored on every request (the simulator and hand-built observations use it).
    pub version: u64,
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
    device.widths.iter().filter(move |w| {
        let pinned_ok = request.width.is_none_or(|pin| (pin - w.width).abs() < 1e-3);
        let accuracy_ok = request.min_accuracy.is_none_or(|floor| w.top1 >= floor);
        device.online && pinned_ok && accuracy_ok
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
            widths: [(0.25, 0.90), (0.5, 0.95), (1.0, 0.99)]
                .into_iter()
                .map(|(width, top1)| WidthOption {
                    width,
                    top1,
                    flops: (width * width * 1e6) as u64,
                    recent_latency_ms: None,
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
    fn an_offline_device_has_no_eligible_width() {
        let mut d = device("a", 0);
        d.online = false;
        assert_eq!(eligible_widths(&d, &RouteRequest::default()).count(), 0);
    }
}
