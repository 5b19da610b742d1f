//! Times one width of a family with a symbolic batch dimension against plans built for a
//! concrete batch size, single-threaded and multi-threaded. Run from the repository root:
//!
//! `cargo run --release -p slim-agent --example plan_shapes -- models/cifar-slimresnet 1.0`

use std::time::{Duration, Instant};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::{DefaultRuntime, Runtime};

fn plan(
    path: &std::path::Path,
    shape: &[usize],
    batch: Option<usize>,
) -> TractResult<Box<dyn tract_onnx::tract_core::runtime::Runnable>> {
    let mut model = tract_onnx::onnx().model_for_path(path)?;
    let n: TDim = match batch {
        Some(b) => (b as i64).to_dim(),
        None => model.symbols.sym("N").to_dim(),
    };
    let mut dims: TVec<TDim> = tvec![n];
    dims.extend(shape.iter().map(|&d| (d as i64).to_dim()));
    model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), dims))?;
    DefaultRuntime.prepare(model.into_typed()?.into_decluttered()?)
}

fn time(runnable: &dyn tract_onnx::tract_core::runtime::Runnable, input: &Tensor) -> f64 {
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

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .map(String::as_str)
            .unwrap_or("models/cifar-slimresnet"),
    );
    let width: f32 = args.get(2).and_then(|w| w.parse().ok()).unwrap_or(1.0);
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("manifest.toml"))?)?;
    let shape: Vec<usize> = manifest["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_integer().unwrap() as usize)
        .collect();
    let entry = manifest["widths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| (w["width"].as_float().unwrap() as f32 - width).abs() < 1e-3)
        .expect("width in manifest");
    let path = dir.join(entry["file"].as_str().unwrap());
    println!("{} width {width}", dir.display());
    for batch in [1usize, 8, 32] {
        let mut full = vec![batch];
        full.extend(&shape);
        let input = Tensor::from(tract_ndarray::ArrayD::<f32>::from_elem(full, 0.1));
        let symbolic = time(plan(&path, &shape, None)?.as_ref(), &input);
        let concrete = time(plan(&path, &shape, Some(batch))?.as_ref(), &input);
        println!(
            "batch {batch:>2}: symbolic {:>8.3} ms/img  concrete {:>8.3} ms/img  concrete speed-up {:.2}x",
            symbolic / batch as f64,
            concrete / batch as f64,
            symbolic / concrete
        );
    }
    Ok(())
}
