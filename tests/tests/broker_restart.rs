//! Nothing accepted is lost when the broker stops and starts again in the middle of a run.
//!
//! This test runs its own Mosquitto (persistence on, `set_tcp_nodelay true`) on a free port, so
//! it can stop and restart it without disturbing other tests. Agents keep results in their
//! durable outbox while the broker is away; every client keeps a persistent session.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use slim_client::{client::SlimClient, load::run_open_loop, samples::family_samples};
use slim_tests::{digits_load, models_dir, spec, start};

struct Mosquitto {
    child: Child,
    config: PathBuf,
}

impl Mosquitto {
    fn start(config: &Path) -> Self {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(config)
            .spawn()
            .expect("mosquitto is installed (Debian package `mosquitto`)");
        Self {
            child,
            config: config.to_path_buf(),
        }
    }

    /// Stops it the way an operator would (SIGTERM: it saves its persistence file).
    fn stop(mut self) -> PathBuf {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.config.clone()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mosquitto did not listen on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_result_is_lost_when_the_broker_restarts_mid_run() {
    let tmp = tempfile::Builder::new()
        .prefix("slim-broker-restart-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    // Mosquitto started as root drops to its own user, which must be able to save its database.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nset_tcp_nodelay true\n",
            dir.display()
        ),
    )
    .unwrap();
    let broker = Mosquitto::start(&config);
    wait_for_port(port);

    let mut spec = spec(&[1.0, 1.0]);
    spec.broker_url = Some(format!("mqtt://127.0.0.1:{port}"));
    spec.clean_session = false;
    spec.state_root = Some(dir.join("agents"));
    spec.telemetry_timeout_ms = 3000;
    let cluster = start(spec).await;
    let client = SlimClient::connect(
        &cluster.broker,
        cluster.spec.topic_prefix.as_str(),
        "restart-test-client",
        &[],
    )
    .await
    .unwrap();
    let samples = family_samples(&models_dir(), "digits").unwrap();

    let restarter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let config = broker.stop();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let broker = Mosquitto::start(&config);
        wait_for_port(port);
        broker
    });
    let report = run_open_loop(
        &client,
        &samples,
        &digits_load(30.0, Duration::from_secs(5)).with_seed(11),
    )
    .await
    .unwrap();
    let _broker = restarter.await.unwrap();
    let summary = report.summary();
    let counters = cluster.coordinator.as_ref().unwrap().counters().await;
    eprintln!("{summary}\ncoordinator: {counters:?}");
    assert!(summary.sent > 100, "{summary}");
    assert_eq!(summary.lost, 0, "{summary}");
    assert_eq!(summary.answered, summary.sent, "{summary}");
    cluster.shutdown().await;
}
