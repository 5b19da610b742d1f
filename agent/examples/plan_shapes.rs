//! Times one width of a family under the plan variants the agent could use: a symbolic batch
//! dimension or a concrete one, weights folded to f32 constants or left as stored
//! (int8 × scale), the batch convolved image by image (as exported) or as one image with the
//! batch as a depth axis (`batch_as_depth`, what the agent's concrete plans above batch 1 use),
//! and tract's single- or multithreaded executor. Run from the repository root:
//!
//! `cargo run --release -p slim-agent --example plan_shapes -- models/cifar-slimresnet 1.0 [threads]`
//!
//! `SHOW_OPS=1` also prints the operators left in the optimized plan.

use std::time::{Duration, Instant};

use slim_agent::model::{typed_model, BatchLayout, Manifest};
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::{DefaultRuntime, RunOptions, Runnable, Runtime};

fn unfolded(path: &std::path::Path, shape: &[u32], batch: usize) -> TractResult<TypedModel> {
    let mut model = tract_onnx::onnx().model_for_path(path)?;
    let mut dims: TVec<TDim> = tvec![(batch as i64).to_dim()];
    dims.extend(shape.iter().map(|&d| (d as i64).to_dim()));
    model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), dims))?;
    model.into_typed()?.into_decluttered()
}

fn prepare(model: TypedModel, threads: usize) -> TractResult<Box<dyn Runnable>> {
    let options = RunOptions {
        executor: (threads > 1).then(|| Executor::multithread(threads)),
        ..Default::default()
    };
    DefaultRuntime.prepare_with_options(model, &options)
}

/// Milliseconds per run: the best of five rounds of 300 ms each, so that a round slowed down by
/// another process on a busy machine does not count.
fn time(runnable: &dyn Runnable, input: &Tensor) -> f64 {
    let mut state = runnable.spawn().unwrap();
    for _ in 0..2 {
        state.run(tvec!(input.clone().into())).unwrap();
    }
    (0..5)
        .map(|_| {
            let mut n = 0;
            let started = Instant::now();
            while n < 3 || started.elapsed() < Duration::from_millis(300) {
                state.run(tvec!(input.clone().into())).unwrap();
                n += 1;
            }
            started.elapsed().as_secs_f64() * 1000.0 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).map_or("models/cifar-slimresnet", |s| s));
    let width: f32 = args.get(2).and_then(|w| w.parse().ok()).unwrap_or(1.0);
    let threads: usize = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(2);
    let manifest = Manifest::load(&dir)?;
    let shape = manifest.input_shape.clone();
    let entry = manifest
        .widths
        .iter()
        .find(|w| (w.width - width).abs() < 1e-3)
        .ok_or_else(|| anyhow::anyhow!("no width {width} in {}", dir.display()))?;
    let path = dir.join(&entry.file);
    println!("{} width {width} (ms per image)", dir.display());
    if std::env::var("SHOW_OPS").is_ok() {
        let runnable = prepare(
            typed_model(&path, &shape, Some(1), BatchLayout::PerImage)?,
            1,
        )?;
        let mut ops = std::collections::BTreeMap::<String, usize>::new();
        for node in &runnable.typed_model().unwrap().nodes {
            *ops.entry(node.op().name().to_string()).or_default() += 1;
        }
        println!("optimized ops (folded, batch 1): {ops:?}");
    }
    println!(
        "batch | unfolded concrete | folded symbolic | folded concrete | batch as depth | batch as depth {threads} threads"
    );
    for batch in [1usize, 8, 32] {
        let mut full = vec![batch];
        full.extend(shape.iter().map(|&d| d as usize));
        let input = Tensor::from(tract_ndarray::ArrayD::<f32>::from_elem(full, 0.1));
        let per_image = |model: TypedModel, threads: usize| -> anyhow::Result<f64> {
            Ok(time(prepare(model, threads)?.as_ref(), &input) / batch as f64)
        };
        let per_image_layout = BatchLayout::PerImage;
        let a = per_image(unfolded(&path, &shape, batch)?, 1)?;
        let b = per_image(typed_model(&path, &shape, None, per_image_layout)?, 1)?;
        let c = per_image(
            typed_model(&path, &shape, Some(batch), per_image_layout)?,
            1,
        )?;
        let depth = || typed_model(&path, &shape, Some(batch), BatchLayout::Depth);
        let d = per_image(depth()?, 1)?;
        let e = per_image(depth()?, threads)?;
        println!("{batch:>5} | {a:>17.3} | {b:>15.3} | {c:>15.3} | {d:>14.3} | {e:>10.3}");
    }
    Ok(())
}
