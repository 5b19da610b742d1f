//! Devices and models as the simulator and the coordinator know them: device profiles
//! (`profiles/*.toml`) and model manifests (`models/*/manifest.toml`).
//!
//! A profile lists operating points (model, width, batch) → (latency, power); [`DeviceProfile::cost`]
//! interpolates between them. [`width_options`] turns a profile into the [`WidthOption`]s of an
//! [`Observation`](crate::Observation), so the coordinator and the simulator describe a device
//! the same way.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use slim_protocol::DeviceProfile;

use crate::{BatchOption, WidthOption};

/// Why a fleet could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not valid TOML of the expected shape.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: toml::de::Error,
    },
    /// A model manifest cannot be used.
    #[error(transparent)]
    Manifest(#[from] slim_protocol::manifest::ManifestError),
    /// The fleet names no device, or no model.
    #[error("{0}")]
    Empty(String),
}

/// A profile file: a [`DeviceProfile`] plus the limits the simulator needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ProfileFile {
    /// The profile as agents announce it.
    #[serde(flatten)]
    pub profile: DeviceProfile,
    /// Memory available to model instances, MiB (VRAM, or RAM on CPUs and Jetsons).
    #[serde(default)]
    pub memory_mb: Option<f32>,
    /// Model instances that run concurrently.
    #[serde(default)]
    pub max_instances: Option<u16>,
    /// Largest batch the device forms.
    #[serde(default)]
    pub max_batch: Option<u16>,
}

impl ProfileFile {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, FleetError> {
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| FleetError::Parse {
            path: path.into(),
            source,
        })
    }
}

/// One width of a model family, from its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct WidthSpec {
    /// Width multiplier.
    pub width: f32,
    /// Top-1 accuracy, fraction.
    pub top1: f32,
    /// FLOPs per sample.
    pub flops: u64,
    /// Parameters.
    pub params: u64,
}

/// A model family, from its manifest: what the simulator needs of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Family name.
    pub name: String,
    /// Input shape of one sample.
    pub input_shape: Vec<usize>,
    /// Widths, ascending.
    pub widths: Vec<WidthSpec>,
}

impl ModelSpec {
    /// Reads and checks a `manifest.toml` with the agent's parser
    /// ([`slim_protocol::manifest::Manifest`]).
    pub fn load(path: &Path) -> Result<Self, FleetError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(Self::from(&slim_protocol::manifest::Manifest::load(dir)?))
    }

    /// Memory one instance needs for a batch of `batch` at `width`, bytes: f32 weights plus an
    /// estimate of live activations (64 input-sized f32 feature maps per sample, scaled by width).
    pub fn instance_mem_bytes(&self, width: &WidthSpec, batch: u16) -> u64 {
        let input: usize = self.input_shape.iter().product();
        let activations = input as f64 * 4.0 * 64.0 * f64::from(width.width);
        (width.params as f64 * 4.0 + activations * f64::from(batch)) as u64
    }
}

impl From<&slim_protocol::manifest::Manifest> for ModelSpec {
    fn from(m: &slim_protocol::manifest::Manifest) -> Self {
        Self {
            name: m.family.clone(),
            input_shape: m.input_shape.iter().map(|&d| d as usize).collect(),
            // The manifest lists widths ascending (checked when it loads).
            widths: m
                .widths
                .iter()
                .map(|w| WidthSpec {
                    width: w.width,
                    top1: w.top1,
                    flops: w.flops,
                    params: w.params,
                })
                .collect(),
        }
    }
}

/// One device of a fleet.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Agent id, unique in the fleet (`{profile}-{n}`).
    pub agent: String,
    /// Its profile.
    pub profile: DeviceProfile,
    /// Memory for model instances, bytes.
    pub memory_bytes: u64,
    /// Concurrent model instances.
    pub instances: u16,
    /// Largest batch it forms.
    pub max_batch: u16,
    /// Time each request spends in the agent outside its batch (decoding, hand-over to the
    /// batcher), ms; the simulator adds it to the request's latency. 0 unless calibrated.
    pub handoff_ms: f32,
    /// The profile routers see, when it differs from `profile`, the one the simulator charges:
    /// a calibrated fleet charges the calibrated profile while its routers see the profile the
    /// live agent publishes, as the live coordinator does.
    pub published: Option<DeviceProfile>,
}

impl DeviceSpec {
    /// A device from a profile file; defaults: 4 GiB, one instance, batch 32.
    pub fn from_file(agent: String, file: &ProfileFile) -> Self {
        Self {
            agent,
            profile: file.profile.clone(),
            memory_bytes: (f64::from(file.memory_mb.unwrap_or(4096.0)) * 1048576.0) as u64,
            instances: file.max_instances.unwrap_or(1).max(1),
            max_batch: file.max_batch.unwrap_or(32).max(1),
            handoff_ms: 0.0,
            published: None,
        }
    }
}

/// Devices and the models they all serve.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Devices.
    pub devices: Vec<DeviceSpec>,
    /// Models.
    pub models: Vec<ModelSpec>,
    /// Delay outside the devices (client, broker, coordinator), added to every request's latency
    /// by the simulator; `None` (the default) models none. Set by
    /// [`crate::calibration::Calibration::apply`].
    pub transport: Option<crate::calibration::Transport>,
    /// The agents' telemetry period, ms: when set, the simulator shows routers what a live
    /// coordinator sees (each device's latest report plus the requests assigned since) instead
    /// of its exact state. `None` (the default): exact state. Set by a calibration.
    pub telemetry_interval_ms: Option<f64>,
}

