//! Outgoing messages: one task owns publishing, so producers never wait on the network.

use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

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

impl Outbox {
    /// Starts the task that publishes through `client`.
    pub fn spawn(client: AsyncClient) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let task = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if let Err(e) = client
                    .publish(m.topic.clone(), m.qos, m.retain, m.payload)
                    .await
                {
                    tracing::warn!(topic = %m.topic, error = %e, "publish failed: MQTT client closed");
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
