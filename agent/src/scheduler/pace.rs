//! Emulating another device on this one: how long each batch is held after its real compute.
//!
//! - [`Pace::Slowdown`]: a device `k` times slower than this host; each batch takes `k` times
//!   its real compute time.
//! - [`Pace::Profile`]: the device of a profile (e.g. `profiles/jetson-orin-nano.toml`, slowed
//!   by a factor so the host can keep up); each batch takes the profile's latency for its model,
//!   width and batch size. A GPU's profile makes batching nearly free and a CPU's does not, so
//!   agents paced to different profiles differ in shape, not only in speed. A batch whose real
//!   compute already took longer cannot be paced down: it is a [`Hold::missed`] pace.
//!
//! Pure: the actor sleeps for [`Hold::sleep`] on the blocking thread that ran the batch.

use std::{sync::Arc, time::Duration};

use slim_protocol::DeviceProfile;

/// How batches are paced.
#[derive(Debug, Clone, Default)]
pub enum Pace {
    /// Batches take their real time.
    #[default]
    Real,
    /// Every batch takes this many times its real compute time (> 1).
    Slowdown(f32),
    /// Every batch takes the latency this profile gives its model, width and batch size.
    Profile {
        /// The emulated device, already slowed by the configured factor.
        profile: Arc<DeviceProfile>,
        /// Most batches the emulated device runs at once (its profile's `max_instances`).
        max_running: Option<usize>,
    },
}

/// What to do after a batch's real compute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hold {
    /// How long to sleep before answering.
    pub sleep: Duration,
    /// True when the real compute took longer than the emulated device would have.
    pub missed: bool,
    /// The emulated device's power while it runs this batch, watts (profile pacing only).
    pub power_w: Option<f32>,
}

impl Hold {
    fn none() -> Self {
        Hold {
            sleep: Duration::ZERO,
            missed: false,
            power_w: None,
        }
    }
}

impl Pace {
    /// True when the agent stands for another device.
    pub fn is_emulated(&self) -> bool {
        !matches!(self, Pace::Real)
    }

    /// Most batches to run at once (unlimited unless the emulated device says).
    pub fn max_running_batches(&self) -> usize {
        match self {
            Pace::Profile {
                max_running: Some(n),
                ..
            } => (*n).max(1),
            _ => usize::MAX,
        }
    }

    /// How long to hold a batch of `batch` requests at `width` of `model` whose real compute
    /// took `real`.
    pub fn hold(&self, model: &str, width: f32, batch: usize, real: Duration) -> Hold {
        match self {
            Pace::Real => Hold::none(),
            Pace::Slowdown(k) if *k > 1.0 => Hold {
                sleep: real.mul_f32(k - 1.0),
                ..Hold::none()
            },
            Pace::Slowdown(_) => Hold::none(),
            Pace::Profile { profile, .. } => {
                let batch = u16::try_from(batch).unwrap_or(u16::MAX);
                let Some((latency_ms, power_w)) = profile.cost(model, width, batch) else {
                    // Not profiled (the service refuses to start so): run at real speed.
                    return Hold {
                        missed: true,
                        ..Hold::none()
                    };
                };
                let target = Duration::from_secs_f32(latency_ms.max(0.0) / 1000.0);
                Hold {
                    sleep: target.saturating_sub(real),
                    missed: real > target,
                    power_w: Some(power_w),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slim_protocol::ProfilePoint;

    fn gpu_like() -> Pace {
        let point = |batch, latency_ms, power_w| ProfilePoint {
            model: "m".into(),
            width: 0.5,
            batch,
            latency_ms,
            power_w: Some(power_w),
        };
        Pace::Profile {
            profile: Arc::new(DeviceProfile {
                name: "gpu".into(),
                source: "derived".into(),
                idle_power_w: 3.0,
                max_power_w: 15.0,
                points: vec![point(1, 10.0, 5.0), point(8, 12.0, 10.0)],
            }),
            max_running: Some(1),
        }
    }

    #[test]
    fn a_profile_pace_holds_each_batch_to_the_profiled_latency_of_its_size() {
        let pace = gpu_like();
        let h = pace.hold("m", 0.5, 1, Duration::from_millis(4));
        assert_eq!(h.sleep, Duration::from_millis(6));
        assert_eq!((h.missed, h.power_w), (false, Some(5.0)));
        // Batch 8 costs 12 ms on the emulated device, however long the host took below that.
        let h = pace.hold("m", 0.5, 8, Duration::from_millis(9));
        assert!(
            (h.sleep.as_secs_f64() - 0.003).abs() < 1e-6,
            "{:?}",
            h.sleep
        );
        assert_eq!(h.power_w, Some(10.0));
    }

    #[test]
    fn a_batch_slower_than_the_emulated_device_is_a_missed_pace_with_no_sleep() {
        let h = gpu_like().hold("m", 0.5, 1, Duration::from_millis(25));
        assert_eq!((h.sleep, h.missed), (Duration::ZERO, true));
    }

    #[test]
    fn an_unprofiled_width_runs_at_real_speed_and_counts_as_missed() {
        let h = gpu_like().hold("m", 1.0, 1, Duration::from_millis(1));
        assert_eq!((h.sleep, h.missed, h.power_w), (Duration::ZERO, true, None));
    }

    #[test]
    fn a_slowdown_sleeps_k_minus_one_times_the_real_compute() {
        let h = Pace::Slowdown(3.0).hold("m", 0.5, 4, Duration::from_millis(5));
        assert_eq!((h.sleep, h.missed), (Duration::from_millis(10), false));
        assert_eq!(
            Pace::Real.hold("m", 0.5, 4, Duration::from_millis(5)),
            Hold::none()
        );
    }

    #[test]
    fn only_a_profile_with_max_instances_limits_running_batches() {
        assert_eq!(gpu_like().max_running_batches(), 1);
        assert_eq!(Pace::Slowdown(2.0).max_running_batches(), usize::MAX);
        assert!(!Pace::Real.is_emulated() && Pace::Slowdown(2.0).is_emulated());
    }
}
