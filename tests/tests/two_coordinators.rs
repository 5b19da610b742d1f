//! Two coordinators share the request stream (MQTT shared subscription): each request is routed
//! by exactly one of them and answered once.

use std::{collections::HashMap, time::Duration};

use slim::{
    client::Reply,
    load::{run_open_loop, LoadSpec},
    samples::family_samples,
};
use slim_coordinator::CoordinatorConfig;
use slim_tests::{models_dir, spec, start, ANSWER_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_in_a_shared_group_split_the_requests_and_route_each_once() {
    let mut spec = spec(&[1.0, 1.0]);
    spec.shared_group = Some("slim-test".into());
    let cluster = start(spec).await;
    let topics = cluster.topics();
    let second = slim_coordinator::start(CoordinatorConfig {
        id: format!("{}-coordinator-2", topics.prefix().replace('/', "-")),
        topic_prefix: topics.prefix().to_string(),
        broker: cluster.broker.clone(),
        shared_group: Some("slim-test".into()),
        http_listen: None,
        ..CoordinatorConfig::default()
    })
    .await
    .unwrap();
    // Let the second coordinator learn the agents from their retained status.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let client = slim_tests::client(&cluster, &[]).await;
    let mut replies = client.tap(client.reply_topic());
    let samples = family_samples(&models_dir(), "digits").unwrap();
    let report = run_open_loop(
        &client,
        &samples,
        &LoadSpec {
            model: "digits".into(),
            rate: 40.0,
            duration: Duration::from_secs(3),
            drain: ANSWER_TIMEOUT,
            seed: 5,
            width: None,
            min_accuracy: None,
            deadline_ms: None,
        },
    )
    .await
    .unwrap();
    let summary = report.summary();
    assert_eq!(summary.lost, 0, "{summary}");
    assert_eq!(summary.answered, summary.sent, "{summary}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut answers: HashMap<String, usize> = HashMap::new();
    while let Ok((_, payload)) = replies.try_recv() {
        if let Some((id, Reply::Result(_))) = Reply::decode(&payload) {
            *answers.entry(id).or_default() += 1;
        }
    }
    assert_eq!(answers.len(), summary.sent);
    assert!(
        answers.values().all(|&n| n == 1),
        "every request answered once"
    );

    let first = cluster
        .coordinator
        .as_ref()
        .unwrap()
        .counters()
        .await
        .routed;
    let other = second.counters().await.routed;
    assert_eq!(first + other, summary.sent as u64, "routed once in total");
    assert!(
        first > 0 && other > 0,
        "both coordinators routed: {first} and {other}"
    );
    second.shutdown().await;
    cluster.shutdown().await;
}
