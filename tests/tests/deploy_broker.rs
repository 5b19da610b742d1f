//! The shipped secured broker (`deploy/mosquitto/`): TLS, password file and ACL, run as a
//! private Mosquitto on a free port with certificates from `make-test-certs.sh` and users from
//! `make-passwords.sh`. It shows that an agent with the right credentials connects over mqtts://
//! and serves, that a client without credentials is refused, that an agent cannot publish on
//! (or read) another agent's topics, and what `slim-agent doctor` says in each case.

use slim_tests::repo_root as repo;
use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

use rumqttc::{ConnectReturnCode, ConnectionError, Event, EventLoop, Packet, QoS};
use slim_agent::{
    backend::BackendChoice,
    doctor::{self, DoctorOptions, Status},
    AgentConfig,
};
use slim_client::{client::SlimClient, load::run_open_loop, samples::family_samples};
use slim_coordinator::CoordinatorConfig;
use slim_mqtt::BrokerOptions;
use slim_tests::{digits_load, models_dir, ANSWER_TIMEOUT};

const PREFIX: &str = "slim/v1";

fn run_script(script: &str, args: &[&str]) {
    let out = Command::new("bash")
        .arg(repo().join("deploy/mosquitto").join(script))
        .args(args)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{script} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mosquitto with the shipped TLS + password + ACL configuration, paths moved into a temp dir.
struct SecureBroker {
    child: Child,
    /// Removed when the broker is dropped (after the broker is stopped).
    dir: tempfile::TempDir,
    port: u16,
}

impl SecureBroker {
    fn start(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("slim-{tag}-"))
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let certs = dir.join("certs");
        run_script("make-test-certs.sh", &[certs.to_str().unwrap()]);
        run_script(
            "make-passwords.sh",
            &[
                dir.to_str().unwrap(),
                "coordinator:coordinator:coord-pw",
                "agent:agent-1:agent1-pw",
                "agent:agent-2:agent2-pw",
                "client:client-1:client1-pw",
            ],
        );
        // Mosquitto started as root drops to its own user: let it read the test files and
        // write its persistence file.
        for entry in std::fs::read_dir(&certs).unwrap() {
            let path = entry.unwrap().path();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::set_permissions(dir.join("passwd"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let shipped =
            std::fs::read_to_string(repo().join("deploy/mosquitto/mosquitto.conf")).unwrap();
        let mut config = shipped.clone();
        for (from, to) in [
            (
                "/etc/mosquitto/slim/certs/".to_string(),
                format!("{}/", certs.display()),
            ),
            (
                "/etc/mosquitto/slim/passwd".to_string(),
                dir.join("passwd").display().to_string(),
            ),
            (
                "/etc/mosquitto/slim/acl".to_string(),
                dir.join("acl").display().to_string(),
            ),
            (
                "persistence_location /var/lib/mosquitto/".to_string(),
                format!("persistence_location {}/", dir.display()),
            ),
            (
                "listener 8883\n".to_string(),
                format!("listener {port} 127.0.0.1\n"),
            ),
        ] {
            assert!(
                config.contains(&from),
                "the shipped mosquitto.conf no longer has {from:?}"
            );
            config = config.replace(&from, &to);
        }
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&path)
            .stderr(std::fs::File::create(dir.join("mosquitto.log")).unwrap())
            .spawn()
            .expect("mosquitto is installed (Debian package `mosquitto`)");
        let broker = Self {
            child,
            dir: tmp,
            port,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return broker;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mosquitto did not listen on {port}: {}", broker.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// TLS options for `user` (no credentials when `None`).
    fn options(&self, user: Option<(&str, &str)>) -> BrokerOptions {
        BrokerOptions {
            username: user.map(|u| u.0.to_string()),
            password: user.map(|u| u.1.to_string()),
            ca_file: Some(self.dir.path().join("certs/ca.crt")),
            ..BrokerOptions::from_url(format!("mqtts://127.0.0.1:{}", self.port))
        }
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until the ConnAck (Ok) or the first error.
async fn connack(eventloop: &mut EventLoop) -> Result<(), ConnectionError> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the broker answers within 5 s")
}

/// Connects as `client_id`, then keeps the event loop running, forwarding publishes.
async fn session(
    options: &BrokerOptions,
    client_id: &str,
) -> (
    rumqttc::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    let (client, mut eventloop) = options.connect(client_id, None).unwrap();
    connack(&mut eventloop)
        .await
        .unwrap_or_else(|e| panic!("{client_id} connects: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (client, rx)
}

/// Receives until `topic` arrives; returns everything received, in order.
async fn until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    topic: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some((t, _)) = rx.recv().await {
            seen.push(t.clone());
            if t == topic {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{topic} never arrived; got {seen:?}"));
    seen
}

fn agent_config(broker: &SecureBroker, id: &str, password: &str) -> AgentConfig {
    AgentConfig {
        id: id.into(),
        topic_prefix: PREFIX.into(),
        broker: broker.options(Some((id, password))),
        models_dir: models_dir(),
        models: vec!["digits".into()],
        backend: BackendChoice::Cpu,
        telemetry_interval_ms: 200,
        ..AgentConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_credentials_serves_over_tls_with_the_shipped_acl() {
    let broker = SecureBroker::start("secure-serve");
    let coordinator = slim_coordinator::start(CoordinatorConfig {
        id: "coordinator".into(),
        topic_prefix: PREFIX.into(),
        broker: broker.options(Some(("coordinator", "coord-pw"))),
        telemetry_timeout_ms: 3000,
        http_listen: None,
        ..CoordinatorConfig::default()
    })
    .await
    .unwrap();
    let agent = slim_agent::start(agent_config(&broker, "agent-1", "agent1-pw"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while coordinator.counters().await.agents_online < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the coordinator never saw agent-1 (ACL or TLS problem?): {}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client's MQTT client id is its username: the ACL lets it read only its own replies.
    let client = SlimClient::connect(
        &broker.options(Some(("client-1", "client1-pw"))),
        PREFIX,
        "client-1",
        &[],
    )
    .await
    .unwrap();
    let samples = family_samples(&models_dir(), "digits").unwrap();
    let report = run_open_loop(
        &client,
        &samples,
        &digits_load(20.0, Duration::from_secs(2)).with_seed(3),
    )
    .await
    .unwrap();
    let summary = report.summary();
    eprintln!("{summary}");
    assert!(summary.sent >= 20, "{summary}");
    assert_eq!(summary.lost, 0, "{summary}\n{}", broker.log());
    assert_eq!(summary.answered, summary.sent, "{summary}");
    assert_eq!(
        summary.agents.keys().cloned().collect::<Vec<_>>(),
        vec!["agent-1".to_string()],
        "{summary}"
    );
    coordinator.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_the_right_credentials_or_tls_are_refused() {
    let broker = SecureBroker::start("secure-refuse");
    let refused = |e: &ConnectionError| {
        matches!(
            e,
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
            )
        )
    };
    // No credentials.
    let (_c, mut el) = broker.options(None).connect("anonymous", None).unwrap();
    let err = connack(&mut el).await.expect_err("anonymous is refused");
    assert!(refused(&err), "{err:?}");
    // A wrong password.
    let (_c, mut el) = broker
        .options(Some(("agent-1", "wrong")))
        .connect("agent-1", None)
        .unwrap();
    let err = connack(&mut el)
        .await
        .expect_err("a wrong password is refused");
    assert!(refused(&err), "{err:?}");
    // Plain MQTT on the TLS port never gets a ConnAck.
    let plain = BrokerOptions {
        username: Some("agent-1".into()),
        password: Some("agent1-pw".into()),
        ..BrokerOptions::from_url(format!("mqtt://127.0.0.1:{}", broker.port))
    };
    let (_c, mut el) = plain.connect("agent-1-plain", None).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(3), connack(&mut el)).await;
    assert!(
        !matches!(outcome, Ok(Ok(()))),
        "plain MQTT must not be accepted"
    );
    // TLS with a CA that did not sign the broker's certificate.
    let other_ca = broker.dir.path().join("other-ca");
    run_script("make-test-certs.sh", &[other_ca.to_str().unwrap()]);
    let mut wrong_ca = broker.options(Some(("agent-1", "agent1-pw")));
    wrong_ca.ca_file = Some(other_ca.join("ca.crt"));
    let (_c, mut el) = wrong_ca.connect("agent-1-wrong-ca", None).unwrap();
    let err = connack(&mut el)
        .await
        .expect_err("an unknown CA is refused");
    assert!(matches!(err, ConnectionError::Tls(_)), "{err:?}");
    // The right credentials are accepted.
    let (_c, mut el) = broker
        .options(Some(("agent-1", "agent1-pw")))
        .connect("agent-1", None)
        .unwrap();
    connack(&mut el).await.expect("agent-1 connects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_publish_or_read_on_another_agents_topics() {
    let broker = SecureBroker::start("secure-acl");
    // The coordinator is privileged: it reads every agent's status and telemetry.
    let (coordinator, mut watch) = session(
        &broker.options(Some(("coordinator", "coord-pw"))),
        "coordinator",
    )
    .await;
    for filter in ["slim/v1/agents/+/status", "slim/v1/agents/+/telemetry"] {
        coordinator
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let (agent1, mut agent1_rx) =
        session(&broker.options(Some(("agent-1", "agent1-pw"))), "agent-1").await;
    agent1
        .subscribe("slim/v1/agents/agent-1/assign", QoS::AtLeastOnce)
        .await
        .unwrap();
    agent1
        .subscribe("slim/v1/agents/agent-2/assign", QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // agent-1 impersonates agent-2, then publishes on its own status. Mosquitto handles one
    // connection's publishes in order, so once its own arrives, a forged one would have too.
    for topic in [
        "slim/v1/agents/agent-2/status",
        "slim/v1/agents/agent-2/telemetry",
        "slim/v1/agents/agent-2/assign",
        "slim/v1/requests/digits",
        "slim/v1/decisions",
    ] {
        agent1
            .publish(topic, QoS::AtLeastOnce, false, b"forged".to_vec())
            .await
            .unwrap();
    }
    agent1
        .publish(
            "slim/v1/agents/agent-1/telemetry",
            QoS::AtLeastOnce,
            false,
            b"own".to_vec(),
        )
        .await
        .unwrap();
    agent1
        .publish(
            "slim/v1/agents/agent-1/status",
            QoS::AtLeastOnce,
            false,
            b"own".to_vec(),
        )
        .await
        .unwrap();
    let seen = until(&mut watch, "slim/v1/agents/agent-1/status").await;
    assert_eq!(
        seen,
        vec![
            "slim/v1/agents/agent-1/telemetry".to_string(),
            "slim/v1/agents/agent-1/status".to_string()
        ],
        "only agent-1's own topics get through"
    );

    // agent-1 reads its own assignments but not agent-2's.
    for topic in [
        "slim/v1/agents/agent-2/assign",
        "slim/v1/agents/agent-1/assign",
    ] {
        coordinator
            .publish(topic, QoS::AtLeastOnce, false, b"assignment".to_vec())
            .await
            .unwrap();
    }
    let seen = until(&mut agent1_rx, "slim/v1/agents/agent-1/assign").await;
    assert_eq!(
        seen,
        vec!["slim/v1/agents/agent-1/assign".to_string()],
        "agent-1 must not read agent-2's assignments"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        watch.try_recv().is_err(),
        "nothing forged arrived late either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_the_broker_and_the_models() {
    let broker = SecureBroker::start("secure-doctor");
    let options = DoctorOptions {
        root: PathBuf::from("/"),
        broker_timeout: Duration::from_secs(5),
    };
    let good = agent_config(&broker, "agent-1", "agent1-pw");
    let report = doctor::run(&good, &options).await;
    let text = report.to_string();
    eprintln!("{text}");
    assert!(report.passed(), "{text}");
    for name in [
        "config", "hardware", "cuda", "nvml", "sensors", "backend", "models", "broker",
    ] {
        assert!(report.get(name).is_some(), "no {name} line:\n{text}");
    }
    let broker_line = report.get("broker").unwrap();
    assert_eq!(broker_line.status, Status::Ok, "{text}");
    assert!(
        broker_line.detail.contains("as \"agent-1\"") && broker_line.detail.contains("TLS, CA"),
        "{text}"
    );
    let models = report.get("models").unwrap();
    assert_eq!(models.status, Status::Ok);
    assert!(
        models.detail.contains("digits [0.25x 0.5x 0.75x 1x]"),
        "{text}"
    );
    assert!(
        text.ends_with("doctor: all required checks passed\n"),
        "{text}"
    );
    let cuda = report.get("cuda").unwrap();
    assert!(
        cuda.status == Status::Ok || cuda.detail.contains("fix:"),
        "an unusable CUDA says what to do:\n{text}"
    );

    // Without credentials: the broker line fails and says what to fix.
    let mut anonymous = good.clone();
    anonymous.broker.username = None;
    anonymous.broker.password = None;
    let report = doctor::run(&anonymous, &options).await;
    let line = report.get("broker").unwrap();
    assert_eq!(line.status, Status::Fail, "{report}");
    assert!(
        line.detail.contains("check broker.username/password"),
        "{report}"
    );
    assert!(!report.passed());

    // No models: fails too.
    let mut no_models = good.clone();
    no_models.models_dir = broker.dir.path().join("empty");
    std::fs::create_dir_all(&no_models.models_dir).unwrap();
    no_models.models.clear();
    let report = doctor::run(&no_models, &options).await;
    let line = report.get("models").unwrap();
    assert_eq!(line.status, Status::Fail, "{report}");
    assert!(line.detail.contains("no model family"), "{report}");

    // A Jetson fixture: the hardware line names it.
    let jetson = broker.dir.path().join("jetson");
    std::fs::create_dir_all(jetson.join("etc")).unwrap();
    std::fs::write(
        jetson.join("etc/nv_tegra_release"),
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64\n",
    )
    .unwrap();
    let report = doctor::run(
        &good,
        &DoctorOptions {
            root: jetson,
            ..options
        },
    )
    .await;
    let line = report.get("hardware").unwrap();
    assert!(
        line.detail.starts_with("NVIDIA Jetson") && line.detail.contains("R36 (release)"),
        "{report}"
    );
}

/// The shipped ACL lets only the coordinator write assignments: a client that publishes one on
/// an agent's assign topic is dropped by the broker, so the agent never sees it (an agent
/// holding the assignment key would count it as `unauthenticated` if it did). Signed work from
/// the coordinator still flows over the secure broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_acl_keeps_clients_from_writing_assignments() {
    let broker = SecureBroker::start("secure-assign");
    let key = broker.dir.path().join("assignment.key");
    std::fs::write(&key, "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n").unwrap();
    let coordinator = slim_coordinator::start(CoordinatorConfig {
        id: "coordinator".into(),
        topic_prefix: PREFIX.into(),
        broker: broker.options(Some(("coordinator", "coord-pw"))),
        telemetry_timeout_ms: 3000,
        http_listen: None,
        assignment_key_file: Some(key.clone()),
        ..CoordinatorConfig::default()
    })
    .await
    .unwrap();
    let agent = slim_agent::start(AgentConfig {
        assignment_key_file: Some(key),
        ..agent_config(&broker, "agent-1", "agent1-pw")
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while coordinator.counters().await.agents_online < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the coordinator never saw agent-1: {}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = SlimClient::connect(
        &broker.options(Some(("client-1", "client1-pw"))),
        PREFIX,
        "client-1",
        &[],
    )
    .await
    .unwrap();
    let input = family_samples(&models_dir(), "digits").unwrap()[0]
        .input
        .clone();
    let mut request = slim_protocol::InferRequest::new("forged-1", "digits", input.clone());
    request.reply_to = Some(client.reply_topic().to_string());
    let forged = slim_protocol::Assignment {
        v: slim_protocol::PROTOCOL_VERSION,
        request,
        width: 0.25,
        batch_size: 1,
        max_queue_delay_ms: 0,
        router: "forger".into(),
        assigned_at_ms: 0,
        attempt: 0,
        mac: None,
    };
    let forged_answer = client.expect("forged-1");
    client
        .publish_raw(
            &format!("{PREFIX}/agents/agent-1/assign"),
            slim_protocol::encode(&forged),
        )
        .await
        .unwrap();
    // A signed request through the coordinator is answered after the forged one was sent.
    let answer = client
        .request(
            slim_protocol::InferRequest::new("good-1", "digits", input),
            ANSWER_TIMEOUT,
        )
        .await
        .unwrap();
    assert!(
        matches!(answer, slim_client::client::Reply::Result(_)),
        "{answer:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), forged_answer)
            .await
            .is_err(),
        "the forged assignment was run"
    );
    let refused = agent.rejections().await;
    assert!(
        refused.is_empty(),
        "the agent saw the forged assignment, so the ACL let it through: {refused:?}"
    );
    coordinator.shutdown().await;
    agent.shutdown().await;
}
