//! Checks the GPU backend against the CPU one: every family × width × batch runs on both, the
//! outputs are compared (top-1 equal for every sample, logits within a tolerance), and the
//! latency per batch, the speed-up over the CPU and the GPU's board power (NVML) are printed.
//! `deploy/gpu-check.sh` builds and runs it with a CUDA feature:
//!
//! `cargo run --release -p slim-agent --features cuda-12060 --example gpu_check -- models [batches] [budget_ms]`
//!
//! Exits 1 when an output differs, 2 when the GPU backend cannot be used. Without a `cuda-*`
//! feature it only says that the build has no CUDA.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use slim_agent::{
    backend::{select_backend, BackendChoice, SelectedBackend},
    model::{Instance, ModelFamily, PlanOptions},
    service::family_dirs,
    telemetry::nvml::NvmlSource,
};

/// Largest |GPU − CPU| difference of a logit allowed, relative to the largest |CPU logit| of the
/// batch (at least 1). cuBLAS and tract's CPU kernels sum in different orders, and the GPU's
/// matrix products may round inputs to TF32 (10-bit mantissa, relative error up to 2^-11 ≈ 4.9e-4
/// per input). On an H200 (2026-12-04) cifar-slimresnet logits differed by up to 2.8e-3 (absolute)
/// with every top-1 equal, digits by under 1e-5; 1e-3, the first guess, failed 6 of 24 points.
const TOLERANCE: f32 = 5e-3;

