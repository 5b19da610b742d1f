//! Many lightweight agents behind one MQTT connection, for measuring the coordinator alone: each
//! announces itself (retained status with the family's real model info and, when given, a
//! device profile), counts the assignments it receives without running anything, and reports
//! them answered in its telemetry so the coordinator's ledger drains as with real agents.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::anchors::Arrivals;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS};
use slim_mqtt::BrokerOptions;
use slim_protocol::{
    encode, limits, now_ms, peek_str, AgentInfo, DeviceInfo, DeviceProfile, ModelInfo, RequestKey,
    Telemetry, Topics, PROTOCOL_VERSION,
};

/// What the emulated agents announce.
#[derive(Debug, Clone)]
pub struct EmulatedFleet {
    /// How many agents.
    pub agents: usize,
    /// The models each serves.
    pub models: Vec<ModelInfo>,
    /// A device profile each publishes (the PPO router needs one).
    pub profile: Option<DeviceProfile>,
    /// Telemetry interval.
    pub telemetry: Duration,
}

/// The running emulation: counts what reached the agents.
pub struct Emulation {
    client: AsyncClient,
    topics: Topics,
    ids: Vec<String>,
    /// Each agent's encoded status, in the order of `ids`.
    infos: Vec<Vec<u8>>,
    assignments: Arrivals,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn agent_id(i: usize) -> String {
    format!("emulated-{i:04}")
}

impl EmulatedFleet {
    /// Connects, announces every agent, and starts counting and reporting.
    pub async fn start(
        &self,
        broker: &BrokerOptions,
        topics: &Topics,
    ) -> anyhow::Result<Emulation> {
        let client_id = format!("{}-emulated-fleet", topics.prefix().replace('/', "-"));
        let (client, eventloop) = broker.connect(&client_id, None)?;
        let ids: Vec<String> = (0..self.agents).map(agent_id).collect();
        let infos: Vec<Vec<u8>> = ids.iter().map(|id| encode(&self.info(id, true))).collect();
        let assignments = Arrivals::default();
        let agents = Agents {
            client: client.clone(),
            topics: topics.clone(),
            ids: ids.clone(),
            done: Arc::new(Mutex::new(vec![Vec::new(); self.agents])),
        };
        let receiver = tokio::spawn(agents.clone().receive(
            eventloop,
            infos.clone(),
            assignments.clone(),
        ));
        let reporter = tokio::spawn(agents.report(self.telemetry));
        Ok(Emulation {
            client,
            topics: topics.clone(),
            ids,
            infos,
            assignments,
            tasks: vec![receiver, reporter],
        })
    }

    fn info(&self, id: &str, online: bool) -> AgentInfo {
        AgentInfo {
            v: PROTOCOL_VERSION,
            agent: id.into(),
            online,
            started_at_ms: now_ms(),
            backend: "emulated".into(),
            backend_reason: "slim bench --saturate: answers without running a model".into(),
            device: DeviceInfo {
                hostname: "emulated".into(),
                kind: "cpu".into(),
                cpu_model: "emulated".into(),
                cpu_cores: 1,
                ram_bytes: 1 << 30,
                gpu: None,
                vram_bytes: None,
            },
            models: self.models.clone(),
            max_batch: 32,
            emulation: None,
            profile: self.profile.clone(),
            threads: 1,
            durable: false,
            max_queued: None,
            concurrency: None,
        }
    }
}

/// What the receiving and the reporting task share.
#[derive(Clone)]
struct Agents {
    client: AsyncClient,
    topics: Topics,
    ids: Vec<String>,
    /// Keys received since the last telemetry, per agent.
    done: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Agents {
    /// Drives the connection: on every (re)connect subscribes to the agents' assignments and
    /// publishes their status (`infos`, in the order of `ids`); counts each assignment.
    async fn receive(self, mut eventloop: EventLoop, infos: Vec<Vec<u8>>, assignments: Arrivals) {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let filter = format!("{}/agents/+/assign", self.topics.prefix());
                    let _ = self.client.subscribe(filter, QoS::AtLeastOnce).await;
                    for (id, info) in self.ids.iter().zip(&infos) {
                        let _ = self
                            .client
                            .publish(self.topics.status(id), QoS::AtLeastOnce, true, info.clone())
                            .await;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => self.on_assignment(&p, &assignments),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Notes an assignment's request done by its agent, to report in the next telemetry.
    fn on_assignment(&self, p: &Publish, assignments: &Arrivals) {
        let Some(index) = agent_index(&self.topics, &p.topic) else {
            return;
        };
        // What an agent must read to report the request done; the rest of the assignment is
        // not looked at (a peek, no decoding of the tensor).
        let field = |name| peek_str(&p.payload, &["request", name]);
        if let (Some(reply_to), Some(id)) = (field("reply_to"), field("id")) {
            let key = RequestKey::new(reply_to, id);
            self.done.lock().unwrap()[index].push(key.wire());
            assignments.record();
        }
    }

    /// Every `interval`, publishes each agent's telemetry with the keys done since the last.
    async fn report(self, interval: Duration) {
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            seq += 1;
            let pages: Vec<Vec<String>> = {
                let mut done = self.done.lock().unwrap();
                done.iter_mut().map(take_page).collect()
            };
            for (id, keys) in self.ids.iter().zip(pages) {
                let t = telemetry(id, seq, keys);
                let _ = self
                    .client
                    .publish(
                        self.topics.telemetry(id),
                        QoS::AtMostOnce,
                        false,
                        encode(&t),
                    )
                    .await;
            }
        }
    }
}

/// Telemetry of an idle agent that reports `done` answered.
fn telemetry(id: &str, seq: u64, done: Vec<String>) -> Telemetry {
    Telemetry {
        done,
        emulated: true,
        ..Telemetry::idle(id, seq)
    }
}

/// The keys that fit one report ([`limits::MAX_REPORT_KEY_BYTES`]); the rest wait for the next.
fn take_page(keys: &mut Vec<String>) -> Vec<String> {
    let mut bytes = 0;
    let fit = keys
        .iter()
        .take_while(|k| {
            bytes += k.len() + 5;
            bytes <= limits::MAX_REPORT_KEY_BYTES
        })
        .count();
    keys.drain(..fit).collect()
}

fn agent_index(topics: &Topics, topic: &str) -> Option<usize> {
    let rest = topic
        .strip_prefix(topics.prefix())?
        .strip_prefix("/agents/emulated-")?;
    rest.strip_suffix("/assign")?.parse().ok()
}

impl Emulation {
    /// Assignments received so far, and when the last one arrived.
    pub fn received(&self) -> (u64, Option<Instant>) {
        self.assignments.received()
    }

    /// Publishes every agent's status again. A subscriber that arrives after the statuses were
    /// retained gets at most 100 of them from the embedded broker (rumqttd sends retained
    /// messages once, up to its in-flight window); a live publish reaches it in full.
    pub async fn announce(&self) {
        for (id, info) in self.ids.iter().zip(&self.infos) {
            let _ = self
                .client
                .publish(self.topics.status(id), QoS::AtLeastOnce, true, info.clone())
                .await;
        }
    }

    /// Takes every agent offline (retained status cleared) and stops.
    pub async fn stop(self) {
        for id in &self.ids {
            let _ = self
                .client
                .publish(self.topics.status(id), QoS::AtLeastOnce, true, Vec::new())
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = self.client.disconnect().await;
        for task in self.tasks {
            task.abort();
        }
    }
}
