//! The knee's anchor: what one agent instance computes per second in this process, without a
//! broker or a coordinator in the way.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use slim_agent::{
    backend::{select_backend, BackendChoice},
    model::ModelFamily,
    AgentConfig,
};

/// In-process throughput of one instance at one width.
#[derive(Debug, Clone, PartialEq)]
pub struct Anchor {
    /// The family.
    pub model: String,
    /// The width measured.
    pub width: f32,
    /// Threads per batch.
    pub threads: u16,
    /// The backend it ran on (`cpu`, `cuda`, `ort`).
    pub backend: &'static str,
    /// Images per second at batch 1.
    pub b1: f64,
    /// The larger batch measured (the coordinator's batch limit) and its images per second.
    pub batched: (u16, f64),
}

impl Anchor {
    /// The better of the two: the rate the system is compared with.
    pub fn best(&self) -> f64 {
        self.b1.max(self.batched.1)
    }

    /// One line for the log and the report.
    pub fn describe(&self) -> String {
        format!(
            "anchor: one in-process instance of {} at width {} on {} with {} thread(s): {:.0} img/s at batch 1, {:.0} img/s at batch {}",
            self.model, self.width, self.backend, self.threads, self.b1, self.batched.1, self.batched.0
        )
    }
}

/// Loads the family in `dir` as an agent with `threads` and `backend` does (the agent's default
/// plans) and runs its `width` at batch 1 and at the coordinator's batch limit, each for
/// `budget`. Blocking: call it off the async runtime.
pub fn anchor(
    dir: &Path,
    width: f32,
    threads: u16,
    backend: BackendChoice,
    budget: Duration,
) -> anyhow::Result<Anchor> {
    let (backend, _) = select_backend(backend).map_err(anyhow::Error::msg)?;
    let config = AgentConfig {
        threads,
        ..AgentConfig::default()
    };
    let family = ModelFamily::load(dir, backend.runtime, &config.plan_options())
        .with_context(|| format!("loading the model family in {}", dir.display()))?;
    let plan = family.plan(width).with_context(|| {
        format!(
            "{} has no width {width} (it has {})",
            family.name(),
            family
                .plans()
                .iter()
                .map(|p| p.entry.width.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let mut instance = plan.spawn_instance()?;
    let sample = vec![0.1f32; family.sample_len()];
    let mut rate = |batch: u16| -> anyhow::Result<f64> {
        let samples = vec![sample.clone(); batch as usize];
        family.run_batch(&mut instance, &samples)?; // warm-up
        let (started, mut images) = (Instant::now(), 0u64);
        while started.elapsed() < budget {
            family.run_batch(&mut instance, &samples)?;
            images += u64::from(batch);
        }
        Ok(images as f64 / started.elapsed().as_secs_f64())
    };
    let batch = slim_coordinator::CoordinatorConfig::default().batch_size;
    Ok(Anchor {
        model: family.name().to_string(),
        width: plan.entry.width,
        threads,
        backend: backend.name,
        b1: rate(1)?,
        batched: (batch, rate(batch)?),
    })
}
