//! `slim`: the Slim Scheduler operator CLI.

use clap::{Parser, Subcommand};
use slim::commands::{bench, demo, eval, models, profile, request, simulate, status, train};

/// Slim Scheduler: serve slimmable CNNs across a fleet of edge devices over MQTT.
///
/// Start with `slim demo`: it runs an embedded broker, a coordinator and three agents on this
/// machine and drives a workload through them.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker, a coordinator and agents on this machine, drive a workload, print a summary.
    Demo(demo::DemoArgs),
    /// Send one request (an image or a .npy tensor) and print the prediction.
    Request(request::RequestArgs),
    /// Open-loop Poisson load against a running system: throughput, latency, losses.
    Bench(bench::BenchArgs),
    /// List model families and widths: accuracy and its source, FLOPs, params, latency here.
    Models(models::ModelsArgs),
    /// Measure this device per family × width × batch and write a profile file.
    Profile(profile::ProfileArgs),
    /// Train a PPO routing policy in the cluster simulator and write a checkpoint.
    Train(train::TrainArgs),
    /// Compare routers in the simulator on seeds not used for training.
    Simulate(simulate::SimulateArgs),
    /// Reproduce the paper's comparison (simulator + live cluster) and write docs/evaluation.md.
    Eval(eval::EvalArgs),
    /// The fleet table (backend, status, utilization, memory, power, queue) from the broker.
    Status(status::StatusArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    slim::init_logging("warn,rumqttd=off", cli.log_json);
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Request(args) => request::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Models(args) => models::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Train(args) => train::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Status(args) => status::run(args).await,
        Command::Eval(args) => eval::run(args).await,
    }
}
