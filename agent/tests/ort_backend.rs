//! The optional ONNX Runtime backend (`ort` feature) computes what tract computes on the shipped
//! families: same top-1, logits within 1e-4 (absolute; the logits are O(1-10)), at batch 1 and 8.
//!
//! Compiled only with the feature. These tests need libonnxruntime 1.20 and FAIL (they do not
//! skip) when it cannot be opened:
//!   ORT_DYLIB_PATH=$PWD/models/.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.20.1 \
//!     cargo test -p slim-agent --features ort --test ort_backend
#![cfg(feature = "ort")]

use std::path::{Path, PathBuf};

use slim_agent::{
    backend::{select_backend, BackendChoice, SelectedBackend},
    model::{ModelFamily, PlanOptions},
};

/// Largest difference allowed between two runtimes' logits (and against the reference logits the
/// training framework wrote). tract already meets it against those references.
const TOLERANCE: f32 = 1e-4;

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

/// The ort backend; panics (fails the test) when ONNX Runtime cannot be opened.
fn ort() -> SelectedBackend {
    match select_backend(BackendChoice::Ort) {
        Ok((backend, reason)) => {
            assert_eq!(backend.name, "ort");
            eprintln!("{reason}");
            backend
        }
        Err(e) => panic!(
            "the `ort` feature is on, so these tests need ONNX Runtime 1.20: {e}\n\
             Set ORT_DYLIB_PATH to libonnxruntime.so.1.20.x (absolute path), e.g. \
             ORT_DYLIB_PATH=$PWD/models/.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.20.1"
        ),
    }
}

fn tract() -> SelectedBackend {
    select_backend(BackendChoice::Cpu).unwrap().0
}

fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().unwrap())
}

/// Eight real samples of the family: its four reference inputs and their mirror images (flipped
/// along the width axis of CHW), so that top-1 is decided by a trained model on natural inputs.
fn eight_samples(family: &ModelFamily) -> Vec<Vec<f32>> {
    let (shape, input) = read_f32(&family.dir.join("ref_input.npy"));
    assert_eq!(shape[0], 4, "the reference input holds 4 samples");
    let per = family.sample_len();
    let width = *family.manifest.input_shape.last().unwrap() as usize;
    let originals: Vec<Vec<f32>> = input.chunks(per).map(<[f32]>::to_vec).collect();
    let mirrored: Vec<Vec<f32>> = originals
        .iter()
        .map(|s| {
            s.chunks(width)
                .flat_map(|row| row.iter().rev().copied())
                .collect()
        })
        .collect();
    originals.into_iter().chain(mirrored).collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn fmt_width(w: f32) -> String {
    let s = format!("{w}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

#[test]
fn ort_matches_tract_top1_and_logits_at_batch_1_and_8() {
    let ort = ort();
    let tract = tract();
    // tract as the agent runs it with plans for both sizes (batch 8: the batch-as-depth plan).
    let tract_options = PlanOptions {
        threads: 1,
        concrete_batches: vec![1, 8],
    };
    let mut compared = 0;
    let mut worst = 0.0f32;
    for dir in families() {
        let on_tract = ModelFamily::load(&dir, tract.runtime, &tract_options).unwrap();
        let on_ort = ModelFamily::load(&dir, ort.runtime, &PlanOptions::default()).unwrap();
        assert_eq!(on_ort.plans().len(), on_tract.plans().len());
        let samples = eight_samples(&on_tract);
        for (tract_plan, ort_plan) in on_tract.plans().iter().zip(on_ort.plans()) {
            assert_eq!(tract_plan.entry.width, ort_plan.entry.width);
            assert!(ort_plan.concrete_batches().is_empty());
            let mut tract_instance = tract_plan.spawn_instance().unwrap();
            let mut ort_instance = ort_plan.spawn_instance().unwrap();
            for batch in [1, 8] {
                for chunk in samples.chunks(batch) {
                    let want = on_tract.run_batch(&mut tract_instance, chunk).unwrap();
                    let got = on_ort.run_batch(&mut ort_instance, chunk).unwrap();
                    assert_eq!(got.len(), chunk.len(), "one logits row per sample");
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        let what = format!(
                            "{} w{} batch {batch}, sample {i}",
                            on_tract.name(),
                            tract_plan.entry.width
                        );
                        assert_eq!(g.len(), on_tract.manifest.classes.len(), "{what}");
                        assert_eq!(argmax(g), argmax(w), "{what}: top-1 differs");
                        let diff = max_abs_diff(g, w);
                        assert!(diff < TOLERANCE, "{what}: logits differ by {diff}");
                        worst = worst.max(diff);
                        compared += 1;
                    }
                }
            }
        }
    }
    // 2 families x 4 widths x (8 samples one by one + one batch of 8).
    assert_eq!(compared, 2 * 4 * 16);
    eprintln!("{compared} logits rows compared, largest difference {worst:e}");
}

#[test]
fn ort_reproduces_the_reference_logits_with_two_threads() {
    let ort = ort();
    let options = PlanOptions {
        threads: 2,
        concrete_batches: vec![],
    };
    for dir in families() {
        let family = ModelFamily::load(&dir, ort.runtime, &options).unwrap();
        assert_eq!(family.threads(), 2);
        let (_, input) = read_f32(&dir.join("ref_input.npy"));
        let samples: Vec<Vec<f32>> = input
            .chunks(family.sample_len())
            .map(<[f32]>::to_vec)
            .collect();
        for plan in family.plans() {
            let mut instance = plan.spawn_instance().unwrap();
            let got = family.run_batch(&mut instance, &samples).unwrap().concat();
            let name = format!("ref_logits_w{}.npy", fmt_width(plan.entry.width));
            let (_, want) = read_f32(&dir.join(name));
            let diff = max_abs_diff(&got, &want);
            assert!(
                diff < TOLERANCE,
                "{} w{}: max diff {diff} from the reference logits",
                family.name(),
                plan.entry.width
            );
        }
    }
}

#[test]
fn ort_on_the_held_out_split_reproduces_the_manifest_accuracy() {
    let ort = ort();
    let family = ModelFamily::load(
        &models_dir().join("digits"),
        ort.runtime,
        &Default::default(),
    )
    .unwrap();
    let bytes = std::fs::read(family.dir.join("holdout_x.npy")).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let n = npy.shape()[0] as usize;
    let pixels = npy.into_vec::<u8>().unwrap();
    let bytes = std::fs::read(family.dir.join("holdout_y.npy")).unwrap();
    let labels = npyz::NpyFile::new(&bytes[..])
        .unwrap()
        .into_vec::<i64>()
        .unwrap();
    let samples: Vec<Vec<f32>> = pixels
        .chunks(pixels.len() / n)
        .map(|c| family.preprocess(&slim_protocol::Tensor::from_u8(vec![1, 8, 8], c.to_vec())))
        .collect();
    for plan in family.plans() {
        let mut instance = plan.spawn_instance().unwrap();
        let logits = family.run_batch(&mut instance, &samples).unwrap();
        let correct = logits
            .iter()
            .zip(&labels)
            .filter(|(row, &label)| argmax(row) as i64 == label)
            .count();
        let accuracy = correct as f32 / n as f32;
        assert!(
            (accuracy - plan.entry.top1).abs() <= 1.0 / n as f32,
            "w{}: {accuracy} on ort, manifest says {}",
            plan.entry.width,
            plan.entry.top1
        );
    }
}
