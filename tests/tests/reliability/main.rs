//! Kill anything, lose nothing, answer once, never answer wrongly (#21).
//!
//! Each scenario runs its own Mosquitto (`slim_tests::mosquitto`, persistence on) and the
//! shipped daemons as separate processes (`slim_tests::daemons`): a `slim-coordinator` and three
//! `slim-agent`s with durable state and persistent MQTT sessions (the deployment's settings,
//! docs/deploy.md), and a client that sends digits requests at a steady rate and retries
//! unanswered ones (same id, every 2 s). A fault is injected by PID a few seconds in (`kill -9`,
//! `kill -TERM`, or `kill -STOP` then `kill -CONT` for a hung device); afterwards every request
//! must have been answered with a result: none lost, no error at all (no `unknown_model` after
//! a coordinator restart, no `no_capacity`), and no request answered with a result and an
//! error. Second answers that the client drops (at least once delivery, retries) are counted
//! and printed, not forbidden.
//!
//! Recovery is measured from the fault's end (restart or SIGCONT done; for a kill without
//! restart, the kill) to the answer of the first request, sent after that, that starts a run of
//! five consecutive requests answered under three times the pre-fault median latency.
//!
//! The daemons are the binaries cargo built next to this test (`cargo test --workspace` builds
//! them). The CI-sized scenarios run one at a time (a lock), so their latencies do not disturb
//! one another. `reliability_report` (ignored) is the long run that writes docs/reliability.md:
//!
//! ```text
//! cargo build --release --workspace --bins
//! SLIM_RELIABILITY_REPORT=docs/reliability.md cargo test --release -p slim-tests \
//!     --test reliability -- --ignored reliability_report --nocapture
//! ```

mod report;
mod run;

use std::{path::PathBuf, time::Duration};

use report::{report_markdown, soak, REPORT_COMMAND};
use run::{ci_plan, misses, run_fault, Fault, Plan, RECOVERY_RUN};

/// One scenario at a time: their latencies would disturb one another on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a CI-sized scenario and checks the targets.
async fn scenario(fault: Fault) {
    let _serial = SERIAL.lock().await;
    let run = run_fault(ci_plan(fault)).await;
    eprintln!("{run}");
    let misses = misses(&run);
    assert!(
        misses.is_empty(),
        "{}\n{run}\ncoordinator log (tail):\n{}\nbroker log (tail):\n{}",
        misses.join("\n"),
        run.coordinator_log_tail,
        run.broker_log_tail
    );
    assert!(
        run.recovery.is_some(),
        "latency never came back under 3 × the pre-fault p50 ({:?}) for {RECOVERY_RUN} requests in a row\n{run}",
        run.pre_fault_p50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill9_restarted_after_3s_loses_nothing() {
    scenario(Fault::BrokerKill9 {
        down: Duration::from_secs(3),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigterm_restarted_after_3s_loses_nothing() {
    scenario(Fault::BrokerTerm {
        down: Duration::from_secs(3),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_restarted_after_3s_loses_nothing() {
    scenario(Fault::CoordinatorKill {
        down: Duration::from_secs(3),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_killed_loses_nothing() {
    scenario(Fault::OneAgentKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_agents_killed_restarted_after_4s_lose_nothing() {
    scenario(Fault::AllAgentsKill {
        down: Duration::from_secs(4),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_hung_by_sigstop_for_5s_loses_nothing() {
    scenario(Fault::AgentHang {
        stopped: Duration::from_secs(5),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the long reliability run (about 10 minutes plus the soak); set SLIM_RELIABILITY_REPORT"]
async fn reliability_report() {
    let Some(path) = std::env::var_os("SLIM_RELIABILITY_REPORT").filter(|p| !p.is_empty()) else {
        panic!(
            "reliability_report writes a markdown report and needs its path: run\n  {REPORT_COMMAND}\n\
             (SLIM_SOAK_SECONDS sets the soak's length, default 600)"
        );
    };
    // Relative to the workspace root, not to tests/ (where cargo runs the test binary).
    let mut path = PathBuf::from(path);
    if path.is_relative() {
        path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
    }
    let soak_seconds: u64 = match std::env::var("SLIM_SOAK_SECONDS") {
        Ok(s) if !s.is_empty() => s.parse().expect("SLIM_SOAK_SECONDS is a number of seconds"),
        _ => 600,
    };
    let _serial = SERIAL.lock().await;
    let secs = Duration::from_secs;
    let faults = [
        Fault::None,
        Fault::OneAgentKill,
        Fault::AllAgentsKill { down: secs(10) },
        Fault::CoordinatorKill { down: secs(5) },
        Fault::AgentHang { stopped: secs(20) },
        Fault::BrokerTerm { down: secs(5) },
        Fault::BrokerKill9 { down: secs(5) },
    ];
    let mut runs = Vec::new();
    for fault in faults {
        for rep in 1..=2 {
            // At least 10 s of load after the fault's end, to see recovery.
            let run = run_fault(Plan {
                fault,
                duration: secs(25).max(secs(15) + fault.length()),
                fault_at: secs(5),
            })
            .await;
            eprintln!("rep {rep}: {run}\n");
            runs.push((rep, run));
        }
    }
    let soak = soak(secs(soak_seconds)).await;
    eprintln!("soak: {}", soak.summary);
    let mut command = String::new();
    if std::env::var_os("SLIM_SOAK_SECONDS").is_some() {
        command.push_str(&format!("SLIM_SOAK_SECONDS={soak_seconds} "));
    }
    command.push_str(&if cfg!(debug_assertions) {
        REPORT_COMMAND.replace(" --release", "")
    } else {
        REPORT_COMMAND.to_string()
    });
    let md = report_markdown(&runs, &soak, &command);
    std::fs::write(&path, &md).expect("the report can be written");
    eprintln!("wrote {}\n\n{md}", path.display());
    let mut failed: Vec<String> = runs
        .iter()
        .flat_map(|(rep, run)| {
            misses(run)
                .into_iter()
                .map(move |m| format!("{} (rep {rep}): {m}", run.plan.fault.describe()))
        })
        .collect();
    if soak.summary.lost > 0 || soak.summary.answered != soak.summary.sent {
        failed.push(format!("soak: {}", soak.summary));
    }
    assert!(failed.is_empty(), "targets missed:\n{}", failed.join("\n"));
}
