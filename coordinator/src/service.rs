//! The running coordinator: one MQTT session feeding one task that owns the cluster state and
//! the router.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use slim_protocol::{
    decode, encode, limits, now_ms, AgentInfo, AgentTopic, Assignment, AssignmentKey,
    CoordinatorStatus, Decision, ErrorCode, ErrorReply, Refusal, Telemetry, Topics,
    PROTOCOL_VERSION,
};
use slim_router::RouteRequest;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{
    config::CoordinatorConfig,
    counters::Counters,
    http::{HttpState, Monitor, Snapshot},
    routing::Routing,
    state::{request_bytes, ClusterState, LedgerCleanup, Pending},
    validate::{check_against_model, decode_request, too_large, ValidRequest},
};

/// Messages queued from the MQTT session to the core; the session waits when it is full, so
/// the broker (not this process) holds the backlog.
const INBOUND_CAPACITY: usize = 1024;

/// What the MQTT session hands the core.
#[derive(Debug)]
enum Inbound {
    /// A publish within the size limit.
    Message { topic: String, payload: Bytes },
    /// A publish over the size limit: only its length and a peek at its address are kept.
    Oversize { topic: String, refusal: Refusal },
    /// The session (re)connected.
    Connected,
}

/// A started coordinator.
#[derive(Debug)]
pub struct CoordinatorHandle {
    counters: Arc<Mutex<Counters>>,
    /// The session's connection: subscriptions, status and last will.
    client: AsyncClient,
    /// The connection assignments, decisions and refusals leave on.
    out: AsyncClient,
    /// The connection agents' status and telemetry arrive on.
    fleet: AsyncClient,
    status_topic: String,
    offline_status: Vec<u8>,
    http_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl CoordinatorHandle {
    /// A copy of the counters.
    pub fn counters(&self) -> Counters {
        self.counters.lock().unwrap().clone()
    }

    /// Where the monitoring HTTP server listens, when it is enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Publishes the offline status, disconnects and stops.
    pub async fn shutdown(self) {
        let _ = self
            .client
            .publish(
                self.status_topic.clone(),
                QoS::AtLeastOnce,
                true,
                self.offline_status.clone(),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = self.out.disconnect().await;
        let _ = self.fleet.disconnect().await;
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
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

    /// Resolves when any of the coordinator's tasks ends (it never should while running), and
    /// says which and how.
    pub async fn failed(&mut self) -> String {
        slim_mqtt::daemon::first_exit(&mut self.tasks).await
    }

    /// Waits until the coordinator stops.
    pub async fn wait(mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

/// Connects to the broker and starts routing.
pub async fn start(config: CoordinatorConfig) -> anyhow::Result<CoordinatorHandle> {
    let routing = Routing::build(&config)?;
    let assignment_key = match &config.assignment_key_file {
        Some(path) => Some(AssignmentKey::from_file(path)?),
        None => None,
    };
    let topics = Topics::new(&config.topic_prefix);
    let status = CoordinatorStatus {
        v: PROTOCOL_VERSION,
        id: config.id.clone(),
        online: true,
        router: routing.name().to_string(),
        started_at_ms: now_ms(),
    };
    let offline_status = encode(&CoordinatorStatus {
        online: false,
        ..status.clone()
    });
    let will = LastWill::new(
        topics.coordinator_status(),
        offline_status.clone(),
        QoS::AtLeastOnce,
        true,
    );
    let (client, eventloop) = config.broker.connect(&config.id, Some(will))?;
    // Assignments, decisions and refusals leave on a second connection. rumqttc reads and
    // writes a connection in one loop: on a single connection, a core waiting for room in the
    // full publish queue while the session waits for the core to take the next message would
    // stall both for good (`slim bench --saturate` hit it). The session's connection only reads
    // (and carries the status and last will), so a busy core slows the broker's deliveries to it
    // instead.
    let (out, out_loop) = config.broker.connect(&format!("{}-out", config.id), None)?;
    // Agents' status and telemetry arrive on a third connection, and the core takes them before
    // requests: behind a flood of requests in one queue, telemetry waited longer than the
    // liveness timeout and busy agents were taken offline (`slim bench --saturate`, 500 agents).
    let (fleet_client, fleet_loop) = config
        .broker
        .connect(&format!("{}-fleet", config.id), None)?;
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
    let (fleet_tx, fleet_rx) = mpsc::channel(INBOUND_CAPACITY);
    let counters = Arc::new(Mutex::new(Counters::default()));
    let connected = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let (snapshot, http_addr) = match config.http_listen() {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {listen}: {e}"))?;
            let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
            let (addr, server) =
                crate::http::serve(listener, HttpState::new(rx, connected.clone()))?;
            tasks.push(server);
            tracing::info!(%addr, "monitoring at http://{addr}/ (metrics at /metrics)");
            (Some(tx), Some(addr))
        }
        None => (None, None),
    };
    let requests_filter = match &config.shared_group {
        Some(group) => format!("$share/{group}/{}", topics.requests_filter()),
        None => topics.requests_filter(),
    };
    let fleet_session = tokio::spawn(session_loop(
        fleet_loop,
        Session {
            client: fleet_client.clone(),
            topics: topics.clone(),
            filters: vec![topics.status_filter(), topics.telemetry_filter()],
            status: None,
            inbound: fleet_tx,
            url: config.broker.url.clone(),
            connected: connected.clone(),
            counters: counters.clone(),
            max_payload_bytes: config.max_payload_bytes,
        },
    ));
    let session = tokio::spawn(session_loop(
        eventloop,
        Session {
            client: client.clone(),
            topics: topics.clone(),
            filters: vec![requests_filter],
            status: Some(encode(&status)),
            inbound: inbound_tx,
            url: config.broker.url.clone(),
            connected: connected.clone(),
            counters: counters.clone(),
            max_payload_bytes: config.max_payload_bytes,
        },
    ));
    let router_name = &status.router;
    let publisher = tokio::spawn(publisher_loop(out_loop, config.broker.url.clone()));
    let core = Core {
        config: config.clone(),
        topics: topics.clone(),
        client: out.clone(),
        routing,
        cluster: ClusterState::default(),
        parked: VecDeque::new(),
        assignment_key,
        held: (0, 0),
        connected_since: None,
        counters: counters.clone(),
        monitor: Monitor::new(&config.id, router_name, status.started_at_ms),
        snapshot,
        connected,
    };
    let core_task = tokio::spawn(core.run(fleet_rx, inbound_rx));
    tasks.extend([session, fleet_session, publisher, core_task]);
    tracing::info!(router = %status.router, broker = %config.broker.url, "coordinator started");
    Ok(CoordinatorHandle {
        counters,
        client,
        out,
        fleet: fleet_client,
        status_topic: topics.coordinator_status(),
        offline_status,
        http_addr,
        tasks,
    })
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
    /// The coordinator's retained status, published on (re)connect by the session that carries
    /// the last will.
    status: Option<Vec<u8>>,
    inbound: mpsc::Sender<Inbound>,
    url: String,
    connected: Arc<AtomicBool>,
    counters: Arc<Mutex<Counters>>,
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
        counters,
        max_payload_bytes,
    } = session;
    let mut connects = 0u64;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected.store(true, Ordering::Relaxed);
                connects += 1;
                if connects > 1 {
                    counters.lock().unwrap().reconnects += 1;
                }
                tracing::info!(broker = %url, "coordinator connected");
                if inbound.send(Inbound::Connected).await.is_err() {
                    return;
                }
                let client = client.clone();
                let topics = topics.clone();
                let status = status.clone();
                let filters = filters.clone();
                tokio::spawn(async move {
                    for filter in filters {
                        let _ = client.subscribe(filter, QoS::AtLeastOnce).await;
                    }
                    if let Some(status) = status {
                        let _ = client
                            .publish(topics.coordinator_status(), QoS::AtLeastOnce, true, status)
                            .await;
                    }
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = p.topic;
                let message = if p.payload.len() > max_payload_bytes {
                    let refusal =
                        too_large(&p.payload, p.payload.len(), max_payload_bytes, &topics);
                    Inbound::Oversize { topic, refusal }
                } else {
                    Inbound::Message {
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
                tracing::warn!(error = %e, "MQTT connection error; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

struct Parked {
    valid: ValidRequest,
    attempt: u16,
    since: Instant,
}

struct Core {
    config: CoordinatorConfig,
    topics: Topics,
    client: AsyncClient,
    routing: Routing,
    cluster: ClusterState,
    parked: VecDeque<Parked>,
    /// Signs assignments, when the deployment has a key.
    assignment_key: Option<AssignmentKey>,
    /// Requests held (ledger + parked) and their bytes, recounted every tick and raised by
    /// each request accepted in between.
    held: (usize, usize),
    /// When the session last connected; requests for models nobody has announced yet are parked
    /// for `fleet_warmup_ms` after it, while the fleet's retained status arrives.
    connected_since: Option<Instant>,
    counters: Arc<Mutex<Counters>>,
    monitor: Monitor,
    /// Where snapshots go for the HTTP server, when it runs.
    snapshot: Option<watch::Sender<Arc<Snapshot>>>,
    connected: Arc<AtomicBool>,
}

impl Core {
    /// Handles the fleet's messages first, then the tick, then requests: however many requests
    /// wait, agents' telemetry and status are never queued behind them.
    async fn run(
        mut self,
        mut fleet: mpsc::Receiver<Inbound>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                biased;
                message = fleet.recv() => {
                    let Some(message) = message else { return };
                    self.on_inbound(message).await;
                }
                _ = tick.tick() => self.on_tick().await,
                message = inbound.recv() => {
                    let Some(message) = message else { return };
                    self.on_inbound(message).await;
                }
            }
        }
    }

    async fn on_inbound(&mut self, message: Inbound) {
        let now = Instant::now();
        match message {
            Inbound::Message { topic, payload } => self.on_message(&topic, &payload, now).await,
            Inbound::Oversize { topic, refusal } => {
                if self.topics.is_request(&topic) {
                    self.counters.lock().unwrap().received += 1;
                }
                self.refuse(refusal, &topic).await
            }
            Inbound::Connected => {
                self.connected_since = Some(now);
                // Silence while the coordinator itself was cut off is not the agents'.
                self.cluster.touch_all(now);
            }
        }
    }

    async fn on_message(&mut self, topic: &str, payload: &[u8], now: Instant) {
        if self.topics.is_request(topic) {
            self.counters.lock().unwrap().received += 1;
            self.on_request(topic, payload, now).await;
            return;
        }
        match self.topics.parse_agent(topic) {
            Some(AgentTopic::Status(agent)) => match decode::<AgentInfo>(payload) {
                Ok(info) => self.on_status(topic, &agent, info, now).await,
                Err(e) => self.bad_agent_message(topic, &e.to_string()).await,
            },
            Some(AgentTopic::Telemetry(agent)) => match decode::<Telemetry>(payload) {
                Ok(t) => self.on_telemetry(topic, &agent, t, now).await,
                Err(e) => self.bad_agent_message(topic, &e.to_string()).await,
            },
            _ => {}
        }
    }

    async fn on_request(&mut self, topic: &str, payload: &[u8], now: Instant) {
        let model = self.topics.parse_request(topic).unwrap_or_default();
        let valid =
            match decode_request(payload, &model, self.config.max_payload_bytes, &self.topics) {
                Ok(valid) => valid,
                Err(refusal) => return self.refuse(refusal, topic).await,
            };
        if self.on_repeat(&valid, now).await {
            return;
        }
        let sent_at = valid.request.sent_at_ms;
        self.monitor
            .on_arrival(&valid.key, &valid.request.model, sent_at, now, now_ms());
        if let Some(refusal) = self.over_bound(&valid) {
            return self.refuse(refusal, topic).await;
        }
        match self.check_model(&valid) {
            Some(Ok(())) => {}
            Some(Err(refusal)) => return self.refuse(refusal, topic).await,
            None if self.warming_up(now) => {
                tracing::debug!(id = %valid.key.id, model = %valid.request.model, "model not announced yet: parked while the fleet's status arrives");
                return self.park(valid, 0, now);
            }
            None => {
                let refusal = unknown_model(&valid);
                return self.refuse(refusal, topic).await;
            }
        }
        self.held.0 += 1;
        self.held.1 += request_bytes(&valid.request);
        self.place(valid, 0, now).await;
    }

    /// Handles a request whose key this coordinator already holds or answered; false when the
    /// key is new to it. A repeat soon after the assignment is an MQTT redelivery and is
    /// ignored; a later one is a client's retry after a lost message, and the assignment goes
    /// to the same agent again (it ignores what it is still running and replays a cached
    /// answer). A request that was refused, or answered longer ago than the answer window, is
    /// routed again.
    async fn on_repeat(&mut self, valid: &ValidRequest, now: Instant) -> bool {
        let resend_after = Duration::from_millis(self.config.resend_after_ms);
        let target = if let Some((agent, p)) = self.cluster.holder(&valid.key) {
            if now.saturating_duration_since(p.assigned_at) < resend_after {
                None
            } else {
                Some((agent.to_string(), p.width, p.batch_size, p.attempt))
            }
        } else if let Some(by) = self.cluster.answered_by(&valid.key, now) {
            match by.width {
                Some(width) => Some((by.agent.to_string(), width, self.config.batch_size, 0)),
                // Answered before this coordinator started: route it like a new request.
                None => return false,
            }
        } else if self.parked.iter().any(|p| p.valid.key == valid.key) {
            None
        } else {
            return false;
        };
        let Some((agent, width, batch_size, attempt)) = target else {
            self.counters.lock().unwrap().duplicates += 1;
            tracing::debug!(id = %valid.key.id, "duplicate request ignored");
            return true;
        };
        self.counters.lock().unwrap().resent += 1;
        tracing::info!(id = %valid.key.id, %agent, "a retried request is sent again to the agent that holds or answered it");
        let assignment = self.assignment(valid.request.clone(), &agent, width, batch_size, attempt);
        self.cluster.record_assignment(
            &agent,
            valid.request.clone(),
            attempt,
            (width, batch_size),
            now,
        );
        self.publish(
            self.topics.assign(&agent),
            encode(&assignment),
            QoS::AtLeastOnce,
        )
        .await;
        true
    }

    /// Checks `valid` against its model as the agents announce it: it passes if any agent's
    /// announcement (online agents first) accepts it, so a width or shape that only some agents
    /// serve yet is routable; otherwise the refusal from the first. `None` when no known agent
    /// announces the model.
    fn check_model(&self, valid: &ValidRequest) -> Option<Result<(), Refusal>> {
        let mut first = None;
        for model in self.cluster.models(&valid.request.model) {
            match check_against_model(valid, model) {
                Ok(()) => return Some(Ok(())),
                Err(refusal) => {
                    first.get_or_insert(refusal);
                }
            }
        }
        first.map(Err)
    }

    /// The (signed, when there is a key) assignment of `request` to `agent`.
    fn assignment(
        &self,
        request: slim_protocol::InferRequest,
        agent: &str,
        width: f32,
        batch_size: u16,
        attempt: u16,
    ) -> Assignment {
        let mut assignment = Assignment {
            v: PROTOCOL_VERSION,
            request,
            width,
            batch_size,
            max_queue_delay_ms: self.config.max_queue_delay_ms,
            router: self.routing.name().to_string(),
            assigned_at_ms: now_ms(),
            attempt,
            mac: None,
        };
        if let Some(key) = &self.assignment_key {
            key.sign(agent, &mut assignment);
        }
        assignment
    }

    /// An `overloaded` refusal when holding `valid` would pass a configured bound.
    fn over_bound(&self, valid: &ValidRequest) -> Option<Refusal> {
        let (count, bytes) = self.held;
        let max_bytes = self.config.max_held_mb as usize * 1024 * 1024;
        let why = if count >= self.config.max_held_requests {
            format!("the coordinator holds {count} unanswered requests, its limit")
        } else if bytes + request_bytes(&valid.request) > max_bytes {
            format!(
                "the coordinator holds {} MiB of unanswered requests, its limit is {} MiB",
                bytes / (1024 * 1024),
                self.config.max_held_mb
            )
        } else {
            return None;
        };
        let mut refusal = Refusal::new(ErrorCode::Overloaded, format!("{why}; retry later"));
        refusal.id = Some(valid.key.id.clone());
        refusal.reply_to = Some(valid.key.reply_to.clone());
        Some(refusal)
    }

    fn warming_up(&self, now: Instant) -> bool {
        let warmup = Duration::from_millis(self.config.fleet_warmup_ms);
        self.connected_since
            .is_none_or(|since| now.saturating_duration_since(since) < warmup)
    }

    async fn on_status(&mut self, topic: &str, agent: &str, info: AgentInfo, now: Instant) {
        if info.agent != agent {
            return self
                .bad_agent_message(
                    topic,
                    &format!("status names agent {:?}", limits::shorten(&info.agent)),
                )
                .await;
        }
        if let Err(e) = info.check() {
            return self.bad_agent_message(topic, &e.to_string()).await;
        }
        if !self.cluster.knows(agent) && self.cluster.len() >= self.config.max_agents {
            let message = format!(
                "the coordinator already tracks {} agents (max_agents)",
                self.config.max_agents
            );
            return self.bad_agent_message(topic, &message).await;
        }
        let orphans = self.cluster.on_status(info, now);
        self.counters.lock().unwrap().agents_online = self.cluster.online_count();
        self.reroute(orphans, now).await;
        self.unpark(now).await;
    }

    async fn on_telemetry(&mut self, topic: &str, agent: &str, t: Telemetry, now: Instant) {
        if t.agent != agent {
            let message = format!("telemetry names agent {:?}", limits::shorten(&t.agent));
            return self.bad_agent_message(topic, &message).await;
        }
        if !self.cluster.knows(agent) {
            // Telemetry before status (or from an agent never announced) carries nothing to use.
            return;
        }
        if let Err(e) = t.check() {
            return self.bad_agent_message(topic, &e.to_string()).await;
        }
        self.monitor.on_telemetry(&t, now, now_ms());
        self.routing.on_telemetry(&t);
        let cleanup = self.cluster.on_telemetry(t, now);
        self.count_cleanup(cleanup);
        self.counters.lock().unwrap().agents_online = self.cluster.online_count();
        self.unpark(now).await;
    }

    fn count_cleanup(&self, cleanup: LedgerCleanup) {
        if cleanup == LedgerCleanup::default() {
            return;
        }
        tracing::info!(
            reconciled = cleanup.reconciled,
            expired = cleanup.expired,
            "ledger entries dropped: their agents do not hold them"
        );
        let mut c = self.counters.lock().unwrap();
        c.ledger_reconciled += cleanup.reconciled as u64;
        c.ledger_expired += cleanup.expired as u64;
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let timeout = Duration::from_millis(self.config.telemetry_timeout_ms);
        let connected = self.connected.load(Ordering::Relaxed);
        let orphans = if connected {
            self.cluster.expire(now, timeout)
        } else {
            Vec::new()
        };
        let ttl = Duration::from_millis(self.config.ledger_ttl_ms);
        let cleanup = self.cluster.expire_ledger(now, ttl);
        self.count_cleanup(cleanup);
        self.counters.lock().unwrap().agents_online = self.cluster.online_count();
        self.reroute(orphans, now).await;
        self.routing.tick(now);
        let limit = Duration::from_millis(self.config.park_timeout_ms);
        while self
            .parked
            .front()
            .is_some_and(|p| now.saturating_duration_since(p.since) > limit)
        {
            let p = self.parked.pop_front().expect("front exists");
            if p.attempt > 0 {
                // Re-routed from a lost agent: that agent may have answered it before it was
                // lost (its `done` report died with it), and a durable agent resumes it when it
                // comes back. An error now could follow a result, so the request is left to
                // the client's retry (docs/protocol.md, "Retrying") and counted.
                self.counters.lock().unwrap().reroutes_abandoned += 1;
                tracing::warn!(id = %p.valid.key.id, "a re-routed request found no agent within the park timeout: left to the client's retry");
                continue;
            }
            let refusal = if self.cluster.models(&p.valid.request.model).next().is_none() {
                unknown_model(&p.valid)
            } else {
                let mut r = Refusal::new(
                    ErrorCode::NoCapacity,
                    format!(
                        "no online agent could take model {:?} within {} ms",
                        p.valid.request.model, self.config.park_timeout_ms
                    ),
                );
                r.id = Some(p.valid.key.id.clone());
                r.reply_to = Some(p.valid.key.reply_to.clone());
                r
            };
            let topic = self.topics.request(&p.valid.request.model);
            self.refuse(refusal, &topic).await;
        }
        let (count, bytes) = self.cluster.held();
        let parked_bytes: usize = self
            .parked
            .iter()
            .map(|p| request_bytes(&p.valid.request))
            .sum();
        self.held = (count + self.parked.len(), bytes + parked_bytes);
        self.publish_snapshot(now);
    }

    /// Hands the HTTP side a fresh snapshot (every tick, 200 ms).
    fn publish_snapshot(&mut self, now: Instant) {
        let at_ms = now_ms();
        self.monitor.tick(at_ms);
        let Some(tx) = &self.snapshot else { return };
        let counters = self.counters.lock().unwrap().clone();
        let mut snapshot = self.monitor.snapshot(
            &self.cluster,
            &counters,
            self.connected.load(Ordering::Relaxed),
            now,
            at_ms,
        );
        snapshot.online = self.routing.online_view();
        tx.send_replace(Arc::new(snapshot));
    }

    /// A status or telemetry message that cannot be used: counted, logged and dead-lettered.
    async fn bad_agent_message(&mut self, topic: &str, error: &str) {
        self.counters.lock().unwrap().agent_messages_refused += 1;
        tracing::warn!(topic = %limits::shorten(topic), error, "agent message refused");
        let reply = ErrorReply::new(None, ErrorCode::Malformed, error, "coordinator")
            .on_topic(limits::shorten(topic));
        self.publish(self.topics.dead_letters(), encode(&reply), QoS::AtLeastOnce)
            .await;
    }

    /// Answers a refusal on its (validated) reply topic, or on `{prefix}/errors`.
    async fn refuse(&mut self, refusal: Refusal, topic: &str) {
        self.counters.lock().unwrap().refused(refusal.code);
        tracing::warn!(code = %refusal.code, id = %refusal.id.as_deref().unwrap_or("-"), topic = %limits::shorten(topic), "request refused: {}", refusal.message);
        let reply = ErrorReply::new(refusal.id, refusal.code, refusal.message, "coordinator")
            .on_topic(limits::shorten(topic));
        let to = refusal
            .reply_to
            .unwrap_or_else(|| self.topics.dead_letters());
        self.publish(to, encode(&reply), QoS::AtLeastOnce).await;
    }

    async fn reroute(&mut self, orphans: Vec<Pending>, now: Instant) {
        for p in orphans {
            self.counters.lock().unwrap().rerouted += 1;
            tracing::info!(id = %p.request.id, attempt = p.attempt + 1, "re-routing a request from a lost agent");
            let key = slim_protocol::RequestKey::new(
                p.request.reply_to.clone().unwrap_or_default(),
                p.request.id.clone(),
            );
            let valid = ValidRequest {
                request: p.request,
                key,
            };
            self.place(valid, p.attempt + 1, now).await;
        }
    }

    fn park(&mut self, valid: ValidRequest, attempt: u16, now: Instant) {
        self.held.0 += 1;
        self.held.1 += request_bytes(&valid.request);
        self.parked.push_back(Parked {
            valid,
            attempt,
            since: now,
        });
    }

    async fn unpark(&mut self, now: Instant) {
        if self.parked.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.parked);
        for p in waiting {
            let Some(checked) = self.check_model(&p.valid) else {
                self.parked.push_back(p);
                continue;
            };
            if let Err(refusal) = checked {
                let topic = self.topics.request(&p.valid.request.model);
                self.refuse(refusal, &topic).await;
                continue;
            }
            if self
                .cluster
                .observation(&p.valid.request.model)
                .0
                .devices
                .is_empty()
            {
                self.parked.push_back(p);
            } else {
                self.place(p.valid, p.attempt, now).await;
            }
        }
    }

    async fn place(&mut self, valid: ValidRequest, attempt: u16, now: Instant) {
        let request = &valid.request;
        if attempt > self.config.max_attempts {
            let mut refusal = Refusal::new(
                ErrorCode::NoCapacity,
                format!("gave up after {attempt} placements on agents that were lost"),
            );
            refusal.id = Some(valid.key.id.clone());
            refusal.reply_to = Some(valid.key.reply_to.clone());
            let topic = self.topics.request(&request.model);
            self.refuse(refusal, &topic).await;
            return;
        }
        let (observation, ids) = self.cluster.observation(&request.model);
        if observation.devices.is_empty() {
            self.parked.push_back(Parked {
                valid,
                attempt,
                since: now,
            });
            return;
        }
        let constraints = RouteRequest {
            model: request.model.clone(),
            width: request.width,
            min_accuracy: request.min_accuracy,
            deadline_ms: request.deadline_ms,
        };
        let candidates = observation.devices.len();
        let route = self
            .routing
            .route(observation, &constraints, &valid.key.wire(), now);
        let chosen = route.as_ref().map(|r| {
            (
                ids[r.device].clone(),
                observation.devices[r.device].outstanding,
            )
        });
        let (Some(route), Some((agent, agent_outstanding))) = (route, chosen) else {
            let mut refusal = Refusal::new(
                ErrorCode::NoCapacity,
                format!(
                    "router {} found no eligible (agent, width, batch) among {} online agents \
                     (the ppo router needs agents that publish a device profile)",
                    self.routing.name(),
                    candidates
                ),
            );
            refusal.id = Some(valid.key.id.clone());
            refusal.reply_to = Some(valid.key.reply_to.clone());
            let topic = self.topics.request(&request.model);
            self.refuse(refusal, &topic).await;
            return;
        };
        let decision = Decision {
            v: PROTOCOL_VERSION,
            request_id: request.id.clone(),
            model: request.model.clone(),
            agent: agent.clone(),
            width: route.width,
            batch_size: route.batch_size,
            router: self.routing.name().to_string(),
            at_ms: now_ms(),
            candidates: candidates as u16,
            agent_outstanding,
            attempt,
        };
        let assignment = self.assignment(
            valid.request,
            &agent,
            route.width,
            route.batch_size,
            attempt,
        );
        let payload = encode(&assignment);
        self.cluster.record_assignment(
            &agent,
            assignment.request,
            attempt,
            (route.width, route.batch_size),
            now,
        );
        {
            let mut c = self.counters.lock().unwrap();
            c.routed += 1;
            *c.per_agent_width
                .entry((agent.clone(), (route.width * 1000.0).round() as u16))
                .or_default() += 1;
        }
        self.publish(self.topics.assign(&agent), payload, QoS::AtLeastOnce)
            .await;
        self.monitor
            .on_decision(&decision, &valid.key, Instant::now());
        self.publish(self.topics.decisions(), encode(&decision), QoS::AtMostOnce)
            .await;
    }

    async fn publish(&mut self, topic: String, payload: Vec<u8>, qos: QoS) {
        if let Err(e) = self
            .client
            .publish(topic.clone(), qos, false, payload)
            .await
        {
            tracing::error!(topic, error = %e, "publish failed: MQTT client closed");
        }
    }
}

fn unknown_model(valid: &ValidRequest) -> Refusal {
    let mut refusal = Refusal::new(
        ErrorCode::UnknownModel,
        format!("no agent serves model {:?}", valid.request.model),
    );
    refusal.id = Some(valid.key.id.clone());
    refusal.reply_to = Some(valid.key.reply_to.clone());
    refusal
}
