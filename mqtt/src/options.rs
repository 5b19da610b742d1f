//! Broker address, credentials and TLS, from a URL and flags.

use std::{path::PathBuf, sync::Arc, time::Duration};

use rumqttc::{
    AsyncClient, EventLoop, LastWill, MqttOptions, NetworkOptions, TlsConfiguration, Transport,
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ClientConfig, RootCertStore,
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
    /// A TLS file was read but holds no usable certificate or key.
    #[error("{what} {path:?} is not usable: {reason}")]
    TlsContent {
        /// Which file (CA, certificate, key).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No `ca_file` is set and the system has no CA certificates to use instead.
    #[error(
        "no system CA certificates found ({reason}); set ca_file (--ca-file) to the PEM CA that \
         signed the broker's certificate"
    )]
    NoSystemCertificates {
        /// What the loader reported.
        reason: String,
    },
    /// rustls refused the TLS configuration (e.g. a client key that does not fit its certificate).
    #[error("TLS configuration refused: {0}")]
    Tls(#[from] rustls::Error),
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
    /// PEM file with the CA that signed the broker's certificate (TLS). Unset: the system's CA
    /// certificates (rustls-native-certs: the OpenSSL locations, or `SSL_CERT_FILE`/`SSL_CERT_DIR`).
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

    /// The rustls configuration: trusted roots from `ca_file` if set (it wins), else the
    /// system's CA certificates; a client certificate when both `client_cert` and `client_key`
    /// are set. Unusable files are errors here, before any connection is tried.
    fn tls_configuration(&self) -> Result<TlsConfiguration, BrokerError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let (added, _) =
                    roots.add_parsable_certificates(pem_certificates("CA file", path)?);
                if added == 0 {
                    return Err(BrokerError::TlsContent {
                        what: "CA file",
                        path: path.clone(),
                        reason: "no valid certificate in it".into(),
                    });
                }
            }
            None => {
                let (added, _) = roots.add_parsable_certificates(system_ca_certificates()?);
                if added == 0 {
                    return Err(BrokerError::NoSystemCertificates {
                        reason: "none of them parses".into(),
                    });
                }
            }
        }
        let builder = ClientConfig::builder().with_root_certificates(roots);
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = pem_certificates("client certificate", cert)?;
                let key_bytes = read_tls_file("client key", key)?;
                let private_key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
                    BrokerError::TlsContent {
                        what: "client key",
                        path: key.clone(),
                        reason: format!("no PEM private key in it ({e})"),
                    }
                })?;
                builder.with_client_auth_cert(chain, private_key)?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(TlsConfiguration::Rustls(Arc::new(config)))
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

fn read_tls_file(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|source| BrokerError::TlsFile {
        what,
        path: path.clone(),
        source,
    })
}

/// Every PEM certificate in the file at `path`; none is an error.
fn pem_certificates(
    what: &'static str,
    path: &PathBuf,
) -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let bytes = read_tls_file(what, path)?;
    let content = |reason: String| BrokerError::TlsContent {
        what,
        path: path.clone(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(format!("bad PEM ({e})")))?;
    if certs.is_empty() {
        return Err(content("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The system's CA certificates (rustls-native-certs); an error naming what the loader found
/// when there are none. Unreadable extra files are skipped when others load.
fn system_ca_certificates() -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let loaded = rustls_native_certs::load_native_certs();
    if loaded.certs.is_empty() {
        let reason = if loaded.errors.is_empty() {
            "no certificate file in OpenSSL's locations, or in SSL_CERT_FILE/SSL_CERT_DIR if set"
                .to_string()
        } else {
            let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
            errors.join("; ")
        };
        return Err(BrokerError::NoSystemCertificates { reason });
    }
    for e in &loaded.errors {
        tracing::warn!(error = %e, "skipped part of the system CA certificates");
    }
    Ok(loaded.certs)
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

    /// ISRG Root X2 (Let's Encrypt's public ECDSA root): a CA certificate rustls accepts.
    const A_CA: &str = "-----BEGIN CERTIFICATE-----
MIICGzCCAaGgAwIBAgIQQdKd0XLq7qeAwSxs6S+HUjAKBggqhkjOPQQDAzBPMQsw
CQYDVQQGEwJVUzEpMCcGA1UEChMgSW50ZXJuZXQgU2VjdXJpdHkgUmVzZWFyY2gg
R3JvdXAxFTATBgNVBAMTDElTUkcgUm9vdCBYMjAeFw0yMDA5MDQwMDAwMDBaFw00
MDA5MTcxNjAwMDBaME8xCzAJBgNVBAYTAlVTMSkwJwYDVQQKEyBJbnRlcm5ldCBT
ZWN1cml0eSBSZXNlYXJjaCBHcm91cDEVMBMGA1UEAxMMSVNSRyBSb290IFgyMHYw
EAYHKoZIzj0CAQYFK4EEACIDYgAEzZvVn4CDCuwJSvMWSj5cz3es3mcFDR0HttwW
+1qLFNvicWDEukWVEYmO6gbf9yoWHKS5xcUy4APgHoIYOIvXRdgKam7mAHf7AlF9
ItgKbppbd9/w+kHsOdx1ymgHDB/qo0IwQDAOBgNVHQ8BAf8EBAMCAQYwDwYDVR0T
AQH/BAUwAwEB/zAdBgNVHQ4EFgQUfEKWrt5LSDv6kviejM9ti6lyN5UwCgYIKoZI
zj0EAwMDaAAwZQIwe3lORlCEwkSHRhtFcP9Ymd70/aTSVaYgLXTWNLxBo1BfASdW
tL4ndQavEi51mI38AjEAi/V3bNTIZargCyzuFJ0nN6T5U6VR5CmD1/iQMVtCnwr1
/q4AaOeMSQ+2b1tbFfLn
-----END CERTIFICATE-----
";

    #[test]
    fn a_given_ca_file_is_used_and_one_without_certificates_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = BrokerOptions::from_url("mqtts://x");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, A_CA).unwrap();
        b.ca_file = Some(ca);
        b.mqtt_options("c", None).unwrap();
        let not_pem = dir.path().join("not-a-ca.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        b.ca_file = Some(not_pem);
        let err = b.mqtt_options("c", None).unwrap_err().to_string();
        assert!(err.contains("not-a-ca.pem"), "{err}");
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn without_a_ca_file_the_system_certificates_are_used_or_the_error_says_what_to_set() {
        // SSL_CERT_FILE and SSL_CERT_DIR replace the platform's store (rustls-native-certs); no
        // other test here builds TLS options without a CA file.
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, A_CA).unwrap();
        let no_dir = dir.path().join("no-certificates");
        std::fs::create_dir(&no_dir).unwrap();
        let saved = ["SSL_CERT_FILE", "SSL_CERT_DIR"].map(|k| (k, std::env::var_os(k)));
        let b = BrokerOptions::from_url("mqtts://x");
        std::env::set_var("SSL_CERT_DIR", &no_dir);
        std::env::set_var("SSL_CERT_FILE", &empty);
        let none = b.mqtt_options("c", None);
        std::env::set_var("SSL_CERT_FILE", &bundle);
        let some = b.mqtt_options("c", None);
        for (key, value) in saved {
            match value {
                Some(v) => std::env::set_var(key, v),
                None => std::env::remove_var(key),
            }
        }
        let err = none.unwrap_err();
        assert!(
            matches!(err, BrokerError::NoSystemCertificates { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--ca-file"), "{err}");
        some.unwrap();
    }
}
