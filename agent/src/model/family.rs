//! A loaded family: per width, one prepared tract plan with a symbolic batch dimension, plus
//! optional plans built for concrete batch sizes; or, with the `ort` feature and the ort backend,
//! one ONNX Runtime session per width (onnxruntime.rs).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use slim_protocol::DType;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::{DefaultRuntime, RunOptions, Runnable, Runtime, State};

use tract_onnx::pb::ModelProto;

use super::{batch_depth::batch_as_depth, Manifest, ManifestError, WidthEntry};

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

/// How the plans of a family are prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Threads of tract's executor per running batch (1 = single-threaded).
    pub threads: usize,
    /// Batch sizes that get a plan of their own, built for that concrete size; other sizes run
    /// on the plan with a symbolic batch dimension.
    pub concrete_batches: Vec<usize>,
}

impl Default for PlanOptions {
    /// The agent's defaults: single-threaded, with a concrete plan for batch 1.
    fn default() -> Self {
        Self {
            threads: 1,
            concrete_batches: vec![1],
        }
    }
}

/// One width, prepared for the chosen runtime. Instances spawned from it share its weights.
#[derive(Debug, Clone)]
pub struct WidthPlan {
    /// The manifest entry.
    pub entry: WidthEntry,
    engine: PlanEngine,
}

/// What runs a width: tract's plans, or an ONNX Runtime session.
#[derive(Debug, Clone)]
enum PlanEngine {
    Tract {
        symbolic: Arc<dyn Runnable>,
        concrete: Vec<(usize, Arc<dyn Runnable>)>,
    },
    /// One session per width, shared by its instances (ONNX Runtime's `Run` is thread-safe),
    /// as tract's instances share a plan; any batch size, no concrete plans.
    #[cfg(feature = "ort")]
    Ort(Arc<::ort::session::Session>),
}

impl WidthPlan {
    /// A fresh instance: one execution state (activations) per plan of this width.
    pub fn spawn_instance(&self) -> Result<Instance, ModelError> {
        let spawn =
            |r: &Arc<dyn Runnable>| r.spawn().map_err(|e| ModelError::Run(format!("{e:#}")));
        let engine = match &self.engine {
            PlanEngine::Tract { symbolic, concrete } => InstanceEngine::Tract {
                symbolic: spawn(symbolic)?,
                concrete: concrete
                    .iter()
                    .map(|(batch, r)| Ok((*batch, spawn(r)?)))
                    .collect::<Result<_, ModelError>>()?,
            },
            #[cfg(feature = "ort")]
            PlanEngine::Ort(session) => InstanceEngine::Ort(Arc::clone(session)),
        };
        Ok(Instance { engine })
    }

    /// The batch sizes that run on a plan built for their size (none on ONNX Runtime).
    pub fn concrete_batches(&self) -> Vec<usize> {
        match &self.engine {
            PlanEngine::Tract { concrete, .. } => concrete.iter().map(|(b, _)| *b).collect(),
            #[cfg(feature = "ort")]
            PlanEngine::Ort(_) => Vec::new(),
        }
    }
}

/// One model instance: the execution states of a width's plans.
#[derive(Debug)]
pub struct Instance {
    engine: InstanceEngine,
}

#[derive(Debug)]
enum InstanceEngine {
    Tract {
        symbolic: Box<dyn State>,
        concrete: Vec<(usize, Box<dyn State>)>,
    },
    #[cfg(feature = "ort")]
    Ort(Arc<::ort::session::Session>),
}

/// A slimmable model family, loaded.
#[derive(Debug)]
pub struct ModelFamily {
    /// The manifest.
    pub manifest: Manifest,
    /// The family folder.
    pub dir: PathBuf,
    plans: Vec<WidthPlan>,
    /// Threads of tract's executor each of its instances runs a batch on
    /// ([`PlanOptions::threads`]).
    threads: usize,
}

impl ModelFamily {
    /// Loads every width of the family in `dir` and prepares it on `runtime`. The ort backend's
    /// runtime (`ort` feature) gets one ONNX Runtime session per width with `options.threads`
    /// intra-op threads; `options.concrete_batches` applies to tract only.
    pub fn load(
        dir: &Path,
        runtime: &dyn Runtime,
        options: &PlanOptions,
    ) -> Result<Self, ModelError> {
        let manifest = Manifest::load(dir)?;
        let plans = width_plans(dir, &manifest, runtime, options)?;
        Ok(Self {
            manifest,
            dir: dir.to_path_buf(),
            plans,
            threads: options.threads.max(1),
        })
    }

