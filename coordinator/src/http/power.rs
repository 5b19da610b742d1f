//! Power and energy of each agent over the last minute, from its telemetry, each series labelled
//! with where its figures come from.

use serde::Serialize;
use slim_protocol::{EnergySource, Telemetry};

use super::window::Window;

/// One telemetry report's power and energy.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct PowerPoint {
    /// Arrival of the report, coordinator clock, ms since the Unix epoch.
    pub at_ms: u64,
    /// Power now, W.
    pub power_w: f32,
    /// Energy since the agent started, J.
    pub energy_j: f64,
}

/// One agent's series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PowerSeries {
    /// Agent id.
    pub agent: String,
    /// Source of the latest report: `nvml`, `ina3221` or `rapl` (measured), `model` (modelled from
    /// utilization and the device profile), `none`.
    pub energy_source: EnergySource,
    /// Whether that source is a measurement.
    pub measured: bool,
    /// Reports, oldest first.
    pub points: Vec<PowerPoint>,
}

/// The windows of one agent.
#[derive(Debug, Default)]
pub struct PowerHistory {
    source: Option<EnergySource>,
    points: Window<PowerPoint>,
}

impl PowerHistory {
    /// Adds report `t`, which arrived at `now_ms`.
    pub fn push(&mut self, t: &Telemetry, now_ms: u64) {
        self.source = Some(t.energy_source);
        self.points.push(
            now_ms,
            PowerPoint {
                at_ms: now_ms,
                power_w: t.power_w,
                energy_j: t.energy_j,
            },
        );
    }

    /// Drops what is older than the window.
    pub fn prune(&mut self, now_ms: u64) {
        self.points.prune(now_ms);
    }

    /// The series of `agent`.
    pub fn series(&self, agent: &str) -> PowerSeries {
        let source = self.source.unwrap_or(EnergySource::None);
        PowerSeries {
            agent: agent.to_string(),
            energy_source: source,
            measured: source.is_measured(),
            points: self.points.iter().copied().collect(),
        }
    }
}
