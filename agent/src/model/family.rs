//! A loaded family: one prepared tract plan per width, with a symbolic batch dimension.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use slim_protocol::DType;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::{Runnable, Runtime, State};

use super::{width_key, Manifest, ManifestError, WidthEntry};

/// Why a family or an input cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// tract could not load or prepare an ONNX file.
    #[error("cannot load {path}: {reason}")]
    Load {
        /// ONNX path.
        path: PathBuf,
        /// tract's message.
        reason: String,
    },
    /// Inference failed.
    #[error("inference failed: {0}")]
    Run(String),
}

/// One width, prepared for the chosen runtime. States spawned from it share its weights.
#[derive(Debug, Clone)]
pub struct WidthPlan {
    /// The manifest entry.
    pub entry: WidthEntry,
    runnable: Arc<dyn Runnable>,
}

impl WidthPlan {
    /// A fresh execution state (one model instance's activations).
    pub fn spawn_state(&self) -> Result<Box<dyn State>, ModelError> {
        self.runnable
            .spawn()
            .map_err(|e| ModelError::Run(format!("{e:#}")))
    }
}

/// A slimmable model family, loaded.
#[derive(Debug)]
pub struct ModelFamily {
    /// The manifest.
    pub manifest: Manifest,
    /// The family folder.
    pub dir: PathBuf,
    plans: Vec<WidthPlan>,
}

impl ModelFamily {
    /// Loads every width of the family in `dir` and prepares it on `runtime`.
    pub fn load(dir: &Path, runtime: &dyn Runtime) -> Result<Self, ModelError> {
        let manifest = Manifest::load(dir)?;
        let plans = manifest
            .widths
            .iter()
            .map(|entry| {
                let path = dir.join(&entry.file);
                let runnable = prepare(&path, &manifest.input_shape, runtime).map_err(|e| {
                    ModelError::Load {
                        path: path.clone(),
                        reason: format!("{e:#}"),
                    }
                })?;
                Ok(WidthPlan {
                    entry: entry.clone(),
                    runnable,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Self {
            manifest,
            dir: dir.to_path_buf(),
            plans,
        })
    }

    /// Family name.
    pub fn name(&self) -> &str {
        &self.manifest.family
    }

    /// The plan for `width`, if the family has it.
    pub fn plan(&self, width: f32) -> Option<&WidthPlan> {
        let key = width_key(width);
        self.plans.iter().find(|p| width_key(p.entry.width) == key)
    }

    /// All plans, ascending width.
    pub fn plans(&self) -> &[WidthPlan] {
        &self.plans
    }

    /// Elements in one sample.
    pub fn sample_len(&self) -> usize {
        self.manifest
            .input_shape
            .iter()
            .map(|&d| d as usize)
            .product()
    }

    /// Checks a request tensor against the model's input, returning a reason when it does not fit.
    pub fn check_input(&self, input: &slim_protocol::Tensor) -> Result<(), InputMismatch> {
        if input.validate().is_err() {
            return Err(InputMismatch::Dtype(format!(
                "{} bytes do not hold a {:?} tensor of shape {:?}",
                input.data.len(),
                input.dtype,
                input.shape
            )));
        }
        if !input.is_sample_of(&self.manifest.input_shape) {
            return Err(InputMismatch::Shape(format!(
                "model {} takes [C,H,W] = {:?} (or [1,C,H,W]), got {:?}",
                self.name(),
                self.manifest.input_shape,
                input.shape
            )));
        }
        Ok(())
    }

    /// Model-ready floats for one checked sample: u8 pixels are normalized, f32 pass through.
    pub fn preprocess(&self, input: &slim_protocol::Tensor) -> Vec<f32> {
        let values = input.to_f32_vec();
        match input.dtype {
            DType::F32 => values,
            DType::U8 => {
                let plane = self.sample_len() / self.manifest.input_shape[0] as usize;
                let p = &self.manifest.preprocess;
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let c = i / plane;
                        (v / 255.0 - p.mean[c]) / p.std[c]
                    })
                    .collect()
            }
        }
    }

    /// Runs a batch of preprocessed samples on `state`; returns one logits row per sample.
    pub fn run_batch(
        &self,
        state: &mut dyn State,
        samples: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut shape = vec![samples.len()];
        shape.extend(self.manifest.input_shape.iter().map(|&d| d as usize));
        let flat: Vec<f32> = samples.iter().flatten().copied().collect();
        let input = tract_ndarray::ArrayD::from_shape_vec(shape, flat)
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let outputs = state
            .run(tvec!(Tensor::from(input).into()))
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let logits = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let classes = logits.len() / samples.len().max(1);
        Ok(logits
            .as_slice()
            .map(|s| s.chunks(classes).map(|c| c.to_vec()).collect())
            .unwrap_or_else(|| {
                logits
                    .iter()
                    .copied()
                    .collect::<Vec<_>>()
                    .chunks(classes)
                    .map(|c| c.to_vec())
                    .collect()
            }))
    }
}

/// Why an input does not fit a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputMismatch {
    /// Wrong shape.
    Shape(String),
    /// Bytes do not match dtype × shape.
    Dtype(String),
}

fn prepare(
    path: &Path,
    sample_shape: &[u32],
    runtime: &dyn Runtime,
) -> TractResult<Arc<dyn Runnable>> {
    let mut model = tract_onnx::onnx().model_for_path(path)?;
    let batch = model.symbols.sym("N");
    let mut shape: TVec<TDim> = tvec![batch.to_dim()];
    shape.extend(sample_shape.iter().map(|&d| (d as i64).to_dim()));
    model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))?;
    let typed = model.into_typed()?.into_decluttered()?;
    Ok(Arc::from(runtime.prepare(typed)?))
}
