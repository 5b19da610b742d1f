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

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use slim_protocol::{
    decode, encode, now_ms, AgentInfo, AgentTopic, Assignment, CoordinatorStatus, Decision,
    ErrorCode, ErrorReply, InferRequest, RecentIds, Telemetry, Topics, PROTOCOL_VERSION,
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
    state::{ClusterState, Pending},
    validate::{validate_request, Refusal},
};

/// A started coordinator.
#[derive(Debug)]
pub struct CoordinatorHandle {
    counters: Arc<Mutex<Counters>>,
    client: AsyncClient,
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
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        for t in &self.tasks {
            t.abort();
        }
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
    let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
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
    let session = tokio::spawn(session_loop(
        eventloop,
        Session {
            client: client.clone(),
            topics: topics.clone(),
            requests_filter,
            status: encode(&status),
            inbound: inbound_tx,
            url: config.broker.url.clone(),
            connected: connected.clone(),
        },
    ));
    let router_name = &status.router;
    let core = Core {
        config: config.clone(),
        topics: topics.clone(),
        client: client.clone(),
        routing,
        cluster: ClusterState::default(),
        recent: RecentIds::new(100_000),
        parked: VecDeque::new(),
        counters: counters.clone(),
        monitor: Monitor::new(&config.id, router_name, status.started_at_ms),
        snapshot,
        connected,
        was_connected: false,
    };
    let core_task = tokio::spawn(core.run(inbound_rx));
    tasks.extend([session, core_task]);
    tracing::info!(router = %status.router, broker = %config.broker.url, "coordinator started");
    Ok(CoordinatorHandle {
        counters,
        client,
        status_topic: topics.coordinator_status(),
        offline_status,
        http_addr,
        tasks,
    })
}

/// What the MQTT session task needs.
struct Session {
    client: AsyncClient,
    topics: Topics,
    /// The request subscription: plain, or `$share/...` in a shared group.
    requests_filter: String,
    status: Vec<u8>,
    inbound: mpsc::UnboundedSender<(String, Vec<u8>)>,
    url: String,
    connected: Arc<AtomicBool>,
}

