//! The live run behind a calibration: a local cluster, an open-loop workload, and the results
//! turned into [`LiveSample`]s.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use slim_agent::scheduler::PaceCount;
use slim_client::client::{Reply, SlimClient};
use slim_client::cluster::{ClusterSpec, LocalCluster};
use slim_client::load::{run_open_loop, LoadReport, LoadSpec};
use slim_client::samples::family_samples;
use slim_protocol::DeviceProfile;
use slim_router::calibration::{fit, Calibration, Concurrency, LiveSample, LiveSettings};
use slim_router::fleet::ProfileFile;
use slim_router::RouterKind;

/// A local cluster and the workload driven through it.
#[derive(Debug, Clone)]
pub struct LiveSetup {
    /// External broker URL; `None` starts an embedded one.
    pub broker: Option<String>,
    /// Folder of device profiles.
    pub profiles_dir: PathBuf,
    /// Folder of model families.
    pub models_dir: PathBuf,
    /// The family served.
    pub model: String,
    /// One profile name (file stem in `profiles_dir`) per agent.
    pub agent_profiles: Vec<String>,
    /// One emulated slowdown per agent.
    pub slowdowns: Vec<f32>,
    /// One thread count per agent.
    pub threads: Vec<u16>,
    /// Which agents pace to their profile, one per agent.
    pub paced: Vec<bool>,
    /// The coordinator's router.
    pub router: RouterKind,
    /// PPO checkpoint, when the router is PPO.
    pub policy: Option<PathBuf>,
    /// Arrivals per second (Poisson).
    pub rate: f64,
    /// Sending time.
    pub duration: Duration,
    /// Workload seed.
    pub seed: u64,
    /// Deadline that `constrained_share` of the requests carry, ms.
    pub deadline_ms: Option<u32>,
    /// Fraction of the requests with the deadline.
    pub constrained_share: f64,
    /// The coordinator's online refinement (off by default).
    pub online: slim_coordinator::config::OnlineSettings,
    /// A tag that keeps this run's topics apart from others on the same broker.
    pub tag: String,
}

impl LiveSetup {
    /// Checks that the per-agent lists agree and are usable.
    pub fn check(&self) -> anyhow::Result<()> {
        let n = self.slowdowns.len();
        anyhow::ensure!(
            n > 0,
            "the live cluster needs at least one agent (--slowdowns)"
        );
        anyhow::ensure!(
            self.threads.len() == n && self.agent_profiles.len() == n && self.paced.len() == n,
            "--slowdowns ({n}), --threads ({}), --agent-profiles ({}) and --paced ({}) need one entry per agent",
            self.threads.len(),
            self.agent_profiles.len(),
            self.paced.len()
        );
        anyhow::ensure!(
            self.threads.iter().all(|&t| t >= 1),
            "thread counts must be at least 1"
        );
        anyhow::ensure!(
            self.slowdowns.iter().all(|s| s.is_finite() && *s >= 1.0),
            "slowdowns must be at least 1"
        );
        anyhow::ensure!(
            self.rate.is_finite() && self.rate > 0.0,
            "the rate must be positive"
        );
        Ok(())
    }

    /// The profile files of the agents, as the agents would publish them before emulation.
    pub fn agent_profiles(&self) -> anyhow::Result<Vec<DeviceProfile>> {
        self.agent_profiles
            .iter()
            .map(|name| {
                let path = self.profiles_dir.join(format!("{name}.toml"));
                ProfileFile::load(&path)
                    .map(|f| f.profile)
                    .with_context(|| format!("loading the agent profile {}", path.display()))
            })
            .collect()
    }

    /// Starts the cluster, drives the workload, shuts the cluster down; returns what the client
    /// saw, what the agents announced, and how many batches the agents paced to a profile ran
    /// and how many of those missed their pace.
    pub async fn run(&self) -> anyhow::Result<Measured> {
        self.check()?;
        let samples = family_samples(&self.models_dir, &self.model)?;
        let spec = ClusterSpec {
            broker_url: self.broker.clone(),
            topic_prefix: format!("slim-live/{}-{}/v1", std::process::id(), self.tag),
            router: self.router,
            policy: self.policy.clone(),
            models_dir: self.models_dir.clone(),
            models: vec![self.model.clone()],
            agent_slowdowns: self.slowdowns.clone(),
            agent_threads: self.threads.clone(),
            agent_paced: self.paced.clone(),
            online: self.online.clone(),
            agent_profiles: self
                .agent_profiles
                .iter()
                .map(|name| self.profiles_dir.join(format!("{name}.toml")))
                .collect(),
            ..ClusterSpec::default()
        };
        let cluster = LocalCluster::start(spec)
            .await
            .with_context(|| format!("starting the live cluster ({})", self.tag))?;
        let client = SlimClient::connect(
            &cluster.broker,
            &cluster.spec.topic_prefix,
            &format!("slim-live-client-{}-{}", std::process::id(), self.tag),
            &[],
        )
        .await?;
        // let telemetry arrive once before measuring
        tokio::time::sleep(Duration::from_millis(600)).await;
        let report = run_open_loop(
            &client,
            &samples,
            &LoadSpec {
                model: self.model.clone(),
                rate: self.rate,
                duration: self.duration,
                drain: Duration::from_secs(5),
                seed: self.seed,
                width: None,
                min_accuracy: None,
                deadline_ms: self.deadline_ms,
                constrained_share: self.constrained_share,
            },
        )
        .await;
        let mut pace = PaceCount::default();
        let paced = cluster.agents.iter().filter(|a| {
            a.info
                .emulation
                .as_ref()
                .is_some_and(|e| e.profile.is_some())
        });
        for agent in paced {
            let p = agent.pacing().await;
            pace.batches += p.batches;
            pace.missed += p.missed;
        }
        let concurrency = cluster.agents.iter().map(|a| a.info.concurrency).collect();
        client.disconnect().await;
        cluster.shutdown().await;
        Ok(Measured {
            report: report?,
            pace,
            concurrency,
        })
    }
}

