//! `slim-agent`: serve slimmable models on this device.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use slim_agent::{backend::BackendChoice, AgentConfig};

/// Serves slimmable CNNs on this device: receives assignments from the Slim Scheduler
/// coordinator over MQTT, batches them, runs them with tract and answers each request.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default when no command is given).
    Run(Box<RunArgs>),
    /// Print the default configuration file.
    GenerateConfig,
    /// Check the installation (hardware, CUDA, NVML, sensors, models, broker); one line per
    /// check, `OK` or what to fix. Exits non-zero when the broker or the models fail.
    Doctor(Box<DoctorArgs>),
}

#[derive(Debug, clap::Args, Clone)]
struct DoctorArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Seconds to wait for the broker's answer.
    #[arg(long, default_value_t = 5)]
    broker_timeout_s: u64,
    /// Root of the file system to probe (`/etc/nv_tegra_release`, sysfs); for testing.
    #[arg(long, default_value = "/", hide = true)]
    root: PathBuf,
}

#[derive(Debug, clap::Args, Clone)]
struct RunArgs {
    /// TOML configuration file (see `generate-config`); flags override it.
    #[arg(long, short, env = "SLIM_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Broker URL, e.g. mqtt://127.0.0.1:1883 or mqtts://broker:8883.
    #[arg(long, env = "SLIM_BROKER")]
    broker: Option<String>,
    /// Topic prefix of the deployment (default slim/v1); every agent, coordinator and client
    /// of one deployment uses the same.
    #[arg(long, env = "SLIM_TOPIC_PREFIX")]
    topic_prefix: Option<String>,
    /// MQTT username.
    #[arg(long, env = "SLIM_MQTT_USERNAME")]
    username: Option<String>,
    /// MQTT password.
    #[arg(long, env = "SLIM_MQTT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// CA certificate (PEM) for mqtts://.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long)]
    client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long)]
    client_key: Option<PathBuf>,
    /// Agent id, unique in the fleet.
    #[arg(long, env = "SLIM_AGENT_ID")]
    id: Option<String>,
    /// Folder with one sub-folder per model family.
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Inference backend.
    #[arg(long, value_enum)]
    backend: Option<BackendChoice>,
    /// Emulate a device this many times slower (flagged in status and telemetry): each batch
    /// takes k times its real compute time, or, with --pace-to-profile, k times the profile's
    /// latency.
    #[arg(long)]
    slowdown: Option<f32>,
    /// Device profile (TOML, as in the profiles folder) published for the routers.
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Emulate the device of --profile: hold every batch to the profile's latency for its
    /// model, width and batch size (times --slowdown), with its power and batch limits.
    #[arg(long)]
    pace_to_profile: bool,
    /// Threads of tract's executor per running batch (default 1).
    #[arg(long)]
    threads: Option<u16>,
    /// Batch sizes with a plan built for that concrete size, comma-separated (default 1);
    /// `none` keeps only the symbolic-batch plan.
    #[arg(long)]
    concrete_batches: Option<slim_agent::config::BatchList>,
    /// File with the key shared with the coordinator; only assignments signed with it run.
    #[arg(long, env = "SLIM_ASSIGNMENT_KEY_FILE", value_name = "FILE")]
    assignment_key_file: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<AgentConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                AgentConfig::from_toml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => AgentConfig::default(),
        };
        let b = &mut config.broker;
        if let Some(v) = self.broker {
            b.url = v;
        }
        b.username = self.username.or(b.username.take());
        b.password = self.password.or(b.password.take());
        b.ca_file = self.ca_file.or(b.ca_file.take());
        b.client_cert = self.client_cert.or(b.client_cert.take());
        b.client_key = self.client_key.or(b.client_key.take());
        if let Some(v) = self.id {
            config.id = v;
        }
        if let Some(v) = self.topic_prefix {
            config.topic_prefix = v;
        }
        if let Some(v) = self.models_dir {
            config.models_dir = v;
        }
        if let Some(v) = self.backend {
            config.backend = v;
        }
        if let Some(v) = self.slowdown {
            config.slowdown = v;
        }
        if let Some(v) = self.profile {
            config.profile = Some(v);
        }
        config.pace_to_profile |= self.pace_to_profile;
        if let Some(v) = self.threads {
            config.threads = v;
        }
        if let Some(v) = &self.concrete_batches {
            config.concrete_batches = v.0.clone();
        }
        if let Some(v) = self.assignment_key_file {
            config.assignment_key_file = Some(v);
        }
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

fn main() -> std::process::ExitCode {
    slim_mqtt::daemon::run_main(serve())
}

async fn serve() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::GenerateConfig) => {
            print!("{}", AgentConfig::default_toml());
            return Ok(());
        }
        Some(Command::Doctor(args)) => {
            let args = *args;
            let config = args.run.into_config()?;
            let report = slim_agent::doctor::run(
                &config,
                &slim_agent::doctor::DoctorOptions {
                    root: args.root,
                    broker_timeout: std::time::Duration::from_secs(args.broker_timeout_s),
                },
            )
            .await;
            print!("{report}");
            std::process::exit(if report.passed() { 0 } else { 1 });
        }
        Some(Command::Run(args)) => *args,
        None => cli.run,
    };
    slim_mqtt::daemon::init_logging(args.log_json);
    let config = args.into_config()?;
    slim_mqtt::daemon::exit_on_panic();
    let mut agent = slim_agent::start(config).await?;
    tokio::select! {
        _ = slim_mqtt::daemon::shutdown_signal() => {}
        why = agent.failed() => {
            tracing::error!("{why}: exiting so the supervisor restarts the agent");
            std::process::exit(slim_mqtt::daemon::FAILURE_EXIT_CODE);
        }
    }
    tracing::info!("shutting down");
    agent.shutdown().await;
    Ok(())
}
