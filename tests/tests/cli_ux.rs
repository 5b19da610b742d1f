//! What a new user meets first, end to end: a PNG request answered by a running system (and as
//! accurately as the .npy it came from), `slim status` naming the broker it asked, a dead broker
//! or a missing file or folder reported in one clear `error:` line without a backtrace, the
//! `slim status` command printed by `slim demo --keep-running` working as printed, and logs
//! without ANSI colour codes when stderr is not a terminal.
//!
//! The process-level checks run the CLI (`slim::app::main_status`, what the `slim` binary's
//! `main` calls) in a child process: this test binary started again with the `cli_child`
//! helper selected and the command line in an environment variable, so they always test the
//! current code with stdout and stderr as pipes.

use slim_tests::repo_root as repo;
use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use slim::commands::{request::RequestArgs, BrokerArgs};
use slim_client::{
    client::Reply,
    samples::{family_samples, image_tensor, read_image, DecodedImage},
};
use slim_protocol::InferRequest;

const CHILD_ARGS: &str = "SLIM_CLI_UX_CHILD_ARGS";
const SEP: char = '\u{1f}';

/// A new folder `slim-cli-ux-{tag}-XXXXXX` in the system's temporary folder, removed when
/// dropped.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("slim-cli-ux-{tag}-"))
        .tempdir()
        .unwrap()
}

/// Runs the `slim` CLI with the arguments in `SLIM_CLI_UX_CHILD_ARGS` and exits with its status.
/// Only the other tests start it (in a child process).
#[test]
#[ignore = "helper: the other tests run the slim CLI through it in a child process"]
fn cli_child() {
    let args = std::env::var(CHILD_ARGS).expect("started by a cli_ux test");
    // Each argument ends with SEP, so empty arguments (`--http-listen ""`) survive.
    let mut words: Vec<String> = args.split(SEP).map(String::from).collect();
    words.pop();
    let argv = std::iter::once("slim".to_string()).chain(words);
    let status = slim::app::main_status(argv);
    std::process::exit(i32::from(status));
}

