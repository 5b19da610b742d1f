//! `slim bench --saturate`: how many requests per second the coordinator routes, against what
//! the same broker moves without it, for fleets of several sizes and every router.
//!
//! Everything runs in one process on one broker (embedded unless a URL is given), one case after
//! another: the anchors first (raw publish → subscribe, then a do-nothing relay), then for each
//! fleet size and router a fresh coordinator (its own topic prefix) with emulated agents
//! ([`emulated`]) that count assignments without running a model. Each case floods the same
//! number of QoS 1 requests from one publisher as fast as its in-flight window allows, and the
//! rate is messages received ÷ time from the first publish to the last receipt.
//!
//! [`run_groups`] also runs each routing case with several coordinators in one shared group
//! (`$share/saturate/…/requests/+`, the deployment's scale-out, docs/deploy.md): the broker
//! splits the flood between them, and the rate is what reached the agents from all of them.

pub mod anchors;
pub mod emulated;
mod report;

use std::{path::PathBuf, time::Duration};

use slim_coordinator::CoordinatorConfig;
use slim_mqtt::{BrokerOptions, EmbeddedBroker};
use slim_protocol::{encode, DeviceProfile, InferRequest, ModelInfo, Topics};
use slim_router::RouterKind;

pub use report::{Case, SaturationReport};

use anchors::{wait_for, Publisher, Relay, Sink};
use emulated::EmulatedFleet;

use slim_client::samples::Sample;

/// What to measure.
#[derive(Debug, Clone)]
pub struct SaturationSpec {
    /// Broker URL; `None` starts an embedded broker.
    pub broker_url: Option<String>,
    /// Requests per case.
    pub messages: usize,
    /// Emulated fleet sizes.
    pub fleets: Vec<usize>,
    /// Routers measured at every fleet size.
    pub routers: Vec<RouterKind>,
    /// PPO checkpoint, needed when `routers` holds `ppo`.
    pub policy: Option<PathBuf>,
    /// The model the requests ask for, with the model info the emulated agents announce.
    pub model: ModelInfo,
    /// The device profile the emulated agents publish (the PPO and greedy routers use it).
    pub profile: Option<DeviceProfile>,
    /// Request inputs.
    pub samples: Vec<Sample>,
    /// Topic prefix under which every case gets its own.
    pub topic_prefix: String,
}

/// How long a case may see nothing arrive before it is cut short.
const QUIET: Duration = Duration::from_secs(5);

/// Runs every case, each routing case with one coordinator.
pub async fn run(spec: &SaturationSpec) -> anyhow::Result<SaturationReport> {
    run_groups(spec, &[1]).await
}

/// Runs every case; each routing case once per entry of `coordinators`, with that many
/// coordinators sharing the request stream (1: a lone coordinator, no shared subscription).
pub async fn run_groups(
    spec: &SaturationSpec,
    coordinators: &[usize],
) -> anyhow::Result<SaturationReport> {
    let embedded = match &spec.broker_url {
        Some(_) => None,
        None => Some(EmbeddedBroker::start_local().await?),
    };
    let url = match (&spec.broker_url, &embedded) {
        (Some(url), _) => url.clone(),
        (None, Some(e)) => e.url(),
        (None, None) => unreachable!("an embedded broker was started"),
    };
    let broker = BrokerOptions::from_url(url.clone());
    let mut report = SaturationReport::new(&url, spec);
    let base = format!("{}/{}", spec.topic_prefix, uuid::Uuid::new_v4().simple());

    let topics = Topics::new(&format!("{base}/anchors"));
    let payloads = requests(spec, &topics, "anchor");
    let publisher = Publisher::connect(&broker, &client_id(&base, "pub")).await?;
    report.push(raw(&broker, &publisher, &base, &payloads).await?);
    report.push(relay(&broker, &publisher, &base, &payloads).await?);
    for &agents in &spec.fleets {
        for &router in &spec.routers {
            for &group in coordinators {
                eprintln!(
                    "saturate: {} with {agents} emulated agents, {group} coordinator(s)",
                    router.as_str()
                );
                let case = routing(
                    spec,
                    &broker,
                    &publisher,
                    &base,
                    (agents, group.max(1)),
                    router,
                )
                .await?;
                report.push(case);
            }
        }
    }
    Ok(report)
}

fn client_id(base: &str, role: &str) -> String {
    format!("{}-{role}", base.replace('/', "-"))
}

/// `n` distinct requests (ids `{tag}-{i}`), encoded, replying to a topic nobody reads.
fn requests(spec: &SaturationSpec, topics: &Topics, tag: &str) -> Vec<Vec<u8>> {
    let reply_to = topics.client_replies("saturate");
    (0..spec.messages)
        .map(|i| {
            let sample = &spec.samples[i % spec.samples.len()];
            let mut r = InferRequest::new(
                format!("{tag}-{i}"),
                spec.model.name.clone(),
                sample.input.clone(),
            );
            r.reply_to = Some(reply_to.clone());
            encode(&r)
        })
        .collect()
}

