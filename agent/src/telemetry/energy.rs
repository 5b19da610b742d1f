//! Energy accounting: the agent's total energy and each batch's share, from a power sensor when
//! one was chosen (NVML, INA3221, RAPL), else from the labelled power model
//! idle + utilization × (max − idle). Every figure carries its [`EnergySource`].
//!
//! - **Total** ([`EnergyMeter::total_j`], telemetry's `energy_j`): with the model, the model's
//!   power integrated over wall time, so an idle agent still accrues `idle_w` per second; with a
//!   sensor, what the sensor measured (its energy counter, else its power integrated).
//! - **Per batch** ([`BatchAttribution::finish_batch`]): with the model, the full-load power of
//!   the cores the batch kept busy (its instance's thread count) over its compute time; with a
//!   sensor, the measured power split among the batches in flight.

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
        self.source.is_measured()
    }

    /// Model power at `utilization` (0..1).
    pub fn power_w(&self, utilization: f32) -> f32 {
        self.idle_w + utilization.clamp(0.0, 1.0) * (self.max_w - self.idle_w)
    }

    /// Model: adds `seconds` (wall time) at `utilization`; returns the power used. At zero
    /// utilization that is the idle power: an idle agent's total still grows.
    pub fn advance(&mut self, utilization: f32, seconds: f64) -> f32 {
        let p = self.power_w(utilization);
        self.total_j += p as f64 * seconds.max(0.0);
        self.publish(p);
        p
    }

    /// Adds `seconds` of sensor time ending with `reading`; returns the power now, watts.
    ///
    /// - With an energy counter (NVML on Volta and later, RAPL): the counter's increase. A
    ///   counter that goes backwards (driver reloaded) is re-based, and that window is
    ///   integrated from power.
    /// - Without: the power integrated by the trapezoid rule between this reading and the last.
    /// - A reading without power: the counter's average over the window when there is one, else
    ///   (a failed read) the last power held for the window.
    /// - A reading without a counter after one with (a failed read) also forgets the counter, so
    ///   the window integrated from held power is not counted again by the next counter
    ///   difference: the counter is re-based on the next reading that has one.
    ///
    /// The window's average power becomes the power that batches are attributed.
    pub fn record(&mut self, reading: Option<&SensorReading>, seconds: f64) -> f32 {
        let seconds = seconds.max(0.0);
        let power = reading.and_then(|r| r.power_w);
        let counter = reading.and_then(|r| r.energy_counter_mj);
        let counted_j = match (self.last_counter_mj, counter) {
            (Some(prev), Some(cur)) if cur >= prev => Some((cur - prev) as f64 / 1000.0),
            _ => None,
        };
        // A counter without a power figure (RAPL's first window): the window's average.
        let counted_w = counted_j
            .filter(|_| seconds > 0.0)
            .map(|j| (j / seconds) as f32);
        let now_w = power.or(counted_w).unwrap_or(self.last_power_w);
        let window_j =
            counted_j.unwrap_or_else(|| (self.last_power_w as f64 + now_w as f64) / 2.0 * seconds);
        self.last_counter_mj = counter;
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
    /// - **Sensor** (NVML, INA3221, RAPL): `seconds × P`, where `P` is the measured average
    ///   power of the latest telemetry window. This assumes the batch had the device to itself;
    ///   when batches overlap, [`BatchAttribution`] splits the power among them instead.
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

    /// Ends a batch begun with [`Self::begin_batch`], which ran `seconds` on `threads` cores
    /// (the thread count of the instance that ran it: a 2-thread batch keeps two cores busy).
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
    fn a_two_thread_batch_on_two_modelled_cores_is_charged_twice_a_one_thread_batch() {
        let meter = EnergyMeter::model(10.0, 40.0, 2);
        let mut batches = BatchAttribution::new(&meter);
        let one = batches.begin_batch();
        let one = batches.finish_batch(one, 0.5, 1);
        let two = batches.begin_batch();
        let two = batches.finish_batch(two, 0.5, 2);
        assert!((one.joules - 10.0).abs() < 1e-6, "half of 40 W for 0.5 s");
        assert!((two.joules - 20.0).abs() < 1e-6, "all of 40 W for 0.5 s");
        assert!((two.joules - 2.0 * one.joules).abs() < 1e-6);
        assert_eq!(one.source, EnergySource::Model);
        assert_eq!(two.source, EnergySource::Model);
        // More threads than cores cannot draw more than the device's full-load power.
        let four = batches.begin_batch();
        assert_eq!(batches.finish_batch(four, 0.5, 4).joules, two.joules);
    }

    #[test]
    fn the_modelled_total_counts_idle_power_over_wall_time() {
        let mut m = EnergyMeter::model(10.0, 50.0, 4);
        // An idle minute, ticked as telemetry does.
        for _ in 0..60 {
            let p = m.tick(0.0, None, 1.0);
            assert_eq!(p, 10.0, "idle power now");
        }
        assert!((m.total_j() - 600.0).abs() < 1e-6, "{}", m.total_j());
        assert!(!m.is_measured());
        assert_eq!(m.source, EnergySource::Model);
    }

    #[test]
    fn a_failed_read_between_counter_readings_is_not_counted_twice() {
        let reading = |w: f32, mj: u64| SensorReading {
            power_w: Some(w),
            energy_counter_mj: Some(mj),
            ..SensorReading::default()
        };
        let mut m = EnergyMeter::measured(EnergySource::Rapl, &reading(20.0, 0), 10.0, 50.0, 4);
        m.record(Some(&reading(20.0, 20_000)), 1.0);
        assert!((m.total_j() - 20.0).abs() < 1e-9);
        // A failed read: 20 W held for the second.
        m.record(None, 1.0);
        assert!((m.total_j() - 40.0).abs() < 1e-9);
        // The counter has run on by 2 s × 20 W meanwhile; only the last second is new.
        m.record(Some(&reading(20.0, 60_000)), 1.0);
        assert!((m.total_j() - 60.0).abs() < 1e-9, "{}", m.total_j());
        // And the counter is followed again from there.
        m.record(Some(&reading(30.0, 90_000)), 1.0);
        assert!((m.total_j() - 90.0).abs() < 1e-9, "{}", m.total_j());
    }

    #[test]
    fn a_batch_on_one_core_gets_that_cores_share_of_full_power() {
        let m = EnergyMeter::model(10.0, 40.0, 4);
        assert!((m.batch_energy_j(2.0, 1) - 20.0).abs() < 1e-6);
        assert!((m.batch_energy_j(2.0, 8) - 80.0).abs() < 1e-6);
    }
}