    /// Threads each instance of this family runs a batch on: the executor its plans were
    /// prepared with (1 = single-threaded). The energy model charges a batch this many cores.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Family name.
    pub fn name(&self) -> &str {
        &self.manifest.family
    }

    /// The plan for `width`, if the family has it.
    pub fn plan(&self, width: f32) -> Option<&WidthPlan> {
        self.plans
            .iter()
            .find(|p| slim_protocol::WidthKey::same(p.entry.width, width))
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
        instance: &mut Instance,
        samples: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut shape = vec![samples.len()];
        shape.extend(self.manifest.input_shape.iter().map(|&d| d as usize));
        // Slice copies (memcpy): cheap even where this crate is built without optimization
        // (dev builds), unlike an element-wise iterator.
        let per = self.sample_len();
        let mut flat = Vec::with_capacity(per * samples.len());
        for sample in samples {
            if sample.len() != per {
                return Err(ModelError::Run(format!(
                    "a sample holds {} values, the model takes {per}",
                    sample.len()
                )));
            }
            flat.extend_from_slice(sample);
        }
        let (symbolic, concrete) = match &mut instance.engine {
            InstanceEngine::Tract { symbolic, concrete } => (symbolic, concrete),
            #[cfg(feature = "ort")]
            InstanceEngine::Ort(session) => {
                let logits =
                    super::onnxruntime::run(session, shape, flat).map_err(ModelError::Run)?;
                return Ok(logit_rows(&logits, samples.len()));
            }
        };
        let state = match concrete.iter_mut().find(|(b, _)| *b == samples.len()) {
            Some((_, state)) => state.as_mut(),
            None => symbolic.as_mut(),
        };
        let input = Tensor::from(
            tract_ndarray::ArrayD::from_shape_vec(shape, flat)
                .map_err(|e| ModelError::Run(e.to_string()))?,
        );
        let outputs = state
            .run(tvec!(input.into()))
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let logits = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        Ok(match logits.as_slice() {
            Some(s) => logit_rows(s, samples.len()),
            None => logit_rows(&logits.iter().copied().collect::<Vec<_>>(), samples.len()),
        })
    }
}

/// The logits of a batch of `batch` samples, one row per sample.
fn logit_rows(logits: &[f32], batch: usize) -> Vec<Vec<f32>> {
    let classes = logits.len() / batch.max(1);
    if classes == 0 {
        return Vec::new();
    }
    logits.chunks(classes).map(|c| c.to_vec()).collect()
}

/// Why an input does not fit a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputMismatch {
    /// Wrong shape.
    Shape(String),
    /// Bytes do not match dtype × shape.
    Dtype(String),
}

/// One plan per width of the manifest: ONNX Runtime sessions on the ort backend's runtime
/// (`ort` feature), tract plans otherwise.
fn width_plans(
    dir: &Path,
    manifest: &Manifest,
    runtime: &dyn Runtime,
    options: &PlanOptions,
) -> Result<Vec<WidthPlan>, ModelError> {
    #[cfg(feature = "ort")]
    if super::onnxruntime::is_ort(runtime) {
        return manifest
            .widths
            .iter()
            .map(|entry| ort_plan(dir, entry, options))
            .collect();
    }
    manifest
        .widths
        .iter()
        .map(|entry| tract_plan(dir, entry, &manifest.input_shape, runtime, options))
        .collect()
}

/// One width as an ONNX Runtime session with `options.threads` intra-op threads.
#[cfg(feature = "ort")]
fn ort_plan(
    dir: &Path,
    entry: &WidthEntry,
    options: &PlanOptions,
) -> Result<WidthPlan, ModelError> {
    let path = dir.join(&entry.file);
    let session = super::onnxruntime::session(&path, options.threads)
        .map_err(|reason| ModelError::Load { path, reason })?;
    Ok(WidthPlan {
        entry: entry.clone(),
        engine: PlanEngine::Ort(session),
    })
}

