//! An in-process MQTT broker (rumqttd), for the demo, tests and single-box deployments.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use tokio::sync::oneshot;

/// How long [`EmbeddedBroker::start`] waits for the broker to listen.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How often it tries to connect meanwhile.
const PROBE_EVERY: Duration = Duration::from_millis(5);

/// A running embedded broker. It serves MQTT 3.1.1 on [`EmbeddedBroker::addr`] until the process exits.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts a broker on `127.0.0.1` at a free port; see [`EmbeddedBroker::start`].
    pub async fn start_local() -> io::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Self::start(
            SocketAddr::from(([127, 0, 0, 1], port)),
            crate::BROKER_MESSAGE_LIMIT_BYTES,
        )
        .await
    }

    /// Starts a broker listening on `addr`, accepting payloads up to `max_payload_bytes`,
    /// and returns once it accepts connections (an error if `addr` is taken, or the broker
    /// stops or does not listen within 10 s). The wait never blocks the async runtime.
    /// The router keeps each topic filter's recent messages in segments of twice that size,
    /// at most four of them, so its memory is bounded whatever clients publish.
    pub async fn start(addr: SocketAddr, max_payload_bytes: usize) -> io::Result<Self> {
        // rumqttd only logs a failed bind; find out here, before a probe could reach whatever
        // already listens there.
        drop(TcpListener::bind(addr)?);
        let segment_bytes = 2 * max_payload_bytes;
        let config_text = format!(
            r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 1000
max_segment_size = {segment_bytes}
max_segment_count = 4

[v4.1]
name = "v4-1"
listen = "{addr}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = {max_payload_bytes}
    max_inflight_count = 1000
    dynamic_filters = true
"#
        );
        let config: rumqttd::Config = toml::from_str(&config_text)
            .map_err(|e| io::Error::other(format!("embedded broker config: {e}")))?;
        let mut broker = rumqttd::Broker::new(config);
        // Dropped when the broker thread ends, which it does only if the broker stops.
        let (running, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("embedded-mqtt".into())
            .spawn(move || {
                let _running = running;
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded MQTT broker stopped");
                }
            })?;
        match tokio::time::timeout(READY_WITHIN, listening(addr, stopped)).await {
            Ok(ready) => ready?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the embedded MQTT broker does not listen on {addr} after 10 s"),
                ))
            }
        }
        tracing::info!(%addr, "embedded MQTT broker listening");
        Ok(Self { addr })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, e.g. `mqtt://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

/// Returns once a connection to `addr` succeeds, or with an error once `stopped` says the broker
/// thread ended. rumqttd binds its listener in a thread of its own and signals nothing when it
/// has, so this probes; it waits on the runtime's timer between probes, never on the thread.
async fn listening(addr: SocketAddr, mut stopped: oneshot::Receiver<()>) -> io::Result<()> {
    let ended = || io::Error::other(format!("the embedded MQTT broker on {addr} stopped"));
    loop {
        tokio::select! {
            probe = tokio::net::TcpStream::connect(addr) => {
                if probe.is_ok() {
                    return Ok(());
                }
            }
            _ = &mut stopped => return Err(ended()),
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = &mut stopped => return Err(ended()),
        }
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};

    use super::*;

    /// An MQTT client connects at its first attempt, with no retry.
    #[tokio::test]
    async fn start_returns_once_a_client_can_connect() {
        let broker = EmbeddedBroker::start_local().await.unwrap();
        let addr = broker.addr();
        let options = MqttOptions::new("embedded-test", addr.ip().to_string(), addr.port());
        let (_client, mut events) = AsyncClient::new(options, 10);
        let first = tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("the broker answers within 10 s");
        assert!(
            matches!(first, Ok(Event::Incoming(Packet::ConnAck(_)))),
            "the first attempt is accepted: {first:?}"
        );
    }

    /// A taken address is an error at once, not a broker that never listens.
    #[tokio::test]
    async fn start_on_a_taken_address_fails() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = EmbeddedBroker::start(addr, 1024).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
    }
}
