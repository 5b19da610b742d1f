//! A whole deployment in one process: a broker (embedded or external), a coordinator and agents.
//! The demo and the end-to-end tests run on it.

use std::path::PathBuf;

use slim_agent::{AgentConfig, AgentHandle};
use slim_coordinator::{config::OnlineSettings, CoordinatorConfig, CoordinatorHandle};
use slim_mqtt::{BrokerOptions, EmbeddedBroker};
use slim_router::RouterKind;

/// How to lay out the local cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// External broker URL; `None` starts an embedded one.
    pub broker_url: Option<String>,
    /// Topic prefix (tests use a unique one per test so they can share a broker).
    pub topic_prefix: String,
    /// Router for the coordinator.
    pub router: RouterKind,
    /// PPO checkpoint for the coordinator (used when `router` is PPO).
    pub policy: Option<PathBuf>,
    /// Model families folder.
    pub models_dir: PathBuf,
    /// Families to load (empty: all).
    pub models: Vec<String>,
    /// One entry per agent: its emulated slowdown (1.0 = real speed).
    pub agent_slowdowns: Vec<f32>,
    /// Threads per batch of each agent, by index (missing entries: 1).
    pub agent_threads: Vec<u16>,
    /// Every agent's backend. The CPU by default, so that slowdowns emulate slower devices
    /// from one known speed; `Auto` or `Cuda` put the agents on this machine's GPU.
    pub agent_backend: slim_agent::backend::BackendChoice,
    /// Agents that emulate their profile's device (`AgentConfig::pace_to_profile`), by index
    /// (missing entries: false).
    pub agent_paced: Vec<bool>,
    /// Device profile of each agent, by index (missing entries: `profile`).
    pub agent_profiles: Vec<PathBuf>,
    /// Every agent's bound on requests held (`AgentConfig::max_queued`); `None`: the default.
    pub agent_max_queued: Option<usize>,
    /// Agent telemetry period, ms.
    pub telemetry_interval_ms: u64,
    /// Coordinator's telemetry-silence timeout, ms.
    pub telemetry_timeout_ms: u64,
    /// Folder under which each agent keeps its durable state (outbox, accepted requests);
    /// `None` keeps it in memory.
    pub state_root: Option<PathBuf>,
    /// Device profile every agent publishes (the routers apply its slowdown); needed by the
    /// PPO router.
    pub profile: Option<PathBuf>,
    /// Coordinator shared-subscription group (see `CoordinatorConfig::shared_group`).
    pub shared_group: Option<String>,
    /// MQTT clean sessions (false keeps subscriptions and queued messages on a persistent broker).
    pub clean_session: bool,
    /// Coordinator's monitoring HTTP address (`None`: no HTTP server, as tests want).
    pub http_listen: Option<String>,
    /// Coordinator's online refinement of the PPO policy (disabled by default).
    pub online: OnlineSettings,
    /// Assignment key file shared by the coordinator and every agent (assignments signed and
    /// checked); `None` runs without signatures, as the demo does.
    pub assignment_key_file: Option<PathBuf>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            broker_url: None,
            topic_prefix: slim_protocol::DEFAULT_PREFIX.into(),
            router: RouterKind::LeastLoaded,
            policy: None,
            models_dir: PathBuf::from("models"),
            models: vec!["digits".into()],
            agent_slowdowns: vec![1.0, 2.0, 4.0],
            agent_threads: Vec::new(),
            agent_backend: slim_agent::backend::BackendChoice::Cpu,
            agent_paced: Vec::new(),
            agent_profiles: Vec::new(),
            agent_max_queued: None,
            telemetry_interval_ms: 500,
            telemetry_timeout_ms: 3000,
            state_root: None,
            clean_session: true,
            shared_group: None,
            profile: None,
            http_listen: None,
            online: OnlineSettings::default(),
            assignment_key_file: None,
        }
    }
}

/// A running local cluster.
pub struct LocalCluster {
    /// The broker in use.
    pub broker: BrokerOptions,
    /// The embedded broker, when one was started.
    pub embedded: Option<EmbeddedBroker>,
    /// The coordinator.
    pub coordinator: Option<CoordinatorHandle>,
    /// The agents.
    pub agents: Vec<AgentHandle>,
    /// The spec it was started from.
    pub spec: ClusterSpec,
    id_prefix: String,
}

