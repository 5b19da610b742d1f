//! `slim bench --knee`: the whole system's throughput against offered load, with real agents,
//! beside the agent's own in-process throughput measured in the same run.
//!
//! First the anchor: one instance of the family's pinned width, loaded as an agent loads it
//! (same backend, threads and plans), runs batches of 1 and of the coordinator's batch limit
//! back to back in this process ([`anchor`]). Then a local cluster (a broker, one coordinator,
//! real agents) serves open-loop Poisson load at each fraction of the anchor in turn
//! ([`KneeSpec::loads`]); each step reports what was sent, answered, refused and lost, the
//! throughput and the latency percentiles. The knee is the step with the highest throughput.
//! Last, the overload step offers twice that throughput: every request must still get an
//! answer, a result or an error (`overloaded`, `no_capacity`), none lost.

mod anchor;
mod report;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use slim_agent::backend::BackendChoice;
use slim_client::{
    client::SlimClient,
    cluster::{ClusterSpec, LocalCluster},
    load::{run_open_loop, LoadReport, LoadSpec},
    samples::Sample,
};
use slim_router::RouterKind;

pub use anchor::{anchor, Anchor};
pub use report::{KneeReport, Step};

/// What to measure.
#[derive(Debug, Clone)]
pub struct KneeSpec {
    /// External broker URL; `None` starts an embedded one.
    pub broker_url: Option<String>,
    /// Folder of model families.
    pub models_dir: PathBuf,
    /// The family served.
    pub model: String,
    /// The width every request pins (the anchor's width).
    pub width: f32,
    /// Agents in the cluster, all at real speed.
    pub agents: usize,
    /// Threads per batch of each agent (and of the anchor's instance).
    pub threads: u16,
    /// The agents' backend (and the anchor's).
    pub backend: BackendChoice,
    /// The coordinator's router.
    pub router: RouterKind,
    /// Offered loads, as fractions of the anchor's throughput, in the order run.
    pub loads: Vec<f64>,
    /// Sending time per step.
    pub step: Duration,
    /// Longest wait for answers after a step's sending stops.
    pub drain: Duration,
    /// How long the anchor runs each batch size.
    pub anchor_budget: Duration,
    /// Seed of arrivals and inputs.
    pub seed: u64,
    /// Whether the client holds a model's requests when the coordinator asks
    /// ([`slim_client::pushback`]).
    pub pushback: bool,
    /// Request inputs.
    pub samples: Vec<Sample>,
    /// Topic prefix of the run's cluster.
    pub topic_prefix: String,
}

impl KneeSpec {
    /// Checks the numbers a user gives.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=16).contains(&self.agents),
            "--agents takes 1 to 16 agents"
        );
        anyhow::ensure!(self.threads >= 1, "--threads must be at least 1");
        anyhow::ensure!(
            !self.loads.is_empty() && self.loads.iter().all(|l| l.is_finite() && *l > 0.0),
            "--loads needs at least one positive fraction of the anchor"
        );
        anyhow::ensure!(!self.samples.is_empty(), "no input samples");
        Ok(())
    }
}

/// The offered load of the overload step, as a multiple of the knee's throughput.
pub const OVERLOAD: f64 = 2.0;

/// Measures the anchor, then every step and the overload step on one local cluster.
pub async fn run(spec: &KneeSpec) -> anyhow::Result<KneeReport> {
    spec.check()?;
    let anchor = {
        let (dir, width, threads, backend, budget) = (
            spec.models_dir.join(&spec.model),
            spec.width,
            spec.threads,
            spec.backend,
            spec.anchor_budget,
        );
        tokio::task::spawn_blocking(move || anchor(&dir, width, threads, backend, budget))
            .await
            .context("the anchor's thread")??
    };
    eprintln!("{}", anchor.describe());
    let cluster = LocalCluster::start(cluster_spec(spec))
        .await
        .context("starting the local cluster")?;
    let client = SlimClient::connect(
        &cluster.broker,
        &spec.topic_prefix,
        &format!("slim-knee-{}", std::process::id()),
        &[],
    )
    .await?
    .with_pushback(spec.pushback);
    // Let every agent's telemetry reach the coordinator once.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut report = KneeReport::new(spec, anchor.clone(), cluster.broker.url.clone());
    let result = run_steps(spec, &client, &anchor, &mut report).await;
    client.disconnect().await;
    cluster.shutdown().await;
    result.map(|()| report)
}

/// The sweep, then the overload step at [`OVERLOAD`] × the best throughput seen.
async fn run_steps(
    spec: &KneeSpec,
    client: &SlimClient,
    anchor: &Anchor,
    report: &mut KneeReport,
) -> anyhow::Result<()> {
    for (i, fraction) in spec.loads.iter().enumerate() {
        let rate = fraction * anchor.best();
        let load = step(spec, client, rate, i as u64).await?;
        let step = Step::new(rate, spec.step, &load, false);
        eprintln!("{}", step.describe(anchor));
        report.steps.push(step);
    }
    let knee = report.knee().map_or(anchor.best(), |s| s.throughput);
    let rate = OVERLOAD * knee;
    let load = step(spec, client, rate, spec.loads.len() as u64).await?;
    let step = Step::new(rate, spec.step, &load, true);
    eprintln!("{}", step.describe(anchor));
    report.steps.push(step);
    Ok(())
}

/// One step of open-loop load at `rate` requests per second.
async fn step(
    spec: &KneeSpec,
    client: &SlimClient,
    rate: f64,
    index: u64,
) -> anyhow::Result<LoadReport> {
    let load = run_open_loop(
        client,
        &spec.samples,
        &LoadSpec::new(&spec.model, rate, spec.step)
            .with_drain(spec.drain)
            .with_seed(spec.seed.wrapping_add(index))
            .with_width(spec.width),
    )
    .await?;
    // Let what is left of an overload (late answers the drain did not wait for) clear first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(load)
}

/// The local cluster of `spec`: its agents at real speed, with the spec's threads.
fn cluster_spec(spec: &KneeSpec) -> ClusterSpec {
    ClusterSpec {
        broker_url: spec.broker_url.clone(),
        topic_prefix: spec.topic_prefix.clone(),
        router: spec.router,
        models_dir: spec.models_dir.clone(),
        models: vec![spec.model.clone()],
        agent_slowdowns: vec![1.0; spec.agents],
        agent_threads: vec![spec.threads; spec.agents],
        agent_backend: spec.backend,
        ..ClusterSpec::default()
    }
}
