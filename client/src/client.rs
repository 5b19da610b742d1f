//! A request client: publishes requests with a private reply topic and matches answers by id.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use slim_mqtt::BrokerOptions;
use slim_protocol::{decode, encode, ErrorReply, InferRequest, InferResult, Topics};
use tokio::sync::{mpsc, oneshot};

use crate::pushback::Pushback;

/// An answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The inference result.
    Result(InferResult),
    /// The reason it was refused or failed.
    Error(ErrorReply),
}

impl Reply {
    /// Decodes an answer payload. A result is tried first: it is the common answer, and an
    /// error reply fails as a result after its few fields (the other order walked every
    /// result twice, top-k labels included).
    pub fn decode(payload: &[u8]) -> Option<(String, Reply)> {
        if let Ok(r) = decode::<InferResult>(payload) {
            return Some((r.id.clone(), Reply::Result(r)));
        }
        decode::<ErrorReply>(payload)
            .ok()
            .map(|e| (e.id.clone().unwrap_or_default(), Reply::Error(e)))
    }
}

/// Requests waiting for an answer: by id, the sender of the answer and the request's model.
type Waiters = Arc<Mutex<HashMap<String, (oneshot::Sender<Reply>, String)>>>;

/// How long the client waits for an answer before publishing the request again, same id
/// (docs/protocol.md, "Retrying"): long enough that a busy system answers first, short enough
/// that a request lost in a broker restart is recovered within a few seconds.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Ids answered recently, to tell a duplicate answer from a stray one.
#[derive(Debug, Default)]
struct Answered {
    ids: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
    duplicates: u64,
}

impl Answered {
    const CAPACITY: usize = 100_000;

