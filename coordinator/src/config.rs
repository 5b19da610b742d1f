//! Coordinator configuration (`slim-coordinator generate-config` prints the default).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use slim_mqtt::BrokerOptions;
use slim_router::{ppo::online::OnlineConfig, RouterKind};

/// Where the monitoring HTTP server listens unless told otherwise (9464: the Prometheus exporter
/// port convention).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9464";

/// Everything that describes one coordinator deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// Coordinator id, used as MQTT client id.
    pub id: String,
    /// Topic prefix shared by the whole deployment.
    pub topic_prefix: String,
    /// How to reach the MQTT broker.
    pub broker: BrokerOptions,
    /// Router that places requests.
    pub router: RouterKind,
    /// Trained policy checkpoint, required by `router = "ppo"`.
    pub policy: Option<std::path::PathBuf>,
    /// Seed for routers that draw random numbers.
    pub seed: u64,
    /// Batch size assigned by routers that do not choose one.
    pub batch_size: u16,
    /// Longest an agent may hold a request to fill a batch, milliseconds.
    pub max_queue_delay_ms: u32,
    /// An agent silent for this long is taken offline and its requests re-routed, milliseconds.
    pub telemetry_timeout_ms: u64,
    /// A request that finds no agent waits this long for one before `no_capacity`, milliseconds.
    pub park_timeout_ms: u64,
    /// Requests larger than this are refused with `too_large`.
    pub max_payload_bytes: usize,
    /// How many re-routes a request may have before it is answered with an error.
    pub max_attempts: u16,
    /// Share the request stream with other coordinators of this group (MQTT shared
    /// subscription `$share/{group}/...`): each request goes to one of them. Unset: this
    /// coordinator reads every request.
    pub shared_group: Option<String>,
    /// Most requests held at once (routed and not yet answered, or parked); beyond it new
    /// requests get `overloaded`.
    pub max_held_requests: usize,
    /// Most MiB of requests held at once; beyond it new requests get `overloaded`.
    pub max_held_mb: u64,
    /// A routed request its agent has not reported answered within this long leaves the
    /// ledger (counted), milliseconds.
    pub ledger_ttl_ms: u64,
    /// A repeat of a routed request arriving this long after its assignment is a client's
    /// retry: it is sent again to the agent that holds or answered it. Earlier repeats are
    /// MQTT redeliveries and are ignored. Milliseconds.
    pub resend_after_ms: u64,
    /// Most agents tracked; announcements from further agent ids are refused.
    pub max_agents: usize,
    /// For this long after connecting, a request for a model no agent has announced yet is
    /// parked instead of refused, while the fleet's retained status arrives, milliseconds.
    pub fleet_warmup_ms: u64,
    /// File holding the key shared with the agents (at least 16 bytes); every assignment is
    /// signed with it (HMAC-SHA256), and agents holding it refuse unsigned ones.
    pub assignment_key_file: Option<PathBuf>,
    /// Monitoring HTTP address (`/metrics`, `/api/v1/state`, the dashboard); empty disables it.
    pub http_listen: Option<String>,
    /// Online refinement of the PPO policy from live rewards (`[online]`).
    pub online: OnlineSettings,
}

/// Online refinement (`--online-refine`): the PPO router samples, learns from the rewards of the
/// requests it placed, and swaps in the refined weights (see `docs/router.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineSettings {
    /// Refine the policy online; only with `router = "ppo"`.
    pub enabled: bool,
    /// Write the refined checkpoint here after every applied update (`--online-save`).
    pub save: Option<PathBuf>,
    /// The learner's settings (`[online.learner]`; `--online-batch`, `--online-lr`).
    pub learner: OnlineConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            id: "coordinator".into(),
            topic_prefix: slim_protocol::DEFAULT_PREFIX.into(),
            broker: BrokerOptions::default(),
            router: RouterKind::LeastLoaded,
            policy: None,
            seed: 0,
            batch_size: 8,
            max_queue_delay_ms: slim_protocol::DEFAULT_BATCH_DELAY_MS,
            telemetry_timeout_ms: slim_protocol::DEFAULT_TELEMETRY_TIMEOUT_MS,
            park_timeout_ms: 10_000,
            max_payload_bytes: 1024 * 1024,
            max_attempts: 3,
            shared_group: None,
            max_held_requests: 100_000,
            max_held_mb: 512,
            ledger_ttl_ms: 120_000,
            resend_after_ms: 1000,
            max_agents: 1000,
            fleet_warmup_ms: 3000,
            assignment_key_file: None,
            http_listen: Some(DEFAULT_HTTP_LISTEN.into()),
            online: OnlineSettings::default(),
        }
    }
}

