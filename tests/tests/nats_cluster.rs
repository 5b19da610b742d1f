//! Slim Scheduler on a 3-server NATS cluster with the MQTT gateway (`deploy/nats/cluster.sh`):
//! the coordinator and the client on server 1, one agent on server 2 and one on server 3, as
//! separate processes. Under steady load server 3 is killed (`kill -9`) and restarted 8 s later:
//! every request sent is answered (agent-2's work is taken over by agent-1 once the coordinator
//! declares agent-2 silent, or answered by agent-2 after its server is back), none is lost.
//!
//! Needs `nats-server` 2.9+ (Debian: `nats-server`), `curl` and `jq`; without them it fails and
//! says so.
//! Ignored for that reason and its length (about 30 s); run it with
//! `cargo test --workspace --test nats_cluster -- --ignored`. `SLIM_NATS_TEST_DIR=/some/dir`
//! keeps the servers' and daemons' logs there, with a snapshot of the servers' JetStream and
//! connection state after the load (`deploy/nats/cluster.sh snapshot`).
//!
//! Server 3 is made the leader of `$MQTT_msgs` first, the worst case (docs/deploy.md, "Other
//! brokers"): from the kill until a new leader is elected, every QoS 1 publish on every server
//! stalls, and NATS drops the publishing connections. Until 2026-12-05 this lost requests: with
//! the leader left to chance, 1 run in 3 lost 428 of 610; with server 3 made the leader, 2 of 9
//! runs lost 428 and 102. The 428 were rumqttc's (a publish held back by a packet-id collision
//! was kept across the reconnect and waited forever; patched in vendor/rumqttc). Since that
//! patch: 5 of 5 passed with the client on a clean session, and 3 of 3 with a persistent one,
//! which the test uses (the 102 came from NATS re-creating a clean session's reply consumer).
//! A second patch, a free packet id instead of a collision, came after those runs.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use slim_client::{
    client::SlimClient,
    load::{run_open_loop, LoadSpec},
    samples::family_samples,
};
use slim_mqtt::BrokerOptions;
use slim_tests::{
    daemons::{start_agent, start_coordinator, wait_online, FleetSpec},
    models_dir, repo_root,
};

/// The cluster's ports start here (NATS 24222-24224, routes +100, MQTT +1000, HTTP +2000), away
/// from `deploy/nats/cluster.sh`'s default 14222 so a cluster a user started is left alone.
const BASE_PORT: u16 = 24222;

/// A NATS cluster started by the shipped script, stopped on drop.
struct NatsCluster {
    dir: PathBuf,
    urls: Vec<String>,
}

fn script() -> PathBuf {
    repo_root().join("deploy/nats/cluster.sh")
}

