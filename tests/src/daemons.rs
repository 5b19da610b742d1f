//! The shipped daemons, `slim-coordinator` and `slim-agent`, run as separate processes for the
//! fault tests: each from its own TOML file (written from the real config types), logging to its
//! own file, and stopped, continued or killed by PID, as an operator would.
//!
//! The binaries are taken from the cargo target folder the test itself runs from
//! (`target/debug` or `target/release`). `cargo test --workspace` builds them, because the agent
//! and coordinator crates have integration tests; a test run that selected only this crate
//! fails with the command that builds them instead of running stale or missing binaries.

use std::{
    collections::HashMap,
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rumqttc::{Event, Packet, QoS};

use slim_agent::AgentConfig;
use slim_coordinator::CoordinatorConfig;
use slim_mqtt::BrokerOptions;
use slim_protocol::{AgentInfo, CoordinatorStatus, Topics};

use crate::mosquitto::vm_rss_kib;

/// A daemon binary built next to the running test, or a panic that says how to build it.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/{profile}/deps/{test}-{hash} -> target/{profile}/{name}
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from a cargo target folder");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: the process tests run the real daemons; build them first with\n  \
         cargo build --workspace --bins{}\n(`cargo test --workspace` builds them itself)",
        path.display(),
        if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        }
    );
    path
}

