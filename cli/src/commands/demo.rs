//! `slim demo`: a broker, a coordinator and three agents on this machine, a workload, a summary;
//! with `--compare`, the same workload through three routers side by side ([`compare`]).

mod compare;

use std::{path::PathBuf, time::Duration};

use clap::Args;
use slim_agent::backend::BackendChoice;
use slim_client::{
    client::SlimClient,
    cluster::{ClusterSpec, LocalCluster},
    load::{run_open_loop, LoadReport, LoadSpec},
    samples::{family_samples, Sample},
};
use slim_router::RouterKind;
use tokio::task::JoinHandle;

use super::BROKER_TIMEOUT;

/// Runs the whole system on this machine and drives a workload through it.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long to send requests (with --compare: per router).
    #[arg(long, default_value = "15s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Run the same seeded workload through random, greedy (the best heuristic in
    /// docs/evaluation.md) and the PPO policy given by --policy, each on a freshly started
    /// coordinator in front of the same agents, and print one side-by-side table (about 60 s
    /// with the defaults).
    #[arg(long, conflicts_with_all = ["router", "online_refine", "keep_running"])]
    pub compare: bool,
    /// Mean request rate per model (Poisson arrivals), per second; one value per --models entry.
    #[arg(long, value_delimiter = ',', default_value = "50,4")]
    pub rates: Vec<f64>,
    /// Router used by the coordinator: random, round-robin, least-loaded, greedy, or ppo (the
    /// trained policy given by --policy).
    #[arg(long, value_enum, default_value_t = RouterKind::LeastLoaded, hide_possible_values = true)]
    pub router: RouterKind,
    /// Trained policy for `--router ppo` (see `slim train`).
    #[arg(long, default_value = "router/policies/efficiency.safetensors")]
    pub policy: PathBuf,
    /// Device profile the agents publish (latency per model × width × batch on this machine).
    #[arg(long, default_value = "profiles/cpu-2core.toml")]
    pub profile: PathBuf,
    /// Model families to request, each at its own rate.
    #[arg(long, value_delimiter = ',', default_value = "digits,cifar-slimresnet")]
    pub models: Vec<String>,
    /// Folder of model families.
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// One agent per value: how many times slower than this machine it behaves (1 = real speed).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub slowdowns: Vec<f32>,
    /// The agents' inference backend: `cpu` (the default: the slowdowns then emulate slower
    /// devices from one known speed), `cuda` or `auto` (this machine's GPU, in a build with a
    /// `cuda-*` feature).
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    pub backend: BackendChoice,
    /// Use this broker instead of starting an embedded one.
    #[arg(long, env = "SLIM_BROKER")]
    pub broker: Option<String>,
    /// Keep the system running after the summary, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the coordinator serves its dashboard and /metrics; "" disables it.
    #[arg(long, env = "SLIM_HTTP_LISTEN", default_value = slim_coordinator::config::DEFAULT_HTTP_LISTEN)]
    pub http_listen: String,
    /// With `--router ppo`: refine the policy online from the live rewards (see docs/router.md);
    /// the demo's summary then reports the updates.
    #[arg(long)]
    pub online_refine: bool,
    /// Rewards per online update.
    #[arg(long, default_value_t = 64, requires = "online_refine")]
    pub online_batch: usize,
}

/// How long the demo waits for its broker, coordinator and agents to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `slim demo` command line that repeats this run.
pub fn reproduce_command(args: &DemoArgs) -> String {
    format!(
        "slim demo --duration {} --models {} --rates {} {} --seed {}{}{}",
        super::human_duration(args.duration),
        args.models.join(","),
        super::list_text(&args.rates),
        if args.compare {
            "--compare".to_string()
        } else {
            format!("--router {}", args.router.as_str())
        },
        args.seed,
        if args.backend == BackendChoice::Cpu {
            String::new()
        } else {
            format!(" --backend {}", args.backend.as_str())
        },
        if args.online_refine {
            format!(" --online-refine --online-batch {}", args.online_batch)
        } else {
            String::new()
        }
    )
}

