//! A request client: publishes requests with a private reply topic and matches answers by id.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use slim_mqtt::BrokerOptions;
use slim_protocol::{decode, encode, ErrorReply, InferRequest, InferResult, Topics};
use tokio::sync::{mpsc, oneshot};

/// An answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The inference result.
    Result(InferResult),
    /// The reason it was refused or failed.
    Error(ErrorReply),
}

impl Reply {
    /// Decodes an answer payload.
    pub fn decode(payload: &[u8]) -> Option<(String, Reply)> {
        if let Ok(e) = decode::<ErrorReply>(payload) {
            return Some((e.id.clone().unwrap_or_default(), Reply::Error(e)));
        }
        decode::<InferResult>(payload)
            .ok()
            .map(|r| (r.id.clone(), Reply::Result(r)))
    }
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Reply>>>>;
type Taps = Arc<Mutex<Vec<(String, mpsc::UnboundedSender<(String, Vec<u8>)>)>>>;

/// A connected client.
#[derive(Clone)]
pub struct SlimClient {
    client: AsyncClient,
    topics: Topics,
    reply_topic: String,
    waiters: Waiters,
    taps: Taps,
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
    pub async fn connect(
        broker: &BrokerOptions,
        prefix: &str,
        client_id: &str,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let topics = Topics::new(prefix);
        let reply_topic = topics.client_replies(client_id);
        let (client, mut eventloop) = broker.connect(client_id, None)?;
        let waiters: Waiters = Default::default();
        let taps: Taps = Default::default();
        let (subscribed, mut subacks) = mpsc::unbounded_channel::<()>();
        let mut filters = vec![reply_topic.clone()];
        filters.extend(extra.iter().cloned());
        let task = {
            let (client, waiters, taps, subscribed) = (
                client.clone(),
                waiters.clone(),
                taps.clone(),
                subscribed.clone(),
            );
            let reply_topic = reply_topic.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let client = client.clone();
                            let filters = filters.clone();
                            tokio::spawn(async move {
                                for f in filters {
                                    let _ = client.subscribe(f, QoS::AtLeastOnce).await;
                                }
                            });
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            let _ = subscribed.send(());
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            for (filter, tx) in taps.lock().unwrap().iter() {
                                if rumqttc::matches(&p.topic, filter) {
                                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                                }
                            }
                            if p.topic == reply_topic {
                                if let Some((id, reply)) = Reply::decode(&p.payload) {
                                    if let Some(tx) = waiters.lock().unwrap().remove(&id) {
                                        let _ = tx.send(reply);
                                    }
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "client connection error; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            })
        };
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
            task: Arc::new(task),
        })
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

    /// Sends `request` (its `reply_to` is set to this client's) and returns the pending answer.
    pub async fn send(
        &self,
        mut request: InferRequest,
    ) -> anyhow::Result<oneshot::Receiver<Reply>> {
        request.reply_to = Some(self.reply_topic.clone());
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(request.id.clone(), tx);
        self.client
            .publish(
                self.topics.request(&request.model),
                QoS::AtLeastOnce,
                false,
                encode(&request),
            )
            .await?;
        Ok(rx)
    }

    /// Sends `request` and waits up to `timeout` for its answer.
    pub async fn request(&self, request: InferRequest, timeout: Duration) -> anyhow::Result<Reply> {
        let id = request.id.clone();
        let rx = self.send(request).await?;
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
        self.waiters.lock().unwrap().insert(id.to_string(), tx);
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
