//! An in-process MQTT broker (rumqttd), for the demo, tests and single-box deployments.

use std::net::{SocketAddr, TcpListener};

/// A running embedded broker. It serves MQTT 3.1.1 on [`EmbeddedBroker::addr`] until the process exits.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts a broker on `127.0.0.1` at a free port.
    pub fn start_local() -> std::io::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Self::start(
            SocketAddr::from(([127, 0, 0, 1], port)),
            crate::BROKER_MESSAGE_LIMIT_BYTES,
        )
    }

    /// Starts a broker listening on `addr`, accepting payloads up to `max_payload_bytes`.
    /// The router keeps each topic filter's recent messages in segments of twice that size,
    /// at most four of them, so its memory is bounded whatever clients publish.
    pub fn start(addr: SocketAddr, max_payload_bytes: usize) -> std::io::Result<Self> {
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
            .map_err(|e| std::io::Error::other(format!("embedded broker config: {e}")))?;
        let mut broker = rumqttd::Broker::new(config);
        std::thread::Builder::new()
            .name("embedded-mqtt".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded MQTT broker stopped");
                }
            })?;
        wait_until_listening(addr)?;
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

fn wait_until_listening(addr: SocketAddr) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match std::net::TcpStream::connect(addr) {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}
