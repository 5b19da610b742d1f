//! The labelled power model used where no power sensor is readable:
//! power = idle + utilization × (max − idle), integrated over time into energy.

use slim_protocol::EnergySource;

/// Integrates power into energy.
#[derive(Debug, Clone)]
pub struct EnergyMeter {
    idle_w: f32,
    max_w: f32,
    cores: f32,
    total_j: f64,
    /// Where the figures come from.
    pub source: EnergySource,
}

impl EnergyMeter {
    /// A power model with the given idle and full-load power, for a device with `cores` cores.
    pub fn model(idle_w: f32, max_w: f32, cores: usize) -> Self {
        Self {
            idle_w,
            max_w: max_w.max(idle_w),
            cores: cores.max(1) as f32,
            total_j: 0.0,
            source: EnergySource::Model,
        }
    }

    /// Power at `utilization` (0..1).
    pub fn power_w(&self, utilization: f32) -> f32 {
        self.idle_w + utilization.clamp(0.0, 1.0) * (self.max_w - self.idle_w)
    }

    /// Adds `seconds` at `utilization`; returns the power used.
    pub fn advance(&mut self, utilization: f32, seconds: f64) -> f32 {
        let p = self.power_w(utilization);
        self.total_j += p as f64 * seconds.max(0.0);
        p
    }

    /// Energy since start, joules.
    pub fn total_j(&self) -> f64 {
        self.total_j
    }

    /// Energy of one batch that kept `threads` of the device's cores busy for `seconds`: those
    /// cores' share of full-load power.
    pub fn batch_energy_j(&self, seconds: f64, threads: usize) -> f32 {
        let share = (threads.max(1) as f32 / self.cores).min(1.0);
        (seconds as f32) * self.max_w * share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_interpolates_between_idle_and_max() {
        let m = EnergyMeter::model(10.0, 50.0, 4);
        assert_eq!(m.power_w(0.0), 10.0);
        assert_eq!(m.power_w(0.5), 30.0);
        assert_eq!(m.power_w(2.0), 50.0);
    }

    #[test]
    fn energy_accumulates_power_over_time() {
        let mut m = EnergyMeter::model(10.0, 50.0, 4);
        m.advance(0.0, 2.0);
        m.advance(1.0, 1.0);
        assert!((m.total_j() - 70.0).abs() < 1e-9);
        assert_eq!(m.source, EnergySource::Model);
    }

    #[test]
    fn a_batch_on_one_core_gets_that_cores_share_of_full_power() {
        let m = EnergyMeter::model(10.0, 40.0, 4);
        assert!((m.batch_energy_j(2.0, 1) - 20.0).abs() < 1e-6);
        assert!((m.batch_energy_j(2.0, 8) - 80.0).abs() < 1e-6);
    }
}
