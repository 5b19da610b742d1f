//! Broker address, credentials and TLS, from a URL and flags.

use std::{path::PathBuf, time::Duration};

use rumqttc::{
    AsyncClient, EventLoop, LastWill, MqttOptions, NetworkOptions, TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};

/// Largest MQTT packet sent by default: 4 MiB, room for a batch of images.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 4 * 1024 * 1024;

/// Largest publish payload the shipped brokers forward: `message_size_limit` in
/// deploy/mosquitto/mosquitto.conf and the embedded broker's `max_payload_size`.
pub const BROKER_MESSAGE_LIMIT_BYTES: usize = 8 * 1024 * 1024;

/// Largest MQTT packet received by default: 16 MiB, above [`BROKER_MESSAGE_LIMIT_BYTES`] plus
/// the longest topic, so no message a shipped broker forwards can make rumqttc drop the
/// connection ("payload size limit exceeded"). Oversized requests are then refused with
/// `too_large` by the process that reads them, and the connection stays up.
pub const DEFAULT_MAX_INCOMING_PACKET_BYTES: usize = 16 * 1024 * 1024;

/// Why a broker configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The URL does not parse or uses an unknown scheme.
    #[error("invalid broker URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS file could not be read.
    #[error("cannot read {what} {path:?}: {source}")]
    TlsFile {
        /// Which file (CA, certificate, key).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How to reach the broker. `mqtt://` is plain TCP (port 1883 by default), `mqtts://` is TLS
/// (port 8883). Credentials may be in the URL (`mqtt://user:pass@host`) or set separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerOptions {
    /// Broker URL, e.g. `mqtt://127.0.0.1:1883` or `mqtts://broker.lan:8883`.
    pub url: String,
    /// MQTT username.
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<String>,
    /// PEM file with the CA that signed the broker's certificate (TLS). Defaults to the system bundle.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that require mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key: Option<PathBuf>,
    /// Keep-alive interval in seconds; the broker fires the last will after 1.5× this much silence.
    pub keep_alive_s: u64,
    /// Largest MQTT packet sent, bytes.
    pub max_packet_bytes: usize,
    /// Largest MQTT packet received, bytes. Keep it above the broker's message size limit: a
    /// larger packet makes the client drop its connection.
    pub max_incoming_packet_bytes: usize,
    /// Start a fresh MQTT session on every connect. Set it to false, with persistence enabled on
    /// the broker, so subscriptions and queued QoS 1 messages survive a broker restart.
    pub clean_session: bool,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".into(),
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keep_alive_s: 5,
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            max_incoming_packet_bytes: DEFAULT_MAX_INCOMING_PACKET_BYTES,
            clean_session: true,
        }
    }
}

/// Host, port, TLS flag and URL credentials.
type ParsedUrl = (String, u16, bool, Option<(String, String)>);

const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl BrokerOptions {
    /// Options for a broker at `url`, everything else default.
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Host, port and whether TLS is used, with credentials from the URL if present.
    fn parse(&self) -> Result<ParsedUrl, BrokerError> {
        let invalid = |reason: &str| BrokerError::InvalidUrl {
            url: self.url.clone(),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(&self.url).map_err(|e| invalid(&e.to_string()))?;
        let tls = match parsed.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" | "tls" => true,
            other => {
                return Err(invalid(&format!(
                    "scheme {other:?} is not mqtt:// or mqtts://"
                )))
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed.port().unwrap_or(if tls { 8883 } else { 1883 });
        let creds = (!parsed.username().is_empty()).then(|| {
            (
                parsed.username().to_string(),
                parsed.password().unwrap_or_default().to_string(),
            )
        });
        Ok((host, port, tls, creds))
    }

    /// Checks the URL without connecting.
    pub fn validate(&self) -> Result<(), BrokerError> {
        self.parse().map(|_| ())
    }

    /// rumqttc options for a client called `client_id`, with an optional last will.
    pub fn mqtt_options(
        &self,
        client_id: &str,
        last_will: Option<LastWill>,
    ) -> Result<MqttOptions, BrokerError> {
        let (host, port, tls, url_creds) = self.parse()?;
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(Duration::from_secs(self.keep_alive_s.max(1)))
            .set_max_packet_size(self.max_incoming_packet_bytes, self.max_packet_bytes)
            .set_request_channel_capacity(1024)
            .set_inflight(100)
            .set_clean_session(self.clean_session);
        let creds = match (&self.username, url_creds) {
            (Some(user), _) => Some((user.clone(), self.password.clone().unwrap_or_default())),
            (None, creds) => creds,
        };
        if let Some((user, pass)) = creds {
            options.set_credentials(user, pass);
        }
        if let Some(will) = last_will {
            options.set_last_will(will);
        }
        if tls {
            options.set_transport(Transport::tls_with_config(self.tls_configuration()?));
        }
        Ok(options)
    }

    fn tls_configuration(&self) -> Result<TlsConfiguration, BrokerError> {
        let read = |what: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| BrokerError::TlsFile {
                what,
                path: path.clone(),
                source,
            })
        };
        let ca_path = self
            .ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
        let ca = read("CA file", &ca_path)?;
        let client_auth = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                Some((read("client certificate", cert)?, read("client key", key)?))
            }
            _ => None,
        };
        Ok(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        })
    }

    /// Builds the client and its event loop. Nothing is sent until the event loop is polled.
    /// Nagle's algorithm is off: requests are small and latency matters more than packet count.
    pub fn connect(
        &self,
        client_id: &str,
        last_will: Option<LastWill>,
    ) -> Result<(AsyncClient, EventLoop), BrokerError> {
        let (client, mut eventloop) =
            AsyncClient::new(self.mqtt_options(client_id, last_will)?, 1024);
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        Ok((client, eventloop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_default_to_port_1883() {
        let o = BrokerOptions::from_url("mqtt://broker.lan")
            .mqtt_options("c", None)
            .unwrap();
        assert_eq!(o.broker_address(), ("broker.lan".to_string(), 1883));
    }

    #[test]
    fn credentials_in_the_url_are_used_unless_flags_override_them() {
        let mut b = BrokerOptions::from_url("mqtt://alice:secret@127.0.0.1:1999");
        let o = b.mqtt_options("c", None).unwrap();
        let login = o.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("alice", "secret")
        );
        assert_eq!(o.broker_address().1, 1999);
        b.username = Some("bob".into());
        b.password = Some("pw".into());
        let o = b.mqtt_options("c", None).unwrap();
        let login = o.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("bob", "pw")
        );
    }

    #[test]
    fn unknown_schemes_and_missing_tls_files_are_clear_errors() {
        let err = BrokerOptions::from_url("http://x").validate().unwrap_err();
        assert!(err.to_string().contains("not mqtt:// or mqtts://"), "{err}");
        let mut b = BrokerOptions::from_url("mqtts://x");
        b.ca_file = Some("/nonexistent/ca.pem".into());
        let err = b.mqtt_options("c", None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
