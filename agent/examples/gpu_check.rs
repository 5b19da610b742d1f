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
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use slim_agent::{
    backend::{select_backend, BackendChoice},
    model::{ModelFamily, PlanOptions},
    service::family_dirs,
};

/// Largest |GPU − CPU| difference of a logit allowed, relative to the largest |CPU logit| of the
/// batch (at least 1): cuBLAS and tract's CPU kernels sum in different orders and may use TF32.
const TOLERANCE: f32 = 1e-3;

fn time(
    family: &ModelFamily,
    instance: &mut slim_agent::model::Instance,
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

fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let models = PathBuf::from(args.get(1).map_or("models", String::as_str));
    let batches: Vec<usize> = args
        .get(2)
        .map_or("1,8,32", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let budget = Duration::from_millis(args.get(3).map_or(Ok(500), |b| b.parse())?);

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
    println!("| family | width | batch | CPU ms/batch | GPU ms/batch | speed-up | max diff | top-1 equal | GPU power W |");
    println!("|---|---|---|---|---|---|---|---|---|");

    // Every batch size gets a plan of its own on both backends, as a tuned agent would have.
    let options = PlanOptions {
        threads: 1,
        concrete_batches: batches.clone(),
    };
    let mut failures = 0;
    for dir in family_dirs(&models)? {
        let on_cpu = ModelFamily::load(&dir, cpu.runtime, &options)?;
        let on_gpu = match ModelFamily::load(&dir, cuda.runtime, &options) {
            Ok(family) => family,
            Err(e) => {
                println!(
                    "| {} | all | - | - | - | - | - | LOAD FAILED: {e} | - |",
                    on_cpu.name()
                );
                failures += 1;
                continue;
            }
        };
        for (cpu_plan, gpu_plan) in on_cpu.plans().iter().zip(on_gpu.plans()) {
            let mut cpu_instance = cpu_plan.spawn_instance()?;
            let mut gpu_instance = gpu_plan.spawn_instance()?;
            let len = on_cpu.sample_len();
            for &batch in &batches {
                // Distinct samples, so that a mix-up between the images of a batch shows.
                let samples: Vec<Vec<f32>> = (0..batch)
                    .map(|b| {
                        (0..len)
                            .map(|i| (((i * 31 + b * 17) % 97) as f32 / 48.5) - 1.0)
                            .collect()
                    })
                    .collect();
                let want = on_cpu.run_batch(&mut cpu_instance, &samples)?;
                let got = match on_gpu.run_batch(&mut gpu_instance, &samples) {
                    Ok(got) => got,
                    Err(e) => {
                        println!(
                            "| {} | {} | {batch} | - | - | - | - | RUN FAILED: {e} | - |",
                            on_cpu.name(),
                            cpu_plan.entry.width
                        );
                        failures += 1;
                        continue;
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
                let ok = top1 == batch && diff <= TOLERANCE * scale && got.len() == batch;
                if !ok {
                    failures += 1;
                }
                let cpu_ms = time(&on_cpu, &mut cpu_instance, &samples, budget)?;
                let power_before = nvml.as_ref().and_then(|n| n.power_mw().ok());
                let gpu_ms = time(&on_gpu, &mut gpu_instance, &samples, budget)?;
                // Board power sampled right after a budget of back-to-back runs (NVML averages
                // over its own sample period), next to the reading before them.
                let power_after = nvml.as_ref().and_then(|n| n.power_mw().ok());
                let power = match (power_before, power_after) {
                    (Some(b), Some(a)) => format!(
                        "{:.1} (idle before: {:.1})",
                        a as f32 / 1000.0,
                        b as f32 / 1000.0
                    ),
                    _ => "n/a".into(),
                };
                println!(
                    "| {} | {} | {batch} | {cpu_ms:.3} | {gpu_ms:.3} | {:.2}x | {diff:.2e} | {} | {power} |",
                    on_cpu.name(),
                    cpu_plan.entry.width,
                    cpu_ms / gpu_ms,
                    if ok { format!("yes ({top1}/{batch})") } else { format!("NO ({top1}/{batch})") }
                );
            }
        }
    }
    if failures > 0 {
        println!("\n{failures} point(s) differ or failed");
        return Ok(ExitCode::from(1));
    }
    println!("\nall points agree");
    Ok(ExitCode::SUCCESS)
}
