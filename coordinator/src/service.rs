//! The running coordinator: three MQTT connections (requests with the status and last will;
//! agents' status and telemetry; publishing) around one task that feeds the I/O-free
//! [`crate::core::Core`] and publishes the effects it returns.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use slim_protocol::{encode, now_ms, AssignmentKey, CoordinatorStatus, Topics, PROTOCOL_VERSION};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use crate::{
    config::CoordinatorConfig,
    core::{Core, Effect, Input, SystemClock},
    counters::Counters,
    http::{HttpState, Snapshot},
    routing::Routing,
    validate::too_large,
};

/// Messages queued from the MQTT session to the core; the session waits when it is full, so
/// the broker (not this process) holds the backlog.
const INBOUND_CAPACITY: usize = 1024;

/// How long a shutdown waits for the offline status to leave before it stops anyway.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// Questions the handle asks the core task.
#[derive(Debug)]
enum Control {
    Counters(oneshot::Sender<Counters>),
    /// Publish the open batch of decision records now (before a graceful shutdown).
    FlushDecisions(oneshot::Sender<()>),
}

/// A started coordinator.
#[derive(Debug)]
pub struct CoordinatorHandle {
    control: mpsc::Sender<Control>,
    /// The session's connection: subscriptions, status and last will.
    client: AsyncClient,
    /// The connection assignments, decisions and refusals leave on.
    out: AsyncClient,
    /// The connection agents' status and telemetry arrive on.
    fleet: AsyncClient,
    status_topic: String,
    offline_status: Vec<u8>,
    http_addr: Option<SocketAddr>,
    /// The session that carries the status and last will; shutdown waits for it to end.
    session: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl CoordinatorHandle {
    /// A copy of the counters, as of every message the core has taken so far (default
    /// counters once the core has stopped).
    pub async fn counters(&self) -> Counters {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Counters(tx)).await.is_err() {
            return Counters::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Where the monitoring HTTP server listens, when it is enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Publishes the offline status, disconnects and stops. The session's connection sends
    /// the status before its DISCONNECT and ends when the DISCONNECT is written, so waiting for
    /// it is waiting for the flush (bounded by [`SHUTDOWN_FLUSH`] when the broker is gone).
    pub async fn shutdown(mut self) {
        // The open batch of decision records goes out before the connections close.
        let (flushed, done) = oneshot::channel();
        if self
            .control
            .send(Control::FlushDecisions(flushed))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(SHUTDOWN_FLUSH, done).await;
        }
        let _ = self
            .client
            .publish(
                self.status_topic.clone(),
                QoS::AtLeastOnce,
                true,
                self.offline_status.clone(),
            )
            .await;
        let _ = self.out.disconnect().await;
        let _ = self.fleet.disconnect().await;
        let _ = self.client.disconnect().await;
        if let Some(session) = self.session.take() {
            let _ = tokio::time::timeout(SHUTDOWN_FLUSH, session).await;
        }
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Stops every task at once without a goodbye, as a crash would; the broker then publishes
    /// the last will.
    pub fn kill(self) {
        for t in self.tasks.iter().chain(&self.session) {
            t.abort();
        }
    }

    /// Resolves when any of the coordinator's tasks ends (it never should while running), and
    /// says which and how.
    pub async fn failed(&mut self) -> String {
        if let Some(session) = self.session.take() {
            self.tasks.push(session);
        }
        slim_mqtt::daemon::first_exit(&mut self.tasks).await
    }

    /// Waits until the coordinator stops.
    pub async fn wait(mut self) {
        for t in self.tasks.drain(..).chain(self.session.take()) {
            let _ = t.await;
        }
    }
}

/// Connects to the broker and starts routing.
pub async fn start(config: CoordinatorConfig) -> anyhow::Result<CoordinatorHandle> {
    config.check().map_err(anyhow::Error::msg)?;
    let routing = Routing::build(&config)?;
    let assignment_key = match &config.assignment_key_file {
        Some(path) => Some(AssignmentKey::from_file(path)?),
        None => None,
    };
    let topics = Topics::new(&config.topic_prefix);
    let announcement = Announcement::new(&config, &topics, routing.name());
    let connections = Connections::open(&config, announcement.will())?;
    let (channels, senders) = Channels::new();
    let connected = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let (snapshot, http_addr) = match config.http_listen() {
        Some(listen) => {
            let (tx, addr, server) = serve_http(listen, connected.clone()).await?;
            tasks.push(server);
            (Some(tx), Some(addr))
        }
        None => (None, None),
    };
    let sessions = SessionSetup {
        config: &config,
        topics: &topics,
        connected: &connected,
    };
    let fleet_session = tokio::spawn(session_loop(
        connections.fleet_loop,
        sessions.fleet(&connections.fleet, senders.fleet),
    ));
    let session = tokio::spawn(session_loop(
        connections.eventloop,
        sessions.requests(&connections.client, &announcement, senders.requests),
    ));
    let url = config.broker.url.clone();
    let publisher = tokio::spawn(publisher_loop(connections.out_loop, url));
    let publish = Publisher {
        client: connections.out.clone(),
        outbox: Outbox::new(&topics),
        failures: slim_mqtt::LogBudget::per_request(),
    };
    let core = (routing, assignment_key);
    let core_task = spawn_core(&config, core, channels, publish, snapshot);
    tasks.extend([fleet_session, publisher, core_task]);
    let router = &announcement.status.router;
    tracing::info!(router = %router, broker = %config.broker.url, "coordinator started");
    Ok(CoordinatorHandle {
        control: senders.control,
        client: connections.client,
        out: connections.out,
        fleet: connections.fleet,
        status_topic: announcement.topic,
        offline_status: announcement.offline,
        http_addr,
        session: Some(session),
        tasks,
    })
}

/// Starts the core task: a [`Core`] with `routing` (and the key assignments are signed with)
/// that takes `channels`, performs its effects through `publish` and sends its snapshots to
/// `snapshot`.
fn spawn_core(
    config: &CoordinatorConfig,
    (routing, assignment_key): (Routing, Option<AssignmentKey>),
    channels: Channels,
    publish: Publisher,
    snapshot: Option<watch::Sender<Arc<Snapshot>>>,
) -> JoinHandle<()> {
    let core = Core::new(
        config.clone(),
        routing,
        assignment_key,
        Box::new(SystemClock),
    );
    tokio::spawn(core_loop(core, channels, publish, snapshot))
}

/// The coordinator's retained status: online as published on connect, offline as published
/// on shutdown and as the last will.
struct Announcement {
    status: CoordinatorStatus,
    topic: String,
    offline: Vec<u8>,
}

impl Announcement {
    fn new(config: &CoordinatorConfig, topics: &Topics, router: &str) -> Self {
        let status = CoordinatorStatus {
            v: PROTOCOL_VERSION,
            id: config.id.clone(),
            online: true,
            router: router.to_string(),
            started_at_ms: now_ms(),
        };
        let offline = encode(&CoordinatorStatus {
            online: false,
            ..status.clone()
        });
        Self {
            status,
            topic: topics.coordinator_status(&config.id),
            offline,
        }
    }

    /// The last will: the offline status, retained.
    fn will(&self) -> LastWill {
        LastWill::new(
            self.topic.clone(),
            self.offline.clone(),
            QoS::AtLeastOnce,
            true,
        )
    }
}

/// What both reading sessions (the fleet's and the requests') are made from.
struct SessionSetup<'a> {
    config: &'a CoordinatorConfig,
    topics: &'a Topics,
    connected: &'a Arc<AtomicBool>,
}

impl SessionSetup<'_> {
    /// The fleet connection's session: agents' status and telemetry, coordinators' status.
    fn fleet(&self, client: &AsyncClient, inbound: mpsc::Sender<Input>) -> Session {
        let topics = self.topics;
        let filters = vec![
            topics.status_filter(),
            topics.telemetry_filter(),
            topics.coordinator_status_filter(),
        ];
        self.session(client, filters, None, inbound)
    }

