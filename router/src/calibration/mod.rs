//! Calibrating the simulator from a live cluster.
//!
//! Device profiles are hot-loop timings (`slim profile`): they do not see what a live agent adds
//! to each batch (handing it to a worker thread, cold caches between sparse requests, cores shared
//! with the broker), nor the time a request spends outside the agents (client → broker →
//! coordinator → broker → agent → broker → client). A [`Calibration`] holds both, fitted from
//! live results by [`fit`]:
//!
//! - a per-batch **overhead** per (profile, model, width, batch), in the device's own time
//!   (before any emulated slowdown), which [`Calibration::apply`] adds to the fleet's profile
//!   points;
//! - a **transport** delay distribution, which the simulator adds to every request's latency.
//!
//! `slim calibrate` measures and writes one; `slim simulate`, `slim train` and `slim eval` read it
//! with `--calibration`.

mod fit;
mod transport;

use serde::{Deserialize, Serialize};

use crate::fleet::Fleet;

pub use fit::{fit, LiveSample, LiveSettings};
pub use transport::Transport;

/// Version of the calibration file format.
pub const CALIBRATION_VERSION: u16 = 1;

/// The fixed cost a live agent adds to one batch beyond its profiled latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOverhead {
    /// Device profile name (the `name` in its profile file).
    pub profile: String,
    /// Model family.
    pub model: String,
    /// Width.
    pub width: f32,
    /// Batch size the agent ran.
    pub batch: u16,
    /// Mean live compute time (divided by the agent's emulated slowdown) minus the profiled
    /// latency for this batch, ms. Negative when the live agent was faster than its profile.
    pub overhead_ms: f32,
    /// Live batches behind the mean (results, so a batch of n counts n times).
    pub samples: u32,
}

/// The fixed time a live agent keeps each request outside its batch (decoding, hand-over to the
/// batcher): the median queue time of its results, taken at a light load where few requests
/// queue behind a running batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// Device profile name.
    pub profile: String,
    /// Median queue time reported by the agents with this profile, ms.
    pub queue_ms: f32,
    /// Results behind it.
    pub samples: u32,
}

/// How many batches of one (model, width) the live agents with a profile ran at once, as they
/// announced it (`AgentInfo::concurrency`); the simulator's devices with that profile run as
/// many, as the live coordinator's routers assume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Device profile name.
    pub profile: String,
    /// Batches at once (at least 1).
    pub batches: u16,
}

/// A fitted calibration: what the simulator adds to match a live cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// File format version ([`CALIBRATION_VERSION`]).
    pub version: u16,
    /// How it was measured (the command, the cluster, the date).
    pub source: String,
    /// The batching delay of the coordinator that was measured, ms (the simulator twin uses it).
    pub max_queue_delay_ms: f64,
    /// The measured agents' telemetry period, ms: the simulator shows routers each device as of
    /// its latest report plus the requests assigned since, as the live coordinator does.
    pub telemetry_interval_ms: f64,
    /// Per-batch overheads.
    pub overheads: Vec<BatchOverhead>,
    /// Per-request hand-off time per profile.
    pub handoffs: Vec<Handoff>,
    /// Delay outside the agents.
    pub transport: Transport,
    /// Batches at once per profile, as the live agents announced (empty in calibrations made
    /// before agents announced it: the simulator keeps the profiles' `max_instances`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<Concurrency>,
}

/// How [`Calibration::apply`] matched the fleet's profile points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Points with an overhead fitted for exactly their (profile, model, width, batch).
    pub exact: usize,
    /// Points that took the overhead of the nearest fitted batch size of their width.
    pub nearest_batch: usize,
    /// Points that took the mean overhead of their (profile, model).
    pub model_mean: usize,
    /// Points left as profiled (nothing fitted for their profile and model).
    pub untouched: usize,
}