/// The coordinator's configuration for `spec` on `broker`.
fn coordinator_config(spec: &ClusterSpec, broker: &BrokerOptions) -> CoordinatorConfig {
    let id_prefix = spec.topic_prefix.replace('/', "-");
    CoordinatorConfig {
        id: format!("{id_prefix}-coordinator"),
        topic_prefix: spec.topic_prefix.clone(),
        broker: broker.clone(),
        router: spec.router,
        policy: spec.policy.clone(),
        shared_group: spec.shared_group.clone(),
        telemetry_timeout_ms: spec.telemetry_timeout_ms,
        http_listen: spec.http_listen.clone(),
        online: spec.online.clone(),
        assignment_key_file: spec.assignment_key_file.clone(),
        ..CoordinatorConfig::default()
    }
}

impl LocalCluster {
    /// Stops the coordinator without a goodbye, as a crash would.
    pub fn kill_coordinator(&mut self) {
        if let Some(c) = self.coordinator.take() {
            c.kill();
        }
    }

    /// Starts a coordinator again (after [`LocalCluster::kill_coordinator`]), with the same
    /// configuration; it does not wait for the agents.
    pub async fn restart_coordinator(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.coordinator.take() {
            c.shutdown().await;
        }
        let config = coordinator_config(&self.spec, &self.broker);
        self.coordinator = Some(slim_coordinator::start(config).await?);
        Ok(())
    }

    /// Starts the broker (if embedded), the coordinator and the agents, and waits until the
    /// coordinator has seen every agent.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        let embedded = match &spec.broker_url {
            Some(_) => None,
            None => Some(EmbeddedBroker::start_local().await?),
        };
        let url = spec
            .broker_url
            .clone()
            .unwrap_or_else(|| embedded.as_ref().expect("embedded").url());
        let broker = BrokerOptions {
            clean_session: spec.clean_session,
            ..BrokerOptions::from_url(url)
        };
        let id_prefix = spec.topic_prefix.replace('/', "-");
        let coordinator = slim_coordinator::start(coordinator_config(&spec, &broker)).await?;
        let mut cluster = Self {
            broker,
            embedded,
            coordinator: Some(coordinator),
            agents: Vec::new(),
            spec: spec.clone(),
            id_prefix,
        };
        for (i, slowdown) in spec.agent_slowdowns.iter().enumerate() {
            cluster.start_agent(i, *slowdown).await?;
        }
        cluster
            .wait_for_agents(
                spec.agent_slowdowns.len(),
                std::time::Duration::from_secs(30),
            )
            .await?;
        Ok(cluster)
    }

    /// Waits until the coordinator counts `n` agents online.
    pub async fn wait_for_agents(
        &self,
        n: usize,
        timeout: std::time::Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let online = match &self.coordinator {
                Some(c) => c.counters().await.agents_online,
                None => 0,
            };
            if online == n {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "the coordinator sees {online} agents online, expected {n}, after {timeout:?}"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Configuration of agent number `index`.
    pub fn agent_config(&self, index: usize, slowdown: f32) -> AgentConfig {
        AgentConfig {
            id: format!("{}-agent-{}", self.id_prefix, index + 1),
            topic_prefix: self.spec.topic_prefix.clone(),
            broker: self.broker.clone(),
            models_dir: self.spec.models_dir.clone(),
            models: self.spec.models.clone(),
            backend: self.spec.agent_backend,
            telemetry_interval_ms: self.spec.telemetry_interval_ms,
            slowdown,
            threads: self.spec.agent_threads.get(index).copied().unwrap_or(1),
            pace_to_profile: self.spec.agent_paced.get(index).copied().unwrap_or(false),
            profile: self
                .spec
                .agent_profiles
                .get(index)
                .cloned()
                .or_else(|| self.spec.profile.clone()),
            state_dir: self
                .spec
                .state_root
                .as_ref()
                .map(|root| root.join(format!("{}-agent-{}", self.id_prefix, index + 1))),
            assignment_key_file: self.spec.assignment_key_file.clone(),
            max_queued: self
                .spec
                .agent_max_queued
                .unwrap_or(AgentConfig::default().max_queued),
            ..AgentConfig::default()
        }
    }

    /// Starts (or restarts) agent number `index`.
    pub async fn start_agent(&mut self, index: usize, slowdown: f32) -> anyhow::Result<()> {
        let agent = slim_agent::start(self.agent_config(index, slowdown)).await?;
        self.agents.push(agent);
        Ok(())
    }

    /// The deployment's topics.
    pub fn topics(&self) -> slim_protocol::Topics {
        slim_protocol::Topics::new(&self.spec.topic_prefix)
    }

    /// Stops everything cleanly.
    pub async fn shutdown(mut self) {
        // The coordinator goes first, so agents leaving is not mistaken for a failure.
        if let Some(c) = self.coordinator.take() {
            c.shutdown().await;
        }
        for agent in self.agents.drain(..) {
            agent.shutdown().await;
        }
    }
}