/// The CLI with `args`, in a child process, its stdout and stderr piped.
fn slim_child(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "cli_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(
        CHILD_ARGS,
        args.iter().map(|a| format!("{a}{SEP}")).collect::<String>(),
    )
    .current_dir(cwd)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for var in [
        "SLIM_BROKER",
        "SLIM_TOPIC_PREFIX",
        "SLIM_MQTT_USERNAME",
        "SLIM_MQTT_PASSWORD",
        "SLIM_HTTP_LISTEN",
        "RUST_LOG",
        "NO_COLOR",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn run_slim(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Ran {
    let started = Instant::now();
    let out = slim_child(args, cwd, env).output().expect("the child runs");
    let ran = Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        took: started.elapsed(),
    };
    eprintln!(
        "slim {} -> {} in {:?}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        ran.code,
        ran.took,
        ran.stdout,
        ran.stderr
    );
    ran
}

/// Asserts a user error: status 1, stderr is `error: <expected...>` (and maybe cause and hint
/// lines), no backtrace although RUST_BACKTRACE=1 is set, no panic.
fn assert_user_error(ran: &Ran, expected_start: &str) {
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    let first = ran.stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with(&format!("error: {expected_start}")),
        "stderr should start with `error: {expected_start}`:\n{}",
        ran.stderr
    );
    for leak in ["backtrace", "Backtrace", "panicked", "Caused by:"] {
        assert!(!ran.stderr.contains(leak), "{leak:?} in:\n{}", ran.stderr);
    }
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// --- a minimal PNG writer (8-bit grayscale, stored deflate), independent of the CLI's decoder.

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn write_png(path: &Path, width: u32, height: u32, pixels: &[u8]) {
    assert_eq!(pixels.len(), (width * height) as usize);
    let mut raw = Vec::new();
    for row in pixels.chunks(width as usize) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grayscale
    chunk(b"IHDR", &header);
    chunk(b"IDAT", &zlib);
    chunk(b"IEND", &[]);
    std::fs::write(path, png).unwrap();
}

/// An 8x8 digit, each pixel made a `factor` x `factor` square.
fn upscale(pixels: &[u8], side: usize, factor: usize) -> Vec<u8> {
    let big = side * factor;
    (0..big * big)
        .map(|i| pixels[(i / big / factor) * side + (i % big) / factor])
        .collect()
}

fn request_args(cluster: &slim_client::cluster::LocalCluster, input: &Path) -> RequestArgs {
    RequestArgs {
        broker: BrokerArgs {
            broker: cluster.broker.url.clone(),
            username: None,
            password: None,
            ca_file: None,
            topic_prefix: cluster.spec.topic_prefix.clone(),
            client_id: None,
            persistent_session: false,
        },
        model: "digits".into(),
        input: input.to_path_buf(),
        invert: false,
        width: Some(1.0),
        min_accuracy: None,
        top_k: 3,
        timeout: slim_tests::ANSWER_TIMEOUT,
        json: false,
    }
}

/// The measurement: 40 held-out digits upscaled 16x to 128x128 PNGs are answered like
/// the .npy originals (before the area-averaging resize: 32/40 against 40/40).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn png_digits_are_answered_as_accurately_as_their_npy_originals() {
    let cluster = slim_tests::start(slim_tests::spec(&[1.0])).await;
    let client = slim_tests::client(&cluster, &[]).await;
    let samples = family_samples(&slim_tests::models_dir(), "digits").unwrap();
    let tmp = temp_dir("png");
    let dir = tmp.path();
    let (mut npy_correct, mut png_correct) = (0, 0);
    for (i, sample) in samples.iter().take(40).enumerate() {
        let label = sample.label.expect("held-out digits are labelled");
        let png = dir.join(format!("digit-{i}-label-{label}.png"));
        write_png(&png, 128, 128, &upscale(&sample.input.data, 8, 16));
        // The resize undoes the upscale exactly: the PNG sends the .npy's pixels.
        let sent = read_image(&png, &[1, 8, 8]).unwrap();
        assert_eq!(sent.data, sample.input.data, "digit {i}");

        let answer = slim::commands::request::ask(&request_args(&cluster, &png))
            .await
            .unwrap_or_else(|e| panic!("PNG request {i}: {e:#}"));
        let Reply::Result(from_png) = answer.reply else {
            panic!("PNG request {i} refused: {:?}", answer.reply)
        };
        let mut request = InferRequest::new(
            format!("npy-{i}"),
            "digits".to_string(),
            sample.input.clone(),
        );
        request.width = Some(1.0);
        let Reply::Result(from_npy) = client
            .request(request, slim_tests::ANSWER_TIMEOUT)
            .await
            .unwrap()
        else {
            panic!(".npy request {i} refused")
        };
        assert_eq!(
            from_png.top_k[0].class, from_npy.top_k[0].class,
            "digit {i}"
        );
        npy_correct += usize::from(from_npy.top_k[0].class == label);
        png_correct += usize::from(from_png.top_k[0].class == label);
    }
    eprintln!("40 held-out digits at width 1.0: .npy {npy_correct}/40 correct, 128x128 PNG {png_correct}/40");
    assert_eq!(png_correct, npy_correct);
    assert!(npy_correct >= 39, ".npy {npy_correct}/40");

    // Dark ink on a light background, with --invert, sends the same pixels.
    let sample = &samples[0];
    let negative: Vec<u8> = upscale(&sample.input.data, 8, 16)
        .iter()
        .map(|v| 255 - v)
        .collect();
    let png = dir.join("negative.png");
    write_png(&png, 128, 128, &negative);
    let inverted = image_tensor(&DecodedImage::open(&png, true).unwrap(), &[1, 8, 8]).unwrap();
    assert_eq!(inverted.data, sample.input.data);

    client.disconnect().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_broker_it_asked_and_a_dead_broker_is_one_clear_error() {
    let cluster = slim_tests::start(slim_tests::spec(&[1.0])).await;
    let url = cluster.broker.url.clone();
    let prefix = cluster.spec.topic_prefix.clone();
    let ran = tokio::task::spawn_blocking({
        let (url, prefix) = (url.clone(), prefix.clone());
        move || {
            run_slim(
                &[
                    "status",
                    "--broker",
                    &url,
                    "--topic-prefix",
                    &prefix,
                    "--wait",
                    "1s",
                ],
                &repo(),
                &[],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stdout
            .contains(&format!("broker {url} · prefix {prefix}")),
        "{}",
        ran.stdout
    );
    let agent = format!("{}-agent-1", prefix.replace('/', "-"));
    assert!(ran.stdout.contains(&agent), "{}", ran.stdout);

    // Nobody there: named, said at once, no "deadline has elapsed".
    let dead = format!("mqtt://127.0.0.1:{}", dead_port());
    let ran = tokio::task::spawn_blocking({
        let dead = dead.clone();
        move || {
            run_slim(
                &["status", "--broker", &dead],
                &repo(),
                &[("RUST_BACKTRACE", "1")],
            )
        }
    })
    .await
    .unwrap();
    assert_user_error(&ran, &format!("cannot reach the broker at {dead}: "));
    assert!(
        !ran.stderr.contains("deadline has elapsed"),
        "{}",
        ran.stderr
    );
    assert!(ran.took < Duration::from_secs(8), "took {:?}", ran.took);

    // The demo on a dead external broker gives up too, instead of retrying forever.
    let ran = tokio::task::spawn_blocking({
        let dead = dead.clone();
        move || {
            run_slim(
                &["demo", "--broker", &dead, "--http-listen", ""],
                &repo(),
                &[("RUST_BACKTRACE", "1")],
            )
        }
    })
    .await
    .unwrap();
    assert_user_error(&ran, &format!("cannot reach the broker at {dead}: "));
    assert!(ran.took < Duration::from_secs(20), "took {:?}", ran.took);
    cluster.shutdown().await;
}

#[test]
fn errors_name_the_missing_file_or_folder() {
    let tmp = temp_dir("elsewhere");
    let elsewhere = tmp.path();
    let bt = [("RUST_BACKTRACE", "1")];
    let missing = elsewhere.join("no-such-digit.png");
    let missing = missing.to_str().unwrap();
    // Checked before any broker is asked (none listens at the default address here).
    let ran = run_slim(
        &[
            "request",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--model",
            "digits",
            "--input",
            missing,
        ],
        elsewhere,
        &bt,
    );
    assert_user_error(&ran, &format!("file not found: {missing}"));

    let ran = run_slim(
        &["models", "--models-dir", "/nonexistent/models"],
        elsewhere,
        &bt,
    );
    assert_user_error(&ran, "the models folder was not found: /nonexistent/models");
    assert!(ran.stderr.contains("--models-dir"), "{}", ran.stderr);

    // Outside the repository, the relative default `models` is not there.
    for command in [&["demo"][..], &["bench"][..]] {
        let ran = run_slim(command, elsewhere, &bt);
        assert_user_error(&ran, "the models folder was not found: models");
        assert!(
            ran.stderr.contains("--models-dir") && ran.stderr.contains("repository"),
            "{}",
            ran.stderr
        );
    }
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn the_demo_left_running_prints_a_status_command_that_works_and_logs_without_colour() {
    let mut demo = slim_child(
        &[
            "demo",
            "--duration",
            "1s",
            "--models",
            "digits",
            "--rates",
            "5",
            "--slowdowns",
            "1",
            "--http-listen",
            "",
            "--keep-running",
        ],
        &repo(),
        &[("RUST_LOG", "info,rumqttd=off")],
    )
    .spawn()
    .expect("the demo starts");
    let mut stderr = demo.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = BufReader::new(demo.stdout.take().unwrap());
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status_command = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
            let _ = demo.kill();
            panic!(
                "the demo ended without a status command:\n{printed}\n{}",
                stderr_reader.join().unwrap()
            );
        }
        printed.push_str(&line);
        if let Some(command) = line.trim().strip_prefix("Fleet table: ") {
            break command.to_string();
        }
    };
    eprintln!("demo printed:\n{printed}");
    let words: Vec<&str> = status_command.split_whitespace().collect();
    assert!(
        words.len() >= 4 && words[..3] == ["slim", "status", "--broker"],
        "{status_command}"
    );
    assert!(
        words[3].starts_with("mqtt://127.0.0.1:"),
        "{status_command}"
    );
    assert_ne!(words[3], "mqtt://127.0.0.1:1883", "the demo's own broker");

    // The command, as printed (plus a shorter wait), finds the demo's agent.
    let mut args = words[1..].to_vec();
    args.extend(["--wait", "1s"]);
    let ran = run_slim(&args, &repo(), &[]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran.stdout.contains("slim-v1-agent-1"), "{}", ran.stdout);
    assert!(
        ran.stdout
            .contains(&format!("broker {} · prefix slim/v1", words[3])),
        "{}",
        ran.stdout
    );

    interrupt(&demo);
    let status = demo.wait().unwrap();
    let logs = stderr_reader.join().unwrap();
    eprintln!("demo stderr:\n{logs}");
    assert!(
        status.success(),
        "the demo stops cleanly on Ctrl-C: {status:?}"
    );
    assert!(
        logs.lines().filter(|l| l.contains(" INFO ")).count() >= 2,
        "RUST_LOG=info should give log lines to check:\n{logs}"
    );
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escape codes in logs written to a pipe:\n{logs:?}"
    );
}

#[test]
fn help_texts_show_no_rust_syntax() {
    for command in [
        "demo", "request", "bench", "models", "profile", "train", "simulate", "eval", "status",
    ] {
        let help = match slim::app::parse_from(["slim", command, "--help"]) {
            Err(e) if e.exit_code() == 0 => e.render().to_string(),
            other => panic!("slim {command} --help: {other:?}"),
        };
        for leak in ["[`", "`]", "Some(", "::", "{ "] {
            assert!(
                !help.contains(leak),
                "`slim {command} --help` shows {leak:?}:\n{help}"
            );
        }
    }
}
