//! The model-family manifest (`models/<family>/manifest.toml`), as documented in models/README.md:
//! the one parser the agent (which loads the family) and the router's fleets (which simulate it)
//! both use.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Current manifest schema.
pub const MANIFEST_SCHEMA: u32 = 1;

/// A family manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// Schema version, [`MANIFEST_SCHEMA`].
    pub schema: u32,
    /// Family name; requests address it.
    pub family: String,
    /// One-line description.
    #[serde(default)]
    pub description: String,
    /// Sample shape `[C,H,W]`; ONNX input is `[N,C,H,W]`.
    pub input_shape: Vec<u32>,
    /// Class names, in output order.
    pub classes: Vec<String>,
    /// `trained` or `untrained`.
    #[serde(default)]
    pub weights: String,
    /// How the weights were obtained.
    #[serde(default)]
    pub weights_note: String,
    /// Preprocessing applied to u8 inputs.
    pub preprocess: Preprocess,
    /// Data the accuracies were measured on, when measured.
    #[serde(default)]
    pub dataset: Option<Dataset>,
    /// Widths, ascending.
    pub widths: Vec<WidthEntry>,
}

/// u8 pixel `v` of channel `c` becomes `(v / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Preprocess {
    /// Per-channel mean on the 0..1 scale.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation on the 0..1 scale.
    pub std: Vec<f32>,
}

/// The labelled data set behind measured accuracies.
#[derive(Debug, Clone, Deserialize)]
pub struct Dataset {
    /// Data set name.
    pub name: String,
    /// The split accuracies were measured on.
    pub split: String,
    /// u8 `[N,C,H,W]` held-out inputs (.npy), relative to the family folder.
    #[serde(default)]
    pub holdout_inputs: Option<String>,
    /// int64 `[N]` held-out labels (.npy).
    #[serde(default)]
    pub holdout_labels: Option<String>,
}

/// One width of the family.
#[derive(Debug, Clone, Deserialize)]
pub struct WidthEntry {
    /// Width multiplier.
    pub width: f32,
    /// ONNX file, relative to the family folder.
    pub file: String,
    /// Consecutive segment files.
    #[serde(default)]
    pub segments: Vec<String>,
    /// Top-1 accuracy as a fraction.
    pub top1: f32,
    /// `measured` or `cited`.
    pub accuracy_source: String,
    /// Split or citation.
    #[serde(default)]
    pub accuracy_note: String,
    /// FLOPs for one sample.
    pub flops: u64,
    /// Parameter count.
    pub params: u64,
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Manifest path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML does not parse.
    #[error("{path} is not a valid manifest: {source}")]
    Parse {
        /// Manifest path.
        path: PathBuf,
        /// Cause.
        source: toml::de::Error,
    },
    /// The content is inconsistent.
    #[error("{path}: {reason}")]
    Invalid {
        /// Manifest path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl WidthEntry {
    /// What the agent announces about this width.
    pub fn info(&self) -> crate::WidthInfo {
        crate::WidthInfo {
            width: self.width,
            top1: self.top1,
            accuracy_source: self.accuracy_source.clone(),
            flops: self.flops,
            params: self.params,
        }
    }
}

impl Manifest {
    /// What an agent serving every width of this family announces about it.
    pub fn model_info(&self) -> crate::ModelInfo {
        crate::ModelInfo {
            name: self.family.clone(),
            input_shape: self.input_shape.clone(),
            classes: self.classes.len() as u32,
            widths: self.widths.iter().map(WidthEntry::info).collect(),
        }
    }

    /// Reads and checks `dir/manifest.toml`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join("manifest.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|source| ManifestError::Parse {
            path: path.clone(),
            source,
        })?;
        manifest
            .check()
            .map_err(|reason| ManifestError::Invalid { path, reason })?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        if self.schema != MANIFEST_SCHEMA {
            return Err(format!("schema {} is not {MANIFEST_SCHEMA}", self.schema));
        }
        if self.input_shape.len() != 3 || self.input_shape.contains(&0) {
            return Err(format!("input_shape {:?} is not [C,H,W]", self.input_shape));
        }
        let channels = self.input_shape[0] as usize;
        if self.preprocess.mean.len() != channels || self.preprocess.std.len() != channels {
            return Err(format!("preprocess needs {channels} mean and std values"));
        }
        if self.preprocess.std.iter().any(|s| *s <= 0.0) {
            return Err("preprocess std must be positive".into());
        }
        if self.classes.is_empty() {
            return Err("no classes".into());
        }
        if self.widths.is_empty() {
            return Err("no widths".into());
        }
        if self.widths.windows(2).any(|w| w[0].width >= w[1].width) {
            return Err("widths must be listed in ascending order without repeats".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }

    #[test]
    fn every_shipped_manifest_loads_and_announces_its_widths_in_order() {
        let mut families = 0;
        for entry in std::fs::read_dir(models_dir()).unwrap() {
            let dir = entry.unwrap().path();
            if !dir.join("manifest.toml").is_file() {
                continue;
            }
            let manifest = Manifest::load(&dir).unwrap();
            let info = manifest.model_info();
            assert_eq!(info.classes as usize, manifest.classes.len());
            assert!(info.widths.windows(2).all(|w| w[0].width < w[1].width));
            families += 1;
        }
        assert!(
            families >= 2,
            "digits and cifar-slimresnet ship: {families}"
        );
    }

    #[test]
    fn a_manifest_with_widths_out_of_order_is_refused_with_its_path() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let text = std::fs::read_to_string(models_dir().join("digits/manifest.toml")).unwrap();
        let mut manifest: toml::Table = toml::from_str(&text).unwrap();
        let widths = manifest["widths"].as_array_mut().unwrap();
        widths.reverse();
        std::fs::write(
            dir.join("manifest.toml"),
            toml::to_string(&manifest).unwrap(),
        )
        .unwrap();
        let error = Manifest::load(dir).unwrap_err().to_string();
        assert!(error.contains("ascending"), "{error}");
        assert!(error.contains("manifest.toml"), "{error}");
    }
}
