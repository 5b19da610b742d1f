//! The running agent: MQTT session, scheduler actor, telemetry and outbox, wired together.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use slim_protocol::{
    encode, now_ms, AgentInfo, AssignmentKey, ErrorCode, ErrorReply, ModelInfo, Refusal, Telemetry,
    Topics, PROTOCOL_VERSION,
};
use tokio::task::JoinHandle;

use crate::{
    backend::select_backend,
    config::AgentConfig,
    emulation::DeviceModel,
    model::ModelFamily,
    outbox::Outbox,
    scheduler::{
        spawn_scheduler, warm_instances, InstancePolicy, Pace, SchedulerConfig, SchedulerHandle,
        WarmInstances,
    },
    store::{OutboxLimits, Store},
    telemetry::{device_info, select_sensors, SensorOptions, SensorSet, SystemSampler},
    validate::{validate_assignment, AssignmentRules},
};

/// How long a shutdown waits for the offline status to leave before it stops anyway.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// A started agent.
#[derive(Debug)]
pub struct AgentHandle {
    /// The announcement it published.
    pub info: AgentInfo,
    /// MQTT reconnects after the first connection.
    pub reconnects: Arc<AtomicU64>,
    client: AsyncClient,
    topics: Topics,
    scheduler: SchedulerHandle,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// Assignments refused since start, by code (asked of the scheduler actor, which counts
    /// them). Counts every refusal whose error reply was already sent; empty once stopped.
    pub async fn rejections(&self) -> HashMap<ErrorCode, u64> {
        self.scheduler.rejections().await
    }

    /// Batches run and batches that missed their emulated pace since start (see
    /// [`crate::scheduler::Pace`]); zero once stopped.
    pub async fn pacing(&self) -> crate::scheduler::PaceCount {
        self.scheduler.pacing().await
    }

