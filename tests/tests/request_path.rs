//! The request path end to end: client → broker → coordinator → agents → client.

use std::time::Duration;

use slim_client::{client::Reply, load::run_open_loop, samples::family_samples};
use slim_protocol::{decode, Decisions, InferRequest};
use slim_tests::{digits_load, models_dir, spec, start, ANSWER_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_answered_and_the_load_is_spread_over_three_agents() {
    let cluster = start(spec(&[1.0, 1.0, 1.0])).await;
    let client = slim_tests::client(&cluster, &[]).await;
    let samples = family_samples(&models_dir(), "digits").unwrap();
    let report = run_open_loop(
        &client,
        &samples,
        &digits_load(60.0, Duration::from_secs(3)).with_seed(7),
    )
    .await
    .unwrap();
    let summary = report.summary();
    assert!(summary.sent > 60, "sent {}", summary.sent);
    assert_eq!(summary.lost, 0, "{summary}");
    assert_eq!(summary.answered, summary.sent, "{summary}");
    assert_eq!(summary.agents.len(), 3, "every agent served: {summary}");
    for (agent, n) in &summary.agents {
        assert!(
            *n * 10 >= summary.answered,
            "{agent} got only {n} of {}",
            summary.answered
        );
    }
    let (accuracy, labelled) = summary
        .observed_accuracy
        .expect("held-out inputs are labelled");
    assert_eq!(labelled, summary.answered);
    assert!(accuracy > 0.9, "predictions are real: {accuracy}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_width_is_honoured_and_the_decision_is_published() {
    let cluster = start(spec(&[1.0])).await;
    let topics = cluster.topics();
    let client = slim_tests::client(&cluster, &[topics.decisions()]).await;
    let mut decisions = client.tap(&topics.decisions());
    let sample = family_samples(&models_dir(), "digits").unwrap().remove(0);
    let mut request = InferRequest::new("pinned-1", "digits", sample.input);
    request.width = Some(0.25);
    request.top_k = Some(3);
    let Reply::Result(result) = client.request(request, ANSWER_TIMEOUT).await.unwrap() else {
        panic!("expected a result")
    };
    assert_eq!(result.width, 0.25);
    assert_eq!(result.top_k.len(), 3);
    assert_eq!(result.top_k[0].class, sample.label.unwrap());
    assert!(result.timings.total_ms >= result.timings.compute_ms);
    // The record arrives in the coordinator's next batch (within its 200 ms tick).
    let (_, payload) = tokio::time::timeout(ANSWER_TIMEOUT, decisions.recv())
        .await
        .unwrap()
        .unwrap();
    let batch: Decisions = decode(&payload).unwrap();
    assert_eq!(batch.decisions.len(), 1, "{batch:?}");
    let decision = &batch.decisions[0];
    assert_eq!(decision.request_id, "pinned-1");
    assert_eq!(decision.width, 0.25);
    assert_eq!(decision.agent, result.agent);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_running_batches_on_two_threads_answers_correctly_and_says_so() {
    let mut spec = spec(&[1.0]);
    spec.agent_threads = vec![2];
    let cluster = start(spec).await;
    let client = slim_tests::client(&cluster, &[]).await;
    let samples = family_samples(&models_dir(), "digits").unwrap();
    for (i, sample) in samples.iter().take(8).enumerate() {
        let mut request = InferRequest::new(format!("threads-{i}"), "digits", sample.input.clone());
        request.width = Some(1.0);
        let Reply::Result(result) = client.request(request, ANSWER_TIMEOUT).await.unwrap() else {
            panic!("expected a result")
        };
        assert_eq!(result.top_k[0].class, sample.label.unwrap(), "sample {i}");
    }
    // The agent's retained status, read by a plain MQTT client.
    let info = slim_tests::online_agent_status(&cluster).await;
    assert_eq!(info.threads, 2, "AgentInfo reports the executor's threads");
    cluster.shutdown().await;
}