async fn raw(
    broker: &BrokerOptions,
    publisher: &Publisher,
    base: &str,
    payloads: &[Vec<u8>],
) -> anyhow::Result<Case> {
    let topic = format!("{base}/anchors/raw");
    let sink = Sink::start(broker, &client_id(base, "raw-sink"), &topic).await?;
    let start = std::time::Instant::now();
    publisher.flood(&topic, payloads).await?;
    let (received, rate) = wait_for(payloads.len() as u64, start, QUIET, || sink.received()).await;
    Ok(Case::anchor(
        "raw publish → subscribe",
        payloads.len(),
        received,
        rate,
    ))
}

async fn relay(
    broker: &BrokerOptions,
    publisher: &Publisher,
    base: &str,
    payloads: &[Vec<u8>],
) -> anyhow::Result<Case> {
    let (from, to) = (
        format!("{base}/anchors/relay-in"),
        format!("{base}/anchors/relay-out"),
    );
    let sink = Sink::start(broker, &client_id(base, "relay-sink"), &to).await?;
    let _relay = Relay::start(broker, &client_id(base, "relay"), &from, &to).await?;
    let start = std::time::Instant::now();
    publisher.flood(&from, payloads).await?;
    let (received, rate) = wait_for(payloads.len() as u64, start, QUIET, || sink.received()).await;
    Ok(Case::anchor(
        "do-nothing relay",
        payloads.len(),
        received,
        rate,
    ))
}

async fn routing(
    spec: &SaturationSpec,
    broker: &BrokerOptions,
    publisher: &Publisher,
    base: &str,
    (agents, coordinators): (usize, usize),
    router: RouterKind,
) -> anyhow::Result<Case> {
    let prefix = format!("{base}/{}-{agents}-{coordinators}", router.as_str());
    let topics = Topics::new(&prefix);
    let mut group = Vec::with_capacity(coordinators);
    for k in 1..=coordinators {
        let config = CoordinatorConfig {
            id: client_id(&prefix, &format!("coordinator-{k}")),
            ..coordinator_config(spec, broker, &prefix, (agents, coordinators), router)
        };
        group.push(slim_coordinator::start(config).await?);
    }
    let fleet = EmulatedFleet {
        agents,
        models: vec![spec.model.clone()],
        profile: spec.profile.clone(),
        telemetry: Duration::from_millis(200),
    }
    .start(broker, &topics)
    .await?;
    wait_until_seen(&group, &fleet, agents).await?;
    let payloads = requests(spec, &topics, "route");
    let start = std::time::Instant::now();
    publisher
        .flood(&topics.request(&spec.model.name), &payloads)
        .await?;
    let (received, rate) = wait_for(payloads.len() as u64, start, QUIET, || fleet.received()).await;
    let mut counters = Vec::with_capacity(group.len());
    for coordinator in &group {
        counters.push(coordinator.counters().await);
    }
    fleet.stop().await;
    for coordinator in group {
        coordinator.shutdown().await;
    }
    Ok(Case::routing(
        router.as_str(),
        agents,
        payloads.len(),
        received,
        rate,
        &counters,
    ))
}

/// The configuration of a member of a group of `coordinators` under `prefix`, in front of
/// `agents` emulated agents (its `id` left to the caller).
fn coordinator_config(
    spec: &SaturationSpec,
    broker: &BrokerOptions,
    prefix: &str,
    (agents, coordinators): (usize, usize),
    router: RouterKind,
) -> CoordinatorConfig {
    CoordinatorConfig {
        topic_prefix: prefix.to_string(),
        broker: broker.clone(),
        router,
        policy: (router == RouterKind::Ppo)
            .then(|| spec.policy.clone())
            .flatten(),
        http_listen: Some(String::new()),
        // Emulated agents report every 200 ms; a busy machine may delay a report.
        telemetry_timeout_ms: 10_000,
        max_agents: agents.max(1000),
        shared_group: (coordinators > 1).then(|| "saturate".to_string()),
        ..CoordinatorConfig::default()
    }
}

/// Waits (60 s at most) until every member of `group` sees all `agents` emulated agents online.
async fn wait_until_seen(
    group: &[slim_coordinator::CoordinatorHandle],
    fleet: &emulated::Emulation,
    agents: usize,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut announced = started;
    loop {
        // The agents every member of the group sees.
        let mut online = usize::MAX;
        for coordinator in group {
            online = online.min(coordinator.counters().await.agents_online);
        }
        if online >= agents {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "a coordinator sees {online} of {agents} emulated agents after 60 s",
        );
        // The coordinator may have subscribed after the statuses were retained, and the
        // embedded broker hands a new subscriber at most 100 retained messages.
        if announced.elapsed() > Duration::from_secs(2) {
            fleet.announce().await;
            announced = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