/// One daemon process: its binary, its config file and its log.
pub struct Daemon {
    name: String,
    program: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

impl Daemon {
    /// Writes `config_toml` to `dir/{name}.toml` and starts `program --config` on it.
    pub fn start(program: PathBuf, name: &str, dir: &Path, config_toml: &str) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, config_toml).expect("the daemon's config can be written");
        let mut daemon = Self {
            name: name.into(),
            program,
            config,
            log: dir.join(format!("{name}.log")),
            child: None,
            stopped: false,
        };
        daemon.spawn();
        daemon
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory, KiB, while the process runs.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(vm_rss_kib)
    }

    /// Everything the daemon logged, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `kill -9`: no goodbye, no offline status; the broker publishes the last will.
    pub fn kill9(&mut self) {
        self.cont();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -STOP`: the process hangs with its connections open, as a wedged device does.
    pub fn stop(&mut self) {
        if self.signal("-STOP") {
            self.stopped = true;
        }
    }

    /// `kill -CONT` after [`Daemon::stop`].
    pub fn cont(&mut self) {
        if self.stopped && self.signal("-CONT") {
            self.stopped = false;
        }
    }

    /// Starts the process again from the same config (same id, same state folder).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Whether the process has exited on its own (a crash); its status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn signal(&self, signal: &str) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the daemon's log can be opened");
        let child = Command::new(&self.program)
            .arg("--config")
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("SLIM_DAEMON_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log handle can be shared"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} cannot start: {e}", self.program.display()));
        self.child = Some(child);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a process fleet looks like.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub broker_url: String,
    pub topic_prefix: String,
    /// Agents, each serving `models` at real speed with one thread.
    pub agents: usize,
    pub models: Vec<String>,
    pub telemetry_interval_ms: u64,
    pub telemetry_timeout_ms: u64,
    /// Folder for configs, logs and the agents' durable state.
    pub dir: PathBuf,
}

/// A coordinator and agents, each a separate process, with the deployment's settings: durable
/// agent state and persistent MQTT sessions (`clean_session = false`).
pub struct ProcessFleet {
    pub spec: FleetSpec,
    pub coordinator: Daemon,
    pub agents: Vec<Daemon>,
}

impl ProcessFleet {
    pub fn start(spec: FleetSpec) -> Self {
        std::fs::create_dir_all(&spec.dir).expect("the fleet's folder can be created");
        let coordinator = Daemon::start(
            binary("slim-coordinator"),
            "coordinator",
            &spec.dir,
            &toml::to_string(&coordinator_config(&spec)).expect("the config serialises"),
        );
        let agents = (0..spec.agents)
            .map(|i| {
                let config = agent_config(&spec, i);
                Daemon::start(
                    binary("slim-agent"),
                    &config.id.clone(),
                    &spec.dir,
                    &toml::to_string(&config).expect("the config serialises"),
                )
            })
            .collect();
        Self {
            spec,
            coordinator,
            agents,
        }
    }

    pub fn broker(&self) -> BrokerOptions {
        BrokerOptions::from_url(self.spec.broker_url.clone())
    }

    pub fn topics(&self) -> Topics {
        Topics::new(&self.spec.topic_prefix)
    }

    /// Waits until the coordinator and every agent have announced themselves online (their
    /// retained status), or fails with the daemons' logs.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let watcher = StatusWatcher::connect(
            &self.broker(),
            &format!("{}-ready", self.spec.topic_prefix.replace('/', "-")),
            &self.topics(),
        )?;
        let deadline = Instant::now() + timeout;
        loop {
            let (coordinator, agents) = watcher.online();
            if coordinator && agents >= self.spec.agents {
                return Ok(());
            }
            for daemon in std::iter::once(&mut self.coordinator).chain(self.agents.iter_mut()) {
                if let Some(status) = daemon.exited() {
                    anyhow::bail!(
                        "{} exited ({status}) while starting:\n{}",
                        daemon.name(),
                        daemon.log_tail(30)
                    );
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "after {timeout:?}: coordinator online {coordinator}, {agents} of {} agents online\ncoordinator log:\n{}",
                    self.spec.agents,
                    self.coordinator.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every daemon: name, PID and RSS in KiB.
    pub fn rss(&self) -> Vec<(String, Option<u64>)> {
        std::iter::once(&self.coordinator)
            .chain(self.agents.iter())
            .map(|d| (d.name().to_string(), d.rss_kib()))
            .collect()
    }
}

fn coordinator_config(spec: &FleetSpec) -> CoordinatorConfig {
    let mut broker = BrokerOptions::from_url(spec.broker_url.clone());
    broker.clean_session = false;
    CoordinatorConfig {
        id: "coordinator".into(),
        topic_prefix: spec.topic_prefix.clone(),
        broker,
        telemetry_timeout_ms: spec.telemetry_timeout_ms,
        http_listen: Some(String::new()),
        ..CoordinatorConfig::default()
    }
}

fn agent_config(spec: &FleetSpec, index: usize) -> AgentConfig {
    agent_config_named(spec, format!("agent-{}", index + 1))
}

/// One agent process with the fleet's settings (durable state under `spec.dir`, persistent
/// session, real speed, one thread) on `spec.broker_url`, with agent id `id`. For topologies
/// [`ProcessFleet`] does not cover, e.g. agents spread over several brokers.
pub fn start_agent(spec: &FleetSpec, id: &str) -> Daemon {
    std::fs::create_dir_all(&spec.dir).expect("the fleet's folder can be created");
    let config = agent_config_named(spec, id.to_string());
    Daemon::start(
        binary("slim-agent"),
        id,
        &spec.dir,
        &toml::to_string(&config).expect("the config serialises"),
    )
}

/// One coordinator process with the fleet's settings on `spec.broker_url`, with MQTT client id
/// `id` and, if given, a shared subscription group.
pub fn start_coordinator(spec: &FleetSpec, id: &str, shared_group: Option<&str>) -> Daemon {
    std::fs::create_dir_all(&spec.dir).expect("the fleet's folder can be created");
    let config = CoordinatorConfig {
        id: id.into(),
        shared_group: shared_group.map(Into::into),
        ..coordinator_config(spec)
    };
    Daemon::start(
        binary("slim-coordinator"),
        id,
        &spec.dir,
        &toml::to_string(&config).expect("the config serialises"),
    )
}

fn agent_config_named(spec: &FleetSpec, id: String) -> AgentConfig {
    let mut broker = BrokerOptions::from_url(spec.broker_url.clone());
    broker.clean_session = false;
    AgentConfig {
        topic_prefix: spec.topic_prefix.clone(),
        broker,
        models_dir: crate::models_dir(),
        models: spec.models.clone(),
        backend: slim_agent::backend::BackendChoice::Cpu,
        telemetry_interval_ms: spec.telemetry_interval_ms,
        threads: 1,
        state_dir: Some(spec.dir.join(&id)),
        id,
        ..AgentConfig::default()
    }
}

/// Follows the retained status of the coordinator and the agents of one deployment.
pub struct StatusWatcher {
    state: Arc<Mutex<Statuses>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Statuses {
    /// Whether each coordinator is online, by id.
    coordinators: HashMap<String, bool>,
    agents: HashMap<String, bool>,
}

impl StatusWatcher {
    pub fn connect(
        broker: &BrokerOptions,
        client_id: &str,
        topics: &Topics,
    ) -> anyhow::Result<Self> {
        let (client, mut eventloop) = broker.connect(client_id, None)?;
        let state: Arc<Mutex<Statuses>> = Default::default();
        let (agents, coordinators) = (topics.status_filter(), topics.coordinator_status_filter());
        let topics = topics.clone();
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.subscribe(&agents, QoS::AtLeastOnce).await;
                            let _ = client.subscribe(&coordinators, QoS::AtLeastOnce).await;
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let mut state = state.lock().unwrap();
                            if topics.parse_coordinator_status(&p.topic).is_some() {
                                if let Ok(status) =
                                    slim_protocol::decode::<CoordinatorStatus>(&p.payload)
                                {
                                    state.coordinators.insert(status.id, status.online);
                                }
                            } else if let Ok(info) = slim_protocol::decode::<AgentInfo>(&p.payload)
                            {
                                state.agents.insert(info.agent, info.online);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
        };
        Ok(Self { state, task })
    }

    /// Whether any coordinator is online, and how many agents are.
    pub fn online(&self) -> (bool, usize) {
        let state = self.state.lock().unwrap();
        (
            state.coordinators.values().any(|online| *online),
            state.agents.values().filter(|online| **online).count(),
        )
    }
}

/// Waits up to 60 s until the deployment under `prefix` on the broker at `url` shows an online
/// coordinator and at least `agents` online agents; panics with a daemon's log if one of
/// `daemons` exits meanwhile, or with what was online at the deadline.
pub async fn wait_online(url: &str, prefix: &str, agents: usize, daemons: &mut [&mut Daemon]) {
    let client_id = format!(
        "ready-{}-{}",
        std::process::id(),
        url.rsplit(':').next().unwrap_or("x")
    );
    let watcher = StatusWatcher::connect(
        &BrokerOptions::from_url(url.to_string()),
        &client_id,
        &Topics::new(prefix),
    )
    .expect("the status watcher connects");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (coordinator, online) = watcher.online();
        if coordinator && online >= agents {
            return;
        }
        for daemon in daemons.iter_mut() {
            if let Some(status) = daemon.exited() {
                panic!(
                    "{} exited ({status}) while starting:\n{}",
                    daemon.name(),
                    daemon.log_tail(30)
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s on {url}: coordinator online {coordinator}, {online} of {agents} agents"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for StatusWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