    /// Publishes the offline status, disconnects and stops every task. The MQTT task sends
    /// the status before the DISCONNECT queued after it and ends once that is written, so
    /// waiting for it is waiting for the flush (bounded by [`SHUTDOWN_FLUSH`] when the broker
    /// is gone).
    pub async fn shutdown(mut self) {
        let mut offline = self.info.clone();
        offline.online = false;
        let _ = self
            .client
            .publish(
                self.topics.status(&offline.agent),
                QoS::AtLeastOnce,
                true,
                encode(&offline),
            )
            .await;
        let _ = self.client.disconnect().await;
        let mqtt_task = self.tasks.remove(0);
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, mqtt_task).await;
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Stops every task at once without a goodbye, as a crash would; the broker then publishes
    /// the last will.
    pub fn kill(self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Resolves when any of the agent's tasks ends (it never should while running), and says
    /// which and how.
    pub async fn failed(&mut self) -> String {
        slim_mqtt::daemon::first_exit(&mut self.tasks).await
    }

    /// Waits until the agent stops (it runs until shut down).
    pub async fn wait(mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

/// Loads the configured model families from `config.models_dir`.
pub fn load_families(
    config: &AgentConfig,
    runtime: &dyn tract_onnx::tract_core::runtime::Runtime,
) -> anyhow::Result<HashMap<String, Arc<ModelFamily>>> {
    let dirs = family_dirs(&config.models_dir)?;
    let mut families = HashMap::new();
    for dir in dirs {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if !config.models.is_empty() && !config.models.contains(&name) {
            continue;
        }
        let family = ModelFamily::load(&dir, runtime, &config.plan_options())?;
        tracing::info!(
            family = family.name(),
            widths = family.plans().len(),
            "model family loaded"
        );
        families.insert(family.name().to_string(), Arc::new(family));
    }
    for wanted in &config.models {
        if !families.contains_key(wanted) {
            bail!(
                "model {wanted:?} not found in {}",
                config.models_dir.display()
            );
        }
    }
    if families.is_empty() {
        bail!(
            "no model family (a folder with manifest.toml) in {}",
            config.models_dir.display()
        );
    }
    Ok(families)
}

/// The model-family folders (those with a `manifest.toml`) in `models_dir`, sorted.
pub fn family_dirs(models_dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let entries = std::fs::read_dir(models_dir)
        .with_context(|| format!("cannot read the models folder {}", models_dir.display()))?;
    let mut dirs: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("manifest.toml").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn model_info(family: &ModelFamily) -> ModelInfo {
    ModelInfo {
        name: family.name().to_string(),
        input_shape: family.manifest.input_shape.clone(),
        classes: family.manifest.classes.len() as u32,
        widths: family.plans().iter().map(|p| p.entry.info()).collect(),
    }
}

/// Loads the models, connects to the broker and starts serving.
///
/// The steps run in the order their parts depend on each other: store before outbox,
/// scheduler before resume and session.
pub async fn start(mut config: AgentConfig) -> anyhow::Result<AgentHandle> {
    config.validate().map_err(anyhow::Error::msg)?;
    let device_model = DeviceModel::load(&config)?;
    if let Some(b) = device_model.max_batch {
        config.max_batch = config.max_batch.min(b);
    }
    let (backend, backend_reason) = select_backend(config.backend).map_err(anyhow::Error::msg)?;
    tracing::info!(agent = %config.id, backend = backend.name, reason = %backend_reason, "backend selected");
    let families = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || load_families(&config, backend.runtime)).await??
    };
    device_model.check_covers(
        families
            .values()
            .flat_map(|f| f.plans().iter().map(move |p| (f.name(), p.entry.width))),
    )?;
    let (sensors, device) = sense_device(&config, backend.name, &device_model);
    let policy = instance_policy(&config, &device);
    let info = announcement(
        &config,
        &device_model,
        &policy,
        backend.name,
        backend_reason,
        model_infos(&families),
        device.clone(),
    )?;
    let topics = Topics::new(&config.topic_prefix);
    let (client, eventloop) = connect_with_will(&config, &topics, &info)?;
    let store = open_store(&config)?;
    let (connected_tx, connected_rx) = tokio::sync::watch::channel(false);
    let (outbox, outbox_task) = Outbox::spawn(
        client.clone(),
        connected_rx,
        store.clone(),
        OutboxLimits {
            max_bytes: config.outbox_max_mb * 1024 * 1024,
            max_age_ms: config.outbox_max_age_s * 1000,
        },
    );
    let rules = assignment_rules(&config, &topics)?;
    let warm = load_warm_instances(&config, &families, &policy).await?;
    let (scheduler, scheduler_task) = spawn_scheduler(
        scheduler_config(&config, policy, &sensors, &device_model, store.clone()),
        outbox.clone(),
        warm,
    );
    if let Some(store) = &store {
        resume_unanswered(store, &rules, &families, &scheduler);
    }
    let reconnects = Arc::new(AtomicU64::new(0));
    let session = Session {
        config: config.clone(),
        topics: topics.clone(),
        info: info.clone(),
        families,
        scheduler: scheduler.clone(),
        outbox: outbox.clone(),
        client: client.clone(),
        keep_payloads: store.is_some(),
        connected: connected_tx,
        refusal_log: slim_mqtt::LogBudget::per_request(),
        rules,
        reconnects: reconnects.clone(),
    };
    let mqtt_task = tokio::spawn(session.run(eventloop));
    let telemetry_task = tokio::spawn(telemetry_loop(
        config.clone(),
        topics.clone(),
        scheduler.clone(),
        outbox,
        sensors,
    ));
    Ok(AgentHandle {
        info,
        reconnects,
        client,
        topics,
        scheduler,
        // The MQTT task first: shutdown waits for it.
        tasks: vec![mqtt_task, telemetry_task, scheduler_task, outbox_task],
    })
}

/// The scheduler actor's settings: the instance policy, the batch limit and emulated pace, the
/// energy meter it attributes batches on, and the store it records accepted requests in.
fn scheduler_config(
    config: &AgentConfig,
    policy: InstancePolicy,
    sensors: &SensorSet,
    device_model: &DeviceModel,
    store: Option<Store>,
) -> SchedulerConfig {
    SchedulerConfig {
        agent: config.id.clone(),
        policy,
        max_batch: config.max_batch as usize,
        pace: device_model.pace.clone(),
        energy: sensors.energy.clone(),
        store,
        max_queued: config.max_queued,
    }
}

/// The announced models, sorted by name.
fn model_infos(families: &HashMap<String, Arc<ModelFamily>>) -> Vec<ModelInfo> {
    let mut models: Vec<ModelInfo> = families.values().map(|f| model_info(f)).collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    models
}

/// The power and utilisation sensors of this device, and the device as they describe it. An
/// agent paced to a profile models the emulated device's power instead (this host's sensors
/// say nothing about it).
fn sense_device(
    config: &AgentConfig,
    backend: &str,
    device_model: &DeviceModel,
) -> (SensorSet, slim_protocol::DeviceInfo) {
    let base_device = device_info();
    let mut options = SensorOptions {
        sysfs_root: "/".into(),
        batches_on_gpu: backend == "cuda",
        idle_power_w: config.energy.idle_power_w,
        max_power_w: config.energy.max_power_w,
        cores: base_device.cpu_cores as usize,
    };
    if let (true, Some(p)) = (device_model.paces_to_profile(), &device_model.profile) {
        options.idle_power_w = p.idle_power_w;
        options.max_power_w = p.max_power_w;
        options.cores = 1;
        return (SensorSet::model_only(&options), base_device);
    }
    let (sensors, _sensor_report) = select_sensors(&options);
    let device = sensors.describe(base_device);
    (sensors, device)
}

/// The MQTT client and event loop, with the offline copy of `info` as the retained last will.
fn connect_with_will(
    config: &AgentConfig,
    topics: &Topics,
    info: &AgentInfo,
) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let mut will_info = info.clone();
    will_info.online = false;
    let will = LastWill::new(
        topics.status(&config.id),
        encode(&will_info),
        QoS::AtLeastOnce,
        true,
    );
    Ok(config.broker.connect(&config.id, Some(will))?)
}

/// The durable store in `state_dir`, when configured.
fn open_store(config: &AgentConfig) -> anyhow::Result<Option<Store>> {
    let Some(dir) = &config.state_dir else {
        return Ok(None);
    };
    let store = Store::open(dir)
        .with_context(|| format!("cannot open the agent store in {}", dir.display()))?;
    Ok(Some(store))
}

/// What an assignment must satisfy to be accepted by this agent.
fn assignment_rules(config: &AgentConfig, topics: &Topics) -> anyhow::Result<AssignmentRules> {
    Ok(AssignmentRules {
        agent: config.id.clone(),
        topics: topics.clone(),
        max_payload_bytes: config.max_payload_bytes,
        max_batch: config.max_batch,
        max_queue_delay_ms: config.max_queue_delay_ms,
        key: match &config.assignment_key_file {
            Some(path) => Some(AssignmentKey::from_file(path)?),
            None => None,
        },
    })
}

/// The status the agent announces (retained; its offline copy is the last will).
fn announcement(
    config: &AgentConfig,
    device_model: &DeviceModel,
    policy: &InstancePolicy,
    backend: &str,
    backend_reason: String,
    models: Vec<ModelInfo>,
    device: slim_protocol::DeviceInfo,
) -> anyhow::Result<AgentInfo> {
    Ok(AgentInfo {
        v: PROTOCOL_VERSION,
        agent: config.id.clone(),
        online: true,
        started_at_ms: now_ms(),
        backend: backend.into(),
        backend_reason,
        models,
        max_batch: config.max_batch,
        emulation: device_model.emulation(config),
        profile: device_model.profile.clone(),
        threads: config.threads,
        durable: config.state_dir.is_some(),
        max_queued: Some(u32::try_from(config.max_queued).unwrap_or(u32::MAX)),
        concurrency: Some(concurrency(policy, &device_model.pace)),
        device,
    })
}

/// Most batches of one (model, width) run at once: what the instance policy lets one queue
/// reach, bounded by the batches a paced agent's emulated device runs at once.
fn concurrency(policy: &InstancePolicy, pace: &Pace) -> u16 {
    let batches = policy.most_per_queue().min(pace.max_running_batches());
    u16::try_from(batches).unwrap_or(u16::MAX).max(1)
}

/// Loads one instance per (model, width) before serving, when configured to.
async fn load_warm_instances(
    config: &AgentConfig,
    families: &HashMap<String, Arc<ModelFamily>>,
    policy: &InstancePolicy,
) -> anyhow::Result<WarmInstances> {
    if !config.warm_instances {
        return Ok(Vec::new());
    }
    let mut list: Vec<Arc<ModelFamily>> = families.values().cloned().collect();
    list.sort_by(|a, b| a.name().cmp(b.name()));
    let (max_batch, budget) = (config.max_batch as usize, policy.memory_budget_bytes);
    let warm =
        tokio::task::spawn_blocking(move || warm_instances(&list, max_batch, budget)).await?;
    tracing::info!(agent = %config.id, instances = warm.len(), "model instances loaded before serving");
    Ok(warm)
}

/// The instance limits for this device: the configured budget, or half its memory.
fn instance_policy(config: &AgentConfig, device: &slim_protocol::DeviceInfo) -> InstancePolicy {
    let cores = device.cpu_cores.max(1) as usize;
    let memory = device.vram_bytes.unwrap_or(device.ram_bytes);
    InstancePolicy {
        max_per_queue: match config.max_instances_per_width {
            0 => cores,
            n => n as usize,
        },
        scale_up_wait: Duration::from_millis(config.scale_up_wait_ms),
        idle_timeout: Duration::from_secs(config.instance_idle_timeout_s),
        memory_budget_bytes: config
            .memory_budget_mb
            .map(|mb| mb * 1024 * 1024)
            .unwrap_or(memory / 2),
        utilization_ceiling: config.utilization_ceiling,
        capacity: cores,
    }
}

/// Requeues the requests an earlier run accepted and never answered. Only reads the store: the
/// scheduler actor does every write to its record of accepted requests.
fn resume_unanswered(
    store: &Store,
    rules: &AssignmentRules,
    families: &HashMap<String, Arc<ModelFamily>>,
    scheduler: &SchedulerHandle,
) {
    let unanswered = match store.unanswered() {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "cannot read unanswered requests");
            return;
        }
    };
    if unanswered.is_empty() {
        return;
    }
    tracing::info!(
        count = unanswered.len(),
        "resuming requests accepted before a restart"
    );
    let rules = AssignmentRules {
        max_payload_bytes: usize::MAX,
        ..rules.clone()
    };
    for (key, payload) in unanswered {
        match validate_assignment(&payload, &rules, families) {
            Ok(mut valid) if valid.key == key => {
                valid.payload = Some(payload);
                // Queued directly: the actor's inbox is empty at start.
                if scheduler.assign(valid).is_err() {
                    tracing::error!(id = %key.id, "the scheduler refused a stored request at start");
                }
            }
            Ok(mut valid) => {
                // Stored by an older agent under its id alone: the actor stores it again under
                // its key when it queues it.
                scheduler.forget_stored(key);
                valid.payload = Some(payload);
                let _ = scheduler.assign(valid);
            }
            Err(r) => {
                tracing::warn!(id = %key.id, code = %r.code, "a stored request can no longer be served: {}", r.message);
                scheduler.forget_stored(key);
            }
        }
    }
}

