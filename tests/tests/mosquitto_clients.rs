//! The wire format exactly as `docs/protocol.md` documents it, spoken by a client that is not
//! ours: the request is a MessagePack map built by hand with `rmpv` (named fields, no Rust
//! message structs), published with Mosquitto's `mosquitto_pub -f`, and the answer is read with
//! `mosquitto_sub` and checked field by field, by name.
//!
//! Needs the `mosquitto_pub` and `mosquitto_sub` programs (Debian/Ubuntu: `apt-get install
//! mosquitto-clients`). Without them the tests fail: they are the point of this file.

use std::{
    io::ErrorKind,
    process::{Child, Command, Stdio},
    time::Duration,
};

use rmpv::Value;
use slim_tests::{models_dir, spec, start};

const INSTALL_HINT: &str = "install mosquitto-clients (e.g. `apt-get install mosquitto-clients`): \
     these tests drive the system with mosquitto_pub and mosquitto_sub";

/// `mqtt://host:port` → (host, port).
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("broker URL {url} has no port"));
    (host.to_string(), port.parse().expect("a numeric port"))
}

fn spawn_tool(command: &mut Command, name: &str) -> Child {
    match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("{name} is not installed: {INSTALL_HINT}")
        }
        Err(e) => panic!("cannot run {name}: {e}"),
    }
}

/// Fails early, with the install hint, when either client program is missing.
fn require_mosquitto_clients() {
    for tool in ["mosquitto_pub", "mosquitto_sub"] {
        let mut child = spawn_tool(
            Command::new(tool)
                .arg("--help")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            tool,
        );
        let _ = child.wait();
    }
}

/// A tensor map: `{dtype, shape, data}` with `data` as MessagePack bin.
fn tensor(dtype: &str, shape: &[u32], data: Vec<u8>) -> Value {
    Value::Map(vec![
        ("dtype".into(), dtype.into()),
        (
            "shape".into(),
            Value::Array(shape.iter().map(|&d| Value::from(d)).collect()),
        ),
        ("data".into(), Value::Binary(data)),
    ])
}

/// An `InferRequest` map with the documented field names.
fn request(id: &str, model: &str, input: Value, reply_to: &str) -> Vec<u8> {
    let map = Value::Map(vec![
        ("v".into(), 1.into()),
        ("id".into(), id.into()),
        ("model".into(), model.into()),
        ("input".into(), input),
        ("reply_to".into(), reply_to.into()),
        ("top_k".into(), 3.into()),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &map).expect("writing to a Vec cannot fail");
    bytes
}

/// A new file `slim-XXXXXX-{name}` holding `bytes`, removed when dropped.
fn temp_file(name: &str, bytes: &[u8]) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .prefix("slim-")
        .suffix(&format!("-{name}"))
        .tempfile()
        .expect("temp file is writable");
    std::fs::write(file.path(), bytes).expect("temp file is writable");
    file
}

/// Subscribes with `mosquitto_sub`, publishes `payload` with `mosquitto_pub -f`, and returns the
/// one message that arrives on `reply_topic`, decoded.
async fn round_trip(broker_url: &str, topic: &str, reply_topic: &str, payload: &[u8]) -> Value {
    let (host, port) = host_port(broker_url);
    let port = port.to_string();
    let file = temp_file(&format!("{}.bin", topic.replace('/', "_")), payload);

    let sub = spawn_tool(
        Command::new("mosquitto_sub")
            .args(["-h", &host, "-p", &port, "-q", "1", "-C", "1", "-W", "20"])
            .args(["-t", reply_topic])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        "mosquitto_sub",
    );
    // mosquitto_sub gives no signal when its subscription is in place; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let publish = Command::new("mosquitto_pub")
        .args(["-h", &host, "-p", &port, "-q", "1", "-t", topic, "-f"])
        .arg(file.path())
        .output();
    let publish = match publish {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("mosquitto_pub is not installed: {INSTALL_HINT}")
        }
        Err(e) => panic!("cannot run mosquitto_pub: {e}"),
    };
    drop(file);
    assert!(
        publish.status.success(),
        "mosquitto_pub failed ({}): {}",
        publish.status,
        String::from_utf8_lossy(&publish.stderr)
    );

    let out = tokio::task::spawn_blocking(move || sub.wait_with_output())
        .await
        .unwrap()
        .expect("mosquitto_sub runs");
    assert!(
        out.status.success(),
        "mosquitto_sub got no answer on {reply_topic} within 20 s ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // mosquitto_sub prints the raw payload followed by one newline.
    let mut reply = out.stdout;
    assert_eq!(
        reply.pop(),
        Some(b'\n'),
        "mosquitto_sub ends a message with \\n"
    );
    let mut cursor = &reply[..];
    let value = rmpv::decode::read_value(&mut cursor).expect("the answer is MessagePack");
    assert!(cursor.is_empty(), "one MessagePack value, nothing after it");
    assert!(value.is_map(), "the answer is a map: {value}");
    value
}

