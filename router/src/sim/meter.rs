//! Whole-device energy: the integral of a device's power over simulated time, idle time included.
//!
//! Per-request energy (`Outcome::energy_mj`, what the reward sees) charges each batch the
//! device's power while it runs. A device that sits idle still draws its idle power, and
//! concurrent batches share one idle floor; this meter counts both, so a run's fleet energy is
//! what a wall meter on every device would read (modelled from the profiles, not measured).

/// Integrates one device's power over time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerMeter {
    /// Power since `since_ms`, W.
    power_w: f64,
    since_ms: f64,
    /// Energy before `since_ms`, mJ (W × ms).
    energy_mj: f64,
}

impl PowerMeter {
    /// A meter that reads `power_w` from time 0.
    pub fn new(power_w: f32) -> Self {
        Self {
            power_w: f64::from(power_w),
            since_ms: 0.0,
            energy_mj: 0.0,
        }
    }

    /// The power changes to `power_w` at `now_ms` (not before the last change).
    pub fn set(&mut self, now_ms: f64, power_w: f32) {
        self.energy_mj = self.energy_at(now_ms);
        self.since_ms = self.since_ms.max(now_ms);
        self.power_w = f64::from(power_w);
    }

    /// Energy from time 0 to `now_ms`, mJ.
    pub fn energy_at(&self, now_ms: f64) -> f64 {
        self.energy_mj + self.power_w * (now_ms - self.since_ms).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrates_piecewise_constant_power() {
        let mut m = PowerMeter::new(5.0); // idle 5 W
        m.set(100.0, 20.0); // a batch from 100 to 150 ms at 20 W
        m.set(150.0, 5.0);
        // 5 W × 100 ms + 20 W × 50 ms + 5 W × 50 ms
        assert!((m.energy_at(200.0) - (500.0 + 1000.0 + 250.0)).abs() < 1e-9);
    }

    #[test]
    fn an_offline_device_draws_nothing() {
        let mut m = PowerMeter::new(10.0);
        m.set(10.0, 0.0);
        assert!((m.energy_at(1000.0) - 100.0).abs() < 1e-9);
    }
}