/// The `slim status` and `slim request` commands that reach a demo left running on `broker`.
/// `--topic-prefix` is spelled out when it is not the default or SLIM_TOPIC_PREFIX would
/// change it.
pub fn follow_up_commands(broker: &str, prefix: &str) -> (String, String) {
    let env_prefix = std::env::var("SLIM_TOPIC_PREFIX").ok();
    let prefix_flag =
        if prefix != slim_protocol::DEFAULT_PREFIX || env_prefix.is_some_and(|p| p != prefix) {
            format!(" --topic-prefix {prefix}")
        } else {
            String::new()
        };
    (
        format!("slim status --broker {broker}{prefix_flag}"),
        format!("slim request --broker {broker}{prefix_flag} --model digits --input DIGIT.png"),
    )
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let samples = check(&args).await?;
    if args.compare {
        return compare::run(&args, &samples).await;
    }
    let spec = cluster_spec(&args);
    let state_root = spec.state_root.clone();
    let cluster = start_cluster(&args, spec).await?;
    println!("Broker: {}", cluster.broker.url);
    let dashboard = cluster
        .coordinator
        .as_ref()
        .and_then(|c| c.http_addr())
        .map(|addr| format!("http://{addr}/"));
    if let Some(url) = &dashboard {
        println!("Dashboard: {url}  (metrics at {url}metrics)");
    }
    let client = SlimClient::connect(
        &cluster.broker,
        &cluster.spec.topic_prefix,
        "slim-demo-client",
        &[],
    )
    .await?;
    println!(
        "Sending {} for {} (open loop, Poisson arrivals, held-out or reference inputs)...",
        workload(&args),
        super::human_duration(args.duration)
    );
    let mut reports = Vec::new();
    for load in spawn_loads(&args, &client, samples, Duration::from_secs(15)) {
        reports.push(load.await?);
    }
    summarize(&args, &cluster, reports, dashboard.as_deref()).await?;
    if args.keep_running {
        keep_running(&cluster, dashboard.as_deref()).await?;
    }
    client.disconnect().await;
    cluster.shutdown().await;
    if let Some(root) = state_root {
        let _ = std::fs::remove_dir_all(root);
    }
    Ok(())
}

/// Checks the flags and that the files and broker they name are there; the samples of each
/// model, in the order of `--models`.
async fn check(args: &DemoArgs) -> anyhow::Result<Vec<Vec<Sample>>> {
    anyhow::ensure!(
        !args.online_refine || args.router == RouterKind::Ppo,
        "--online-refine refines a PPO policy: it needs --router ppo"
    );
    anyhow::ensure!(
        args.rates.len() == args.models.len(),
        "--rates needs one rate per --models entry ({} models, {} rates)",
        args.models.len(),
        args.rates.len()
    );
    let samples = args
        .models
        .iter()
        .map(|m| family_samples(&args.models_dir, m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    super::require_path(&args.profile, "the device profile", "--profile")?;
    if args.router == RouterKind::Ppo || args.compare {
        super::require_path(&args.policy, "the PPO policy", "--policy")?;
    }
    if let Some(url) = &args.broker {
        super::probe_broker(&slim_mqtt::BrokerOptions::from_url(url), BROKER_TIMEOUT).await?;
    }
    Ok(samples)
}

/// The local system the flags describe.
fn cluster_spec(args: &DemoArgs) -> ClusterSpec {
    let mut online = slim_coordinator::config::OnlineSettings {
        enabled: args.online_refine,
        ..Default::default()
    };
    online.learner.batch = args.online_batch;
    ClusterSpec {
        online,
        broker_url: args.broker.clone(),
        router: args.router,
        models_dir: args.models_dir.clone(),
        models: args.models.clone(),
        profile: Some(args.profile.clone()),
        policy: (args.router == RouterKind::Ppo).then(|| args.policy.clone()),
        agent_slowdowns: args.slowdowns.clone(),
        agent_backend: args.backend,
        http_listen: Some(args.http_listen.clone()),
        state_root: Some(std::env::temp_dir().join(format!("slim-demo-{}", std::process::id()))),
        ..ClusterSpec::default()
    }
}

/// Says what it starts, and starts it within [`START_TIMEOUT`].
async fn start_cluster(args: &DemoArgs, spec: ClusterSpec) -> anyhow::Result<LocalCluster> {
    println!(
        "Starting {} broker, a coordinator ({}) and {} agents ({} backend, emulated slowdowns {})...",
        if args.broker.is_some() {
            "on the external"
        } else {
            "an embedded"
        },
        args.router.as_str(),
        args.slowdowns.len(),
        args.backend.as_str(),
        super::list_text(&args.slowdowns)
    );
    // `ort` runs on the CPU; `auto` may land on the GPU.
    if matches!(args.backend, BackendChoice::Cuda | BackendChoice::Auto) && args.slowdowns.len() > 1
    {
        println!(
            "Note: on a GPU the {} agents share one board, and each charges its batches the \
             board's whole measured power: per-result energy is overstated where their batches \
             overlap (one agent per GPU, as deployed, does not double count).",
            args.slowdowns.len()
        );
    }
    tokio::time::timeout(START_TIMEOUT, LocalCluster::start(spec))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the local system did not start within {} (broker {})",
                super::human_duration(START_TIMEOUT),
                args.broker.as_deref().unwrap_or("embedded")
            )
        })?
}