/// What one live run measured.
#[derive(Debug)]
pub struct Measured {
    /// What the client saw.
    pub report: LoadReport,
    /// Batches the agents paced to a profile ran, and those that missed their pace.
    pub pace: PaceCount,
    /// The batches of one (model, width) each agent announced it runs at once, by index.
    pub concurrency: Vec<Option<u16>>,
}

/// What the agents announced they run at once, per profile (the agents with `profiles[i]` as
/// `concurrency[i]`; an agent that announced nothing is left out, and of agents sharing a
/// profile the first counts).
fn announced_concurrency(
    profiles: &[DeviceProfile],
    concurrency: &[Option<u16>],
) -> Vec<Concurrency> {
    let mut out: Vec<Concurrency> = Vec::new();
    for (profile, batches) in profiles.iter().zip(concurrency) {
        let Some(batches) = *batches else { continue };
        if out.iter().all(|c| c.profile != profile.name) {
            out.push(Concurrency {
                profile: profile.name.clone(),
                batches: batches.max(1),
            });
        }
    }
    out
}

/// The agent's index in a local cluster from its id (`{prefix}-agent-{n}`, n from 1).
fn agent_index(agent: &str) -> Option<usize> {
    let (_, n) = agent.rsplit_once("-agent-")?;
    n.parse::<usize>().ok()?.checked_sub(1)
}

/// The results of `report` as calibration samples, each labelled with the name inside its
/// agent's profile (`profiles`, one per agent: the fit keys overheads by that name, which may
/// differ from the file stem); results from an agent the setup does not name are skipped.
fn live_samples(
    report: &LoadReport,
    setup: &LiveSetup,
    profiles: &[DeviceProfile],
) -> Vec<LiveSample> {
    report
        .outcomes
        .iter()
        .filter_map(|o| {
            let Reply::Result(r) = &o.reply else {
                return None;
            };
            let i = agent_index(&r.agent)?;
            Some(LiveSample {
                profile: profiles.get(i)?.name.clone(),
                slowdown: *setup.slowdowns.get(i)?,
                model: r.model.clone(),
                width: r.width,
                batch: r.batch_size,
                queue_ms: f64::from(r.timings.queue_ms),
                compute_ms: f64::from(r.timings.compute_ms),
                agent_total_ms: f64::from(r.timings.total_ms),
                end_to_end_ms: o.latency.as_secs_f64() * 1000.0,
            })
        })
        .collect()
}

/// Runs `setup` and fits a calibration from its results.
pub async fn measure(setup: &LiveSetup) -> anyhow::Result<(Calibration, LoadReport)> {
    let profiles = setup.agent_profiles()?;
    let Measured {
        report,
        pace,
        concurrency,
    } = setup.run().await?;
    let samples = live_samples(&report, setup, &profiles);
    let source = format!(
        "slim calibrate: {} agents (profiles {:?}, slowdowns {:?}, threads {:?}, paced {:?}), `{}` at {:.0} req/s for {:?}, router {}, seed {}; {} results of {} sent; {} of {} batches missed their emulated pace; measured {}",
        setup.slowdowns.len(),
        setup.agent_profiles,
        setup.slowdowns,
        setup.threads,
        setup.paced,
        setup.model,
        setup.rate,
        setup.duration,
        setup.router.as_str(),
        setup.seed,
        samples.len(),
        report.sent,
        pace.missed,
        pace.batches,
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
    );
    let settings = LiveSettings {
        max_queue_delay_ms: f64::from(slim_protocol::DEFAULT_BATCH_DELAY_MS),
        telemetry_interval_ms: ClusterSpec::default().telemetry_interval_ms as f64,
    };
    let mut calibration = fit(&samples, &profiles, settings, source)
        .map_err(anyhow::Error::msg)
        .context("nothing to calibrate from: the live cluster answered no request")?;
    calibration.concurrency = announced_concurrency(&profiles, &concurrency);
    Ok((calibration, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_of_a_local_cluster_give_their_index() {
        assert_eq!(agent_index("slim-1234-x-agent-1"), Some(0));
        assert_eq!(agent_index("a-agent-agent-3"), Some(2));
        assert_eq!(agent_index("a-agent-0"), None);
        assert_eq!(agent_index("jetson-7"), None);
    }
}