    fn record(&mut self, id: &str) {
        if self.ids.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
}
type Taps = Arc<Mutex<Vec<(String, mpsc::UnboundedSender<(String, Vec<u8>)>)>>>;

/// The client's connection task: subscribes on every (re)connect, signals each SUBACK, feeds
/// the taps and hands each answer to the request waiting for it.
struct Inbox {
    client: AsyncClient,
    filters: Vec<String>,
    reply_topic: String,
    waiters: Waiters,
    taps: Taps,
    answered: Arc<Mutex<Answered>>,
    pushback: Option<Arc<Mutex<Pushback>>>,
    subscribed: mpsc::UnboundedSender<()>,
}

impl Inbox {
    async fn run(self, mut eventloop: rumqttc::EventLoop) {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let client = self.client.clone();
                    let filters = self.filters.clone();
                    tokio::spawn(async move {
                        for f in filters {
                            let _ = client.subscribe(f, QoS::AtLeastOnce).await;
                        }
                    });
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = self.subscribed.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => self.on_publish(&p),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "client connection error; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn on_publish(&self, p: &rumqttc::Publish) {
        for (filter, tx) in self.taps.lock().unwrap().iter() {
            if rumqttc::matches(&p.topic, filter) {
                let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
            }
        }
        if p.topic != self.reply_topic {
            return;
        }
        let Some((id, reply)) = Reply::decode(&p.payload) else {
            return;
        };
        let waiter = self.waiters.lock().unwrap().remove(&id);
        let mut seen = self.answered.lock().unwrap();
        match waiter {
            Some((tx, model)) => {
                seen.record(&id);
                if let (Some(pushback), Reply::Error(e)) = (&self.pushback, &reply) {
                    pushback.lock().unwrap().on_reply(&model, e, Instant::now());
                }
                let _ = tx.send(reply);
            }
            // At least once: a second answer is dropped, counted.
            None if seen.ids.contains(&id) => seen.duplicates += 1,
            None => {}
        }
    }
}

/// A connected client.
#[derive(Clone)]
pub struct SlimClient {
    client: AsyncClient,
    topics: Topics,
    reply_topic: String,
    waiters: Waiters,
    taps: Taps,
    answered: Arc<Mutex<Answered>>,
    retry_after: Option<Duration>,
    /// `None`: every request is sent, whatever the coordinator asked.
    pushback: Option<Arc<Mutex<Pushback>>>,
    held_locally: Arc<std::sync::atomic::AtomicU64>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for SlimClient {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl SlimClient {
    /// Connects as `client_id` and subscribes to its reply topic (and `extra` topic filters).
    /// It holds a model's requests when the coordinator asks ([`crate::pushback`]).
    pub async fn connect(
        broker: &BrokerOptions,
        prefix: &str,
        client_id: &str,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let topics = Topics::new(prefix);
        let reply_topic = topics.client_replies(client_id);
        let (client, eventloop) = broker.connect(client_id, None)?;
        // `subscribed` is kept here too: a task that ends makes the wait below time out, not pass.
        let (subscribed, mut subacks) = mpsc::unbounded_channel::<()>();
        let mut filters = vec![reply_topic.clone()];
        filters.extend(extra.iter().cloned());
        let inbox = Inbox {
            client: client.clone(),
            filters,
            reply_topic: reply_topic.clone(),
            waiters: Waiters::default(),
            taps: Taps::default(),
            answered: Arc::default(),
            pushback: Some(Arc::default()),
            subscribed: subscribed.clone(),
        };
        let (waiters, taps, answered, pushback) = (
            inbox.waiters.clone(),
            inbox.taps.clone(),
            inbox.answered.clone(),
            inbox.pushback.clone(),
        );
        let task = tokio::spawn(inbox.run(eventloop));
        let expected = 1 + extra.len();
        for _ in 0..expected {
            tokio::time::timeout(Duration::from_secs(10), subacks.recv())
                .await
                .with_context(|| format!("no answer from the broker at {}", broker.url))?;
        }
        Ok(Self {
            client,
            topics,
            reply_topic,
            waiters,
            taps,
            answered,
            retry_after: Some(DEFAULT_RETRY_AFTER),
            pushback,
            held_locally: Arc::default(),
            task: Arc::new(task),
        })
    }

    /// Sets how long to wait for an answer before publishing a request again with the same
    /// id; `None` sends each request once.
    pub fn with_retry(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// With `false`, sends every request whatever the coordinator asked (to measure a flood
    /// as it arrives); by default a model's requests are held when the coordinator asks.
    pub fn with_pushback(mut self, pushback: bool) -> Self {
        if !pushback {
            self.pushback = None;
        }
        self
    }

    /// Answers dropped because their request was already answered (at-least-once delivery,
    /// retries), since connect.
    pub fn duplicate_answers(&self) -> u64 {
        self.answered.lock().unwrap().duplicates
    }

    /// Requests answered `overloaded` by this client without being sent, because the
    /// coordinator had asked it to hold their model ([`crate::pushback`]), since connect.
    pub fn held_locally(&self) -> u64 {
        self.held_locally.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The topic answers come back on.
    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }

    /// The deployment's topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Receives every message on topics matching `filter` (the filter must be among those
    /// subscribed at connect, or the reply topic).
    pub fn tap(&self, filter: &str) -> mpsc::UnboundedReceiver<(String, Vec<u8>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.taps.lock().unwrap().push((filter.to_string(), tx));
        rx
    }

    /// Sends `request` once (its `reply_to` is set to this client's) and returns the pending
    /// answer.
    pub async fn send(&self, request: InferRequest) -> anyhow::Result<oneshot::Receiver<Reply>> {
        self.send_until(request, None).await
    }

    /// Sends `request` and, while it has no answer and `until` has not passed, publishes it
    /// again with the same id every retry period. The system answers a repeat from what it
    /// already knows (docs/protocol.md, "Retrying"), so a request or answer lost in a broker
    /// restart is recovered, and duplicates are dropped here.
    pub async fn send_until(
        &self,
        mut request: InferRequest,
        until: Option<Instant>,
    ) -> anyhow::Result<oneshot::Receiver<Reply>> {
        request.reply_to = Some(self.reply_topic.clone());
        let (tx, rx) = oneshot::channel();
        let id = request.id.clone();
        let held = self
            .pushback
            .as_ref()
            .and_then(|p| p.lock().unwrap().held(&request.model, Instant::now()));
        if let Some(left) = held {
            self.held_locally
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = tx.send(Reply::Error(Pushback::refusal(&id, &request.model, left)));
            return Ok(rx);
        }
        self.waiters
            .lock()
            .unwrap()
            .insert(id.clone(), (tx, request.model.clone()));
        let topic = self.topics.request(&request.model);
        let payload = encode(&request);
        self.client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await?;
        if let (Some(every), Some(until)) = (self.retry_after, until) {
            let (client, waiters) = (self.client.clone(), self.waiters.clone());
            tokio::spawn(async move {
                loop {
                    let next = Instant::now() + every;
                    if next >= until {
                        return;
                    }
                    tokio::time::sleep_until(next.into()).await;
                    if !waiters.lock().unwrap().contains_key(&id) {
                        return;
                    }
                    tracing::debug!(%id, "no answer yet: request published again");
                    let _ = client
                        .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                        .await;
                }
            });
        }
        Ok(rx)
    }

    /// Sends `request` (retrying as [`SlimClient::send_until`]) and waits up to `timeout` for
    /// its answer.
    pub async fn request(&self, request: InferRequest, timeout: Duration) -> anyhow::Result<Reply> {
        let id = request.id.clone();
        let rx = self
            .send_until(request, Some(Instant::now() + timeout))
            .await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            _ => {
                self.waiters.lock().unwrap().remove(&id);
                anyhow::bail!("no answer to request {id} within {timeout:?}")
            }
        }
    }

    /// Registers interest in an answer for `id` without sending anything (for hand-built payloads).
    pub fn expect(&self, id: &str) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        // No model known: an answer to it holds nothing.
        self.waiters
            .lock()
            .unwrap()
            .insert(id.to_string(), (tx, String::new()));
        rx
    }

    /// Publishes raw bytes, e.g. a hand-built or deliberately broken payload.
    pub async fn publish_raw(&self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
        Ok(())
    }

    /// Subscribes to `filter` again, so the broker re-sends its retained messages.
    pub async fn resubscribe(&self, filter: &str) -> anyhow::Result<()> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await?;
        Ok(())
    }

