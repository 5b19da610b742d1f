//! Agent configuration: the TOML file (`slim-agent generate-config` prints the default).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use slim_mqtt::BrokerOptions;

use crate::backend::BackendChoice;

/// Everything that describes one agent deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Agent id: unique in the fleet, used in topic names. Defaults to `agent-<hostname>`.
    pub id: String,
    /// Topic prefix shared by the whole deployment.
    pub topic_prefix: String,
    /// How to reach the MQTT broker.
    pub broker: BrokerOptions,
    /// Folder holding one sub-folder per model family (`manifest.toml` + ONNX files).
    pub models_dir: PathBuf,
    /// Families to serve; empty serves every family found in `models_dir`.
    pub models: Vec<String>,
    /// Inference backend: `auto` (CUDA if usable, else CPU), `cuda` or `cpu`.
    pub backend: BackendChoice,
    /// Largest batch the agent forms, whatever the assignment asks.
    pub max_batch: u16,
    /// Most model instances (concurrent batches) per (model, width); 0 = one per core.
    pub max_instances_per_width: u16,
    /// Add an instance when a queue has waited this long with every instance busy, ms.
    pub scale_up_wait_ms: u64,
    /// Drop an instance idle for this long, seconds.
    pub instance_idle_timeout_s: u64,
    /// Memory all instances may take together, MiB; unset = half the RAM (or VRAM) at start.
    pub memory_budget_mb: Option<u64>,
    /// Most batches running at once, as a fraction of the cores (CPU) or 1 per GPU.
    pub utilization_ceiling: f32,
    /// Seconds between telemetry reports, in milliseconds.
    pub telemetry_interval_ms: u64,
    /// Assignments larger than this are refused with `too_large`. It is larger than the
    /// coordinator's request limit, because an assignment wraps a whole request.
    pub max_payload_bytes: usize,
    /// Threads of tract's executor per running batch (1 = single-threaded). Instances already
    /// run batches in parallel, one per core; more threads per batch help a lone large batch.
    pub threads: u16,
    /// Batch sizes that get a tract plan built for that concrete size (faster, see
    /// docs/cpu-performance.md, at the cost of one more copy of the weights per size); other
    /// sizes run on the plan with a symbolic batch dimension.
    pub concrete_batches: Vec<u16>,
    /// Emulate a slower device: every batch takes this many times its real compute time (1 = off).
    pub slowdown: f32,
    /// Folder for durable state (sled): the outbox and accepted requests. Unset keeps them in
    /// memory only, so a restart of the agent or an outage of the broker can lose them.
    pub state_dir: Option<PathBuf>,
    /// Most payload bytes kept in the outbox while the broker is unreachable, MiB.
    pub outbox_max_mb: u64,
    /// Messages older than this are dropped instead of sent on reconnect, seconds.
    pub outbox_max_age_s: u64,
    /// Device profile (TOML, as written by `slim profile`) published in the agent's status, so
    /// routers can predict latency and energy per width and batch. It is published as the
    /// file has it; the routers apply `slowdown` (announced beside it) themselves.
    pub profile: Option<PathBuf>,
    /// Emulate the device of `profile` (e.g. `profiles/jetson-orin-nano.toml`): every batch is
    /// held until the profile's latency for its model, width and batch size (times `slowdown`)
    /// has passed, per-batch energy is the profile's power over that time (modelled), and the
    /// profile's `max_batch` and `max_instances` (concurrent batches) apply. Without it,
    /// `slowdown` multiplies each batch's real compute time instead.
    pub pace_to_profile: bool,
    /// Most requests queued or running at once; further assignments are answered `overloaded`.
    pub max_queued: usize,
    /// Longest an idle model instance waits for its batch to fill, milliseconds. 0 (the
    /// default) is work-conserving: an idle instance takes what is queued at once, and batches
    /// form while every instance of the queue is busy. An assignment can only lower it.
    pub max_queue_delay_ms: u32,
    /// Load one instance of every (model, width) before announcing the agent, so the first
    /// requests of each queue do not wait for a load. Instances no request uses are dropped
    /// after `instance_idle_timeout_s` as usual.
    pub warm_instances: bool,
    /// File with the key shared with the coordinator (at least 16 bytes). When set, only
    /// assignments signed with it run; others are refused `unauthenticated` on `{prefix}/errors`.
    pub assignment_key_file: Option<PathBuf>,
    /// Power model used when no power sensor is readable.
    pub energy: EnergyModelConfig,
}

/// Power model for devices without a power sensor: idle + utilization × (max − idle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnergyModelConfig {
    /// Watts drawn when idle.
    pub idle_power_w: f32,
    /// Watts drawn at full utilization.
    pub max_power_w: f32,
}

