//! With an assignment key, agents run only the work the coordinator signed for them: a client
//! that can publish on the broker (no ACL, as on the embedded broker or a default Mosquitto)
//! cannot hand an agent forged work, nor replay one agent's assignment to another.

use std::time::Duration;

use slim_client::{client::Reply, samples::family_samples};
use slim_protocol::{decode, encode, Assignment, ErrorCode, ErrorReply, InferRequest};
use slim_tests::{models_dir, spec, start, ANSWER_TIMEOUT};

/// The assignment key, in a new file that is removed when dropped.
fn key_file() -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .prefix("slim-signed-")
        .suffix(".key")
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), "3f9a1c0e5b7d2f4a6c8e0b1d3f5a7c9e\n").unwrap();
    file
}

/// Receives dead letters until one for `id` arrives.
async fn dead_letter_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    id: &str,
) -> ErrorReply {
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        loop {
            let (_, payload) = rx.recv().await.expect("the tap stays open");
            if let Ok(e) = decode::<ErrorReply>(&payload) {
                if e.id.as_deref() == Some(id) {
                    return e;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no dead letter for {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_with_a_key_run_signed_work_and_refuse_forged_or_replayed_assignments() {
    let mut s = spec(&[1.0, 1.0]);
    let key = key_file();
    s.assignment_key_file = Some(key.path().to_path_buf());
    let cluster = start(s).await;
    let topics = cluster.topics();
    let assign_filter = format!("{}/agents/+/assign", topics.prefix());
    let client =
        slim_tests::client(&cluster, &[topics.dead_letters(), assign_filter.clone()]).await;
    let mut dead_letters = client.tap(&topics.dead_letters());
    let mut assignments = client.tap(&assign_filter);
    let input = family_samples(&models_dir(), "digits").unwrap()[0]
        .input
        .clone();

    // Signed work from the coordinator is served.
    let answer = client
        .request(
            InferRequest::new("good-1", "digits", input.clone()),
            ANSWER_TIMEOUT,
        )
        .await
        .unwrap();
    let Reply::Result(result) = answer else {
        panic!("expected a result, got {answer:?}")
    };
    let (_, signed) = assignments.recv().await.unwrap();
    let signed: Assignment = decode(&signed).unwrap();
    assert!(signed.mac.is_some(), "the coordinator signs assignments");

    // A forged assignment, published straight to an agent's topic, is refused on the dead
    // letters (never on the reply topic the forger chose) and never run.
    let agent = &cluster.agents[0].info.agent;
    let mut forged_request = InferRequest::new("forged-1", "digits", input.clone());
    forged_request.reply_to = Some(client.reply_topic().to_string());
    let forged = Assignment {
        mac: Some(vec![0; 32]),
        request: forged_request,
        ..signed.clone()
    };
    let forged_answer = client.expect("forged-1");
    client
        .publish_raw(&topics.assign(agent), encode(&forged))
        .await
        .unwrap();
    let refusal = dead_letter_for(&mut dead_letters, "forged-1").await;
    assert_eq!(refusal.code, ErrorCode::Unauthenticated);
    assert_eq!(refusal.origin, format!("agent:{agent}"));

    // The real signed assignment, replayed to the other agent, is refused too: signatures are
    // bound to the agent they were made for.
    let other = cluster
        .agents
        .iter()
        .map(|a| a.info.agent.clone())
        .find(|a| *a != result.agent)
        .unwrap();
    let mut replay = signed.clone();
    replay.request.id = "good-1".into();
    client
        .publish_raw(&topics.assign(&other), encode(&replay))
        .await
        .unwrap();
    let refusal = dead_letter_for(&mut dead_letters, "good-1").await;
    assert_eq!(refusal.code, ErrorCode::Unauthenticated);
    assert_eq!(refusal.origin, format!("agent:{other}"));

    // Nothing answered the forged request on the client's reply topic.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), forged_answer)
            .await
            .is_err(),
        "a forged assignment was run"
    );
    let mut rejected = 0;
    for agent in &cluster.agents {
        let counts = agent.rejections().await;
        rejected += counts
            .get(&ErrorCode::Unauthenticated)
            .copied()
            .unwrap_or(0);
    }
    assert_eq!(rejected, 2, "each refusal is counted");
    cluster.shutdown().await;
}
