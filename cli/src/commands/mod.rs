//! One module per `slim` command.

pub mod bench;
pub mod demo;
pub mod eval;
pub mod models;
pub mod profile;
pub mod request;
pub mod simulate;
pub mod status;
pub mod train;

use clap::Args;

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
    /// Topic prefix of the deployment.
    #[arg(long, env = "SLIM_TOPIC_PREFIX", default_value = slim_protocol::DEFAULT_PREFIX)]
    pub topic_prefix: String,
}

impl BrokerArgs {
    /// Broker options from the flags.
    pub fn options(&self) -> slim_mqtt::BrokerOptions {
        slim_mqtt::BrokerOptions {
            username: self.username.clone(),
            password: self.password.clone(),
            ca_file: self.ca_file.clone(),
            ..slim_mqtt::BrokerOptions::from_url(&self.broker)
        }
    }
}

/// Parses durations like `20s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (number, unit) = t
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| t.split_at(i))
        .unwrap_or((t, "s"));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 20s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s or m)")),
    };
    if seconds.is_nan() || seconds < 0.0 {
        return Err(format!("{text:?} must not be negative"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_accept_the_usual_units() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").unwrap_err().contains("unit"));
    }
}