    /// The request connection's session, which carries the coordinator's status: the
    /// requests, through `$share/<group>/` when the coordinator is one of a shared group.
    fn requests(
        &self,
        client: &AsyncClient,
        announcement: &Announcement,
        inbound: mpsc::Sender<Input>,
    ) -> Session {
        let filter = match &self.config.shared_group {
            Some(group) => format!("$share/{group}/{}", self.topics.requests_filter()),
            None => self.topics.requests_filter(),
        };
        let status = (announcement.topic.clone(), encode(&announcement.status));
        self.session(client, vec![filter], Some(status), inbound)
    }

    fn session(
        &self,
        client: &AsyncClient,
        filters: Vec<String>,
        status: Option<(String, Vec<u8>)>,
        inbound: mpsc::Sender<Input>,
    ) -> Session {
        Session {
            client: client.clone(),
            topics: self.topics.clone(),
            filters,
            status,
            inbound,
            url: self.config.broker.url.clone(),
            connected: self.connected.clone(),
            max_payload_bytes: self.config.max_payload_bytes,
        }
    }
}

/// The coordinator's three broker connections and their event loops.
struct Connections {
    client: AsyncClient,
    eventloop: EventLoop,
    out: AsyncClient,
    out_loop: EventLoop,
    fleet: AsyncClient,
    fleet_loop: EventLoop,
}

