//! The `slim` command line: its arguments, its dispatch, and how it reports errors. The binary's
//! `main` only calls [`main_with`]; tests parse command lines with [`parse_from`] (e.g. every
//! `slim ...` command the documentation shows) and run whole commands in-process.

use std::{ffi::OsString, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

use crate::commands::{
    bench, calibrate, demo, eval, models, profile, refine, request, simulate, status, train,
};

/// Slim Scheduler: serve slimmable CNNs across a fleet of edge devices over MQTT.
///
/// Start with `slim demo`: it runs an embedded broker, a coordinator and three agents on this
/// machine and drives a workload through them.
#[derive(Debug, Parser)]
#[command(name = "slim", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
}

/// The `slim` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Fit the simulator to a live cluster: per-batch overheads, transport delay and the batches
    /// each agent runs at once, written as a calibration file for `simulate`, `train` and
    /// `eval --calibration`.
    Calibrate(calibrate::CalibrateArgs),
    /// Reproduce the paper's comparison (simulator + live cluster) and write a report with plots.
    Eval(eval::EvalArgs),
    /// Measure online refinement live: the same workload with the PPO policy frozen, then
    /// refined from the agents' rewards; the rolling cost side by side.
    Refine(refine::RefineArgs),
    /// The fleet table (backend, status, utilization, memory, power, queue) from the broker.
    Status(status::StatusArgs),
}

/// Parses a `slim` command line (`args[0]` is the program name) without running anything or
/// exiting: the error is clap's, as `slim` would print it.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Cli::try_parse_from(args)
}

/// Runs one command.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::Request(args) => request::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Models(args) => models::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Train(args) => train::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Status(args) => status::run(args).await,
        Command::Eval(args) => eval::run(args).await,
        Command::Calibrate(args) => calibrate::run(args).await,
        Command::Refine(args) => refine::run(args).await,
    }
}

/// The whole `slim` process: parse `args`, set up logging, run the command, and report a
/// failure as `error: ...` plus its causes on stderr (never a backtrace), exit status 1.
/// Usage errors exit with clap's status 2; `--help` and `--version` with 0.
pub fn main_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    ExitCode::from(main_status(args))
}

/// [`main_with`], giving the exit status as a number.
pub fn main_status<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    crate::init_logging("warn,rumqttd=off", cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let outcome = runtime.block_on(run(cli.command));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", crate::error_report(&e));
            1
        }
    }
}