impl CoordinatorConfig {
    /// Parses a TOML file's text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Why this configuration cannot run, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        // The id is a topic level (`{prefix}/coordinators/{id}/status`) and a client id.
        slim_protocol::limits::check_name("coordinator id", &self.id)
            .map_err(|e| format!("{e}: the coordinator id (--id / `id`) names its status topic"))?;
        let prefix = self.topic_prefix.trim_end_matches('/');
        if prefix.is_empty() || prefix.contains(['+', '#', '\0']) {
            return Err(format!(
                "topic prefix {:?} (--topic-prefix / `topic_prefix`) must be a non-empty topic \
                 without wildcards (+, #) or NUL, e.g. {:?}",
                self.topic_prefix,
                slim_protocol::DEFAULT_PREFIX
            ));
        }
        if self.online.enabled && self.router != RouterKind::Ppo {
            return Err(format!(
                "online refinement (--online-refine) refines a PPO policy: it needs --router ppo \
                 and --policy FILE, not --router {}",
                self.router.as_str()
            ));
        }
        if self.online.enabled {
            self.online.learner.check()?;
        }
        Ok(())
    }

    /// The monitoring HTTP address, or `None` when monitoring is disabled.
    pub fn http_listen(&self) -> Option<&str> {
        self.http_listen
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The default configuration as TOML.
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Self::default()).expect("config serializes");
        format!(
            "# slim-coordinator configuration. Every key is optional; these are the defaults.\n\
             # Flags and SLIM_* environment variables override the file.\n{body}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_default_config_parses_back_to_the_default() {
        let parsed = CoordinatorConfig::from_toml(&CoordinatorConfig::default_toml()).unwrap();
        assert_eq!(parsed, CoordinatorConfig::default());
    }

    #[test]
    fn a_topic_prefix_with_a_wildcard_is_refused() {
        for bad in ["", "/", "slim/+", "#", "a/\0"] {
            let config = CoordinatorConfig {
                topic_prefix: bad.into(),
                ..CoordinatorConfig::default()
            };
            let e = config.check().unwrap_err();
            assert!(e.contains("topic prefix"), "{bad:?}: {e}");
        }
        let site = CoordinatorConfig {
            topic_prefix: "site/a/slim/v1/".into(),
            ..CoordinatorConfig::default()
        };
        assert_eq!(site.check(), Ok(()));
    }

    #[test]
    fn online_refinement_needs_the_ppo_router_and_sane_settings() {
        let mut config = CoordinatorConfig::from_toml(
            "router = \"greedy\"\n[online]\nenabled = true\n[online.learner]\nbatch = 16\n",
        )
        .unwrap();
        assert_eq!(config.online.learner.batch, 16);
        let error = config.check().unwrap_err();
        assert!(error.contains("--router ppo"), "{error}");
        config.router = RouterKind::Ppo;
        assert_eq!(config.check(), Ok(()));
        config.online.learner.batch = 0;
        assert!(config.check().is_err());
        config.online.enabled = false;
        assert_eq!(
            config.check(),
            Ok(()),
            "settings of a disabled learner do not matter"
        );
        assert!(CoordinatorConfig::from_toml("[online]\nbatch = 16\n").is_err());
    }
}
