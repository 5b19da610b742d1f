//! What a router sees.

/// One width of the requested model on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct WidthOption {
    /// Width multiplier.
    pub width: f32,
    /// Top-1 accuracy, fraction.
    pub top1: f32,
    /// FLOPs per sample.
    pub flops: u64,
    /// Recent mean compute latency of a batch at this width on this device, ms, if observed.
    pub recent_latency_ms: Option<f32>,
}

/// One device able to serve the requested model.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceView {
    /// Agent id.
    pub agent: String,
    /// Requests assigned to it and not yet answered.
    pub outstanding: u32,
    /// Requests waiting in its queues at its last telemetry.
    pub queue_depth: u32,
    /// CPU utilization 0..1.
    pub cpu_util: f32,
    /// GPU utilization 0..1, if it has one.
    pub gpu_util: Option<f32>,
    /// Free memory for new model instances, bytes.
    pub mem_free_bytes: u64,
    /// Power now, watts.
    pub power_w: f32,
    /// Largest batch it forms.
    pub max_batch: u16,
    /// Emulated slowdown factor (1 = real speed).
    pub slowdown: f32,
    /// The requested model's widths on this device, ascending.
    pub widths: Vec<WidthOption>,
}

/// The cluster as seen for one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Online devices that serve the requested model.
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

/// The widths of `device` that `request` allows: the pinned one, or those meeting its accuracy floor.
pub fn eligible_widths<'a>(
    device: &'a DeviceView,
    request: &'a RouteRequest,
) -> impl Iterator<Item = &'a WidthOption> + 'a {
    device.widths.iter().filter(move |w| {
        let pinned_ok = request.width.is_none_or(|pin| (pin - w.width).abs() < 1e-3);
        let accuracy_ok = request.min_accuracy.is_none_or(|floor| w.top1 >= floor);
        pinned_ok && accuracy_ok
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn device(agent: &str, outstanding: u32) -> DeviceView {
        DeviceView {
            agent: agent.into(),
            outstanding,
            queue_depth: 0,
            cpu_util: 0.0,
            gpu_util: None,
            mem_free_bytes: 1 << 30,
            power_w: 10.0,
            max_batch: 32,
            slowdown: 1.0,
            widths: [(0.25, 0.90), (0.5, 0.95), (1.0, 0.99)]
                .into_iter()
                .map(|(width, top1)| WidthOption {
                    width,
                    top1,
                    flops: (width * width * 1e6) as u64,
                    recent_latency_ms: None,
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
}
