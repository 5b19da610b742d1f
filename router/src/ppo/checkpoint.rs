//! Checkpoints: one safetensors file with the weights (`actor.0.weight`, …) and, in its header
//! metadata under `slim`, a JSON [`CheckpointMeta`]: preset, reward weights, fleet,
//! observation-schema version, seed, hyperparameters and final metrics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::config::PpoConfig;
use super::features::OBSERVATION_SCHEMA_VERSION;
use super::net::{Dense, PolicyWeights, LAYER_NAMES};
use crate::reward::RewardWeights;
use crate::sim::Summary;

const META_KEY: &str = "slim";

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid checkpoint.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What a checkpoint says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Layout of the candidate features the policy was trained on.
    pub observation_schema_version: u32,
    /// Reward preset name (`custom` for custom weights).
    pub preset: String,
    /// Reward weights trained for.
    pub weights: RewardWeights,
    /// Profile names of the training fleet.
    pub fleet: Vec<String>,
    /// Training seed.
    pub seed: u64,
    /// Decisions trained on.
    pub steps: usize,
    /// Wall-clock training time, seconds.
    pub train_seconds: f64,
    /// Hyperparameters.
    pub config: PpoConfig,
    /// Evaluation of the final policy on held-out seeds, if run.
    #[serde(default)]
    pub final_metrics: Option<Summary>,
    /// Training diagnostics of the last update.
    #[serde(default)]
    pub final_diagnostics: HashMap<String, f64>,
    /// Set when the weights were refined online from live rewards after training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<OnlineMeta>,
}

/// How a checkpoint was refined online (`slim-coordinator --online-refine --online-save`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineMeta {
    /// The checkpoint refinement started from.
    pub base_policy: String,
    /// Updates applied.
    pub updates: u64,
    /// Updates refused by the KL guard.
    pub rejected: u64,
    /// Live transitions (decisions with their reward) collected.
    pub transitions: u64,
    /// Decisions whose reward never came.
    pub expired: u64,
    /// Settings of the refinement.
    pub config: super::online::OnlineConfig,
    /// Mean reward of the last applied update's batch.
    pub reward_mean: f32,
    /// When this file was written, ms since the Unix epoch.
    pub written_at_ms: u64,
}

/// A policy and what it says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Weights.
    pub weights: PolicyWeights,
    /// Metadata.
    pub meta: CheckpointMeta,
}

