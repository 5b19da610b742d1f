//! The anchors a routing figure is divided by, measured through the same broker in the same run:
//! a flood of QoS 1 messages from one client straight to a subscriber, and the same flood through
//! a do-nothing relay (a client that republishes every message it receives, with the
//! coordinator's shape: its network loop hands messages over a bounded channel to a task that
//! publishes them).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use slim_mqtt::BrokerOptions;

/// How many messages arrived, and when the last did; shared by a network task that records
/// and the measurement that reads.
#[derive(Debug, Clone, Default)]
pub struct Arrivals {
    count: Arc<AtomicU64>,
    last_at: Arc<Mutex<Option<Instant>>>,
}

impl Arrivals {
    /// Counts one arrival, now.
    pub fn record(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        *self.last_at.lock().unwrap() = Some(Instant::now());
    }

    /// Arrivals so far, and when the last one came.
    pub fn received(&self) -> (u64, Option<Instant>) {
        (
            self.count.load(Ordering::Relaxed),
            *self.last_at.lock().unwrap(),
        )
    }
}

/// Counts the messages that arrive on a topic filter.
pub struct Sink {
    arrivals: Arrivals,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Subscribes `filter` at QoS 1; returns once the broker has acknowledged the subscription.
    pub async fn start(
        broker: &BrokerOptions,
        client_id: &str,
        filter: &str,
    ) -> anyhow::Result<Self> {
        let (client, mut eventloop) = broker.connect(client_id, None)?;
        let arrivals = Arrivals::default();
        let (subscribed, ready) = tokio::sync::oneshot::channel();
        let task = {
            let (arrivals, filter) = (arrivals.clone(), filter.to_string());
            tokio::spawn(async move {
                let mut subscribed = Some(subscribed);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(s) = subscribed.take() {
                                let _ = s.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(_))) => arrivals.record(),
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .map_err(|_| {
                anyhow::anyhow!("the broker did not acknowledge the subscription to {filter}")
            })??;
        Ok(Self { arrivals, task })
    }

    /// Messages received so far, and when the last arrived.
    pub fn received(&self) -> (u64, Option<Instant>) {
        self.arrivals.received()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A publisher connection, kept apart from the sinks and the relay.
pub struct Publisher {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn connect(broker: &BrokerOptions, client_id: &str) -> anyhow::Result<Self> {
        let (client, mut eventloop) = broker.connect(client_id, None)?;
        let (connected, ready) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut connected = Some(connected);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(c) = connected.take() {
                            let _ = c.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .map_err(|_| anyhow::anyhow!("the publisher could not connect"))??;
        Ok(Self { client, task })
    }

    /// Publishes every payload to `topic` at QoS 1, as fast as the client's in-flight window
    /// allows; returns when the last is handed to the client.
    pub async fn flood(&self, topic: &str, payloads: &[Vec<u8>]) -> anyhow::Result<()> {
        for payload in payloads {
            self.client
                .publish(topic, QoS::AtLeastOnce, false, payload.clone())
                .await?;
        }
        Ok(())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client that republishes every message on `from` to `to`, doing nothing else.
pub struct Relay {
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Relay {
    pub async fn start(
        broker: &BrokerOptions,
        client_id: &str,
        from: &str,
        to: &str,
    ) -> anyhow::Result<Self> {
        let (client, mut eventloop) = broker.connect(client_id, None)?;
        let out = Publisher::connect(broker, &format!("{client_id}-out")).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1024);
        let (subscribed, ready) = tokio::sync::oneshot::channel();
        let network = {
            let from = from.to_string();
            tokio::spawn(async move {
                let mut subscribed = Some(subscribed);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.subscribe(from.clone(), QoS::AtLeastOnce).await;
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(s) = subscribed.take() {
                                let _ = s.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            if tx.send(p.payload).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
        };
        let forward = {
            let to = to.to_string();
            tokio::spawn(async move {
                while let Some(payload) = rx.recv().await {
                    if out
                        .client
                        .publish(to.clone(), QoS::AtLeastOnce, false, payload)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .map_err(|_| {
                anyhow::anyhow!("the broker did not acknowledge the relay's subscription")
            })??;
        Ok(Self {
            tasks: [network, forward],
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Waits until `received` reports `expected` messages, or until nothing has arrived for
/// `quiet`; returns how many arrived and the rate from `start` to the last one.
pub async fn wait_for(
    expected: u64,
    start: Instant,
    quiet: Duration,
    received: impl Fn() -> (u64, Option<Instant>),
) -> (u64, f64) {
    let mut seen = (0, Instant::now());
    loop {
        let (n, last) = received();
        if n >= expected {
            let elapsed = last
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(start);
            return (n, n as f64 / elapsed.as_secs_f64().max(1e-9));
        }
        if n != seen.0 {
            seen = (n, Instant::now());
        } else if seen.1.elapsed() > quiet {
            let elapsed = last.unwrap_or(start).saturating_duration_since(start);
            return (n, n as f64 / elapsed.as_secs_f64().max(1e-9));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
