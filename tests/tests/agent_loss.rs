//! Requests held by an agent that dies are routed again, so none is lost.

use std::time::Duration;

use slim_client::{load::run_open_loop, samples::family_samples};
use slim_router::RouterKind;
use slim_tests::{digits_load, models_dir, spec, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_by_a_killed_agent_are_rerouted_and_answered() {
    // Agent 1 is very slow, so it holds a backlog when it dies; random routing keeps sending to it.
    let mut spec = spec(&[2000.0, 1.0]);
    spec.router = RouterKind::Random;
    let mut cluster = start(spec).await;
    let client = slim_tests::client(&cluster, &[]).await;
    let samples = family_samples(&models_dir(), "digits").unwrap();
    let victim = cluster.agents.remove(0);
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        victim.kill();
    });
    let report = run_open_loop(
        &client,
        &samples,
        &digits_load(40.0, Duration::from_secs(3))
            .with_seed(3)
            .with_width(1.0),
    )
    .await
    .unwrap();
    killer.await.unwrap();
    let summary = report.summary();
    assert_eq!(summary.lost, 0, "{summary}");
    assert_eq!(summary.answered, summary.sent, "{summary}");
    let counters = cluster.coordinator.as_ref().unwrap().counters().await;
    assert!(
        counters.rerouted > 0,
        "the dead agent held requests: {counters:?}"
    );
    cluster.shutdown().await;
}
