//! The committed model families load in tract and compute what the training framework computed.

use std::path::{Path, PathBuf};

use slim_agent::{
    backend::select_backend,
    backend::BackendChoice,
    model::{ModelFamily, PlanOptions},
};
use tract_onnx::prelude::*;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn families() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(models_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("manifest.toml").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 2, "both families are committed: {dirs:?}");
    dirs
}

fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().unwrap())
}

fn load(family: &Path) -> ModelFamily {
    let (backend, _) = select_backend(BackendChoice::Cpu).unwrap();
    ModelFamily::load(family, backend.runtime, &Default::default()).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn run_file(path: &Path, input: Tensor) -> Tensor {
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    plan.run(tvec!(input.into()))
        .unwrap()
        .remove(0)
        .into_tensor()
}

#[test]
fn tract_reproduces_the_reference_logits_of_every_width_within_1e_4() {
    // The reference input holds 4 samples. Each plan variant must compute the same logits:
    // the symbolic-batch plan only, a plan built for batch 4 run by a 2-thread executor, and
    // the agent's default (a batch-1 plan) fed one sample at a time.
    let variants = [
        (
            "symbolic",
            PlanOptions {
                threads: 1,
                concrete_batches: vec![],
            },
            4,
        ),
        (
            "concrete 4, 2 threads",
            PlanOptions {
                threads: 2,
                concrete_batches: vec![4],
            },
            4,
        ),
        ("default, one by one", PlanOptions::default(), 1),
    ];
    let (backend, _) = select_backend(BackendChoice::Cpu).unwrap();
    for dir in families() {
        for (variant, options, chunk) in &variants {
            let family = ModelFamily::load(&dir, backend.runtime, options).unwrap();
            let (shape, input) = read_f32(&dir.join("ref_input.npy"));
            assert_eq!(shape[0], 4, "the reference input holds 4 samples");
            let per = input.len() / shape[0];
            let samples: Vec<Vec<f32>> = input.chunks(per).map(<[f32]>::to_vec).collect();
            for plan in family.plans() {
                let mut instance = plan.spawn_instance().unwrap();
                let got: Vec<f32> = samples
                    .chunks(*chunk)
                    .flat_map(|c| family.run_batch(&mut instance, c).unwrap().concat())
                    .collect();
                let name = format!("ref_logits_w{}.npy", fmt_width(plan.entry.width));
                let (_, want) = read_f32(&dir.join(name));
                let diff = max_abs_diff(&got, &want);
                assert!(
                    diff < 1e-4,
                    "{} w{} ({variant}): max diff {diff}",
                    family.name(),
                    plan.entry.width
                );
            }
        }
    }
}

#[test]
fn running_the_segments_in_order_equals_the_full_model() {
    for dir in families() {
        let family = load(&dir);
        let (shape, input) = read_f32(&dir.join("ref_input.npy"));
        let batch = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), input).unwrap();
        for plan in family.plans() {
            assert!(
                plan.entry.segments.len() >= 2,
                "{} has segments",
                plan.entry.file
            );
            let full = run_file(&dir.join(&plan.entry.file), Tensor::from(batch.clone()));
            let mut x = Tensor::from(batch.clone());
            for segment in &plan.entry.segments {
                x = run_file(&dir.join(segment), x);
            }
            let flat = |t: &Tensor| -> Vec<f32> {
                t.to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            };
            let diff = max_abs_diff(&flat(&x), &flat(&full));
            assert!(diff < 1e-4, "{} segments differ by {diff}", plan.entry.file);
        }
    }
}

#[test]
fn tract_on_the_held_out_split_reproduces_the_manifest_accuracy() {
    let dir = models_dir().join("digits");
    let family = load(&dir);
    let bytes = std::fs::read(dir.join("holdout_x.npy")).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let n = npy.shape()[0] as usize;
    let pixels = npy.into_vec::<u8>().unwrap();
    let bytes = std::fs::read(dir.join("holdout_y.npy")).unwrap();
    let labels = npyz::NpyFile::new(&bytes[..])
        .unwrap()
        .into_vec::<i64>()
        .unwrap();
    let per = pixels.len() / n;
    let samples: Vec<Vec<f32>> = pixels
        .chunks(per)
        .map(|c| family.preprocess(&slim_protocol::Tensor::from_u8(vec![1, 8, 8], c.to_vec())))
        .collect();
    let mut previous = 0.0;
    for plan in family.plans() {
        let mut instance = plan.spawn_instance().unwrap();
        let logits = family.run_batch(&mut instance, &samples).unwrap();
        let correct = logits
            .iter()
            .zip(&labels)
            .filter(|(row, &label)| {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0;
                best as i64 == label
            })
            .count();
        let accuracy = correct as f32 / n as f32;
        assert!(
            (accuracy - plan.entry.top1).abs() <= 1.0 / n as f32,
            "width {}: tract {accuracy}, manifest {}",
            plan.entry.width,
            plan.entry.top1
        );
        assert!(accuracy >= previous, "accuracy rises with width");
        previous = accuracy;
    }
}

fn fmt_width(w: f32) -> String {
    let s = format!("{w}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}
