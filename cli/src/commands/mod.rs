//! One module per `slim` command.

pub mod bench;
pub mod calibrate;
mod columns;
pub mod demo;
pub mod eval;
pub mod knee;
pub mod models;
pub mod profile;
pub mod refine;
pub mod request;
pub mod saturate;
pub mod simulate;
pub mod status;
pub mod train;

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use slim_client::client::SlimClient;

/// Broker flags shared by commands that talk to a running system.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Broker URL, e.g. mqtt://127.0.0.1:1883 or mqtts://broker:8883.
    #[arg(long, env = "SLIM_BROKER", default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// MQTT username.
    #[arg(long, env = "SLIM_MQTT_USERNAME")]
    pub username: Option<String>,
    /// MQTT password.
    #[arg(long, env = "SLIM_MQTT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// CA certificate (PEM) for mqtts://.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Topic prefix of the deployment (the daemons' `topic_prefix`).
    #[arg(long, env = "SLIM_TOPIC_PREFIX", default_value = slim_protocol::DEFAULT_PREFIX)]
    pub topic_prefix: String,
    /// MQTT client id (letters, digits, `-`, `_`, `.`; it also names the reply topic). Default:
    /// the command's name and a random suffix, new on every run.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Keep the MQTT session at the broker across disconnects (clean session off): answers
    /// published while the connection is down wait at the broker and arrive on reconnect, and
    /// a rerun with the same --client-id receives what the last run missed. Needs --client-id.
    /// The broker then holds the session until it expires (Mosquitto: `persistent_client_expiration`).
    #[arg(long, requires = "client_id")]
    pub persistent_session: bool,
}

impl BrokerArgs {
    /// Broker options from the flags.
    pub fn options(&self) -> slim_mqtt::BrokerOptions {
        slim_mqtt::BrokerOptions {
            username: self.username.clone(),
            password: self.password.clone(),
            ca_file: self.ca_file.clone(),
            clean_session: !self.persistent_session,
            ..slim_mqtt::BrokerOptions::from_url(&self.broker)
        }
    }

    /// Connects a client called `--client-id`, or `{role}-{random}` (after [`probe_broker`],
    /// so an unreachable broker is a prompt, clear error), subscribed to its reply topic only.
    pub async fn connect(&self, role: &str) -> anyhow::Result<SlimClient> {
        let client_id = match &self.client_id {
            Some(id) => {
                slim_protocol::limits::check_name("client id", id)
                    .map_err(|e| anyhow::anyhow!("--client-id: {e}"))?;
                id.clone()
            }
            None => random_client_id(role),
        };
        connect_as(&self.options(), &self.topic_prefix, &client_id).await
    }
}

/// `{role}-` and 12 random hex digits.
fn random_client_id(role: &str) -> String {
    format!(
        "{role}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// How long commands wait for a broker to accept a connection before giving up.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects a client called `{role}-{random}` to `broker`, subscribed to its reply topic only,
/// after checking with [`probe_broker`] that the broker answers.
pub async fn connect(
    broker: &slim_mqtt::BrokerOptions,
    prefix: &str,
    role: &str,
) -> anyhow::Result<SlimClient> {
    connect_as(broker, prefix, &random_client_id(role)).await
}

/// Connects `client_id` to `broker` after [`probe_broker`], subscribed to its reply topic.
async fn connect_as(
    broker: &slim_mqtt::BrokerOptions,
    prefix: &str,
    client_id: &str,
) -> anyhow::Result<SlimClient> {
    probe_broker(broker, BROKER_TIMEOUT).await?;
    SlimClient::connect(broker, prefix, client_id, &[])
        .await
        .with_context(|| format!("cannot reach the broker at {}", broker.url))
}

/// Opens one MQTT connection to `broker` and waits for its CONNACK: `Ok` when the broker
/// accepts, otherwise "cannot reach the broker at URL: <why>" (connection refused, name not
/// resolved, TLS or login refused, or no answer within `timeout`). The client library retries
/// forever; this gives up.
pub async fn probe_broker(
    broker: &slim_mqtt::BrokerOptions,
    timeout: Duration,
) -> anyhow::Result<()> {
    use rumqttc::{Event, Packet};
    let url = &broker.url;
    let client_id = format!(
        "slim-probe-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let (client, mut eventloop) = broker
        .connect(&client_id, None)
        .with_context(|| format!("cannot use the broker at {url}"))?;
    let answer = tokio::time::timeout(timeout, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match answer {
        Ok(Ok(())) => {
            let _ = client.try_disconnect();
            // Let the DISCONNECT go out; the broker closes the connection after it.
            let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
            Ok(())
        }
        Ok(Err(e)) => Err(anyhow::anyhow!("cannot reach the broker at {url}: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "cannot reach the broker at {url}: no answer within {}",
            human_duration(timeout)
        )),
    }
}

/// A duration as people write it: `15s`, `500ms`, `2.5s`, `2m`. One word that
/// [`parse_duration`] takes back (unlike `humantime::format_duration`'s `2s 500ms`), so it can
/// be pasted into a printed command line.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Reward weights as a reader wants them: `latency 1, energy 1, accuracy 0, deadline 1`.
pub fn weights_text(w: &slim_router::reward::RewardWeights) -> String {
    format!(
        "latency {}, energy {}, accuracy {}, deadline {}",
        w.latency, w.energy, w.accuracy, w.deadline
    )
}

/// Numbers as a comma-separated list, the way the flags take them: `1,2,4`.
pub fn list_text<T: std::fmt::Display>(values: &[T]) -> String {
    values
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Fails with a clear message when a path a flag names is missing (kept here for the commands;
/// it lives with the sample loading in `slim_client`).
pub use slim_client::samples::require_path;

/// Parses durations like `20s`, `500ms`, `2.5s`, `2m`, `1h 30m` (humantime's syntax) or a plain
/// number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    if let Ok(seconds) = t.parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(seconds)
            .map_err(|e| format!("{text:?} is not a duration: {e}"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{text:?} is not a duration like 20s, 500ms or 2m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_print_the_way_the_flags_take_them() {
        for text in ["15s", "500ms", "2m", "2.5s"] {
            assert_eq!(human_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn durations_accept_the_usual_units() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("5x").unwrap_err().contains("unit"));
    }
}

#[cfg(test)]
mod broker_args_tests {
    use clap::Parser;

    use super::BrokerArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    #[test]
    fn a_persistent_session_needs_a_client_id_and_turns_clean_session_off() {
        assert!(Cli::try_parse_from(["slim", "--persistent-session"]).is_err());
        let cli = Cli::try_parse_from(["slim", "--client-id", "site-a-1", "--persistent-session"])
            .unwrap();
        let options = cli.broker.options();
        assert!(!options.clean_session);
        assert_eq!(cli.broker.client_id.as_deref(), Some("site-a-1"));
        let default = Cli::try_parse_from(["slim"]).unwrap();
        assert!(default.broker.options().clean_session);
    }
}
