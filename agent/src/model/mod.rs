//! Slimmable model families: the manifest, the loaded per-width plans, pre- and post-processing.

mod batch_depth;
mod family;
mod fold;
mod manifest;
mod postprocess;

pub use batch_depth::batch_as_depth;
pub use family::{
    typed_model, BatchLayout, InputMismatch, Instance, ModelError, ModelFamily, PlanOptions,
    WidthPlan,
};
pub use fold::fold_constants;
pub use manifest::{Dataset, Manifest, ManifestError, Preprocess, WidthEntry, MANIFEST_SCHEMA};
pub use postprocess::top_k;

/// A width as an exact key: thousandths, so 0.25 and 0.250001 are the same width.
pub fn width_key(width: f32) -> u16 {
    (width * 1000.0).round().clamp(0.0, u16::MAX as f32) as u16
}
