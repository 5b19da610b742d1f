//! Energy accounting: the agent's total energy and each batch's share, from a power sensor when
//! one was chosen (NVML, INA3221), else from the labelled power model
//! idle + utilization × (max − idle). Every figure carries its [`EnergySource`].

use std::time::Instant;

use slim_protocol::EnergySource;

use super::sensor::SensorReading;

/// A batch's energy and where the figure came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchEnergy {
    /// Joules attributed to the batch.
    pub joules: f32,
    /// Label of the figure.
    pub source: EnergySource,
}

/// Splits measured power among the batches in flight. Owned by the scheduler actor, which
/// starts and finishes batches; the telemetry task sends it each window's average power
/// ([`EnergyMeter::attributed_power_w`]) through the scheduler's handle.
#[derive(Debug)]
pub struct BatchAttribution {
    /// The meter's rule and label (and, for the model, its figures).
    meter: EnergyMeter,
    /// Average measured power over the latest telemetry window, watts.
    power_w: f32,
    /// Batches begun with [`Self::begin_batch`] and not finished.
    in_flight: usize,
    /// ∫ power / in_flight dt over the times some batch was in flight, joules: the energy one
    /// batch in flight the whole time would have been given.
    per_batch_j: f64,
    last: Instant,
}

/// A batch in flight, from [`BatchAttribution::begin_batch`].
#[derive(Debug)]
#[must_use = "finish the batch with BatchAttribution::finish_batch"]
pub struct BatchToken {
    start_j: f64,
}

/// Integrates power into energy (owned by the telemetry task, which reads the sensor).
/// [`BatchAttribution`] splits the power it measures among batches.
#[derive(Debug, Clone)]
pub struct EnergyMeter {
    idle_w: f32,
    max_w: f32,
    cores: f32,
    total_j: f64,
    /// Where the figures come from. Fixed when the meter is made: a sensor that fails later
    /// holds its last reading rather than switching label.
    pub source: EnergySource,
    last_power_w: f32,
    last_counter_mj: Option<u64>,
    /// Average power of the latest window, watts: what batches are attributed.
    attributed_w: f32,
}

impl EnergyMeter {
    fn new(source: EnergySource, idle_w: f32, max_w: f32, cores: usize, power_w: f32) -> Self {
        Self {
            idle_w,
            max_w: max_w.max(idle_w),
            cores: cores.max(1) as f32,
            total_j: 0.0,
            source,
            last_power_w: power_w,
            last_counter_mj: None,
            attributed_w: power_w,
        }
    }

    /// A power model with the given idle and full-load power, for a device with `cores` cores.
    pub fn model(idle_w: f32, max_w: f32, cores: usize) -> Self {
        Self::new(EnergySource::Model, idle_w, max_w, cores, idle_w)
    }

    /// A meter fed by a sensor labelled `source`, starting from its `first` reading (whose
    /// energy counter, if any, is the zero of [`Self::total_j`]). The model figures are kept
    /// for reference only.
    pub fn measured(
        source: EnergySource,
        first: &SensorReading,
        idle_w: f32,
        max_w: f32,
        cores: usize,
    ) -> Self {
        let power = first.power_w.unwrap_or(idle_w);
        let mut m = Self::new(source, idle_w, max_w, cores, power);
        m.last_counter_mj = first.energy_counter_mj;
        m
    }

    /// True when the figures come from a sensor, not the model.
    pub fn is_measured(&self) -> bool {
        !matches!(self.source, EnergySource::Model | EnergySource::None)
    }

    /// Model power at `utilization` (0..1).
    pub fn power_w(&self, utilization: f32) -> f32 {
        self.idle_w + utilization.clamp(0.0, 1.0) * (self.max_w - self.idle_w)
    }

    /// Model: adds `seconds` at `utilization`; returns the power used.
    pub fn advance(&mut self, utilization: f32, seconds: f64) -> f32 {
        let p = self.power_w(utilization);
        self.total_j += p as f64 * seconds.max(0.0);
        self.publish(p);
        p
    }

    /// Adds `seconds` of sensor time ending with `reading`; returns the power now, watts.
    ///
    /// - With an energy counter (NVML, Volta and later): the counter's increase. A counter that
    ///   goes backwards (driver reloaded) is re-based, and that window is integrated from power.
    /// - Without: the power integrated by the trapezoid rule between this reading and the last.
    /// - A reading without power (a failed read): the last power is held for the window.
    ///
    /// The window's average power becomes the power that batches are attributed.
    pub fn record(&mut self, reading: Option<&SensorReading>, seconds: f64) -> f32 {
        let seconds = seconds.max(0.0);
        let power = reading.and_then(|r| r.power_w);
        let counter = reading.and_then(|r| r.energy_counter_mj);
        let now_w = power.unwrap_or(self.last_power_w);
        let window_j = match (self.last_counter_mj, counter) {
            (Some(prev), Some(cur)) if cur >= prev => (cur - prev) as f64 / 1000.0,
            _ => (self.last_power_w as f64 + now_w as f64) / 2.0 * seconds,
        };
        if counter.is_some() {
            self.last_counter_mj = counter;
        }
        self.total_j += window_j;
        self.last_power_w = now_w;
        let average = if seconds > 0.0 {
            (window_j / seconds) as f32
        } else {
            now_w
        };
        self.publish(average);
        now_w
    }

