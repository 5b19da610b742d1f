//! Sites behind their own brokers, bridged to a hub (#19, items 2 and 4).
//!
//! Three private Mosquittos: a hub and two site brokers, each site bridged to the hub with the
//! bridge of the shipped `deploy/mosquitto/site.conf` (its settings and `topic` lines, with the
//! test's prefix, plain TCP instead of TLS, 1 s reconnects), through a TCP link the test can cut
//! ([`link::Link`]). The daemons are the real binaries, each a process (`slim_tests::daemons`):
//!
//! - site 1 is **local-first**: a site coordinator on its broker; requests published there stay
//!   there and are routed to the site's two agents;
//! - site 2 is **hub-routed**: no coordinator; its requests go up the bridge;
//! - the hub runs the hub coordinator, which sees all four agents and routes what is published
//!   on the hub and on site 2.
//!
//! Three clients (on the hub, on site 1, on site 2) send digits requests at a steady rate, each
//! request once (no client retries: what is answered is answered by the queues, not by a
//! second publish). Site 1's uplink is cut for 10 s and restored. Then: nothing is lost; site 1's
//! client is served by site 1's agents throughout, at normal latency, each request answered
//! exactly once; requests the hub routes during the cut go to site 2 (or are refused) within
//! the park timeout; no request is answered both with a result and an error. Every answer seen
//! on a reply topic is counted, and the counts are printed.
//!
//! ```text
//! cargo test --workspace --test federation -- --nocapture
//! ```

mod link;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use link::Link;
use slim_client::{
    client::{Reply, SlimClient},
    samples::{family_samples, Sample},
};
use slim_mqtt::BrokerOptions;
use slim_protocol::{Decision, Decisions, Topics};
use slim_tests::{
    daemons::{start_agent, start_coordinator, wait_online, Daemon, FleetSpec},
    models_dir,
    mosquitto::Mosquitto,
    paced_requests::{self, log_answers, AnswerLog, Answers, Pace, Record},
};

/// Agents' telemetry interval and the coordinators' liveness timeout, milliseconds.
const TELEMETRY_MS: u64 = 200;
const LIVENESS_MS: u64 = 2000;
/// The coordinators' park timeout (the default).
const PARK_TIMEOUT: Duration = Duration::from_secs(10);

/// Load: per client, requests per second, for how long; the cut and its length.
const RATE_PER_CLIENT: f64 = 12.0;
const LOAD: Duration = Duration::from_secs(20);
const CUT_AT: Duration = Duration::from_secs(4);
const CUT_FOR: Duration = Duration::from_secs(10);
/// How long after the load the test waits for the last answers.
const DRAIN: Duration = Duration::from_secs(25);

/// The bridge of the shipped site configuration, for site `name`, to the hub through
/// `127.0.0.1:{port}`, with the deployment prefix replaced by `prefix`. TLS and credentials are
/// left out (the test brokers are plain TCP and anonymous); reconnects are quicker than the
/// shipped backoff. `hub_routed` uncomments the line that sends the site's requests up.
fn site_bridge(name: &str, port: u16, prefix: &str, hub_routed: bool) -> String {
    let shipped = include_str!("../../../deploy/mosquitto/site.conf");
    let bridge = shipped
        .split_once("\nconnection ")
        .map(|(_, rest)| format!("connection {rest}"))
        .expect("site.conf has a bridge (a `connection` line)");
    let mut conf = String::new();
    let mut topics = 0;
    for line in bridge.lines() {
        let line = match line.strip_prefix("#topic ") {
            Some(rest) if hub_routed => format!("topic {rest}"),
            _ => line.to_string(),
        };
        let key = line.split_whitespace().next().unwrap_or("");
        let value = match key {
            "" | "#" => continue,
            k if k.starts_with('#') => continue,
            "bridge_cafile" | "bridge_tls_version" | "bridge_insecure" | "remote_username"
            | "remote_password" => continue,
            "connection" | "remote_clientid" => format!("{key} {name}"),
            "address" => format!("address 127.0.0.1:{port}"),
            "restart_timeout" => "restart_timeout 1 2".into(),
            "keepalive_interval" => "keepalive_interval 5".into(),
            "topic" => {
                topics += 1;
                line.replace(" slim/v1/", &format!(" {prefix}/"))
            }
            _ => line.clone(),
        };
        conf.push_str(&value);
        conf.push('\n');
    }
    assert!(
        topics >= 6,
        "site.conf's bridge has its topic lines:\n{conf}"
    );
    conf
}