fn cluster_sh(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("bash runs deploy/nats/cluster.sh");
    assert!(
        out.status.success(),
        "deploy/nats/cluster.sh {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl NatsCluster {
    fn start(dir: &Path) -> Self {
        let d = dir.to_str().expect("a UTF-8 temp path");
        cluster_sh(&["start", d, &BASE_PORT.to_string()]);
        let urls: Vec<String> = cluster_sh(&["urls", d])
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(urls.len(), 3, "three MQTT URLs: {urls:?}");
        Self {
            dir: dir.to_path_buf(),
            urls,
        }
    }

    fn kill(&self, n: u8) {
        cluster_sh(&["kill", self.dir.to_str().unwrap(), &n.to_string()]);
    }

    /// "meta=nX $MQTT_sess=nY $MQTT_msgs=nZ ...": which server leads what, for the log.
    fn leaders(&self) -> String {
        let out = Command::new("bash")
            .arg(script())
            .args(["leaders", self.dir.to_str().unwrap()])
            .output()
            .expect("bash runs deploy/nats/cluster.sh");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
            + &String::from_utf8_lossy(&out.stderr)
    }

    /// Steps `stream`'s leader down until server `n` leads it.
    fn lead(&self, stream: &str, n: u8) {
        eprintln!(
            "{}",
            cluster_sh(&["lead", self.dir.to_str().unwrap(), stream, &n.to_string()]).trim()
        );
    }

    /// The servers' JetStream and connection state, under the cluster's folder.
    fn snapshot(&self, name: &str) {
        cluster_sh(&["snapshot", self.dir.to_str().unwrap(), name]);
    }

    fn restart(&self, n: u8) {
        cluster_sh(&["restart", self.dir.to_str().unwrap(), &n.to_string()]);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", self.dir.to_str().unwrap_or_default()])
            .status();
    }
}

fn spec(url: &str, prefix: &str, dir: &Path) -> FleetSpec {
    FleetSpec {
        broker_url: url.into(),
        topic_prefix: prefix.into(),
        agents: 0,
        models: vec!["digits".into()],
        telemetry_interval_ms: 200,
        telemetry_timeout_ms: 2000,
        dir: dir.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server 2.9+ and takes about 30 s; run with --ignored"]
async fn one_nats_server_killed_under_load_loses_no_request() {
    // SLIM_NATS_TEST_DIR keeps the servers' and daemons' logs there (a fresh folder per run).
    let tmp = tempfile::tempdir().expect("a temp folder");
    let root = std::env::var_os("SLIM_NATS_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let nats = NatsCluster::start(&root.join("nats"));
    let prefix = "slim-nats-test/v1";
    let fleet = root.join("fleet");
    let mut coordinator =
        start_coordinator(&spec(&nats.urls[0], prefix, &fleet), "coordinator", None);
    let mut agent1 = start_agent(&spec(&nats.urls[1], prefix, &fleet), "agent-1");
    let mut agent2 = start_agent(&spec(&nats.urls[2], prefix, &fleet), "agent-2");
    wait_online(
        &nats.urls[0],
        prefix,
        2,
        &mut [&mut coordinator, &mut agent1, &mut agent2],
    )
    .await;
    // The worst case, every run: server 3 leads the MQTT message stream when it dies, so every
    // QoS 1 publish in the cluster, on servers 1 and 2 too, waits for a new leader (4-9 s of
    // Raft election; NATS drops each publisher whose store times out after 4 s). With the
    // leader left to chance, 1 run in 3 had this.
    nats.lead("$MQTT_msgs", 3);
    // A persistent session, like the daemons', as docs/deploy.md advises on NATS: with a clean
    // one, NATS re-created the client's reply consumer during the failover, led by the
    // restarted server, and it skipped replies (102 lost in 1 run of 9, before the rumqttc
    // patch; 0 of 5 runs after it).
    let mut client_broker = BrokerOptions::from_url(nats.urls[0].clone());
    client_broker.clean_session = false;
    let client = SlimClient::connect(&client_broker, prefix, "nats-test-client", &[])
        .await
        .expect("the client connects to server 1")
        .with_retry(Some(Duration::from_secs(2)));
    let samples = family_samples(&models_dir(), "digits").unwrap();
    let load = LoadSpec::new("digits", 30.0, Duration::from_secs(20))
        .with_drain(Duration::from_secs(30))
        .with_seed(3);
    let fault = async {
        tokio::time::sleep(Duration::from_secs(6)).await;
        eprintln!("leaders before the kill: {}", nats.leaders());
        nats.kill(3);
        eprintln!("killed nats server 3 (agent-2's) at 6 s");
        tokio::time::sleep(Duration::from_secs(8)).await;
        nats.restart(3);
        eprintln!("restarted nats server 3 at 14 s");
    };
    let (report, ()) = tokio::join!(run_open_loop(&client, &samples, &load), fault);
    let report = report.expect("the load runs");
    if std::env::var_os("SLIM_NATS_TEST_DIR").is_some() {
        nats.snapshot("after-load");
    }
    let summary = report.summary();
    eprintln!("{summary}");
    let logs = || {
        format!(
            "coordinator:\n{}\nagent-1:\n{}\nagent-2:\n{}",
            coordinator.log_tail(20),
            agent1.log_tail(20),
            agent2.log_tail(20)
        )
    };
    assert!(summary.sent >= 400, "about 600 requests in 20 s\n{summary}");
    assert_eq!(
        summary.lost,
        0,
        "no request may be lost\n{summary}\n{}",
        logs()
    );
    assert_eq!(
        summary.answered,
        summary.sent,
        "every request gets a result (two agents, no refusal expected)\n{summary}\n{}",
        logs()
    );
    client.disconnect().await;
}