fn time(
    family: &ModelFamily,
    instance: &mut Instance,
    samples: &[Vec<f32>],
    budget: Duration,
) -> anyhow::Result<f64> {
    for _ in 0..3 {
        family.run_batch(instance, samples)?;
    }
    let mut runs = 0;
    let started = Instant::now();
    while runs < 5 || started.elapsed() < budget {
        family.run_batch(instance, samples)?;
        runs += 1;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / runs as f64)
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// What every family is checked with: both backends, the plans' options, the batch sizes, the
/// timing budget and NVML for the board power.
struct Setup {
    cpu: SelectedBackend,
    cuda: SelectedBackend,
    options: PlanOptions,
    batches: Vec<usize>,
    budget: Duration,
    nvml: Option<Box<dyn NvmlSource>>,
}

/// The command line: the models folder, the batch sizes and the timing budget per point.
fn parse_args() -> anyhow::Result<(PathBuf, Vec<usize>, Duration)> {
    let args: Vec<String> = std::env::args().collect();
    let models = PathBuf::from(args.get(1).map_or("models", String::as_str));
    let batches: Vec<usize> = args
        .get(2)
        .map_or("1,8,32", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let budget = Duration::from_millis(args.get(3).map_or(Ok(500), |b| b.parse())?);
    Ok((models, batches, budget))
}

fn main() -> anyhow::Result<ExitCode> {
    let (models, batches, budget) = parse_args()?;
    let (cuda, reason) = match select_backend(BackendChoice::Cuda) {
        Ok(backend) => backend,
        Err(why) => {
            eprintln!("gpu_check: {why}");
            return Ok(ExitCode::from(2));
        }
    };
    let (cpu, _) = select_backend(BackendChoice::Cpu).map_err(anyhow::Error::msg)?;
    let nvml = slim_agent::telemetry::sensor::open_nvml().ok();
    let gpu_name = nvml
        .as_ref()
        .and_then(|n| n.name().ok())
        .unwrap_or_else(|| "unknown GPU (NVML unavailable)".into());
    let cpu_name = slim_agent::telemetry::device_info().cpu_model;
    println!("# GPU: {gpu_name} ({reason}); CPU: {cpu_name}");
    println!("# tolerance: top-1 equal, |gpu - cpu| <= {TOLERANCE} x max(1, max |cpu logit|)");
    println!("| family | width | batch | CPU ms/batch | GPU ms/batch | speed-up | max diff / scale | within tolerance | top-1 equal | GPU power W |");
    println!("|---|---|---|---|---|---|---|---|---|---|");

    let setup = Setup {
        cpu,
        cuda,
        // Every batch size gets a plan of its own on both backends, as a tuned agent would have.
        options: PlanOptions {
            threads: 1,
            concrete_batches: batches.clone(),
        },
        batches,
        budget,
        nvml,
    };
    let mut failures = 0;
    for dir in family_dirs(&models)? {
        failures += check_family(&setup, &dir)?;
    }
    if failures > 0 {
        println!("\n{failures} point(s) differ or failed");
        return Ok(ExitCode::from(1));
    }
    println!("\nall points agree");
    Ok(ExitCode::SUCCESS)
}

/// Every width × batch of the family in `dir` on both backends, one table row each; returns
/// how many points differ or failed.
fn check_family(setup: &Setup, dir: &Path) -> anyhow::Result<usize> {
    let on_cpu = ModelFamily::load(dir, setup.cpu.runtime, &setup.options)?;
    let on_gpu = match ModelFamily::load(dir, setup.cuda.runtime, &setup.options) {
        Ok(family) => family,
        Err(e) => {
            println!(
                "| {} | all | - | - | - | - | - | - | LOAD FAILED: {e} | - |",
                on_cpu.name()
            );
            return Ok(1);
        }
    };
    let mut failures = 0;
    for (cpu_plan, gpu_plan) in on_cpu.plans().iter().zip(on_gpu.plans()) {
        let mut pair = Pair {
            on_cpu: &on_cpu,
            on_gpu: &on_gpu,
            width: cpu_plan.entry.width,
            cpu_instance: cpu_plan.spawn_instance()?,
            gpu_instance: gpu_plan.spawn_instance()?,
        };
        for &batch in &setup.batches {
            if !check_batch(setup, &mut pair, batch)? {
                failures += 1;
            }
        }
    }
    Ok(failures)
}

/// One width of a family, loaded on both backends, with an instance on each.
struct Pair<'a> {
    on_cpu: &'a ModelFamily,
    on_gpu: &'a ModelFamily,
    width: f32,
    cpu_instance: Instance,
    gpu_instance: Instance,
}

/// Runs one batch on both backends, compares the outputs, times both and prints the row;
/// returns whether the point agrees.
fn check_batch(setup: &Setup, pair: &mut Pair<'_>, batch: usize) -> anyhow::Result<bool> {
    let name = pair.on_cpu.name();
    let width = pair.width;
    let samples = distinct_samples(batch, pair.on_cpu.sample_len());
    let want = pair.on_cpu.run_batch(&mut pair.cpu_instance, &samples)?;
    let got = match pair.on_gpu.run_batch(&mut pair.gpu_instance, &samples) {
        Ok(got) => got,
        Err(e) => {
            println!("| {name} | {width} | {batch} | - | - | - | - | - | RUN FAILED: {e} | - |");
            return Ok(false);
        }
    };
    let scale = want.iter().flatten().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = want
        .iter()
        .flatten()
        .zip(got.iter().flatten())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    let top1 = want
        .iter()
        .zip(&got)
        .filter(|(w, g)| argmax(w) == argmax(g))
        .count();
    let within = diff <= TOLERANCE * scale;
    let ok = top1 == batch && within && got.len() == batch;
    let nvml = setup.nvml.as_deref();
    let cpu_ms = time(pair.on_cpu, &mut pair.cpu_instance, &samples, setup.budget)?;
    let power_before = nvml.and_then(|n| n.power_mw().ok());
    let gpu_ms = time(pair.on_gpu, &mut pair.gpu_instance, &samples, setup.budget)?;
    // Board power sampled right after a budget of back-to-back runs (NVML averages over its
    // own sample period), next to the reading before them.
    let power_after = nvml.and_then(|n| n.power_mw().ok());
    let power = match (power_before, power_after) {
        (Some(b), Some(a)) => format!(
            "{:.1} (idle before: {:.1})",
            a as f32 / 1000.0,
            b as f32 / 1000.0
        ),
        _ => "n/a".into(),
    };
    println!(
        "| {name} | {width} | {batch} | {cpu_ms:.3} | {gpu_ms:.3} | {:.2}x | {:.2e} | {} | {} | {power} |",
        cpu_ms / gpu_ms,
        diff / scale,
        if within { "yes" } else { "NO" },
        if top1 == batch { format!("yes ({top1}/{batch})") } else { format!("NO ({top1}/{batch})") }
    );
    Ok(ok)
}

/// Distinct samples, so that a mix-up between the images of a batch shows.
fn distinct_samples(batch: usize, len: usize) -> Vec<Vec<f32>> {
    (0..batch)
        .map(|b| {
            (0..len)
                .map(|i| (((i * 31 + b * 17) % 97) as f32 / 48.5) - 1.0)
                .collect()
        })
        .collect()
}