async fn session_loop(mut eventloop: EventLoop, session: Session) {
    let Session {
        client,
        topics,
        requests_filter,
        status,
        inbound,
        url,
        connected,
    } = session;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected.store(true, Ordering::Relaxed);
                tracing::info!(broker = %url, "coordinator connected");
                let client = client.clone();
                let topics = topics.clone();
                let status = status.clone();
                let requests_filter = requests_filter.clone();
                tokio::spawn(async move {
                    for filter in [
                        topics.status_filter(),
                        topics.telemetry_filter(),
                        requests_filter,
                    ] {
                        let _ = client.subscribe(filter, QoS::AtLeastOnce).await;
                    }
                    let _ = client
                        .publish(topics.coordinator_status(), QoS::AtLeastOnce, true, status)
                        .await;
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if inbound.send((p.topic, p.payload.to_vec())).is_err() {
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
    request: InferRequest,
    attempt: u16,
    since: Instant,
}

struct Core {
    config: CoordinatorConfig,
    topics: Topics,
    client: AsyncClient,
    routing: Routing,
    cluster: ClusterState,
    recent: RecentIds,
    parked: VecDeque<Parked>,
    counters: Arc<Mutex<Counters>>,
    monitor: Monitor,
    /// Where snapshots go for the HTTP server, when it runs.
    snapshot: Option<watch::Sender<Arc<Snapshot>>>,
    connected: Arc<AtomicBool>,
    /// Whether the session was up at the previous tick.
    was_connected: bool,
}

impl Core {
    async fn run(mut self, mut inbound: mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                message = inbound.recv() => {
                    let Some((topic, payload)) = message else { return };
                    self.on_message(&topic, &payload).await;
                }
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    async fn on_message(&mut self, topic: &str, payload: &[u8]) {
        let now = Instant::now();
        if let Some(model) = self.topics.parse_request(topic) {
            self.counters.lock().unwrap().received += 1;
            match validate_request(
                payload,
                &model,
                self.config.max_payload_bytes,
                &self.cluster,
            ) {
                Ok(valid) => {
                    if !self
                        .recent
                        .insert(&RecentIds::key(&valid.reply_to, &valid.request.id))
                    {
                        self.counters.lock().unwrap().duplicates += 1;
                        tracing::debug!(id = %valid.request.id, "duplicate request ignored");
                        return;
                    }
                    self.place(valid.request, 0, now).await;
                }
                Err(refusal) => self.refuse(refusal, topic).await,
            }
            return;
        }
        match self.topics.parse_agent(topic) {
            Some(AgentTopic::Status(agent)) => match decode::<AgentInfo>(payload) {
                Ok(info) if info.agent == agent => {
                    let orphans = self.cluster.on_status(info, now);
                    self.counters.lock().unwrap().agents_online = self.cluster.online_count();
                    self.reroute(orphans, now).await;
                    self.unpark(now).await;
                }
                Ok(info) => {
                    tracing::warn!(topic, claimed = %info.agent, "status names another agent; ignored")
                }
                Err(e) => self.bad_agent_message(topic, &e.to_string()).await,
            },
            Some(AgentTopic::Telemetry(_)) => match decode::<Telemetry>(payload) {
                Ok(t) => {
                    self.monitor.on_telemetry(&t);
                    self.routing.on_telemetry(&t);
                    self.cluster.on_telemetry(t, now);
                    self.counters.lock().unwrap().agents_online = self.cluster.online_count();
                    self.unpark(now).await;
                }
                Err(e) => self.bad_agent_message(topic, &e.to_string()).await,
            },
            _ => {}
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let timeout = Duration::from_millis(self.config.telemetry_timeout_ms);
        // Silence while the coordinator itself is cut off from the broker is not the agents'.
        let connected = self.connected.load(Ordering::Relaxed);
        if connected && !self.was_connected {
            self.cluster.touch_all(now);
        }
        self.was_connected = connected;
        let orphans = if connected {
            self.cluster.expire(now, timeout)
        } else {
            Vec::new()
        };
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
            let refusal = Refusal {
                code: ErrorCode::NoCapacity,
                message: format!(
                    "no online agent could take model {:?} within {} ms",
                    p.request.model, self.config.park_timeout_ms
                ),
                id: Some(p.request.id.clone()),
                reply_to: p.request.reply_to.clone(),
            };
            let topic = self.topics.request(&p.request.model);
            self.refuse(refusal, &topic).await;
        }
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

    async fn bad_agent_message(&mut self, topic: &str, error: &str) {
        self.counters.lock().unwrap().refused(ErrorCode::Malformed);
        tracing::warn!(topic, error, "undecodable agent message ignored");
        let reply =
            ErrorReply::new(None, ErrorCode::Malformed, error, "coordinator").on_topic(topic);
        self.publish(self.topics.dead_letters(), encode(&reply), QoS::AtLeastOnce)
            .await;
    }

    async fn refuse(&mut self, refusal: Refusal, topic: &str) {
        self.counters.lock().unwrap().refused(refusal.code);
        tracing::warn!(code = %refusal.code, id = ?refusal.id, topic, "request refused: {}", refusal.message);
        let reply = ErrorReply::new(refusal.id, refusal.code, refusal.message, "coordinator")
            .on_topic(topic);
        let to = refusal
            .reply_to
            .unwrap_or_else(|| self.topics.dead_letters());
        self.publish(to, encode(&reply), QoS::AtLeastOnce).await;
    }

    async fn reroute(&mut self, orphans: Vec<Pending>, now: Instant) {
        for p in orphans {
            self.counters.lock().unwrap().rerouted += 1;
            tracing::info!(id = %p.request.id, attempt = p.attempt + 1, "re-routing a request from a lost agent");
            self.place(p.request, p.attempt + 1, now).await;
        }
    }

    async fn unpark(&mut self, now: Instant) {
        let waiting = std::mem::take(&mut self.parked);
        for p in waiting {
            if self
                .cluster
                .observation(&p.request.model)
                .0
                .devices
                .is_empty()
            {
                self.parked.push_back(p);
            } else {
                self.place(p.request, p.attempt, now).await;
            }
        }
    }

    async fn place(&mut self, request: InferRequest, attempt: u16, now: Instant) {
        if attempt > self.config.max_attempts {
            let refusal = Refusal {
                code: ErrorCode::NoCapacity,
                message: format!("gave up after {attempt} placements on agents that were lost"),
                id: Some(request.id.clone()),
                reply_to: request.reply_to.clone(),
            };
            let topic = self.topics.request(&request.model);
            self.refuse(refusal, &topic).await;
            return;
        }
        let (observation, ids) = self.cluster.observation(&request.model);
        if observation.devices.is_empty() {
            self.parked.push_back(Parked {
                request,
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
        let key = RecentIds::key(request.reply_to.as_deref().unwrap_or(""), &request.id);
        let Some(route) = self.routing.route(&observation, &constraints, &key, now) else {
            let refusal = Refusal {
                code: ErrorCode::NoCapacity,
                message: format!(
                    "router {} found no eligible (agent, width, batch) among {} online agents \
                     (the ppo router needs agents that publish a device profile)",
                    self.routing.name(),
                    observation.devices.len()
                ),
                id: Some(request.id.clone()),
                reply_to: request.reply_to.clone(),
            };
            let topic = self.topics.request(&request.model);
            self.refuse(refusal, &topic).await;
            return;
        };
        let agent = ids[route.device].clone();
        let decision = Decision {
            v: PROTOCOL_VERSION,
            request_id: request.id.clone(),
            model: request.model.clone(),
            agent: agent.clone(),
            width: route.width,
            batch_size: route.batch_size,
            router: self.routing.name().to_string(),
            at_ms: now_ms(),
            candidates: observation.devices.len() as u16,
            agent_outstanding: observation.devices[route.device].outstanding,
            attempt,
        };
        let assignment = Assignment {
            v: PROTOCOL_VERSION,
            request: request.clone(),
            width: route.width,
            batch_size: route.batch_size,
            max_queue_delay_ms: self.config.max_queue_delay_ms,
            router: decision.router.clone(),
            assigned_at_ms: decision.at_ms,
            attempt,
        };
        self.cluster
            .record_assignment(&agent, request, attempt, now);
        {
            let mut c = self.counters.lock().unwrap();
            c.routed += 1;
            *c.per_agent_width
                .entry((agent.clone(), (route.width * 1000.0).round() as u16))
                .or_default() += 1;
        }
        self.publish(
            self.topics.assign(&agent),
            encode(&assignment),
            QoS::AtLeastOnce,
        )
        .await;
        self.monitor.on_decision(&decision);
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
