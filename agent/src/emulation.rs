//! The device the agent announces and, when it stands for another device, how it paces to it.
//!
//! The published profile is always the file as it is: the device at its own speed. The
//! slowdown travels separately, in the announcement's [`Emulation`], and the routers apply it
//! once (`DeviceView::slowdown`), as the simulator does.
//!
//! - No slowdown, no pacing: the profile should be this host's measured one.
//! - `slowdown` k > 1 without pacing: each batch takes k times its real compute time.
//! - `pace_to_profile`: the agent emulates the profile's device, k times slower (so a host
//!   slower than, say, a Jetson can still keep the Jetson's shape: nearly free batching, power
//!   that grows with the batch). See [`Pace::Profile`].

use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use slim_protocol::{DeviceProfile, Emulation, WidthKey};

use crate::{config::AgentConfig, scheduler::Pace};

/// Limits a profile file may state beside its points (as the files in `profiles/` do).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct ProfileLimits {
    max_batch: Option<u16>,
    max_instances: Option<u16>,
}

/// What the agent announces about its device, and how it paces batches.
#[derive(Debug, Clone, Default)]
pub struct DeviceModel {
    /// The profile published in the agent's status, as the file has it (unslowed).
    pub profile: Option<DeviceProfile>,
    /// How batches are paced.
    pub pace: Pace,
    /// The emulated device's largest batch, when pacing to a profile that states one.
    pub max_batch: Option<u16>,
}

impl DeviceModel {
    /// Reads the configured profile and builds the pacing the configuration asks for.
    pub fn load(config: &AgentConfig) -> anyhow::Result<Self> {
        let slowdown = config.slowdown.max(1.0);
        let Some(path) = &config.profile else {
            return Ok(DeviceModel {
                pace: slowdown_pace(slowdown),
                ..DeviceModel::default()
            });
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the device profile {}", path.display()))?;
        let raw: DeviceProfile = toml::from_str(&text)
            .with_context(|| format!("{} is not a device profile", path.display()))?;
        let limits: ProfileLimits = toml::from_str(&text).unwrap_or_default();
        if !config.pace_to_profile {
            return Ok(DeviceModel {
                profile: Some(raw),
                pace: slowdown_pace(slowdown),
                max_batch: None,
            });
        }
        Ok(DeviceModel {
            pace: Pace::Profile {
                profile: Arc::new(raw.slowed(slowdown)),
                max_running: limits.max_instances.map(usize::from),
            },
            profile: Some(raw),
            max_batch: limits.max_batch,
        })
    }

    /// True when batches are paced to the profile's device.
    pub fn paces_to_profile(&self) -> bool {
        matches!(self.pace, Pace::Profile { .. })
    }

    /// The emulation announced in the agent's status, when there is one.
    pub fn emulation(&self, config: &AgentConfig) -> Option<Emulation> {
        self.pace.is_emulated().then(|| Emulation {
            slowdown: config.slowdown.max(1.0),
            profile: self
                .paces_to_profile()
                .then(|| self.profile.as_ref().map(|p| p.name.clone()))
                .flatten(),
        })
    }

    /// When pacing, checks that the profile has a point for every served (model, width): a
    /// batch the profile cannot price would run at the host's speed.
    pub fn check_covers<'a>(
        &self,
        served: impl IntoIterator<Item = (&'a str, f32)>,
    ) -> anyhow::Result<()> {
        let (Pace::Profile { .. }, Some(profile)) = (&self.pace, &self.profile) else {
            return Ok(());
        };
        let missing: Vec<String> = served
            .into_iter()
            .filter(|(model, width)| {
                !profile
                    .points
                    .iter()
                    .any(|p| p.model == *model && WidthKey::same(p.width, *width))
            })
            .map(|(model, width)| format!("{model} at width {width}"))
            .collect();
        anyhow::ensure!(
            missing.is_empty(),
            "the profile {} has no point for {}: it cannot be emulated for these (serve fewer models or use a profile that lists them)",
            profile.name,
            missing.join(", ")
        );
        Ok(())
    }
}

fn slowdown_pace(slowdown: f32) -> Pace {
    if slowdown > 1.0 {
        Pace::Slowdown(slowdown)
    } else {
        Pace::Real
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn repo_profile(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../profiles")
            .join(format!("{name}.toml"))
    }

    fn config(profile: Option<&str>, slowdown: f32, pace: bool) -> AgentConfig {
        AgentConfig {
            profile: profile.map(repo_profile),
            slowdown,
            pace_to_profile: pace,
            ..AgentConfig::default()
        }
    }

    #[test]
    fn pacing_to_a_shipped_jetson_profile_paces_to_its_slowed_latency_and_publishes_it_unslowed() {
        let c = config(Some("jetson-orin-nano"), 20.0, true);
        let model = DeviceModel::load(&c).unwrap();
        assert_eq!(model.max_batch, Some(32));
        assert_eq!(model.pace.max_running_batches(), 1);
        let published = model.profile.as_ref().unwrap();
        assert_eq!(published.name, "jetson-orin-nano");
        let (fast, _) = published.cost("cifar-slimresnet", 0.25, 8).unwrap();
        let hold = model
            .pace
            .hold("cifar-slimresnet", 0.25, 8, std::time::Duration::ZERO);
        let paced_ms = hold.sleep.as_secs_f32() * 1000.0;
        assert!(
            (paced_ms - 20.0 * fast).abs() < 1e-2,
            "{paced_ms} vs 20 x {fast}"
        );
        let e = model.emulation(&c).unwrap();
        assert_eq!(e.profile.as_deref(), Some("jetson-orin-nano"));
        assert_eq!(e.slowdown, 20.0);
    }

    #[test]
    fn a_slowdown_without_pacing_publishes_the_profile_unslowed_and_slows_the_real_time() {
        let c = config(Some("cpu-2core-measured"), 4.0, false);
        let model = DeviceModel::load(&c).unwrap();
        assert!(matches!(model.pace, Pace::Slowdown(k) if k == 4.0));
        let e = model.emulation(&c).unwrap();
        assert_eq!((e.slowdown, e.profile), (4.0, None));
        let text = std::fs::read_to_string(repo_profile("cpu-2core-measured")).unwrap();
        let file: DeviceProfile = toml::from_str(&text).unwrap();
        assert_eq!(
            model.profile.unwrap(),
            file,
            "the routers apply the slowdown once"
        );
        let real = DeviceModel::load(&config(None, 1.0, false)).unwrap();
        assert!(matches!(real.pace, Pace::Real) && real.emulation(&c).is_none());
    }

    #[test]
    fn pacing_refuses_a_model_width_the_profile_does_not_list() {
        let model = DeviceModel::load(&config(Some("jetson-orin-nano"), 1.0, true)).unwrap();
        model
            .check_covers([("cifar-slimresnet", 0.25), ("digits", 1.0)])
            .unwrap();
        let err = model
            .check_covers([("cifar-slimresnet", 0.3), ("resnet", 1.0)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cifar-slimresnet at width 0.3") && err.contains("resnet at width 1"),
            "{err}"
        );
    }
}
