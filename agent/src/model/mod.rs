//! Slimmable model families: the manifest, the loaded per-width plans, pre- and post-processing.

mod batch_depth;
mod family;
mod fold;
#[cfg(feature = "ort")]
pub mod onnxruntime;
mod postprocess;

pub use batch_depth::batch_as_depth;
pub use family::{
    typed_model, BatchLayout, InputMismatch, Instance, ModelError, ModelFamily, PlanOptions,
    WidthPlan,
};
pub use fold::fold_constants;
pub use postprocess::top_k;
pub use slim_protocol::manifest::{
    Dataset, Manifest, ManifestError, Preprocess, WidthEntry, MANIFEST_SCHEMA,
};