/// One width as tract plans: the symbolic-batch plan and one per concrete batch size.
fn tract_plan(
    dir: &Path,
    entry: &WidthEntry,
    input_shape: &[u32],
    runtime: &dyn Runtime,
    options: &PlanOptions,
) -> Result<WidthPlan, ModelError> {
    let path = dir.join(&entry.file);
    let load_error = |e: TractError| ModelError::Load {
        path: path.clone(),
        reason: format!("{e:#}"),
    };
    // The file is parsed and its weights folded once per layout; each concrete plan starts
    // from one of those models with the batch symbol set: a batch of one as exported, larger
    // ones with the batch as a depth axis (batch_depth.rs).
    let proto = tract_onnx::onnx()
        .proto_model_for_path(&path)
        .map_err(load_error)?;
    let model = symbolic_model(&path, &proto, input_shape).map_err(load_error)?;
    // Only tract's CPU runtime convolves a batch image by image; a GPU runtime keeps the graph
    // as exported.
    let on_cpu = runtime.name() == DefaultRuntime.name();
    let depth = if on_cpu && options.concrete_batches.iter().any(|&b| b > 1) {
        batch_as_depth(&proto)
            .map(|p| symbolic_model(&path, &p, input_shape))
            .transpose()
            .map_err(load_error)?
    } else {
        None
    };
    let concrete = options
        .concrete_batches
        .iter()
        .map(|&b| {
            let base = match &depth {
                Some(depth) if b > 1 => depth,
                _ => &model,
            };
            with_batch(base, b)
                .and_then(|m| prepare(m, runtime, options))
                .map(|r| (b, r))
                .map_err(load_error)
        })
        .collect::<Result<_, _>>()?;
    let symbolic = prepare(model, runtime, options).map_err(load_error)?;
    Ok(WidthPlan {
        entry: entry.clone(),
        engine: PlanEngine::Tract { symbolic, concrete },
    })
}

fn prepare(
    model: TypedModel,
    runtime: &dyn Runtime,
    options: &PlanOptions,
) -> TractResult<Arc<dyn Runnable>> {
    let run_options = RunOptions {
        executor: (options.threads > 1).then(|| Executor::multithread(options.threads)),
        ..Default::default()
    };
    Ok(Arc::from(
        runtime.prepare_with_options(model, &run_options)?,
    ))
}

/// How a plan lays out a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchLayout {
    /// As exported: tract convolves one image after the other.
    PerImage,
    /// The batch as the depth axis of 3-D convolutions (`batch_as_depth`): one matrix product
    /// per layer for the whole batch. What the agent's concrete plans for batches above 1 use
    /// on the CPU runtime.
    Depth,
}

/// Loads an ONNX file as a decluttered tract model with input `[batch, sample_shape…]`, the
/// batch symbolic (`N`) when `batch` is `None`, its constant weights folded, and the batch laid
/// out as `layout` says (`PerImage` when the rewrite does not apply to this graph).
pub fn typed_model(
    path: &Path,
    sample_shape: &[u32],
    batch: Option<usize>,
    layout: BatchLayout,
) -> TractResult<TypedModel> {
    let mut proto = tract_onnx::onnx().proto_model_for_path(path)?;
    if layout == BatchLayout::Depth {
        if let Some(rewritten) = batch_as_depth(&proto) {
            proto = rewritten;
        }
    }
    let model = symbolic_model(path, &proto, sample_shape)?;
    match batch {
        Some(b) => with_batch(&model, b),
        None => Ok(model),
    }
}

/// The model with a symbolic batch `N`, weights folded, decluttered.
/// `path` is the file `proto` was read from: tensors stored beside it (external data) are
/// resolved from its folder, as `model_for_path` does.
fn symbolic_model(
    path: &Path,
    proto: &ModelProto,
    sample_shape: &[u32],
) -> TractResult<TypedModel> {
    let dir = path.parent().and_then(Path::to_str);
    let parsed = tract_onnx::onnx().parse(proto, dir)?;
    if !parsed.unresolved_inputs.is_empty() {
        anyhow::bail!("could not resolve inputs {:?}", parsed.unresolved_inputs);
    }
    let mut model = parsed.model;
    let mut shape: TVec<TDim> = tvec![model.symbols.sym("N").to_dim()];
    shape.extend(sample_shape.iter().map(|&d| (d as i64).to_dim()));
    model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))?;
    let mut typed = model.into_typed()?;
    super::fold::fold_constants(&mut typed)?;
    typed.into_decluttered()
}

/// `model` with its batch symbol `N` set to `batch`.
fn with_batch(model: &TypedModel, batch: usize) -> TractResult<TypedModel> {
    let n = model.symbols.sym("N");
    let subs = std::collections::HashMap::from([(n, TDim::Val(batch as i64))]);
    model.set_symbols(&subs)?.into_decluttered()
}