impl Fleet {
    /// Loads `names` (profile file stems, repeated for several devices, e.g.
    /// `jetson-orin-nano,jetson-orin-nano,rtx-4090`) from `profiles_dir` and every model manifest
    /// under `models_dir` that the profiles cover.
    pub fn load(
        profiles_dir: &Path,
        models_dir: &Path,
        names: &[String],
    ) -> Result<Self, FleetError> {
        if names.is_empty() {
            return Err(FleetError::Empty("the fleet names no device".into()));
        }
        let mut devices = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let file = ProfileFile::load(&profiles_dir.join(format!("{name}.toml")))?;
            devices.push(DeviceSpec::from_file(format!("{name}-{i}"), &file));
        }
        let mut models = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(models_dir)
            .map_err(|source| FleetError::Read {
                path: models_dir.into(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path().join("manifest.toml")))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for manifest in entries {
            let model = ModelSpec::load(&manifest)?;
            let covered = devices
                .iter()
                .all(|d| d.profile.points.iter().any(|p| p.model == model.name));
            if covered {
                models.push(model);
            }
        }
        if models.is_empty() {
            return Err(FleetError::Empty(
                "no model manifest is covered by every profile of the fleet".into(),
            ));
        }
        Ok(Self {
            devices,
            models,
            transport: None,
            telemetry_interval_ms: None,
        })
    }

    /// Parses a comma-separated fleet (`a,b,b` or `a,b*2`) into profile names.
    pub fn parse_names(fleet: &str) -> Vec<String> {
        fleet
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .flat_map(|item| match item.split_once('*') {
                Some((name, n)) => vec![name.trim().to_string(); n.trim().parse().unwrap_or(1)],
                None => vec![item.to_string()],
            })
            .collect()
    }
}

/// The widths of `model` that `device` serves, with a [`BatchOption`] for each size in
/// `batch_sizes` up to the device's largest batch.
pub fn width_options(
    device: &DeviceSpec,
    model: &ModelSpec,
    batch_sizes: &[u16],
) -> Vec<WidthOption> {
    model
        .widths
        .iter()
        .filter_map(|w| {
            let batches: Vec<BatchOption> = batch_sizes
                .iter()
                .copied()
                .filter(|&b| b <= device.max_batch)
                .filter_map(|batch| {
                    let seen = device.published.as_ref().unwrap_or(&device.profile);
                    let (latency_ms, power_w) = seen.cost(&model.name, w.width, batch)?;
                    Some(BatchOption {
                        batch,
                        latency_ms,
                        power_w,
                        mem_bytes: model.instance_mem_bytes(w, batch),
                    })
                })
                .collect();
            (!batches.is_empty()).then_some(WidthOption {
                width: w.width,
                top1: w.top1,
                flops: w.flops,
                recent_latency_ms: None,
                queue_depth: 0,
                oldest_wait_ms: 0.0,
                batches,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use slim_protocol::ProfilePoint;

    /// A synthetic two-model fleet: latency grows with FLOPs, a fast and a slow device.
    pub fn tiny_fleet() -> Fleet {
        let models = vec![
            ModelSpec {
                name: "m".into(),
                input_shape: vec![1, 8, 8],
                widths: [(0.25, 0.90, 1e6), (0.5, 0.95, 4e6), (1.0, 0.99, 16e6)]
                    .into_iter()
                    .map(|(width, top1, flops)| WidthSpec {
                        width,
                        top1,
                        flops: flops as u64,
                        params: (flops / 100.0) as u64,
                    })
                    .collect(),
            },
            ModelSpec {
                name: "n".into(),
                input_shape: vec![3, 32, 32],
                widths: [(0.5, 0.7, 50e6), (1.0, 0.8, 200e6)]
                    .into_iter()
                    .map(|(width, top1, flops)| WidthSpec {
                        width,
                        top1,
                        flops: flops as u64,
                        params: (flops / 100.0) as u64,
                    })
                    .collect(),
            },
        ];
        let device = |name: &str, gflops: f32, overhead: f32, watts: f32| {
            let mut points = Vec::new();
            for m in &models {
                for w in &m.widths {
                    for batch in [1u16, 4, 16, 32] {
                        points.push(ProfilePoint {
                            model: m.name.clone(),
                            width: w.width,
                            batch,
                            latency_ms: overhead
                                + f32::from(batch) * w.flops as f32 / (gflops * 1e6),
                            power_w: Some(watts * (0.5 + 0.5 * w.width)),
                        });
                    }
                }
            }
            DeviceSpec {
                agent: name.into(),
                profile: DeviceProfile {
                    name: name.into(),
                    source: "synthetic".into(),
                    idle_power_w: watts * 0.3,
                    max_power_w: watts,
                    points,
                },
                memory_bytes: 1 << 32,
                instances: 1,
                max_batch: 32,
                handoff_ms: 0.0,
                published: None,
            }
        };
        Fleet {
            devices: vec![
                device("fast", 200.0, 0.2, 30.0),
                device("slow", 20.0, 0.5, 10.0),
                device("mid", 60.0, 0.3, 15.0),
            ],
            models,
            transport: None,
            telemetry_interval_ms: None,
        }
    }

    #[test]
    fn fleet_names_expand_repeats() {
        assert_eq!(Fleet::parse_names("a, b*2,c"), vec!["a", "b", "b", "c"]);
    }
}