/// The load of each client.
const PACE: Pace = Pace {
    rate: RATE_PER_CLIENT,
    duration: LOAD,
    drain: DRAIN,
};

/// An answer as the answer log keeps it: a result with the agent that gave it, or an error.
fn kind(reply: &Reply) -> String {
    match reply {
        Reply::Result(r) => format!("result from {}", r.agent),
        Reply::Error(e) => format!("error {}", e.code.as_str()),
    }
}

/// Sends [`PACE`] from `t0`, each request once (the clients do not retry); waits for the
/// answers until `t0 + LOAD + DRAIN`.
async fn drive(
    client: SlimClient,
    samples: Arc<Vec<Sample>>,
    tag: &str,
    t0: Instant,
) -> Vec<Record> {
    paced_requests::drive(&client, &samples, tag, PACE, t0).await
}

/// What one client saw, by phase of the cut.
struct Tally {
    name: &'static str,
    records: Vec<Record>,
    answers: Answers,
}

impl Tally {
    fn phase(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Record> {
        self.records
            .iter()
            .filter(move |r| r.sent_at >= from && r.sent_at < to)
    }

    fn lost(&self) -> Vec<&str> {
        paced_requests::lost(&self.records)
    }

    fn extra_answers(&self) -> usize {
        paced_requests::extra_answers(&self.answers)
    }

    fn conflicting(&self) -> Vec<(&String, &Vec<String>)> {
        self.answers
            .iter()
            .filter(|(_, kinds)| {
                let result = |k: &String| k.starts_with("result");
                kinds.iter().any(result) && !kinds.iter().all(result)
            })
            .collect()
    }

    /// One line per phase: sent, results by site, errors by code, lost, worst latency.
    fn describe(&self, cut: Duration, restore: Duration) -> String {
        let mut out = format!(
            "{}: {} sent, {} lost, {} answers beyond the first on the reply topic\n",
            self.name,
            self.records.len(),
            self.lost().len(),
            self.extra_answers()
        );
        let end = Duration::from_secs(3600);
        for (label, from, to) in [
            ("before the cut", Duration::ZERO, cut),
            ("during the cut", cut, restore),
            ("after restore", restore, end),
        ] {
            let rs: Vec<&Record> = self.phase(from, to).collect();
            let mut by: HashMap<String, usize> = HashMap::new();
            for r in &rs {
                let key = match (r.agent(), r.error()) {
                    (Some(a), _) => format!("site {}", site_of(a)),
                    (None, Some(code)) => format!("error {code}"),
                    (None, None) => "lost".into(),
                };
                *by.entry(key).or_default() += 1;
            }
            let mut by: Vec<String> = by.into_iter().map(|(k, n)| format!("{n} {k}")).collect();
            by.sort();
            let worst = rs
                .iter()
                .filter_map(|r| r.latency())
                .max()
                .unwrap_or_default();
            let dup: usize = rs
                .iter()
                .map(|r| paced_requests::extra_answers_to(&self.answers, &r.id))
                .sum();
            out.push_str(&format!(
                "  {label:<15} {:>4} sent: {}; worst latency {:.2} s; {dup} extra answers\n",
                rs.len(),
                by.join(", "),
                worst.as_secs_f64()
            ));
        }
        out
    }
}

/// `s1-agent-2` → `s1`.
fn site_of(agent: &str) -> &str {
    agent.split('-').next().unwrap_or(agent)
}

fn fleet_spec(broker: &Mosquitto, prefix: &str, dir: &std::path::Path) -> FleetSpec {
    FleetSpec {
        broker_url: broker.url(),
        topic_prefix: prefix.into(),
        agents: 0,
        models: vec!["digits".into()],
        telemetry_interval_ms: TELEMETRY_MS,
        telemetry_timeout_ms: LIVENESS_MS,
        dir: dir.into(),
    }
}

async fn connect_client(
    broker: &Mosquitto,
    prefix: &str,
    id: &str,
    extra: &[String],
) -> SlimClient {
    SlimClient::connect(&BrokerOptions::from_url(broker.url()), prefix, id, extra)
        .await
        .expect("the test client connects")
        .with_retry(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_cut_off_from_the_hub_keeps_serving_itself_and_loses_nothing() {
    let began = Instant::now();
    let prefix = "slim-fed/v1";
    let hub = Mosquitto::start("fed-hub");
    let links = [Link::start(hub.port()).await, Link::start(hub.port()).await];
    let s1 = Mosquitto::start_with(
        "fed-s1",
        &site_bridge("fed-s1", links[0].port(), prefix, false),
    );
    let s2 = Mosquitto::start_with(
        "fed-s2",
        &site_bridge("fed-s2", links[1].port(), prefix, true),
    );
    let dir = hub.dir().join("fleet");
    let (hub_spec, s1_spec, s2_spec) = (
        fleet_spec(&hub, prefix, &dir),
        fleet_spec(&s1, prefix, &dir),
        fleet_spec(&s2, prefix, &dir),
    );
    let mut hub_coordinator = start_coordinator(&hub_spec, "hub-coordinator", None);
    let mut site_coordinator = start_coordinator(&s1_spec, "s1-coordinator", None);
    let mut agents: Vec<Daemon> = ["s1-agent-1", "s1-agent-2"]
        .iter()
        .map(|id| start_agent(&s1_spec, id))
        .chain(
            ["s2-agent-1", "s2-agent-2"]
                .iter()
                .map(|id| start_agent(&s2_spec, id)),
        )
        .collect();
    {
        let mut daemons: Vec<&mut Daemon> = agents.iter_mut().collect();
        daemons.push(&mut hub_coordinator);
        daemons.push(&mut site_coordinator);
        // The hub sees all four agents through the bridges; site 1 its own two.
        wait_online(&hub.url(), prefix, 4, &mut daemons).await;
        wait_online(&s1.url(), prefix, 2, &mut daemons).await;
    }
    let topics = Topics::new(prefix);
    let hub_client = connect_client(&hub, prefix, "fed-hub", &[topics.decisions()]).await;
    let s1_client = connect_client(&s1, prefix, "fed-s1", &[]).await;
    let s2_client = connect_client(&s2, prefix, "fed-s2", &[]).await;
    let decisions: Arc<Mutex<Vec<Decision>>> = Default::default();
    let decision_task = {
        let mut tap = hub_client.tap(&topics.decisions());
        let decisions = decisions.clone();
        tokio::spawn(async move {
            while let Some((_, payload)) = tap.recv().await {
                if let Ok(batch) = slim_protocol::decode::<Decisions>(&payload) {
                    decisions.lock().unwrap().extend(batch.decisions);
                }
            }
        })
    };
    let logs: Vec<(AnswerLog, tokio::task::JoinHandle<()>)> = [&hub_client, &s1_client, &s2_client]
        .map(|client| log_answers(client, kind))
        .into();
    let samples = Arc::new(family_samples(&models_dir(), "digits").unwrap());
    // The hub's coordinator must have learned the agents (retained status through the bridges).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t0 = Instant::now();
    let cutter = {
        let links = Arc::new(links);
        let l = links.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep_until((t0 + CUT_AT).into()).await;
            l[0].cut();
            let cut = t0.elapsed();
            tokio::time::sleep(CUT_FOR).await;
            l[0].restore();
            (cut, t0.elapsed())
        });
        (links, task)
    };
    let loads = [
        tokio::spawn(drive(hub_client.clone(), samples.clone(), "hub", t0)),
        tokio::spawn(drive(s1_client.clone(), samples.clone(), "s1", t0)),
        tokio::spawn(drive(s2_client.clone(), samples.clone(), "s2", t0)),
    ];
    let (cut, restore) = cutter.1.await.expect("the link cutter");
    let mut tallies = Vec::new();
    for ((load, name), (log, task)) in loads
        .into_iter()
        .zip([
            "hub client (hub-routed)",
            "site-1 client (local-first)",
            "site-2 client (hub-routed)",
        ])
        .zip(logs)
    {
        let records = load.await.expect("the load task");
        // Late duplicates, if any, arrive within moments.
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
        let answers = log.lock().unwrap().clone();
        tallies.push(Tally {
            name,
            records,
            answers,
        });
    }
    decision_task.abort();
    let decisions = decisions.lock().unwrap().clone();

    let mut report = format!(
        "site 1's uplink cut at {:.2} s, restored at {:.2} s; wall {:.1} s\n",
        cut.as_secs_f64(),
        restore.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    for t in &tallies {
        report.push_str(&t.describe(cut, restore));
    }
    let rerouted: Vec<&Decision> = decisions.iter().filter(|d| d.attempt > 0).collect();
    report.push_str(&format!(
        "hub decisions: {} placements, {} re-routes after an agent was lost ({} from site 1's agents to site 2's)\n",
        decisions.iter().filter(|d| !d.request_id.starts_with("s1-")).count(),
        rerouted.len(),
        rerouted.iter().filter(|d| site_of(&d.agent) == "s2").count()
    ));
    let events = |log: String, words: &[&str]| -> String {
        log.lines()
            .filter(|l| words.iter().any(|w| l.contains(w)))
            .map(|l| format!("    {l}\n"))
            .collect()
    };
    report.push_str(&format!(
        "hub coordinator, agents:\n{}site 1's bridge:\n{}",
        events(
            hub_coordinator.log(),
            &["agent online", "agent offline", "silent"]
        ),
        events(s1.log(), &["bridge", "Bridge"])
    ));
    eprintln!("{report}");
    let logs = || {
        format!(
            "hub coordinator log (tail):\n{}\nsite coordinator log (tail):\n{}\nsite-1 broker log (tail):\n{}",
            hub_coordinator.log_tail(20),
            site_coordinator.log_tail(10),
            s1.log().lines().rev().take(15).collect::<Vec<_>>().join("\n")
        )
    };

    // Nothing lost, nothing answered both ways.
    for t in &tallies {
        assert!(
            t.lost().is_empty(),
            "{}: lost {:?}\n{report}\n{}",
            t.name,
            &t.lost()[..t.lost().len().min(20)],
            logs()
        );
        assert!(
            t.conflicting().is_empty(),
            "{}: answered with a result and an error: {:?}\n{report}",
            t.name,
            t.conflicting()
        );
    }
    let [hub_t, s1_t, s2_t] = &tallies[..] else {
        unreachable!("three clients")
    };
    // Local-first: site 1's client is served by site 1's agents, cut or not, each request
    // exactly once, and the cut does not show in its latency.
    for r in &s1_t.records {
        assert_eq!(
            r.agent().map(site_of),
            Some("s1"),
            "site-1 request {} answered by {:?}\n{report}",
            r.id,
            r.answer
        );
        assert!(
            r.latency().is_some_and(|l| l < Duration::from_secs(2)),
            "site-1 request {} (sent at {:.2} s) took {:?}\n{report}",
            r.id,
            r.sent_at.as_secs_f64(),
            r.latency()
        );
    }
    assert_eq!(
        s1_t.extra_answers(),
        0,
        "site 1 answered once each\n{report}"
    );
    assert!(
        s1_t.phase(cut, restore).count() as f64 >= 0.9 * CUT_FOR.as_secs_f64() * RATE_PER_CLIENT,
        "site 1's client kept sending during the cut\n{report}"
    );
    // Hub-routed: once the hub has taken site 1's agents offline (their telemetry stops for the
    // liveness timeout), what the hub routes goes to site 2, or is refused, within the park
    // timeout, long before the uplink is back.
    let detected = cut + Duration::from_millis(LIVENESS_MS) + Duration::from_secs(1);
    for t in [hub_t, s2_t] {
        let during: Vec<&Record> = t.phase(detected, restore).collect();
        assert!(
            !during.is_empty(),
            "{}: requests during the cut\n{report}",
            t.name
        );
        for r in during {
            let ok = match (r.agent(), r.latency()) {
                (Some(agent), Some(l)) => site_of(agent) == "s2" && l <= PARK_TIMEOUT,
                (None, Some(l)) => {
                    r.error().is_some() && l <= PARK_TIMEOUT + Duration::from_secs(1)
                }
                _ => false,
            };
            assert!(
                ok,
                "{}: request {} sent at {:.2} s during the cut: {:?} after {:?}\n{report}",
                t.name,
                r.id,
                r.sent_at.as_secs_f64(),
                r.answer,
                r.latency()
            );
        }
    }
    // The uplink is back: the hub sees site 1's agents again and routes to them.
    let back = restore + Duration::from_secs(4);
    assert!(
        [hub_t, s2_t].iter().any(|t| t
            .phase(back, LOAD + DRAIN)
            .any(|r| r.agent().map(site_of) == Some("s1"))),
        "the hub routes to site 1's agents again after the uplink is restored\n{report}\n{}",
        logs()
    );
    // Second answers come only from requests the hub routed again after losing site 1's agents
    // (the agent that held one answers it too, its answer or the assignment having waited in
    // the bridge's queue); the client keeps the first.
    let extra = hub_t.extra_answers() + s2_t.extra_answers();
    assert!(
        extra <= rerouted.len(),
        "{extra} second answers, but only {} requests were routed twice\n{report}",
        rerouted.len()
    );
    // Site 2's requests are routed by the hub: the bridge carried them up.
    assert!(
        s2_t.records
            .iter()
            .any(|r| r.agent().map(site_of) == Some("s1")),
        "the hub routed some of site 2's requests to site 1 before the cut\n{report}"
    );
    drop(hub_client);
    drop(s1_client);
    drop(s2_client);
    drop(agents);
    drop(cutter.0);
}