impl Default for EnergyModelConfig {
    fn default() -> Self {
        Self {
            idle_power_w: 10.0,
            max_power_w: 65.0,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            id: default_agent_id(),
            topic_prefix: slim_protocol::DEFAULT_PREFIX.into(),
            broker: BrokerOptions::default(),
            models_dir: PathBuf::from("models"),
            models: Vec::new(),
            backend: BackendChoice::Auto,
            max_batch: 32,
            max_instances_per_width: 0,
            scale_up_wait_ms: 20,
            instance_idle_timeout_s: 30,
            memory_budget_mb: None,
            utilization_ceiling: 1.0,
            telemetry_interval_ms: 1000,
            max_payload_bytes: 2 * 1024 * 1024,
            threads: 1,
            concrete_batches: vec![1],
            slowdown: 1.0,
            state_dir: None,
            profile: None,
            pace_to_profile: false,
            outbox_max_mb: 64,
            outbox_max_age_s: 3600,
            max_queued: 4096,
            max_queue_delay_ms: slim_protocol::DEFAULT_BATCH_DELAY_MS,
            warm_instances: true,
            assignment_key_file: None,
            energy: EnergyModelConfig::default(),
        }
    }
}

fn default_agent_id() -> String {
    let host = sysinfo::System::host_name().unwrap_or_else(|| "localhost".into());
    let clean: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("agent-{clean}")
}

/// A comma-separated list of batch sizes on the command line; `none` (or nothing) is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchList(pub Vec<u16>);

impl std::str::FromStr for BatchList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(Self(Vec::new()));
        }
        s.split(',')
            .map(|b| {
                b.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("{b:?} is not a batch size (expected e.g. 1,8 or none)"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl std::fmt::Display for BatchList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let list: Vec<String> = self.0.iter().map(u16::to_string).collect();
        f.write_str(&list.join(","))
    }
}

impl AgentConfig {
    /// How the model plans are prepared.
    pub fn plan_options(&self) -> crate::model::PlanOptions {
        crate::model::PlanOptions {
            threads: self.threads as usize,
            concrete_batches: self.concrete_batches.iter().map(|&b| b as usize).collect(),
        }
    }

    /// Parses a TOML file's text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The default configuration as commented TOML.
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Self::default()).expect("config serializes");
        format!(
            "# slim-agent configuration. Every key is optional; these are the defaults.\n\
             # Flags and SLIM_* environment variables override the file.\n{body}"
        )
    }

    /// Checks values that TOML types cannot.
    pub fn validate(&self) -> Result<(), String> {
        slim_protocol::limits::check_name("agent id", &self.id).map_err(|e| e.to_string())?;
        if self.max_queued == 0 {
            return Err("max_queued must be at least 1".into());
        }
        if self.max_batch == 0 {
            return Err("max_batch must be at least 1".into());
        }
        if self.utilization_ceiling.is_nan() || self.utilization_ceiling <= 0.0 {
            return Err("utilization_ceiling must be positive".into());
        }
        if self.threads == 0 {
            return Err("threads must be at least 1".into());
        }
        if let Some(b) = self
            .concrete_batches
            .iter()
            .find(|&&b| b == 0 || b > self.max_batch)
        {
            return Err(format!(
                "concrete batch size {b} must be between 1 and max_batch ({})",
                self.max_batch
            ));
        }
        if self.slowdown.is_nan() || self.slowdown < 1.0 {
            return Err(format!("slowdown {} must be >= 1", self.slowdown));
        }
        if self.pace_to_profile && self.profile.is_none() {
            return Err("pace_to_profile needs a profile: the device profile to emulate".into());
        }
        self.broker.validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_default_config_parses_back_to_the_default() {
        let parsed = AgentConfig::from_toml(&AgentConfig::default_toml()).unwrap();
        assert_eq!(parsed, AgentConfig::default());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = AgentConfig::from_toml("max_btach = 4").unwrap_err();
        assert!(err.to_string().contains("max_btach"), "{err}");
    }

    #[test]
    fn batch_lists_parse_sizes_and_none() {
        assert_eq!("1, 8".parse::<BatchList>().unwrap().0, vec![1, 8]);
        assert!("none".parse::<BatchList>().unwrap().0.is_empty());
        assert!("".parse::<BatchList>().unwrap().0.is_empty());
        assert!("1,x".parse::<BatchList>().unwrap_err().contains("\"x\""));
        assert_eq!(BatchList(vec![1, 32]).to_string(), "1,32");
    }

    #[test]
    fn zero_threads_and_concrete_batches_beyond_max_batch_are_refused() {
        let zero = AgentConfig {
            threads: 0,
            ..AgentConfig::default()
        };
        assert!(zero.validate().unwrap_err().contains("threads"));
        let too_big = AgentConfig {
            concrete_batches: vec![1, 64],
            max_batch: 32,
            ..AgentConfig::default()
        };
        assert!(too_big.validate().unwrap_err().contains("64"));
        assert!(AgentConfig::default().validate().is_ok());
    }

    #[test]
    fn pacing_without_a_profile_is_refused() {
        let config = AgentConfig {
            pace_to_profile: true,
            ..AgentConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("pace_to_profile"));
    }

    #[test]
    fn a_slowdown_below_one_is_refused() {
        let config = AgentConfig {
            slowdown: 0.5,
            ..AgentConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("slowdown"));
    }
}