    /// One telemetry tick: the model at `utilization` when the meter is the model, else
    /// [`Self::record`]. Returns the power now, watts.
    pub fn tick(&mut self, utilization: f32, reading: Option<&SensorReading>, seconds: f64) -> f32 {
        if self.is_measured() {
            self.record(reading, seconds)
        } else {
            self.advance(utilization, seconds)
        }
    }

    fn publish(&mut self, power_w: f32) {
        self.attributed_w = power_w;
    }

    /// The measured power batches are attributed now (the latest window's average), watts.
    pub fn attributed_power_w(&self) -> f32 {
        self.attributed_w
    }

    /// Energy since start, joules.
    pub fn total_j(&self) -> f64 {
        self.total_j
    }

    /// Energy of one batch that ran `seconds` and kept `threads` of the device's cores busy.
    ///
    /// - **Model**: those cores' share of full-load power, `seconds × max × threads / cores`.
    /// - **Sensor** (NVML, INA3221): `seconds × P`, where `P` is the measured average power of
    ///   the latest telemetry window. This assumes the batch had the device to itself; when
    ///   batches overlap, [`BatchAttribution`] splits the power among them instead.
    ///
    /// The figure is labelled with [`Self::source`].
    pub fn batch_energy_j(&self, seconds: f64, threads: usize) -> f32 {
        self.batch_energy(seconds, threads).joules
    }

    /// [`Self::batch_energy_j`] with its label.
    pub fn batch_energy(&self, seconds: f64, threads: usize) -> BatchEnergy {
        let joules = if self.is_measured() {
            seconds.max(0.0) as f32 * self.attributed_power_w()
        } else {
            let share = (threads.max(1) as f32 / self.cores).min(1.0);
            (seconds.max(0.0) as f32) * self.max_w * share
        };
        BatchEnergy {
            joules,
            source: self.source,
        }
    }
}

impl BatchAttribution {
    /// Starts attributing with `meter`'s rule, label and latest power.
    pub fn new(meter: &EnergyMeter) -> Self {
        Self {
            power_w: meter.attributed_power_w(),
            meter: meter.clone(),
            in_flight: 0,
            per_batch_j: 0.0,
            last: Instant::now(),
        }
    }

    /// Where the figures come from.
    pub fn source(&self) -> EnergySource {
        self.meter.source
    }

    /// Takes a new window's average power, from now on.
    pub fn set_power(&mut self, power_w: f32) {
        self.set_power_at(Instant::now(), power_w);
    }

    /// [`Self::set_power`] at a given instant.
    pub fn set_power_at(&mut self, now: Instant, power_w: f32) {
        self.settle(now);
        self.power_w = power_w;
    }

    fn settle(&mut self, now: Instant) {
        if self.in_flight > 0 {
            let dt = now.saturating_duration_since(self.last).as_secs_f64();
            self.per_batch_j += self.power_w as f64 * dt / self.in_flight as f64;
        }
        self.last = now;
    }

    /// Marks a batch as started, for [`Self::finish_batch`].
    pub fn begin_batch(&mut self) -> BatchToken {
        self.begin_batch_at(Instant::now())
    }

    /// [`Self::begin_batch`] at a given instant.
    pub fn begin_batch_at(&mut self, now: Instant) -> BatchToken {
        self.settle(now);
        self.in_flight += 1;
        BatchToken {
            start_j: self.per_batch_j,
        }
    }

    /// Ends a batch begun with [`Self::begin_batch`], which ran `seconds` on `threads` cores.
    ///
    /// Rule with a sensor: at every instant the measured power (the latest window's average) is
    /// split equally among the batches in flight, and a batch gets the sum of its slices:
    /// `∫ P(t) / n(t) dt` over its run. The batches' figures therefore add up to the measured
    /// energy of the time some batch was running (idle power included, as in the model's
    /// full-load figure), and one batch running alone gets `seconds × P`. With the model, the
    /// rule is [`EnergyMeter::batch_energy_j`]'s.
    pub fn finish_batch(&mut self, token: BatchToken, seconds: f64, threads: usize) -> BatchEnergy {
        self.finish_batch_at(token, Instant::now(), seconds, threads)
    }

    /// [`Self::finish_batch`] at a given instant.
    pub fn finish_batch_at(
        &mut self,
        token: BatchToken,
        now: Instant,
        seconds: f64,
        threads: usize,
    ) -> BatchEnergy {
        self.settle(now);
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.meter.is_measured() {
            BatchEnergy {
                joules: (self.per_batch_j - token.start_j).max(0.0) as f32,
                source: self.meter.source,
            }
        } else {
            self.meter.batch_energy(seconds, threads)
        }
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
