//! Times one width of a family under the plan variants the agent could use: a symbolic batch
//! dimension or a concrete one, weights folded to f32 constants or left as stored
//! (int8 × scale), and tract's single- or multithreaded executor. Run from the repository root:
//!
//! `cargo run --release -p slim-agent --example plan_shapes -- models/cifar-slimresnet 1.0 [threads]`
//!
//! `SHOW_OPS=1` also prints the operators left in the optimized plan.

use std::time::{Duration, Instant};

use slim_agent::model::{typed_model, Manifest};
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

fn time(runnable: &dyn Runnable, input: &Tensor) -> f64 {
    let mut state = runnable.spawn().unwrap();
    for _ in 0..2 {
        state.run(tvec!(input.clone().into())).unwrap();
    }
    let mut n = 0;
    let started = Instant::now();
    while n < 5 || started.elapsed() < Duration::from_millis(1500) {
        state.run(tvec!(input.clone().into())).unwrap();
        n += 1;
    }
    started.elapsed().as_secs_f64() * 1000.0 / n as f64
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
        let runnable = prepare(typed_model(&path, &shape, Some(1))?, 1)?;
        let mut ops = std::collections::BTreeMap::<String, usize>::new();
        for node in &runnable.typed_model().unwrap().nodes {
            *ops.entry(node.op().name().to_string()).or_default() += 1;
        }
        println!("optimized ops (folded, batch 1): {ops:?}");
    }
    println!("batch | unfolded concrete | folded symbolic | folded concrete | folded concrete {threads} threads");
    for batch in [1usize, 8, 32] {
        let mut full = vec![batch];
        full.extend(shape.iter().map(|&d| d as usize));
        let input = Tensor::from(tract_ndarray::ArrayD::<f32>::from_elem(full, 0.1));
        let per_image = |model: TypedModel, threads: usize| -> anyhow::Result<f64> {
            Ok(time(prepare(model, threads)?.as_ref(), &input) / batch as f64)
        };
        let a = per_image(unfolded(&path, &shape, batch)?, 1)?;
        let b = per_image(typed_model(&path, &shape, None)?, 1)?;
        let c = per_image(typed_model(&path, &shape, Some(batch))?, 1)?;
        let d = per_image(typed_model(&path, &shape, Some(batch))?, threads)?;
        println!("{batch:>5} | {a:>17.3} | {b:>15.3} | {c:>15.3} | {d:>10.3}");
    }
    Ok(())
}
