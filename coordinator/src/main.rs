//! `slim-coordinator`: route every request to a device, width and batch size.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use slim_coordinator::CoordinatorConfig;
use slim_router::RouterKind;

/// Routes Slim Scheduler inference requests: reads requests and agent telemetry from MQTT,
/// picks a device, width and batch size for each, and sends the assignment to that agent.
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
    /// Route requests (the default when no command is given).
    Run(Box<RunArgs>),
    /// Print the default configuration file.
    GenerateConfig,
}

#[derive(Debug, clap::Args, Clone)]
struct RunArgs {
    /// TOML configuration file (see `generate-config`); flags override it.
    #[arg(long, short, env = "SLIM_COORDINATOR_CONFIG")]
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
    /// Router that places requests: random, round-robin, least-loaded (the default), greedy,
    /// or ppo (the trained policy given by --policy).
    #[arg(long, value_enum, hide_possible_values = true)]
    router: Option<RouterKind>,
    /// Trained policy checkpoint for `--router ppo` (see `slim train`).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Share the request stream with other coordinators of this group (MQTT shared subscription).
    #[arg(long, env = "SLIM_SHARED_GROUP")]
    shared_group: Option<String>,
    /// File with the key shared with the agents (at least 16 bytes, e.g. `openssl rand -hex 32`);
    /// every assignment is signed with it so agents can refuse forged work.
    #[arg(long, env = "SLIM_ASSIGNMENT_KEY_FILE", value_name = "FILE")]
    assignment_key_file: Option<PathBuf>,
    /// Seed for random routers.
    #[arg(long)]
    seed: Option<u64>,
    /// Monitoring HTTP address for /metrics, /api/v1/state and the dashboard; "" disables it.
    #[arg(long, env = "SLIM_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Keep refining the PPO policy from live rewards (needs --router ppo): decisions are
    /// sampled, and every --online-batch rewards a guarded PPO update replaces the weights.
    #[arg(long)]
    online_refine: bool,
    /// Rewards per online update (default 256).
    #[arg(long, value_name = "N")]
    online_batch: Option<usize>,
    /// Learning rate of online updates (default 1e-4).
    #[arg(long, value_name = "LR")]
    online_lr: Option<f64>,
    /// Write the refined checkpoint here after every applied online update.
    #[arg(long, value_name = "FILE")]
    online_save: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<CoordinatorConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                CoordinatorConfig::from_toml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => CoordinatorConfig::default(),
        };
        if let Some(v) = self.broker {
            config.broker.url = v;
        }
        config.broker.username = self.username.or(config.broker.username.take());
        config.broker.password = self.password.or(config.broker.password.take());
        config.broker.ca_file = self.ca_file.or(config.broker.ca_file.take());
        if let Some(v) = self.topic_prefix {
            config.topic_prefix = v;
        }
        if let Some(v) = self.router {
            config.router = v;
        }
        if let Some(v) = self.policy {
            config.policy = Some(v);
        }
        if let Some(v) = self.shared_group {
            config.shared_group = Some(v);
        }
        if let Some(v) = self.assignment_key_file {
            config.assignment_key_file = Some(v);
        }
        if let Some(v) = self.seed {
            config.seed = v;
        }
        if let Some(v) = self.http_listen {
            config.http_listen = Some(v);
        }
        config.online.enabled |= self.online_refine;
        if let Some(v) = self.online_batch {
            config.online.learner.batch = v;
        }
        if let Some(v) = self.online_lr {
            config.online.learner.learning_rate = v;
        }
        if let Some(v) = self.online_save {
            config.online.save = Some(v);
        }
        config.check().map_err(anyhow::Error::msg)?;
        config.broker.validate()?;
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
            print!("{}", CoordinatorConfig::default_toml());
            return Ok(());
        }
        Some(Command::Run(args)) => *args,
        None => cli.run,
    };
    slim_mqtt::daemon::init_logging(args.log_json);
    slim_mqtt::daemon::exit_on_panic();
    let mut coordinator = slim_coordinator::start(args.into_config()?).await?;
    tokio::select! {
        _ = slim_mqtt::daemon::shutdown_signal() => {}
        why = coordinator.failed() => {
            tracing::error!("{why}: exiting so the supervisor restarts the coordinator");
            std::process::exit(slim_mqtt::daemon::FAILURE_EXIT_CODE);
        }
    }
    tracing::info!("shutting down");
    coordinator.shutdown().await;
    Ok(())
}