struct Session {
    config: AgentConfig,
    topics: Topics,
    info: AgentInfo,
    families: HashMap<String, Arc<ModelFamily>>,
    scheduler: SchedulerHandle,
    outbox: Outbox,
    client: AsyncClient,
    /// Whether assignments keep their raw payload for the scheduler to store (durable agents).
    keep_payloads: bool,
    connected: tokio::sync::watch::Sender<bool>,
    /// Bounds the log lines of refused assignments (the scheduler counts every one).
    refusal_log: slim_mqtt::LogBudget,
    rules: AssignmentRules,
    reconnects: Arc<AtomicU64>,
}

impl Session {
    async fn run(mut self, mut eventloop: EventLoop) {
        let assign_topic = self.topics.assign(&self.config.id);
        let mut connects = 0u64;
        loop {
            let event = eventloop.poll().await;
            // Any event (keep-alive pings included) closes a finished window's summary.
            self.refusal_log
                .flush(std::time::Instant::now(), "refused assignments");
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connects += 1;
                    if connects > 1 {
                        self.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(agent = %self.config.id, broker = %self.config.broker.url, "connected");
                    let _ = self.connected.send(true);
                    let client = self.client.clone();
                    let topic = assign_topic.clone();
                    let status = (self.topics.status(&self.config.id), encode(&self.info));
                    tokio::spawn(async move {
                        let _ = client.subscribe(topic, QoS::AtLeastOnce).await;
                        let _ = client
                            .publish(status.0, QoS::AtLeastOnce, true, status.1)
                            .await;
                    });
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == assign_topic => {
                    self.on_assignment(&p.payload);
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    let _ = self.connected.send(false);
                    tracing::warn!(agent = %self.config.id, error = %e, "MQTT connection error; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn on_assignment(&mut self, payload: &[u8]) {
        match validate_assignment(payload, &self.rules, &self.families) {
            Ok(mut valid) => {
                if self.keep_payloads {
                    valid.payload = Some(payload.to_vec());
                }
                if let Err(valid) = self.scheduler.assign(valid) {
                    let mut refusal = Refusal::new(
                        ErrorCode::Overloaded,
                        "the agent's inbox is full; retry later",
                    );
                    refusal.id = Some(valid.key.id.clone());
                    refusal.reply_to = Some(valid.key.reply_to.clone());
                    self.reject(refusal);
                }
            }
            Err(refusal) => self.reject(refusal),
        }
    }

    fn reject(&mut self, r: Refusal) {
        // Counted before the reply leaves, so whoever sees the reply sees the count.
        let key =
            r.id.as_ref()
                .zip(r.reply_to.as_ref())
                .map(|(id, reply_to)| slim_protocol::RequestKey::new(reply_to.clone(), id.clone()));
        self.scheduler.rejected(r.code, key.as_ref());
        if self
            .refusal_log
            .allow(std::time::Instant::now(), "refused assignments")
        {
            tracing::warn!(agent = %self.config.id, code = %r.code, id = %r.id.as_deref().unwrap_or("-"), "assignment refused: {}", r.message);
        }
        let reply = ErrorReply::new(r.id, r.code, r.message, format!("agent:{}", self.config.id))
            .on_topic(self.topics.assign(&self.config.id));
        let topic = r.reply_to.unwrap_or_else(|| self.topics.dead_letters());
        self.outbox.send(topic, encode(&reply));
    }
}

/// Most telemetry pages one tick sends: 32 pages of at most 128 KiB of request keys, about
/// 30 000 answers a second at `slim bench`'s 70-byte keys. Beyond it the backlog waits for the
/// next tick, and beyond its bound it is dropped and counted (`unreported_dropped`).
const MAX_PAGES_PER_TICK: u32 = 32;

async fn telemetry_loop(
    config: AgentConfig,
    topics: Topics,
    scheduler: SchedulerHandle,
    outbox: Outbox,
    mut sensors: SensorSet,
) {
    let mut sampler = SystemSampler::new();
    let interval = Duration::from_millis(config.telemetry_interval_ms.max(50));
    let mut ticker = tokio::time::interval(interval);
    let mut last = std::time::Instant::now();
    let mut seq = 0;
    loop {
        ticker.tick().await;
        let reading = sampler.sample();
        let now = std::time::Instant::now();
        let tick = sensors.read(&reading, now.duration_since(last).as_secs_f64());
        last = now;
        scheduler.attribute_power(sensors.energy.attributed_power_w());
        // The tick's figures, then as many pages as it takes to list every answer and batch
        // since the last tick (up to MAX_PAGES_PER_TICK; the rest wait for the next tick).
        let at_ms = now_ms();
        for page in 1..=MAX_PAGES_PER_TICK {
            let report = scheduler.report().await;
            let rejected: u64 = report.rejections.values().sum();
            seq += 1;
            let telemetry = Telemetry {
                v: PROTOCOL_VERSION,
                agent: config.id.clone(),
                seq,
                at_ms,
                cpu_util: reading.cpu_util,
                ram_used_bytes: reading.ram_used_bytes,
                ram_total_bytes: reading.ram_total_bytes,
                gpu_util: tick.gpu_util,
                vram_used_bytes: tick.vram_used_bytes,
                vram_total_bytes: tick.vram_total_bytes,
                power_w: tick.power_w,
                energy_j: tick.energy_j,
                energy_source: tick.energy_source,
                queues: report.queues,
                outstanding: report.outstanding,
                completed: report.completed,
                errors: report.failed + rejected,
                batches: report.batches,
                done: report.done,
                refused: report.refused,
                emulated: config.slowdown > 1.0 || config.pace_to_profile,
                pace_misses: report.pace_misses,
                more: report.more && page < MAX_PAGES_PER_TICK,
                unreported_dropped: report.unreported_dropped,
            };
            outbox.send(topics.telemetry(&config.id), encode(&telemetry));
            if !telemetry.more {
                break;
            }
        }
    }
}
