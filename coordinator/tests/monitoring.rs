//! The monitoring endpoints of a real coordinator: an embedded broker, a coordinator with its
//! HTTP server on a free port, and a hand-driven fake agent publishing status and telemetry.

use std::{net::SocketAddr, time::Duration};

use prometheus_parse::{Scrape, Value};
use rumqttc::QoS;
use slim_coordinator::CoordinatorConfig;
use slim_mqtt::{BrokerOptions, EmbeddedBroker};
use slim_protocol::{
    encode, AgentInfo, BatchRecord, DeviceInfo, EnergySource, ModelInfo, QueueStat, Telemetry,
    Topics, WidthInfo, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.0 GET: (status code, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

async fn eventually(addr: SocketAddr, path: &str, want: impl Fn(u16, &str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(addr, path).await;
        if want(status, &body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never became as expected; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn agent_info() -> AgentInfo {
    AgentInfo {
        threads: 1,
        v: PROTOCOL_VERSION,
        agent: "jetson-1".into(),
        online: true,
        started_at_ms: 1,
        backend: "cuda".into(),
        backend_reason: "CUDA device 0".into(),
        device: DeviceInfo {
            hostname: "jetson-1".into(),
            kind: "jetson".into(),
            ..DeviceInfo::default()
        },
        models: vec![ModelInfo {
            name: "digits".into(),
            input_shape: vec![1, 8, 8],
            classes: 10,
            widths: vec![WidthInfo {
                width: 0.25,
                top1: 0.9,
                accuracy_source: "measured".into(),
                flops: 1,
                params: 1,
            }],
        }],
        max_batch: 8,
        emulation: None,
        profile: None,
        durable: false,
        max_queued: None,
        concurrency: None,
    }
}

fn telemetry(seq: u64) -> Telemetry {
    Telemetry {
        at_ms: 0,
        cpu_util: 0.5,
        ram_used_bytes: 3 << 30,
        ram_total_bytes: 8 << 30,
        gpu_util: Some(0.75),
        power_w: 9.5,
        energy_j: 321.0,
        energy_source: EnergySource::Ina3221,
        queues: vec![QueueStat {
            model: "digits".into(),
            width: 0.25,
            depth: 2,
            oldest_wait_ms: 1.0,
            instances: 1,
        }],
        outstanding: 2,
        completed: 17,
        errors: 0,
        batches: vec![BatchRecord {
            model: "digits".into(),
            width: 0.25,
            batch_size: 2,
            queue_ms: 1.5,
            compute_ms: 4.0,
            energy_j: 0.05,
            requests: vec![],
        }],
        ..Telemetry::idle("jetson-1", seq)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_readiness_and_state_follow_an_agent_seen_over_mqtt() {
    let broker = EmbeddedBroker::start_local().await.unwrap();
    let options = BrokerOptions::from_url(broker.url());
    let prefix = "slim-monitoring-test/v1";
    let coordinator = slim_coordinator::start(CoordinatorConfig {
        id: "monitoring-test".into(),
        topic_prefix: prefix.into(),
        broker: options.clone(),
        http_listen: Some("127.0.0.1:0".into()),
        ..CoordinatorConfig::default()
    })
    .await
    .unwrap();
    let addr = coordinator.http_addr().expect("HTTP enabled");
    assert_ne!(addr.port(), 0, "the bound port is reported");

    eventually(addr, "/readyz", |status, body| {
        status == 503 && body.contains("no agent")
    })
    .await;

    let topics = Topics::new(prefix);
    let (agent, mut eventloop) = options.connect("jetson-1", None).unwrap();
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    agent
        .publish(
            topics.status("jetson-1"),
            QoS::AtLeastOnce,
            true,
            encode(&agent_info()),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent
        .publish(
            topics.telemetry("jetson-1"),
            QoS::AtLeastOnce,
            false,
            encode(&telemetry(1)),
        )
        .await
        .unwrap();

    eventually(addr, "/readyz", |status, _| status == 200).await;
    let text = eventually(addr, "/metrics", |_, body| {
        body.contains("nv_inference_request_success{agent=\"jetson-1\"}")
    })
    .await;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"));
        match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{name} is not a plain value"),
        }
    };
    let jetson = [("agent", "jetson-1")];
    assert_eq!(value("nv_inference_request_success", &jetson), 17.0);
    assert_eq!(value("nv_gpu_utilization", &jetson), 0.75);
    assert_eq!(value("nv_cpu_utilization", &jetson), 0.5);
    assert_eq!(
        value("nv_cpu_memory_total_bytes", &jetson),
        (8u64 << 30) as f64
    );
    assert_eq!(
        value(
            "nv_energy_consumption",
            &[("agent", "jetson-1"), ("energy_source", "ina3221")]
        ),
        321.0
    );
    assert_eq!(
        value(
            "nv_inference_queue_duration_us",
            &[
                ("agent", "jetson-1"),
                ("model", "digits"),
                ("width", "0.25")
            ]
        ),
        3_000.0
    );
    assert_eq!(
        value(
            "slim_agent_online",
            &[("agent", "jetson-1"), ("backend", "cuda")]
        ),
        1.0
    );
    assert_eq!(value("slim_agents_online", &[]), 1.0);
    assert_eq!(value("slim_coordinator_connected", &[]), 1.0);
    assert_eq!(
        value("slim_router_info", &[("policy", "least-loaded")]),
        1.0
    );

    let state: serde_json::Value =
        serde_json::from_str(&get(addr, "/api/v1/state").await.1).unwrap();
    let agents = state["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["id"], "jetson-1");
    assert_eq!(agents[0]["backend"], "cuda");
    assert_eq!(agents[0]["online"], true);
    assert_eq!(agents[0]["telemetry"]["queue_depth"], 2);
    assert_eq!(agents[0]["telemetry"]["energy_source"], "ina3221");
    assert_eq!(state["coordinator"]["ready"], true);
    assert!(state["decisions"].as_array().unwrap().is_empty());

    coordinator.shutdown().await;
}

#[tokio::test]
async fn an_empty_http_listen_disables_the_server() {
    let coordinator = slim_coordinator::start(CoordinatorConfig {
        broker: BrokerOptions::from_url("mqtt://127.0.0.1:9"),
        http_listen: Some(String::new()),
        ..CoordinatorConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(coordinator.http_addr(), None);
    coordinator.shutdown().await;
}