impl Checkpoint {
    /// Writes the checkpoint to `path`, atomically: into a temporary file in the same folder,
    /// then renamed over `path`, so a reader never sees half a file.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let invalid = |reason: String| CheckpointError::Invalid {
            path: path.into(),
            reason,
        };
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (name, layer) in LAYER_NAMES.iter().zip(&self.weights.layers) {
            let w = Tensor::from_slice(&layer.weight, (layer.outputs, layer.inputs), &Device::Cpu)
                .map_err(|e| invalid(e.to_string()))?;
            let b = Tensor::from_slice(&layer.bias, layer.outputs, &Device::Cpu)
                .map_err(|e| invalid(e.to_string()))?;
            tensors.push((format!("{name}.weight"), w));
            tensors.push((format!("{name}.bias"), b));
        }
        let meta = serde_json::to_string(&self.meta).map_err(|e| invalid(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
                path: dir.into(),
                source,
            })?;
        }
        let name = path
            .file_name()
            .ok_or_else(|| invalid("not a file name".into()))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = path.with_file_name(temp_name);
        safetensors::serialize_to_file(
            tensors.iter().map(|(n, t)| (n.as_str(), t)),
            Some(HashMap::from([(META_KEY.to_string(), meta)])),
            &temp,
        )
        .map_err(|e| invalid(e.to_string()))?;
        std::fs::rename(&temp, path).map_err(|source| {
            let _ = std::fs::remove_file(&temp);
            CheckpointError::Io {
                path: path.into(),
                source,
            }
        })
    }

    /// Reads the checkpoint at `path`, refusing one made for another observation schema.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let invalid = |reason: String| CheckpointError::Invalid {
            path: path.into(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.into(),
            source,
        })?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| invalid(e.to_string()))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| invalid("no slim metadata: not a Slim Scheduler policy".into()))?;
        let meta: CheckpointMeta =
            serde_json::from_str(meta_json).map_err(|e| invalid(e.to_string()))?;
        if meta.observation_schema_version != OBSERVATION_SCHEMA_VERSION {
            return Err(invalid(format!(
                "observation schema {} but this build uses {} (the policy's features changed; \
                 retrain it with `slim train`)",
                meta.observation_schema_version, OBSERVATION_SCHEMA_VERSION
            )));
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| invalid(e.to_string()))?;
        let mut layers = Vec::new();
        for name in LAYER_NAMES {
            let get = |suffix: &str| {
                tensors
                    .get(&format!("{name}.{suffix}"))
                    .ok_or_else(|| invalid(format!("missing tensor {name}.{suffix}")))
            };
            let (w, b) = (get("weight")?, get("bias")?);
            let (outputs, inputs) = w.dims2().map_err(|e| invalid(e.to_string()))?;
            layers.push(Dense {
                inputs,
                outputs,
                weight: w
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .map_err(|e| invalid(e.to_string()))?,
                bias: b.to_vec1().map_err(|e| invalid(e.to_string()))?,
            });
        }
        let shapes_ok = layers[0].inputs == super::features::FEATURES
            && layers[3].inputs == super::features::FEATURES
            && layers[2].outputs == 1
            && layers[5].outputs == 1
            && layers[6].inputs == super::features::FEATURES
            && layers[6].outputs == 1
            && layers.iter().all(|l| l.bias.len() == l.outputs);
        if !shapes_ok {
            return Err(invalid(
                "layer shapes do not match the policy network".into(),
            ));
        }
        Ok(Self {
            weights: PolicyWeights { layers },
            meta,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Metadata of a test checkpoint of the efficiency preset.
    pub(crate) fn meta() -> CheckpointMeta {
        CheckpointMeta {
            observation_schema_version: OBSERVATION_SCHEMA_VERSION,
            preset: "efficiency".into(),
            weights: crate::reward::RewardPreset::Efficiency.weights(),
            fleet: vec!["a".into(), "b".into()],
            seed: 9,
            steps: 100,
            train_seconds: 1.5,
            config: PpoConfig::default(),
            final_metrics: Some(Summary::default()),
            final_diagnostics: HashMap::from([("approx_kl".to_string(), 0.01)]),
            online: None,
        }
    }

    #[test]
    fn a_checkpoint_round_trips_weights_and_metadata() {
        let weights = PolicyWeights::init(8, &mut StdRng::seed_from_u64(5));
        let checkpoint = Checkpoint {
            weights,
            meta: meta(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.safetensors");
        checkpoint.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), checkpoint);
        let settings = crate::RouterSettings {
            policy: Some(path),
            ..Default::default()
        };
        let router = crate::build_router(crate::RouterKind::Ppo, &settings).unwrap();
        assert_eq!(router.name(), "ppo:efficiency");
        assert!(matches!(
            crate::build_router(crate::RouterKind::Ppo, &crate::RouterSettings::default()),
            Err(crate::RouterError::MissingPolicy)
        ));
        std::fs::write(dir.path().join("junk"), b"not a checkpoint").unwrap();
        assert!(Checkpoint::load(&dir.path().join("junk")).is_err());
        // Only the checkpoint and the junk file: the temporary file was renamed away.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_checkpoint_of_another_observation_schema_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.safetensors");
        let mut checkpoint = Checkpoint {
            weights: PolicyWeights::init(8, &mut StdRng::seed_from_u64(7)),
            meta: meta(),
        };
        checkpoint.meta.observation_schema_version = OBSERVATION_SCHEMA_VERSION - 1;
        checkpoint.save(&path).unwrap();
        let error = Checkpoint::load(&path).unwrap_err().to_string();
        let want = format!(
            "observation schema {} but this build uses {}",
            OBSERVATION_SCHEMA_VERSION - 1,
            OBSERVATION_SCHEMA_VERSION
        );
        assert!(
            error.contains(&want) && error.contains("retrain"),
            "{error}"
        );
        let settings = crate::RouterSettings {
            policy: Some(path),
            ..Default::default()
        };
        assert!(crate::build_router(crate::RouterKind::Ppo, &settings).is_err());
    }

    #[test]
    fn online_metadata_round_trips_and_older_files_load_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refined.safetensors");
        let mut checkpoint = Checkpoint {
            weights: PolicyWeights::init(8, &mut StdRng::seed_from_u64(6)),
            meta: meta(),
        };
        checkpoint.meta.online = Some(OnlineMeta {
            base_policy: "router/policies/efficiency.safetensors".into(),
            updates: 3,
            rejected: 1,
            transitions: 800,
            expired: 2,
            config: super::super::online::OnlineConfig::default(),
            reward_mean: -0.2,
            written_at_ms: 1,
        });
        checkpoint.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), checkpoint);
        // The shipped policies predate the field.
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("policies/efficiency.safetensors");
        assert_eq!(Checkpoint::load(&shipped).unwrap().meta.online, None);
    }
}
