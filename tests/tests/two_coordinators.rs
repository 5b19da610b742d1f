//! Two coordinators share the request stream (MQTT shared subscription): each request is routed
//! by exactly one of them and answered once, and the group keeps serving when one member dies.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use slim_client::cluster::LocalCluster;
use slim_client::{client::Reply, load::run_open_loop, samples::family_samples};
use slim_coordinator::{CoordinatorConfig, CoordinatorHandle};
use slim_tests::{digits_load, models_dir, spec, start};

/// A cluster whose coordinator shares the request stream with a second one, both knowing both
/// agents.
async fn group_of_two() -> (LocalCluster, CoordinatorHandle) {
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
    // The second coordinator learns the agents from their retained status.
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.counters().await.agents_online < 2 {
        assert!(
            Instant::now() < deadline,
            "the second coordinator sees both agents"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (cluster, second)
}

/// How many times each request id was answered with a result on `replies`.
fn answer_counts(
    replies: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) -> HashMap<String, usize> {
    let mut answers: HashMap<String, usize> = HashMap::new();
    while let Ok((_, payload)) = replies.try_recv() {
        if let Some((id, Reply::Result(_))) = Reply::decode(&payload) {
            *answers.entry(id).or_default() += 1;
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_in_a_shared_group_split_the_requests_and_route_each_once() {
    let (cluster, second) = group_of_two().await;

    let client = slim_tests::client(&cluster, &[]).await;
    let mut replies = client.tap(client.reply_topic());
    let samples = family_samples(&models_dir(), "digits").unwrap();
    let report = run_open_loop(
        &client,
        &samples,
        &digits_load(40.0, Duration::from_secs(3)).with_seed(5),
    )
    .await
    .unwrap();
    let summary = report.summary();
    assert_eq!(summary.lost, 0, "{summary}");
    assert_eq!(summary.answered, summary.sent, "{summary}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = answer_counts(&mut replies);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_keeps_serving_when_one_member_is_killed_under_load() {
    let (mut cluster, second) = group_of_two().await;
    let topics = cluster.topics();
    let client = slim_tests::client(&cluster, &[]).await;
    let mut replies = client.tap(client.reply_topic());
    let samples = family_samples(&models_dir(), "digits").unwrap();
    let kill = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.kill_coordinator();
    };
    let spec = digits_load(40.0, Duration::from_secs(4)).with_seed(9);
    let (report, ()) = tokio::join!(run_open_loop(&client, &samples, &spec), kill);
    let summary = report.unwrap().summary();
    println!("one of two coordinators killed after 1.5 s of 4 s: {summary}");
    assert_eq!(summary.lost, 0, "{summary}");
    assert_eq!(summary.answered, summary.sent, "{summary}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = answer_counts(&mut replies);
    assert_eq!(answers.len(), summary.sent, "every request answered");
    let twice: Vec<_> = answers.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "answered more than once: {twice:?}");
    assert!(second.counters().await.routed > 0, "the survivor routed");

    // Each member's status is its own: the killed one's last will marks only it offline. Read
    // them as a newcomer would, from the retained messages a new subscription returns.
    let filter = topics.coordinator_status_filter();
    let mut statuses = client.tap(&filter);
    client.resubscribe(&filter).await.unwrap();
    let first_id = format!("{}-coordinator", topics.prefix().replace('/', "-"));
    let second_id = format!("{first_id}-2");
    let mut online = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while online.get(&first_id) != Some(&false) || online.get(&second_id) != Some(&true) {
        let Ok(Some((_, payload))) = tokio::time::timeout_at(deadline, statuses.recv()).await
        else {
            break;
        };
        if let Ok(status) = slim_protocol::decode::<slim_protocol::CoordinatorStatus>(&payload) {
            online.insert(status.id, status.online);
        }
    }
    assert_eq!(online.get(&first_id), Some(&false), "{online:?}");
    assert_eq!(online.get(&second_id), Some(&true), "{online:?}");
    second.shutdown().await;
    cluster.shutdown().await;
}
