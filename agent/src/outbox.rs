//! Outgoing messages: one task owns publishing, so producers never wait on the network. While
//! the broker is unreachable, messages go to the durable store (when there is one) and are sent
//! on reconnect, oldest first, within a size and age bound.

use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, watch};

use crate::store::{OutboxLimits, Store, Stored};

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Topic.
    pub topic: String,
    /// Encoded payload.
    pub payload: Vec<u8>,
    /// Quality of service.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
}

/// Handle to the publishing task.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
}

fn qos_level(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

fn qos_from(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

impl Outbox {
    /// Starts the task that publishes through `client`. `connected` follows the MQTT session;
    /// with a `store`, messages produced while disconnected wait there.
    pub fn spawn(
        client: AsyncClient,
        mut connected: watch::Receiver<bool>,
        store: Option<Store>,
        limits: OutboxLimits,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = rx.recv() => {
                        let Some(m) = message else { return };
                        let is_connected = *connected.borrow();
                        match (&store, is_connected) {
                            (Some(store), false) => keep(store, m, limits),
                            _ => publish(&client, m).await,
                        }
                    }
                    changed = connected.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let is_connected = *connected.borrow();
                        if is_connected {
                            if let Some(store) = &store {
                                forward(&client, store, limits).await;
                            }
                        }
                    }
                }
            }
        });
        (Self { tx }, task)
    }

    /// An outbox that only hands messages to the returned receiver (for tests and embedding).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Queues a message at QoS 1.
    pub fn send(&self, topic: impl Into<String>, payload: Vec<u8>) {
        self.send_with(topic, payload, QoS::AtLeastOnce, false);
    }

    /// Queues a message.
    pub fn send_with(&self, topic: impl Into<String>, payload: Vec<u8>, qos: QoS, retain: bool) {
        let _ = self.tx.send(Outgoing {
            topic: topic.into(),
            payload,
            qos,
            retain,
        });
    }
}

async fn publish(client: &AsyncClient, m: Outgoing) {
    if let Err(e) = client
        .publish(m.topic.clone(), m.qos, m.retain, m.payload)
        .await
    {
        tracing::warn!(topic = %m.topic, error = %e, "publish failed: MQTT client closed");
    }
}

fn keep(store: &Store, m: Outgoing, limits: OutboxLimits) {
    let stored = Stored {
        topic: m.topic,
        payload: m.payload,
        qos: qos_level(m.qos),
        retain: m.retain,
        stored_at_ms: slim_protocol::now_ms(),
    };
    match store.push(&stored, limits) {
        Ok(0) => {}
        Ok(dropped) => tracing::warn!(dropped, "outbox full: oldest messages dropped"),
        Err(e) => tracing::error!(error = %e, "outbox write failed: message lost"),
    }
}

async fn forward(client: &AsyncClient, store: &Store, limits: OutboxLimits) {
    match store.drain(limits, slim_protocol::now_ms()) {
        Ok((messages, expired)) => {
            if expired > 0 {
                tracing::warn!(
                    expired,
                    "outbox messages older than the age bound were dropped"
                );
            }
            if !messages.is_empty() {
                tracing::info!(
                    count = messages.len(),
                    "sending messages kept while the broker was unreachable"
                );
            }
            for m in messages {
                publish(
                    client,
                    Outgoing {
                        topic: m.topic,
                        payload: m.payload,
                        qos: qos_from(m.qos),
                        retain: m.retain,
                    },
                )
                .await;
            }
        }
        Err(e) => tracing::error!(error = %e, "outbox read failed"),
    }
}
