//! Shared set-up for the end-to-end tests in `tests/tests/`.
//!
//! Every test starts its own coordinator and agents under a unique topic prefix. The broker is
//! an embedded rumqttd by default; set `SLIM_TEST_BROKER=mqtt://127.0.0.1:1883` to run the same
//! tests against Mosquitto (`.ci/run` does both).

pub mod daemons;
pub mod mosquitto;
pub mod paced_requests;

use std::{path::PathBuf, time::Duration};

use slim_client::{
    client::SlimClient,
    cluster::{ClusterSpec, LocalCluster},
    load::LoadSpec,
};

/// The broker URL the tests were pointed at, if any.
pub fn external_broker() -> Option<String> {
    std::env::var("SLIM_TEST_BROKER")
        .ok()
        .filter(|s| !s.is_empty())
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `path` inside the repository, as a command-line argument.
pub fn repo_path(path: &str) -> String {
    repo_root().join(path).display().to_string()
}

/// The repository's `models/` folder.
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// A spec for a test cluster: unique prefix, the test broker, the digits family.
pub fn spec(agent_slowdowns: &[f32]) -> ClusterSpec {
    let unique = format!("{:x}", rand_suffix());
    ClusterSpec {
        broker_url: external_broker(),
        topic_prefix: format!("slim-test/{unique}/v1"),
        models_dir: models_dir(),
        models: vec!["digits".into()],
        agent_slowdowns: agent_slowdowns.to_vec(),
        telemetry_interval_ms: 200,
        telemetry_timeout_ms: 2000,
        ..ClusterSpec::default()
    }
}

/// Starts a cluster from `spec`, with logs going to the test output when `RUST_LOG` is set.
pub async fn start(spec: ClusterSpec) -> LocalCluster {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    LocalCluster::start(spec).await.expect("cluster starts")
}

/// A request client for `cluster`, with a client id unique to its topic prefix, also
/// subscribed to `extra` topic filters.
pub async fn client(cluster: &LocalCluster, extra: &[String]) -> SlimClient {
    let prefix = &cluster.spec.topic_prefix;
    SlimClient::connect(
        &cluster.broker,
        prefix,
        &format!("{}-c", prefix.replace('/', "-")),
        extra,
    )
    .await
    .expect("the test client connects")
}

/// How long a test waits for any single answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// The first online agent's retained status in `cluster`, read by a plain MQTT client as any
/// monitor would (panics after [`ANSWER_TIMEOUT`]).
pub async fn online_agent_status(cluster: &LocalCluster) -> slim_protocol::AgentInfo {
    use rumqttc::{Event, Packet, QoS};
    let prefix = cluster.spec.topic_prefix.replace('/', "-");
    let (status, mut events) = cluster
        .broker
        .connect(&format!("{prefix}-s"), None)
        .expect("the status reader connects");
    status
        .subscribe(cluster.topics().status_filter(), QoS::AtLeastOnce)
        .await
        .expect("the status reader subscribes");
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = events.poll().await {
                let info: slim_protocol::AgentInfo =
                    slim_protocol::decode(&p.payload).expect("a status decodes");
                if info.online {
                    return info;
                }
            }
        }
    })
    .await
    .expect("the agent's retained status arrives")
}

/// Open-loop load on the digits family: `rate` requests per second for `duration`, then up to
/// [`ANSWER_TIMEOUT`] for the last answers (seed 0; change it and the rest with `LoadSpec`'s
/// `with_*` methods).
pub fn digits_load(rate: f64, duration: Duration) -> LoadSpec {
    LoadSpec::new("digits", rate, duration).with_drain(ANSWER_TIMEOUT)
}

/// The body of `GET {path}` from the HTTP server at `addr` (a coordinator's monitoring
/// endpoints), whatever the status.
pub async fn http_body(addr: std::net::SocketAddr, path: &str) -> String {
    match slim_client::http::get(addr, path).await {
        Ok((_, body)) => body,
        Err(e) => panic!("GET {path} from {addr}: {e:#}"),
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}