impl Connections {
    /// Opens the request connection (with `will`), the publishing one and the fleet one.
    fn open(config: &CoordinatorConfig, will: LastWill) -> anyhow::Result<Self> {
        let (client, eventloop) = config.broker.connect(&config.id, Some(will))?;
        // Assignments, decisions and refusals leave on a second connection. rumqttc reads and
        // writes a connection in one loop: on a single connection, a core waiting for room in
        // the full publish queue while the session waits for the core to take the next message
        // would stall both for good (`slim bench --saturate` hit it). The session's connection
        // only reads (and carries the status and last will), so a busy core slows the broker's
        // deliveries to it instead.
        let (out, out_loop) = config.broker.connect(&format!("{}-out", config.id), None)?;
        // Agents' status and telemetry arrive on a third connection, and the core takes them
        // before requests: behind a flood of requests in one queue, telemetry waited longer
        // than the liveness timeout and busy agents were taken offline (`slim bench
        // --saturate`, 500 agents).
        let (fleet, fleet_loop) = config
            .broker
            .connect(&format!("{}-fleet", config.id), None)?;
        Ok(Self {
            client,
            eventloop,
            out,
            out_loop,
            fleet,
            fleet_loop,
        })
    }
}

/// Starts the monitoring HTTP server on `listen`: the sender its snapshots go to, its address
/// and its task.
async fn serve_http(
    listen: &str,
    connected: Arc<AtomicBool>,
) -> anyhow::Result<(watch::Sender<Arc<Snapshot>>, SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {listen}: {e}"))?;
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let (addr, server) = crate::http::serve(listener, HttpState::new(rx, connected))?;
    tracing::info!(%addr, "monitoring at http://{addr}/ (metrics at /metrics)");
    Ok((tx, addr, server))
}

/// Where the core task's inputs come from.
struct Channels {
    /// Agents' status and telemetry (and that connection's state changes).
    fleet: mpsc::Receiver<Input>,
    /// Requests (and that connection's state changes).
    requests: mpsc::Receiver<Input>,
    control: mpsc::Receiver<Control>,
}

/// What feeds [`Channels`]: the sessions (requests, fleet) and the handle (control).
struct Senders {
    requests: mpsc::Sender<Input>,
    fleet: mpsc::Sender<Input>,
    control: mpsc::Sender<Control>,
}

