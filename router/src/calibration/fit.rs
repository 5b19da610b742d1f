//! Fitting a [`Calibration`] from live results.

use std::collections::BTreeMap;

use slim_protocol::{DeviceProfile, WidthKey};

use super::{BatchOverhead, Calibration, Handoff, Transport, CALIBRATION_VERSION};

/// One live result, with what the client and the agent measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSample {
    /// Name of the device profile the answering agent publishes (before emulation).
    pub profile: String,
    /// The agent's emulated slowdown (1 = none): its compute time is this many times the real one.
    pub slowdown: f32,
    /// Model family.
    pub model: String,
    /// Width it ran at.
    pub width: f32,
    /// Size of the batch it ran in.
    pub batch: u16,
    /// The agent's queue time (arrival at the agent to the start of its batch), ms.
    pub queue_ms: f64,
    /// The agent's compute time for that batch, ms.
    pub compute_ms: f64,
    /// The agent's time from arrival to hand-off to MQTT, ms.
    pub agent_total_ms: f64,
    /// What the client measured from send to answer, ms.
    pub end_to_end_ms: f64,
}

/// (profile, model, width key, batch): what an overhead is fitted per.
type OverheadKey = (String, String, u16, u16);

/// The measured cluster's settings that the simulator copies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveSettings {
    /// The coordinator's batching delay, ms.
    pub max_queue_delay_ms: f64,
    /// The agents' telemetry period, ms.
    pub telemetry_interval_ms: f64,
}

/// Fits the per-batch overheads against `profiles` and the transport delay from `samples`.
/// Samples whose profile or (model, width) the profiles do not have still count toward the
/// transport delay. Fails without a sample.
pub fn fit(
    samples: &[LiveSample],
    profiles: &[DeviceProfile],
    settings: LiveSettings,
    source: String,
) -> Result<Calibration, String> {
    let delays: Vec<f64> = samples
        .iter()
        .map(|s| s.end_to_end_ms - s.agent_total_ms)
        .collect();
    let transport = Transport::from_samples(&delays)
        .ok_or_else(|| "no live result to calibrate from".to_string())?;
    let mut sums: BTreeMap<OverheadKey, (f64, u32, f32)> = BTreeMap::new();
    for s in samples {
        let Some(profile) = profiles.iter().find(|p| p.name == s.profile) else {
            continue;
        };
        let Some((profiled, _)) = profile.cost(&s.model, s.width, s.batch) else {
            continue;
        };
        let own_time = s.compute_ms / f64::from(s.slowdown.max(1.0));
        let key = (
            s.profile.clone(),
            s.model.clone(),
            WidthKey::of(s.width).0,
            s.batch,
        );
        let entry = sums.entry(key).or_insert((0.0, 0, s.width));
        entry.0 += own_time - f64::from(profiled);
        entry.1 += 1;
    }
    let overheads = sums
        .into_iter()
        .map(
            |((profile, model, _, batch), (sum, n, width))| BatchOverhead {
                profile,
                model,
                width,
                batch,
                overhead_ms: (sum / f64::from(n)) as f32,
                samples: n,
            },
        )
        .collect();
    Ok(Calibration {
        handoffs: handoffs(samples, profiles),
        version: CALIBRATION_VERSION,
        source,
        max_queue_delay_ms: settings.max_queue_delay_ms,
        telemetry_interval_ms: settings.telemetry_interval_ms,
        overheads,
        transport,
        concurrency: Vec::new(),
    })
}