fn number(value: &Value, field: &str) -> f64 {
    value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is a number in {value}"))
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string in {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_published_with_mosquitto_pub_is_answered_on_its_reply_topic() {
    require_mosquitto_clients();
    let cluster = start(spec(&[1.0])).await;
    let topics = cluster.topics();
    let sample = slim_client::samples::family_samples(&models_dir(), "digits")
        .unwrap()
        .remove(0);
    let label = sample.label.expect("held-out samples are labelled");
    assert_eq!(sample.input.shape, [1, 8, 8]);
    let input = tensor("u8", &[1, 8, 8], sample.input.data.to_vec());
    let reply_topic = topics.client_replies("mosquitto-clients-test");
    let payload = request("mosq-1", "digits", input, &reply_topic);

    let answer = round_trip(
        &cluster.broker.url,
        &topics.request("digits"),
        &reply_topic,
        &payload,
    )
    .await;

    assert!(
        answer["error"].is_nil() || answer["error"] == Value::Boolean(false),
        "a result, not an error: {answer}"
    );
    assert_eq!(answer["v"].as_u64(), Some(1), "{answer}");
    assert_eq!(text(&answer, "id"), "mosq-1");
    assert_eq!(text(&answer, "model"), "digits");
    assert!(!text(&answer, "agent").is_empty());
    assert!(!text(&answer, "router").is_empty());
    let width = number(&answer, "width");
    assert!(
        [0.25, 0.5, 0.75, 1.0].contains(&width),
        "width {width} is one of the model's"
    );
    assert!(answer["batch_size"].as_u64().is_some_and(|b| b >= 1));
    let accuracy = number(&answer, "accuracy");
    assert!((0.0..=1.0).contains(&accuracy));

    let top = answer["top_k"].as_array().expect("top_k is an array");
    assert_eq!(top.len(), 3, "top_k = 3 was asked for: {answer}");
    assert_eq!(
        top[0]["class"].as_u64(),
        Some(label as u64),
        "the top class is the held-out label: {answer}"
    );
    assert_eq!(text(&top[0], "label"), label.to_string());
    let scores: Vec<f64> = top.iter().map(|c| number(c, "score")).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));

    let timings = &answer["timings"];
    let total = number(timings, "total_ms");
    let queue = number(timings, "queue_ms");
    let compute = number(timings, "compute_ms");
    assert!(compute > 0.0, "running the model takes time: {timings}");
    assert!(queue >= 0.0, "{timings}");
    // 10 µs of slack for the parts being separate f32 figures.
    assert!(
        total + 0.01 >= queue + compute,
        "total covers queue and compute: {timings}"
    );
    let source = text(&answer, "energy_source");
    assert!(
        ["nvml", "ina3221", "rapl", "model", "none"].contains(&source),
        "{answer}"
    );
    let energy = number(&answer, "energy_j");
    match source {
        "none" => assert_eq!(energy, 0.0, "no meter, no energy: {answer}"),
        // The modelled figure is the batch's time at the profile's power, never zero; a
        // sensor's first window may not have a power reading yet.
        "model" => assert!(energy > 0.0, "a modelled batch used energy: {answer}"),
        _ => assert!(energy >= 0.0, "{answer}"),
    }
    assert!(answer["emulated"].as_bool().is_some());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_shape_gets_a_bad_shape_error_on_the_reply_topic() {
    require_mosquitto_clients();
    let cluster = start(spec(&[1.0])).await;
    let topics = cluster.topics();
    // Three channels where the digits model takes one.
    let input = tensor("u8", &[3, 8, 8], vec![0; 3 * 8 * 8]);
    let reply_topic = topics.client_replies("mosquitto-clients-bad");
    let payload = request("mosq-bad-1", "digits", input, &reply_topic);
    let request_topic = topics.request("digits");

    let answer = round_trip(&cluster.broker.url, &request_topic, &reply_topic, &payload).await;

    assert_eq!(answer["error"].as_bool(), Some(true), "{answer}");
    assert_eq!(answer["v"].as_u64(), Some(1));
    assert_eq!(text(&answer, "code"), "bad_shape");
    assert_eq!(text(&answer, "id"), "mosq-bad-1");
    assert_eq!(text(&answer, "origin"), "coordinator");
    assert_eq!(text(&answer, "topic"), request_topic);
    // Human-readable only (protocol.md: do not parse it), but never empty.
    assert!(!text(&answer, "message").is_empty());
    cluster.shutdown().await;
}