impl Channels {
    fn new() -> (Self, Senders) {
        let (requests_tx, requests) = mpsc::channel(INBOUND_CAPACITY);
        let (fleet_tx, fleet) = mpsc::channel(INBOUND_CAPACITY);
        let (control_tx, control) = mpsc::channel(8);
        let senders = Senders {
            requests: requests_tx,
            fleet: fleet_tx,
            control: control_tx,
        };
        let channels = Self {
            fleet,
            requests,
            control,
        };
        (channels, senders)
    }
}

/// Publishes the core's effects on the publishing connection.
struct Publisher {
    client: AsyncClient,
    outbox: Outbox,
    /// Publishes fail only once the connection is closed (at shutdown, while the core still
    /// drains what was queued): one line each would be one per request.
    failures: slim_mqtt::LogBudget,
}

impl Publisher {
    async fn perform(&mut self, effect: Effect) {
        let (topic, qos, payload) = self.outbox.publication(effect);
        if let Err(e) = self.client.publish_bytes(topic, qos, false, payload).await {
            if self
                .failures
                .allow(std::time::Instant::now(), "failed publishes")
            {
                tracing::error!(error = %e, "publish failed: MQTT client closed");
            }
        }
    }
}

/// Where and how each effect is published. Public for the allocation benchmark
/// (`benches/route_allocs.rs`), which performs effects as the service does, without a broker.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Outbox {
    /// `{prefix}/decisions`.
    decisions: String,
    /// An assign topic's text before and after the agent's id, as [`Topics::assign`] lays it out.
    assign: (String, String),
}

impl Outbox {
    /// The outbox of a deployment's `topics`.
    pub fn new(topics: &Topics) -> Self {
        let marked = topics.assign("\0");
        let (head, tail) = marked
            .rsplit_once('\0')
            .expect("the agent's id is in its topic");
        Self {
            decisions: topics.decisions(),
            assign: (head.to_string(), tail.to_string()),
        }
    }

    /// The topic, QoS and payload `effect` is published with; the topic is built with one
    /// allocation.
    pub fn publication(&self, effect: Effect) -> (String, QoS, Bytes) {
        match effect {
            Effect::Assign { agent, payload } => {
                (self.assign_topic(&agent), QoS::AtLeastOnce, payload)
            }
            Effect::Decision { payload } => {
                (self.decisions.clone(), QoS::AtMostOnce, payload.into())
            }
            Effect::Reply { to, reply } => (to, QoS::AtLeastOnce, encode(&reply).into()),
        }
    }

    fn assign_topic(&self, agent: &str) -> String {
        let (head, tail) = &self.assign;
        let mut topic = String::with_capacity(head.len() + agent.len() + tail.len());
        topic.push_str(head);
        topic.push_str(agent);
        topic.push_str(tail);
        topic
    }
}

/// The core task: feeds the core the fleet's messages first, then the tick, then requests
/// (however many requests wait, agents' telemetry and status are never queued behind them),
/// publishes what it returns, and hands the HTTP side a snapshot every tick (200 ms).
async fn core_loop(
    mut core: Core,
    mut channels: Channels,
    mut publisher: Publisher,
    snapshot: Option<watch::Sender<Arc<Snapshot>>>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut effects = Vec::new();
    loop {
        let input = tokio::select! {
            biased;
            control = channels.control.recv() => {
                match control {
                    Some(Control::Counters(reply)) => {
                        let _ = reply.send(core.counters().clone());
                    }
                    Some(Control::FlushDecisions(reply)) => {
                        core.flush_decisions(&mut effects);
                        for effect in effects.drain(..) {
                            publisher.perform(effect).await;
                        }
                        let _ = reply.send(());
                    }
                    None => {}
                }
                continue;
            }
            input = channels.fleet.recv() => input,
            _ = tick.tick() => Some(Input::Tick),
            input = channels.requests.recv() => input,
        };
        let Some(input) = input else { return };
        let was_tick = matches!(input, Input::Tick);
        core.handle(input, &mut effects);
        for effect in effects.drain(..) {
            publisher.perform(effect).await;
        }
        if let (true, Some(tx)) = (was_tick, &snapshot) {
            tx.send_replace(Arc::new(core.snapshot()));
        }
    }
}