/// The median queue time per profile the fit knows.
fn handoffs(samples: &[LiveSample], profiles: &[DeviceProfile]) -> Vec<Handoff> {
    let mut by_profile: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for s in samples {
        if profiles.iter().any(|p| p.name == s.profile) {
            by_profile.entry(&s.profile).or_default().push(s.queue_ms);
        }
    }
    by_profile
        .into_iter()
        .map(|(profile, mut queue)| {
            queue.sort_by(f64::total_cmp);
            let mid = queue.len() / 2;
            let median = if queue.len() % 2 == 0 {
                (queue[mid - 1] + queue[mid]) / 2.0
            } else {
                queue[mid]
            };
            Handoff {
                profile: profile.to_string(),
                queue_ms: median.max(0.0) as f32,
                samples: queue.len().try_into().unwrap_or(u32::MAX),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use slim_protocol::ProfilePoint;

    const SETTINGS: LiveSettings = LiveSettings {
        max_queue_delay_ms: 0.0,
        telemetry_interval_ms: 500.0,
    };

    fn profile() -> DeviceProfile {
        DeviceProfile {
            name: "cpu".into(),
            source: "measured".into(),
            idle_power_w: 10.0,
            max_power_w: 65.0,
            points: [(1, 0.2), (8, 0.8)]
                .into_iter()
                .map(|(batch, latency_ms)| ProfilePoint {
                    model: "digits".into(),
                    width: 0.5,
                    batch,
                    latency_ms,
                    power_w: None,
                })
                .collect(),
        }
    }

    fn sample(slowdown: f32, batch: u16, compute_ms: f64, e2e: f64) -> LiveSample {
        LiveSample {
            profile: "cpu".into(),
            slowdown,
            model: "digits".into(),
            width: 0.5,
            batch,
            queue_ms: 0.05 * f64::from(batch),
            compute_ms,
            agent_total_ms: compute_ms + 0.1,
            end_to_end_ms: e2e,
        }
    }

    #[test]
    fn overheads_are_live_time_over_slowdown_minus_the_profile_per_key() {
        let samples = [
            sample(1.0, 1, 0.7, 2.0),
            sample(1.0, 1, 0.9, 2.0),
            // an agent 3x slower: 2.1 ms live is 0.7 ms of its own time
            sample(3.0, 1, 2.1, 5.0),
            sample(1.0, 8, 1.0, 3.0),
        ];
        let c = fit(&samples, &[profile()], SETTINGS, "test".into()).unwrap();
        assert_eq!(c.overheads.len(), 2);
        let b1 = &c.overheads[0];
        assert_eq!((b1.batch, b1.samples), (1, 3));
        // ((0.7 + 0.9 + 0.7) / 3) − 0.2
        assert!(
            (b1.overhead_ms - (2.3 / 3.0 - 0.2) as f32).abs() < 1e-5,
            "{b1:?}"
        );
        let b8 = &c.overheads[1];
        assert!((b8.overhead_ms - 0.2).abs() < 1e-5, "{b8:?}");
        assert_eq!(c.transport.samples, 4);
        // queue times 0.05, 0.05, 0.05, 0.4: the median of four is the mean of the middle two
        assert_eq!(c.handoffs.len(), 1);
        assert_eq!(
            (c.handoffs[0].profile.as_str(), c.handoffs[0].samples),
            ("cpu", 4)
        );
        assert!((c.handoffs[0].queue_ms - 0.05).abs() < 1e-6);
        // delays: 2.0 − 0.8, 2.0 − 1.0, 5.0 − 2.2, 3.0 − 1.1
        assert!((c.transport.mean_ms - (1.2 + 1.0 + 2.8 + 1.9) / 4.0).abs() < 1e-9);
    }

    #[test]
    fn unknown_profiles_count_only_toward_transport_and_no_sample_is_an_error() {
        let mut other = sample(1.0, 1, 0.5, 1.5);
        other.profile = "unknown".into();
        let settings = LiveSettings {
            max_queue_delay_ms: 5.0,
            telemetry_interval_ms: 250.0,
        };
        let c = fit(&[other], &[profile()], settings, "test".into()).unwrap();
        assert!(c.overheads.is_empty() && c.handoffs.is_empty());
        assert_eq!(c.transport.samples, 1);
        assert_eq!(c.max_queue_delay_ms, 5.0);
        assert_eq!(c.telemetry_interval_ms, 250.0);
        assert!(fit(&[], &[profile()], SETTINGS, "t".into())
            .unwrap_err()
            .contains("no live result"));
    }
}
