//! `slim demo --compare` end to end: the same short workload through random, greedy and the
//! shipped PPO policy prints one table that lists all three, each answering every request.
//!
//! The CLI runs in a child process (this test binary started again with the `compare_child`
//! helper selected and the command line in an environment variable), so what is checked is
//! what a user reads on stdout. With `SLIM_TEST_BROKER` set it runs on that broker.

use std::{path::PathBuf, process::Command, time::Instant};

use slim_tests::external_broker;

const CHILD_ARGS: &str = "SLIM_DEMO_COMPARE_CHILD_ARGS";

/// Runs the `slim` CLI with the arguments in `SLIM_DEMO_COMPARE_CHILD_ARGS` (one per line).
#[test]
#[ignore = "helper: the compare test runs the slim CLI through it in a child process"]
fn compare_child() {
    let args = std::env::var(CHILD_ARGS).expect("started by the compare test");
    let argv = std::iter::once("slim".to_string()).chain(args.lines().map(String::from));
    std::process::exit(i32::from(slim::app::main_status(argv)));
}

#[test]
fn compare_lists_all_three_routers_each_answering_everything() {
    let mut args: Vec<String> = [
        "demo",
        "--compare",
        "--duration",
        "3s",
        "--models",
        "digits,cifar-slimresnet",
        "--rates",
        "20,2",
    ]
    .map(String::from)
    .to_vec();
    if let Some(url) = external_broker() {
        args.extend(["--broker".to_string(), url]);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "compare_child", "--ignored", "--nocapture"])
        .env(CHILD_ARGS, args.join("\n"))
        .env_remove("SLIM_BROKER")
        .env_remove("SLIM_HTTP_LISTEN")
        .current_dir(&repo)
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "slim {} -> {:?} in {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        args.join(" "),
        out.status,
        started.elapsed()
    );
    assert!(out.status.success(), "slim demo --compare failed");

    let header = stdout
        .lines()
        .position(|l| l.starts_with("router "))
        .expect("a table header");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(header + 1)
        .take(3)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(names[..2], ["random", "greedy"], "{stdout}");
    assert!(
        names[2] == "ppo:efficiency" || names[2] == "prior:efficiency",
        "the shipped policy, named as `slim eval` names it: {stdout}"
    );
    for row in &rows {
        // router, answered/sent, errors, lost, ...
        let (answered, sent) = row[1].split_once('/').expect("answered/sent");
        let answered: usize = answered.parse().unwrap();
        assert!(answered > 0, "{} answered nothing:\n{stdout}", row[0]);
        assert_eq!(answered.to_string(), sent, "{}:\n{stdout}", row[0]);
        assert_eq!(
            (row[2], row[3]),
            ("0", "0"),
            "{} errors, lost:\n{stdout}",
            row[0]
        );
    }
    assert!(
        stdout.contains("What this shows: Every router answered every request."),
        "{stdout}"
    );
}