    /// Disconnects.
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use slim_protocol::{ClassScore, EnergySource, ErrorCode, Timings};

    use super::*;

    #[test]
    fn answers_decode_as_what_they_are() {
        let result = InferResult {
            v: 1,
            id: "r1".into(),
            model: "digits".into(),
            agent: "agent-1".into(),
            width: 0.5,
            batch_size: 2,
            top_k: vec![ClassScore {
                class: 7,
                label: "7".into(),
                score: 0.9,
            }],
            accuracy: 0.95,
            timings: Timings::default(),
            energy_j: 0.001,
            energy_source: EnergySource::Model,
            router: "greedy".into(),
            emulated: false,
        };
        let Some((id, Reply::Result(decoded))) = Reply::decode(&encode(&result)) else {
            panic!("a result decodes as a result");
        };
        assert_eq!((id.as_str(), &decoded), ("r1", &result));

        let error = ErrorReply::new(
            Some("r2".into()),
            ErrorCode::Overloaded,
            "busy",
            "coordinator",
        );
        let Some((id, Reply::Error(decoded))) = Reply::decode(&encode(&error)) else {
            panic!("an error reply decodes as an error");
        };
        assert_eq!((id.as_str(), &decoded), ("r2", &error));

        let anonymous = ErrorReply::new(None, ErrorCode::BadValue, "unreadable", "coordinator");
        let Some((id, Reply::Error(_))) = Reply::decode(&encode(&anonymous)) else {
            panic!("an error without an id still decodes");
        };
        assert_eq!(id, "");

        assert!(Reply::decode(b"\x93not an answer").is_none());
    }
}