/// The workload as people read it: `50 req/s of digits and 4 req/s of cifar-slimresnet`.
fn workload(args: &DemoArgs) -> String {
    let mix: Vec<String> = args
        .models
        .iter()
        .zip(&args.rates)
        .map(|(m, r)| format!("{r} req/s of {m}"))
        .collect();
    mix.join(" and ")
}

/// Starts one open-loop load per model (`samples` in the order of `--models`), model `i` seeded
/// with `--seed` + `i`, each waiting `drain` for its last answers.
fn spawn_loads(
    args: &DemoArgs,
    client: &SlimClient,
    samples: Vec<Vec<Sample>>,
    drain: Duration,
) -> Vec<JoinHandle<anyhow::Result<LoadReport>>> {
    args.models
        .iter()
        .zip(&args.rates)
        .zip(samples)
        .enumerate()
        .map(|(i, ((model, rate), samples))| {
            let spec = LoadSpec::new(model.clone(), *rate, args.duration)
                .with_drain(drain)
                .with_seed(args.seed + i as u64);
            let client = client.clone();
            tokio::spawn(async move { run_open_loop(&client, &samples, &spec).await })
        })
        .collect()
}

/// Prints each model's summary, the coordinator's counters and how to repeat the run.
async fn summarize(
    args: &DemoArgs,
    cluster: &LocalCluster,
    reports: Vec<anyhow::Result<LoadReport>>,
    dashboard: Option<&str>,
) -> anyhow::Result<()> {
    for (model, report) in args.models.iter().zip(reports) {
        println!(
            "\nSummary for {model} ({} router, {} agents):",
            args.router.as_str(),
            args.slowdowns.len()
        );
        print!("{}", report?.summary());
    }
    if let Some(c) = &cluster.coordinator {
        let counters = c.counters().await;
        println!(
            "  coordinator routed {}  re-routed {}  refused {}",
            counters.routed,
            counters.rerouted,
            counters.refused_total()
        );
    }
    if args.online_refine {
        match dashboard {
            Some(url) => println!(
                "  online refinement: updates, rewards and KL are the slim_router_online_* series at {url}metrics"
            ),
            None => println!("  online refinement ran; enable --http-listen to see its metrics"),
        }
    }
    println!("Reproduce: {}", reproduce_command(args));
    Ok(())
}

/// Says how to reach the system left running, and waits for Ctrl-C.
async fn keep_running(cluster: &LocalCluster, dashboard: Option<&str>) -> anyhow::Result<()> {
    println!(
        "\nStill running; broker at {}. Press Ctrl-C to stop.",
        cluster.broker.url
    );
    if let Some(url) = dashboard {
        println!("Dashboard: {url}");
    }
    let (status, request) = follow_up_commands(&cluster.broker.url, &cluster.spec.topic_prefix);
    println!("Fleet table: {status}");
    println!("One request: {request}  (light digit on a dark background)");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{parse_from, Command};

    fn demo_args(argv: &str) -> DemoArgs {
        match parse_from(argv.split_whitespace())
            .expect("the command line parses")
            .command
        {
            Command::Demo(args) => args,
            other => panic!("not a demo: {other:?}"),
        }
    }

    #[test]
    fn the_reproduce_line_names_a_gpu_backend_and_parses_back_to_it() {
        let cpu = demo_args("slim demo --duration 5s");
        assert_eq!(cpu.backend, BackendChoice::Cpu);
        assert!(!reproduce_command(&cpu).contains("--backend"));
        let cuda = demo_args("slim demo --duration 5s --backend cuda");
        let line = reproduce_command(&cuda);
        assert!(line.ends_with("--seed 1 --backend cuda"), "{line}");
        assert_eq!(demo_args(&line).backend, BackendChoice::Cuda);
        assert_eq!(cluster_spec(&cuda).agent_backend, BackendChoice::Cuda);
    }
}