impl Calibration {
    /// Reads a calibration file (TOML).
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let calibration: Self = toml::from_str(&text)
            .map_err(|e| format!("{} is not a calibration file: {e}", path.display()))?;
        if calibration.version != CALIBRATION_VERSION {
            return Err(format!(
                "{} has calibration version {}, this build reads {CALIBRATION_VERSION}",
                path.display(),
                calibration.version
            ));
        }
        calibration
            .transport
            .check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !(calibration.telemetry_interval_ms.is_finite()
            && calibration.telemetry_interval_ms > 0.0)
        {
            return Err(format!(
                "{}: telemetry_interval_ms must be positive",
                path.display()
            ));
        }
        Ok(calibration)
    }

    /// The overhead for one profile point, and how it was matched.
    fn overhead_for(&self, profile: &str, model: &str, width: f32, batch: u16) -> (f32, Match) {
        let same_width: Vec<&BatchOverhead> = self
            .overheads
            .iter()
            .filter(|o| {
                o.profile == profile
                    && o.model == model
                    && slim_protocol::WidthKey::same(o.width, width)
            })
            .collect();
        if let Some(o) = same_width.iter().find(|o| o.batch == batch) {
            return (o.overhead_ms, Match::Exact);
        }
        let log_gap = |o: &&&BatchOverhead| (f32::from(o.batch).ln() - f32::from(batch).ln()).abs();
        if let Some(o) = same_width
            .iter()
            .min_by(|a, b| log_gap(a).total_cmp(&log_gap(b)))
        {
            return (o.overhead_ms, Match::NearestBatch);
        }
        let (sum, n) = self
            .overheads
            .iter()
            .filter(|o| o.profile == profile && o.model == model)
            .fold((0.0f64, 0u64), |(s, n), o| {
                (
                    s + f64::from(o.overhead_ms) * f64::from(o.samples),
                    n + u64::from(o.samples),
                )
            });
        if n > 0 {
            return ((sum / n as f64) as f32, Match::ModelMean);
        }
        (0.0, Match::Untouched)
    }

    /// Adds the fitted overheads to every matching profile point of `fleet` (latencies never go
    /// below zero) and gives the fleet the transport delay.
    pub fn apply(&self, fleet: &mut Fleet) -> Applied {
        let mut applied = Applied::default();
        for device in &mut fleet.devices {
            let name = device.profile.name.clone();
            if device.published.is_none() {
                device.published = Some(device.profile.clone());
            }
            if let Some(h) = self.handoffs.iter().find(|h| h.profile == name) {
                device.handoff_ms = h.queue_ms.max(0.0);
            }
            if let Some(c) = self.concurrency.iter().find(|c| c.profile == name) {
                device.instances = c.batches.max(1);
            }
            for point in &mut device.profile.points {
                let (overhead, how) =
                    self.overhead_for(&name, &point.model, point.width, point.batch);
                point.latency_ms = (point.latency_ms + overhead).max(0.0);
                match how {
                    Match::Exact => applied.exact += 1,
                    Match::NearestBatch => applied.nearest_batch += 1,
                    Match::ModelMean => applied.model_mean += 1,
                    Match::Untouched => applied.untouched += 1,
                }
            }
        }
        fleet.transport = Some(self.transport.clone());
        fleet.telemetry_interval_ms = Some(self.telemetry_interval_ms);
        applied
    }

    /// The calibration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a calibration serializes")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Exact,
    NearestBatch,
    ModelMean,
    Untouched,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overhead(profile: &str, width: f32, batch: u16, ms: f32, samples: u32) -> BatchOverhead {
        BatchOverhead {
            profile: profile.into(),
            model: "m".into(),
            width,
            batch,
            overhead_ms: ms,
            samples,
        }
    }

    fn calibration(overheads: Vec<BatchOverhead>) -> Calibration {
        Calibration {
            version: CALIBRATION_VERSION,
            source: "test".into(),
            max_queue_delay_ms: 0.0,
            telemetry_interval_ms: 500.0,
            overheads,
            handoffs: vec![Handoff {
                profile: "fast".into(),
                queue_ms: 0.25,
                samples: 4,
            }],
            transport: Transport::from_samples(&[1.0, 2.0, 3.0]).unwrap(),
            concurrency: vec![Concurrency {
                profile: "fast".into(),
                batches: 3,
            }],
        }
    }

    #[test]
    fn an_exact_key_wins_then_the_nearest_batch_then_the_model_mean() {
        let c = calibration(vec![
            overhead("p", 1.0, 1, 0.5, 10),
            overhead("p", 1.0, 8, 2.0, 10),
            overhead("p", 0.5, 1, 1.0, 30),
        ]);
        assert_eq!(c.overhead_for("p", "m", 1.0, 8), (2.0, Match::Exact));
        // 16 is nearer 8 than 1 on a log scale
        assert_eq!(
            c.overhead_for("p", "m", 1.0, 16),
            (2.0, Match::NearestBatch)
        );
        assert_eq!(c.overhead_for("p", "m", 1.0, 2), (0.5, Match::NearestBatch));
        // width 0.75 has nothing: the sample-weighted mean of (p, m) = (5 + 20 + 30) / 50
        let (mean, how) = c.overhead_for("p", "m", 0.75, 1);
        assert_eq!(how, Match::ModelMean);
        assert!((mean - 1.1).abs() < 1e-6, "{mean}");
        assert_eq!(c.overhead_for("q", "m", 1.0, 1), (0.0, Match::Untouched));
    }

    #[test]
    fn applying_adds_overheads_to_profile_points_and_sets_the_transport() {
        let mut fleet = crate::fleet::tests::tiny_fleet();
        let name = fleet.devices[0].profile.name.clone();
        let before: Vec<f32> = fleet.devices[0]
            .profile
            .points
            .iter()
            .map(|p| p.latency_ms)
            .collect();
        let others_before = fleet.devices[1].profile.points.clone();
        let before_instances: Vec<u16> = fleet.devices.iter().map(|d| d.instances).collect();
        let raw_profile = fleet.devices[0].profile.clone();
        let mut c = calibration(vec![overhead(&name, 1.0, 1, 3.0, 5)]);
        c.overheads[0].model = fleet.devices[0].profile.points[0].model.clone();
        let applied = c.apply(&mut fleet);
        let model = c.overheads[0].model.clone();
        for (p, b) in fleet.devices[0].profile.points.iter().zip(before) {
            // its model's other widths and batch sizes borrow the one fitted overhead
            let added = if p.model == model { 3.0 } else { 0.0 };
            assert!((p.latency_ms - (b + added)).abs() < 1e-5, "{p:?}");
        }
        assert_eq!(fleet.devices[1].profile.points, others_before);
        // routers keep seeing the profile the live agent publishes; only the cost changes
        assert_eq!(fleet.devices[0].published.as_ref(), Some(&raw_profile));
        let m = &fleet.models[0];
        let seen = crate::fleet::width_options(&fleet.devices[0], m, &[1]);
        let charged = fleet.devices[0]
            .profile
            .cost(&m.name, seen[0].width, 1)
            .unwrap()
            .0;
        let raw = raw_profile.cost(&m.name, seen[0].width, 1).unwrap().0;
        assert_eq!(seen[0].batches[0].latency_ms, raw);
        if m.name == model {
            assert!((charged - raw - 3.0).abs() < 1e-5);
        }
        assert!(applied.exact >= 1 && applied.untouched > 0, "{applied:?}");
        assert_eq!(fleet.transport.as_ref().map(Transport::mean_ms), Some(2.0));
        assert_eq!(fleet.telemetry_interval_ms, Some(500.0));
        let handoffs: Vec<f32> = fleet.devices.iter().map(|d| d.handoff_ms).collect();
        assert_eq!(
            handoffs,
            [0.25, 0.0, 0.0],
            "only the profile named gets a hand-off"
        );
        let instances: Vec<u16> = fleet.devices.iter().map(|d| d.instances).collect();
        assert_eq!(
            instances[0], 3,
            "the live agents' announced concurrency replaces the profile's max_instances"
        );
        assert_eq!(
            instances[1..],
            before_instances[1..],
            "only the profile named"
        );
    }

    #[test]
    fn a_calibration_without_concurrency_reads_and_leaves_instances_as_profiled() {
        let mut c = calibration(Vec::new());
        c.concurrency.clear();
        let text = c.to_toml();
        assert!(!text.contains("concurrency"), "{text}");
        let read: Calibration = toml::from_str(&text).unwrap();
        assert_eq!(read, c);
        let mut fleet = crate::fleet::tests::tiny_fleet();
        let before: Vec<u16> = fleet.devices.iter().map(|d| d.instances).collect();
        read.apply(&mut fleet);
        let after: Vec<u16> = fleet.devices.iter().map(|d| d.instances).collect();
        assert_eq!(after, before);
    }

    #[test]
    fn a_negative_overhead_never_makes_a_latency_negative() {
        let mut fleet = crate::fleet::tests::tiny_fleet();
        let name = fleet.devices[0].profile.name.clone();
        let mut c = calibration(vec![overhead(&name, 1.0, 1, -1e6, 5)]);
        c.overheads[0].model = fleet.devices[0].profile.points[0].model.clone();
        c.apply(&mut fleet);
        assert!(fleet.devices[0]
            .profile
            .points
            .iter()
            .all(|p| p.latency_ms >= 0.0));
    }

    #[test]
    fn a_file_round_trips_and_a_wrong_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let c = calibration(vec![overhead("p", 0.25, 4, 0.7, 3)]);
        std::fs::write(&path, c.to_toml()).unwrap();
        assert_eq!(Calibration::load(&path).unwrap(), c);
        let mut old = c.clone();
        old.version = 99;
        std::fs::write(&path, old.to_toml()).unwrap();
        let err = Calibration::load(&path).unwrap_err();
        assert!(err.contains("version 99"), "{err}");
        std::fs::write(&path, "version = 1\n").unwrap();
        assert!(Calibration::load(&path)
            .unwrap_err()
            .contains("not a calibration file"));
    }
}
