//! Online refinement end to end: a coordinator routing with the trained efficiency policy and
//! refining it from the rewards real agents report, while every request is still answered.

use slim_tests::repo_root as repo;
use std::time::Duration;

use slim_client::{load::run_open_loop, samples::family_samples};
use slim_coordinator::config::OnlineSettings;
use slim_router::ppo::{online::OnlineConfig, Checkpoint};
use slim_router::{build_router, RouterKind, RouterSettings};
use slim_tests::{digits_load, http_body, models_dir, spec, start};

/// The value of an unlabelled sample in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_is_refined_online_while_every_request_is_answered() {
    let dir = tempfile::Builder::new()
        .prefix("slim-online-refine-")
        .tempdir()
        .unwrap();
    let save = dir.path().join("refined.safetensors");
    let mut spec = spec(&[1.0, 2.0]);
    spec.router = RouterKind::Ppo;
    spec.policy = Some(repo().join("router/policies/efficiency.safetensors"));
    spec.profile = Some(repo().join("profiles/cpu-2core.toml"));
    spec.http_listen = Some("127.0.0.1:0".into());
    spec.online = OnlineSettings {
        enabled: true,
        save: Some(save.clone()),
        learner: OnlineConfig {
            batch: 16,
            ..OnlineConfig::default()
        },
    };
    let cluster = start(spec).await;
    let addr = cluster
        .coordinator
        .as_ref()
        .and_then(|c| c.http_addr())
        .expect("monitoring is on");
    let client = slim_tests::client(&cluster, &[]).await;
    let samples = family_samples(&models_dir(), "digits").unwrap();
    let report = run_open_loop(
        &client,
        &samples,
        &digits_load(40.0, Duration::from_secs(3))
            .with_seed(11)
            .with_deadline_ms(500),
    )
    .await
    .unwrap();
    let summary = report.summary();
    assert!(summary.sent > 60, "sent {}", summary.sent);
    assert_eq!(summary.lost, 0, "{summary}");
    assert_eq!(summary.answered, summary.sent, "{summary}");

    // The rewards arrive with the next telemetry; the update runs off the routing loop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = http_body(addr, "/metrics").await;
        if metric(&text, "slim_router_online_updates_total").unwrap_or(0.0) >= 1.0
            && metric(&text, "slim_router_online_checkpoint_writes_total").unwrap_or(0.0) >= 1.0
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no online update was applied and saved:\n{}",
            text.lines()
                .filter(|l| l.starts_with("slim_router"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let value = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("no {name}"));
    let updates = value("slim_router_online_updates_total");
    let transitions = value("slim_router_online_transitions_total");
    println!(
        "{} requests, {transitions} transitions, {updates} updates applied, {} refused, \
         {} expired, reward mean {} (cost {}), KL {}",
        summary.sent,
        value("slim_router_online_rejected_total"),
        value("slim_router_online_expired_total"),
        value("slim_router_reward_mean"),
        value("slim_router_cost_mean"),
        value("slim_router_online_kl"),
    );
    assert!(transitions >= 16.0, "{transitions}");
    assert!(
        text.contains("slim_router_info{policy=\"ppo:efficiency+online\"} 1"),
        "{text}"
    );

    // The refined checkpoint loads, says what it is, and routes.
    let checkpoint = Checkpoint::load(&save).expect("the refined checkpoint loads");
    let online = checkpoint
        .meta
        .online
        .clone()
        .expect("marked as refined online");
    assert!(
        online.updates >= 1 && online.transitions >= 16,
        "{online:?}"
    );
    assert!(online.base_policy.ends_with("efficiency.safetensors"));
    assert_eq!(online.config.batch, 16);
    let router = build_router(
        RouterKind::Ppo,
        &RouterSettings {
            policy: Some(save.clone()),
            ..RouterSettings::default()
        },
    )
    .expect("the refined checkpoint makes a router");
    assert_eq!(router.name(), "ppo:efficiency");
    cluster.shutdown().await;
}
