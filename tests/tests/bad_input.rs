//! Bad input never crashes anything and is never silently dropped: the sender gets an error
//! reply with a code, the refusal is counted, and the system keeps serving.

use slim_client::client::{Reply, SlimClient};
use slim_protocol::{decode, encode, ErrorCode, ErrorReply, InferRequest, Tensor};
use slim_tests::{models_dir, spec, start, ANSWER_TIMEOUT};

fn digits_input() -> Tensor {
    slim_client::samples::family_samples(&models_dir(), "digits")
        .unwrap()
        .remove(0)
        .input
}

async fn expect_error(
    client: &SlimClient,
    id: &str,
    payload: Vec<u8>,
    model_topic: &str,
) -> ErrorReply {
    let rx = client.expect(id);
    client.publish_raw(model_topic, payload).await.unwrap();
    match tokio::time::timeout(ANSWER_TIMEOUT, rx)
        .await
        .expect("an answer comes")
        .unwrap()
    {
        Reply::Error(e) => e,
        Reply::Result(r) => panic!("expected an error, got a result from {}", r.agent),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_request_gets_its_error_code_and_serving_continues() {
    let cluster = start(spec(&[1.0])).await;
    let topics = cluster.topics();
    let client = slim_tests::client(&cluster, &[topics.dead_letters()]).await;
    let mut dead_letters = client.tap(&topics.dead_letters());
    let reply_to = client.reply_topic().to_string();
    let digits = topics.request("digits");
    let request = |id: &str| {
        let mut r = InferRequest::new(id, "digits", digits_input());
        r.reply_to = Some(reply_to.clone());
        r
    };

    // Malformed MessagePack that still carries a reply address.
    let mut broken = Vec::new();
    rmpv::encode::write_value(
        &mut broken,
        &rmpv::Value::Map(vec![
            ("v".into(), 1.into()),
            ("id".into(), "bad-1".into()),
            ("reply_to".into(), reply_to.as_str().into()),
            ("input".into(), "not a tensor".into()),
        ]),
    )
    .unwrap();
    let e = expect_error(&client, "bad-1", broken, &digits).await;
    assert_eq!(e.code, ErrorCode::Malformed);
    assert_eq!(e.origin, "coordinator");

    let mut r = request("bad-2");
    r.model = "no-such-model".into();
    let e = expect_error(
        &client,
        "bad-2",
        encode(&r),
        &topics.request("no-such-model"),
    )
    .await;
    assert_eq!(e.code, ErrorCode::UnknownModel);

    let mut r = request("bad-3");
    r.width = Some(0.33);
    let e = expect_error(&client, "bad-3", encode(&r), &digits).await;
    assert_eq!(e.code, ErrorCode::UnknownWidth);
    assert!(e.message.contains("0.33"), "{}", e.message);

    let mut r = request("bad-4");
    r.input = Tensor::from_u8(vec![3, 8, 8], vec![0; 192]);
    let e = expect_error(&client, "bad-4", encode(&r), &digits).await;
    assert_eq!(e.code, ErrorCode::BadShape);

    let mut r = request("bad-5");
    r.input = Tensor::from_f32(vec![1, 8, 8], &[0.0; 64]);
    r.input.data.truncate(100);
    let e = expect_error(&client, "bad-5", encode(&r), &digits).await;
    assert_eq!(e.code, ErrorCode::BadDtype);

    // A dtype the system does not support.
    let mut f16 = Vec::new();
    rmpv::encode::write_value(
        &mut f16,
        &rmpv::Value::Map(vec![
            ("v".into(), 1.into()),
            ("id".into(), "bad-5b".into()),
            ("model".into(), "digits".into()),
            ("reply_to".into(), reply_to.as_str().into()),
            (
                "input".into(),
                rmpv::Value::Map(vec![
                    ("dtype".into(), "f16".into()),
                    (
                        "shape".into(),
                        rmpv::Value::Array(vec![1.into(), 8.into(), 8.into()]),
                    ),
                    ("data".into(), rmpv::Value::Binary(vec![0; 128])),
                ]),
            ),
        ]),
    )
    .unwrap();
    let e = expect_error(&client, "bad-5b", f16, &digits).await;
    assert_eq!(e.code, ErrorCode::BadDtype);
    assert!(e.message.contains("f16"), "{}", e.message);

    let mut r = request("bad-6");
    r.input = Tensor::from_u8(vec![1, 8, 8], vec![0; 64 + 2 * 1024 * 1024]);
    let e = expect_error(&client, "bad-6", encode(&r), &digits).await;
    assert_eq!(e.code, ErrorCode::TooLarge);

    let mut r = request("bad-7");
    r.min_accuracy = Some(0.9999);
    let e = expect_error(&client, "bad-7", encode(&r), &digits).await;
    assert_eq!(e.code, ErrorCode::AccuracyUnreachable);

    // No reply address at all: the error goes to the dead-letter topic, with the id.
    let mut r = request("bad-8");
    r.reply_to = None;
    client.publish_raw(&digits, encode(&r)).await.unwrap();
    let (_, payload) = tokio::time::timeout(ANSWER_TIMEOUT, dead_letters.recv())
        .await
        .unwrap()
        .unwrap();
    let e: ErrorReply = decode(&payload).unwrap();
    assert_eq!(
        (e.code, e.id.as_deref()),
        (ErrorCode::MissingReplyTo, Some("bad-8"))
    );

    // Bytes that are not MessagePack at all: also a dead letter.
    client
        .publish_raw(&digits, b"\xc1\xc1 definitely not msgpack".to_vec())
        .await
        .unwrap();
    let (_, payload) = tokio::time::timeout(ANSWER_TIMEOUT, dead_letters.recv())
        .await
        .unwrap()
        .unwrap();
    let e: ErrorReply = decode(&payload).unwrap();
    assert_eq!(e.code, ErrorCode::Malformed);
    assert_eq!(e.topic.as_deref(), Some(digits.as_str()));

    // Still serving.
    let reply = client
        .request(request("good-1"), ANSWER_TIMEOUT)
        .await
        .unwrap();
    assert!(matches!(reply, Reply::Result(_)), "{reply:?}");

    let counters = cluster.coordinator.as_ref().unwrap().counters().await;
    for code in [
        ErrorCode::Malformed,
        ErrorCode::UnknownModel,
        ErrorCode::UnknownWidth,
        ErrorCode::BadShape,
        ErrorCode::BadDtype,
        ErrorCode::TooLarge,
        ErrorCode::AccuracyUnreachable,
        ErrorCode::MissingReplyTo,
    ] {
        assert!(
            counters.refused.get(&code).copied().unwrap_or(0) >= 1,
            "{code} was not counted: {:?}",
            counters.refused
        );
    }
    assert_eq!(counters.refused[&ErrorCode::Malformed], 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_a_bad_assignment_sent_straight_to_it() {
    let cluster = start(spec(&[1.0])).await;
    let topics = cluster.topics();
    let client = slim_tests::client(&cluster, &[]).await;
    let agent = cluster.agents[0].info.agent.clone();
    let mut request = InferRequest::new(
        "direct-1",
        "digits",
        Tensor::from_u8(vec![2, 2], vec![0; 4]),
    );
    request.reply_to = Some(client.reply_topic().to_string());
    let assignment = slim_protocol::Assignment {
        v: 1,
        request,
        width: 0.5,
        batch_size: 4,
        max_queue_delay_ms: 1,
        router: "hand".into(),
        assigned_at_ms: 0,
        attempt: 0,
        mac: None,
    };
    let e = expect_error(
        &client,
        "direct-1",
        encode(&assignment),
        &topics.assign(&agent),
    )
    .await;
    assert_eq!(e.code, ErrorCode::BadShape);
    assert_eq!(e.origin, format!("agent:{agent}"));
    let counts = cluster.agents[0].rejections().await;
    assert_eq!(counts.get(&ErrorCode::BadShape), Some(&1));
    cluster.shutdown().await;
}
