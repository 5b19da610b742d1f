//! `slim demo --compare`: the same seeded workload (same arrivals, inputs, models and rates)
//! through random, the best heuristic and the shipped PPO policy, each on a freshly started
//! coordinator in front of the same agents, then one side-by-side table and a plain sentence on
//! what it shows. The table and the sentence are built in [`rows`] and [`takeaway`], without I/O.

mod rows;
mod takeaway;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use slim_client::{
    client::{Reply, SlimClient},
    cluster::{ClusterSpec, LocalCluster},
    load::LoadReport,
    samples::Sample,
};
use slim_protocol::manifest::Manifest;
use slim_router::ppo::{Checkpoint, PriorCheck};
use slim_router::RouterKind;

use super::{DemoArgs, START_TIMEOUT};
use rows::{Answer, Families, RouterRun, Row};

/// The best heuristic a coordinator can run: docs/evaluation.md's "best heuristic (lowest mean
/// cost among those keeping up)" is greedy, or greedy with the balanced preset's cost weights (a
/// simulator-only variant), at every load where one keeps up.
const BEST_HEURISTIC: RouterKind = RouterKind::Greedy;

/// How long each run waits for its last answers after the load ends.
const DRAIN: Duration = Duration::from_secs(15);

/// The PPO checkpoint's name as `slim eval` gives it: `prior:<preset>` when it equals its
/// greedy prior, else `ppo:<preset>`.
fn ppo_name(policy: &Path) -> anyhow::Result<String> {
    let checkpoint =
        Checkpoint::load(policy).with_context(|| format!("loading {}", policy.display()))?;
    Ok(crate::commands::eval::checkpoint_name(
        &checkpoint.meta.preset,
        &PriorCheck::of(&checkpoint),
    ))
}

/// Which of the demo's families have trained weights (their manifest top-1 means something).
fn families(args: &DemoArgs) -> anyhow::Result<Families> {
    let mut f = Families::default();
    for model in &args.models {
        let dir = args.models_dir.join(model);
        let manifest =
            Manifest::load(&dir).with_context(|| format!("reading {}", dir.display()))?;
        if manifest.weights == "untrained" {
            f.untrained.push(model.clone());
        } else {
            f.trained.push(model.clone());
        }
    }
    Ok(f)
}

/// The answers of one family's load, as the table needs them.
fn answers(report: &LoadReport, trained: bool) -> impl Iterator<Item = Answer> + '_ {
    report.outcomes.iter().filter_map(move |o| match &o.reply {
        Reply::Result(r) => Some(Answer {
            latency_ms: o.latency.as_secs_f64() * 1000.0,
            width: r.width,
            energy_j: f64::from(r.energy_j),
            energy_source: r.energy_source,
            top1: trained.then_some(f64::from(r.accuracy)),
        }),
        Reply::Error(_) => None,
    })
}

/// Runs the workload once under `router`, on a freshly started coordinator (the agents stay).
async fn run_one(
    args: &DemoArgs,
    cluster: &mut LocalCluster,
    client: &SlimClient,
    (router, name): (RouterKind, &str),
    samples: &[Vec<Sample>],
    families: &Families,
) -> anyhow::Result<RouterRun> {
    cluster.spec.router = router;
    cluster.spec.policy = (router == RouterKind::Ppo).then(|| args.policy.clone());
    cluster.restart_coordinator().await?;
    cluster
        .wait_for_agents(args.slowdowns.len(), START_TIMEOUT)
        .await?;
    // Let every agent's telemetry (and so its queue and profile) reach the router first.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let loads = super::spawn_loads(args, client, samples.to_vec(), DRAIN);
    let mut run = RouterRun {
        name: name.to_string(),
        ..RouterRun::default()
    };
    for (load, model) in loads.into_iter().zip(&args.models) {
        let report = load.await??;
        let summary = report.summary();
        run.sent += summary.sent;
        run.lost += summary.lost;
        run.errored += summary.errored.values().sum::<usize>();
        run.answers
            .extend(answers(&report, families.trained.contains(model)));
    }
    Ok(run)
}

/// Starts the broker (unless external), a coordinator and the agents, once for all routers.
async fn start(args: &DemoArgs) -> anyhow::Result<(LocalCluster, SlimClient)> {
    let spec = ClusterSpec {
        broker_url: args.broker.clone(),
        topic_prefix: format!("slim-compare/{}/v1", std::process::id()),
        models_dir: args.models_dir.clone(),
        models: args.models.clone(),
        profile: Some(args.profile.clone()),
        agent_slowdowns: args.slowdowns.clone(),
        agent_backend: args.backend,
        ..ClusterSpec::default()
    };
    let cluster = tokio::time::timeout(START_TIMEOUT, LocalCluster::start(spec))
        .await
        .map_err(|_| anyhow::anyhow!("the local system did not start in time"))??;
    let client = SlimClient::connect(
        &cluster.broker,
        &cluster.spec.topic_prefix,
        &format!("slim-compare-client-{}", std::process::id()),
        &[],
    )
    .await?;
    Ok((cluster, client))
}

/// Runs the comparison on `samples` (one list per model) and prints the table.
pub async fn run(args: &DemoArgs, samples: &[Vec<Sample>]) -> anyhow::Result<()> {
    let started = Instant::now();
    let families = families(args)?;
    let routers = [
        (RouterKind::Random, RouterKind::Random.as_str().to_string()),
        (BEST_HEURISTIC, BEST_HEURISTIC.as_str().to_string()),
        (RouterKind::Ppo, ppo_name(&args.policy)?),
    ];
    println!(
        "Comparing {}, {} (the best heuristic a coordinator runs, per docs/evaluation.md) and {} ({}) on the same \
         workload: {} for {} each (Poisson arrivals, seed {}), {} agents (emulated slowdowns {}), \
         {} broker. Each router gets a freshly started coordinator; the agents are the same.",
        routers[0].1,
        routers[1].1,
        routers[2].1,
        args.policy.display(),
        super::workload(args),
        super::super::human_duration(args.duration),
        args.seed,
        args.slowdowns.len(),
        super::super::list_text(&args.slowdowns),
        if args.broker.is_some() {
            "the external"
        } else {
            "an embedded"
        },
    );
    print!("Starting the agents... ");
    let _ = std::io::stdout().flush();
    let t = Instant::now();
    let (mut cluster, client) = start(args).await?;
    println!("{:.0} s", t.elapsed().as_secs_f64());
    let mut runs = Vec::new();
    for (index, (router, name)) in routers.iter().enumerate() {
        print!("[{}/{}] {name}: ", index + 1, routers.len());
        let _ = std::io::stdout().flush();
        let t = Instant::now();
        let route = (*router, name.as_str());
        let run = run_one(args, &mut cluster, &client, route, samples, &families).await?;
        println!(
            "answered {} of {}, lost {} ({:.0} s)",
            run.answers.len(),
            run.sent,
            run.lost,
            t.elapsed().as_secs_f64()
        );
        runs.push(run);
    }
    client.disconnect().await;
    cluster.shutdown().await;
    let rows: Vec<Row> = runs.iter().map(Row::of).collect();
    println!(
        "\nSide by side (latency measured by the client, end to end):\n{}",
        rows::table(&rows, &families)
    );
    println!("What this shows: {}", takeaway::takeaway(&rows));
    println!(
        "Took {:.0} s. Reproduce: {}",
        started.elapsed().as_secs_f64(),
        super::reproduce_command(args)
    );
    Ok(())
}