/// Drives the publishing connection: sends what the core publishes and reads the broker's
/// acknowledgements; it subscribes to nothing, so nothing else arrives.
async fn publisher_loop(mut eventloop: EventLoop, url: String) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(broker = %url, error = %e, "MQTT publishing connection error; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What the MQTT session task needs.
struct Session {
    client: AsyncClient,
    topics: Topics,
    /// What this connection subscribes to (requests: plain, or `$share/...` in a shared group).
    filters: Vec<String>,
    /// The coordinator's retained status (topic, payload), published on (re)connect by the
    /// session that carries the last will.
    status: Option<(String, Vec<u8>)>,
    inbound: mpsc::Sender<Input>,
    url: String,
    connected: Arc<AtomicBool>,
    max_payload_bytes: usize,
}

async fn session_loop(mut eventloop: EventLoop, session: Session) {
    let Session {
        client,
        topics,
        filters,
        status,
        inbound,
        url,
        connected,
        max_payload_bytes,
    } = session;
    let mut connects = 0u64;
    let mut up = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected.store(true, Ordering::Relaxed);
                up = true;
                connects += 1;
                tracing::info!(broker = %url, "coordinator connected");
                let reconnect = connects > 1;
                if inbound.send(Input::Connected { reconnect }).await.is_err() {
                    return;
                }
                let client = client.clone();
                let status = status.clone();
                let filters = filters.clone();
                tokio::spawn(async move {
                    for filter in filters {
                        let _ = client.subscribe(filter, QoS::AtLeastOnce).await;
                    }
                    if let Some((topic, status)) = status {
                        let _ = client.publish(topic, QoS::AtLeastOnce, true, status).await;
                    }
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = p.topic;
                let message = if p.payload.len() > max_payload_bytes {
                    let refusal =
                        too_large(&p.payload, p.payload.len(), max_payload_bytes, &topics);
                    Input::Oversize { topic, refusal }
                } else {
                    Input::Message {
                        topic,
                        payload: p.payload,
                    }
                };
                if inbound.send(message).await.is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                connected.store(false, Ordering::Relaxed);
                if std::mem::take(&mut up) && inbound.send(Input::Disconnected).await.is_err() {
                    return;
                }
                tracing::warn!(error = %e, "MQTT connection error; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use slim_protocol::{decode, Decision, Decisions};

    use super::*;

    #[test]
    fn the_outbox_publishes_on_the_topics_the_protocol_names() {
        for prefix in ["slim/v1", "site/a/b", "x"] {
            let topics = Topics::new(prefix);
            let outbox = Outbox::new(&topics);
            for agent in ["a1", "agent-0001", "ünï"] {
                let effect = Effect::Assign {
                    agent: agent.into(),
                    payload: vec![1].into(),
                };
                let (topic, qos, payload) = outbox.publication(effect);
                assert_eq!(
                    (topic, qos, payload),
                    (topics.assign(agent), QoS::AtLeastOnce, vec![1].into())
                );
            }
            let decision = Decision {
                v: PROTOCOL_VERSION,
                request_id: "r1".into(),
                model: "digits".into(),
                agent: "a1".into(),
                width: 0.5,
                batch_size: 8,
                router: "random".into(),
                at_ms: 1,
                candidates: 2,
                agent_outstanding: 0,
                attempt: 0,
            };
            let payload = encode(&Decisions {
                v: PROTOCOL_VERSION,
                coordinator: "c1".into(),
                decisions: vec![decision],
            });
            let (topic, qos, sent) = outbox.publication(Effect::Decision {
                payload: payload.clone(),
            });
            assert_eq!((topic, qos), (topics.decisions(), QoS::AtMostOnce));
            assert_eq!(
                decode::<Decisions>(&sent).unwrap().decisions[0].request_id,
                "r1"
            );
        }
    }
}
