//! The long run's soak and the markdown report it writes to docs/reliability.md.

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use slim_client::{load::Summary, samples::family_samples};
use slim_tests::{
    models_dir,
    mosquitto::{self, vm_rss_kib, Mosquitto},
    ANSWER_TIMEOUT,
};

use crate::run::{
    bookkeeping_bytes, drive, fleet_spec, log_answers, measure, misses, start_fleet, Fault, Plan,
    Record, Run, LIVENESS_MS, RATE, RECOVERY_RUN,
};

/// Extra time, beyond the liveness timeout, that work on a killed or hung device may take to be
/// answered: the coordinator's liveness check and the re-routed run.
const REROUTE_SLACK_MS: u64 = 1000;

pub const REPORT_COMMAND: &str = "cargo build --release --workspace --bins && SLIM_RELIABILITY_REPORT=docs/reliability.md cargo test --release -p slim-tests --test reliability -- --ignored reliability_report --nocapture";

/// One memory sample of the soak, KiB.
#[derive(Debug)]
pub struct RssSample {
    at: Duration,
    /// The test process: the client and the load generator's records.
    own_kib: Option<u64>,
    broker_kib: Option<u64>,
    /// The coordinator, then each agent.
    daemons_kib: Vec<Option<u64>>,
}

/// The soak: steady load, no fault, memory sampled every 30 s.
pub struct Soak {
    duration: Duration,
    pub summary: Summary,
    lost_ids: Vec<String>,
    conflicting: usize,
    /// Names of the daemons, in the order of [`RssSample::daemons_kib`].
    daemons: Vec<String>,
    samples: Vec<RssSample>,
    records: Vec<Record>,
}

pub async fn soak(duration: Duration) -> Soak {
    const EVERY: Duration = Duration::from_secs(30);
    let broker = Mosquitto::start("soak");
    let (fleet, client) = start_fleet(fleet_spec(&broker, "soak")).await;
    let (answers, logger) = log_answers(&client);
    let samples = family_samples(&models_dir(), "digits").unwrap();
    let daemons: Vec<String> = fleet.rss().into_iter().map(|(name, _)| name).collect();
    let mut pids: Vec<Option<u32>> = vec![fleet.coordinator.pid()];
    pids.extend(fleet.agents.iter().map(|a| a.pid()));
    pids.push(broker.pid());
    let sample = move |t0: Instant| {
        let kib: Vec<Option<u64>> = pids.iter().map(|p| p.and_then(vm_rss_kib)).collect();
        RssSample {
            at: t0.elapsed(),
            own_kib: mosquitto::own_rss_kib(),
            broker_kib: kib[kib.len() - 1],
            daemons_kib: kib[..kib.len() - 1].to_vec(),
        }
    };
    let t0 = Instant::now();
    let rss: Arc<Mutex<Vec<RssSample>>> = Default::default();
    let sampler = {
        let (rss, sample) = (rss.clone(), sample.clone());
        tokio::spawn(async move {
            let mut k = 0u32;
            loop {
                tokio::time::sleep_until((t0 + EVERY * k).into()).await;
                rss.lock().unwrap().push(sample(t0));
                k += 1;
            }
        })
    };
    let records = drive(&client, &samples, "soak", duration, ANSWER_TIMEOUT, t0).await;
    sampler.abort();
    {
        let mut rss = rss.lock().unwrap();
        // A last sample at the end, unless the periodic one was just taken.
        if rss
            .last()
            .is_none_or(|last| t0.elapsed() > last.at + Duration::from_secs(5))
        {
            rss.push(sample(t0));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let duplicates = client.duplicate_answers();
    logger.abort();
    let answers = answers.lock().unwrap().clone();
    let run = measure(
        Plan {
            fault: Fault::None,
            duration,
            fault_at: duration,
        },
        &records,
        &answers,
        duplicates,
        (duration, duration),
        String::new(),
        String::new(),
        t0.elapsed(),
    );
    let samples = std::mem::take(&mut *rss.lock().unwrap());
    drop(fleet);
    drop(client);
    drop(broker);
    Soak {
        duration,
        summary: run.summary,
        lost_ids: run.lost_ids,
        conflicting: run.conflicting.len(),
        daemons,
        samples,
        records,
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default()
}

fn machine() -> String {
    let lscpu = command_output("lscpu", &[]);
    let model = lscpu
        .lines()
        .find_map(|l| l.strip_prefix("Model name:"))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_string();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map(|kib| format!(", {:.0} GiB memory", kib / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{model}, {cores} cores{memory}")
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "—".into())
}

fn ms(d: f64) -> String {
    format!("{d:.1}")
}

pub fn report_markdown(runs: &[(usize, Run)], soak: &Soak, command: &str) -> String {
    let mut md = String::new();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let mosquitto = command_output("mosquitto", &["-h"])
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let profile = if cfg!(debug_assertions) {
        "debug (dependencies at opt-level 3, workspace crates unoptimized)"
    } else {
        "release"
    };
    let soak_s = soak.duration.as_secs();
    let _ = writeln!(
        md,
        "# Reliability\n\n\
         Kill anything, lose nothing, answer once, never answer wrongly (issue #21). This file is\n\
         written by `reliability_report` in `tests/tests/reliability/`; do not edit it by hand,\n\
         run it again:\n\n\
         ```sh\n{command}\n```\n\n\
         - Date: {}\n- Machine: {} (`lscpu`)\n- Broker: {mosquitto}\n- Build: {profile}\n",
        date.trim(),
        machine()
    );
    let _ = writeln!(
        md,
        "## Set-up\n\n\
         Every run starts its own Mosquitto (`tests/src/mosquitto.rs`: the settings of\n\
         `deploy/mosquitto/mosquitto.conf` without TLS and ACL — persistence on, autosave every\n\
         60 s, `set_tcp_nodelay true`) on a free port, and the shipped daemons as separate\n\
         processes (`tests/src/daemons.rs`): one `slim-coordinator` (least-loaded) and three\n\
         `slim-agent`s (digits, real speed, one thread each) with durable state and persistent\n\
         MQTT sessions (`clean_session = false`), telemetry every 200 ms and a liveness timeout of\n\
         2 s, each started from its own TOML file. Faults are signals by PID: `kill -9` (no\n\
         goodbye, no offline status: the broker publishes the last will), `kill -TERM` for the\n\
         broker, and `kill -STOP` ... `kill -CONT` for a hung device (its connection stays open\n\
         until the broker's keep-alive check). A killed daemon restarts with the same config, id\n\
         and state folder.\n\n\
         One client (the `slim` client: QoS 1, persistent session, retries an unanswered request\n\
         with the same id every 2 s, keeps the first answer per id) sends {RATE:.0} requests/s for\n\
         25 s, or until 10 s after the fault's end if that is later; the fault starts 5 s in.\n\
         The client then waits up to 20 s for the last answers.\n\n\
         - **Lost**: requests without any answer at the end.\n\
         - **Duplicate answers dropped**: second answers to an answered request that the client\n  \
           dropped (a retry or a redelivery answered again). No slim client sees a request\n  \
           answered twice; other clients must drop them the same way (docs/protocol.md,\n  \
           *Delivery semantics*).\n\
         - **Wrong errors**: error answers. With three agents and no bad input, every request\n  \
           should get a result, so every error counts (by code).\n\
         - **Mixed answers**: requests answered both with a result and an error (or with errors\n  \
           of two codes), counted on the reply topic before the client's de-duplication.\n\
         - **Latency**: client-side, from the request's scheduled send time to its first answer,\n  \
           over all results of the run (retries included).\n\
         - **Recovery**: from the fault's end (the restart done; for a kill without restart, the\n  \
           kill) to the answer of the first request sent after it that begins a run of\n  \
           {RECOVERY_RUN} consecutive requests answered under 3 × the median latency before the\n  \
           fault.\n\
         - **Backlog answered**: from the fault's end to the answer of the last request sent\n  \
           before it (requests caught in the fault, recovered by re-routing or retries).\n\
         - **Caught, worst**: the longest latency of the requests sent from one liveness timeout\n  \
           (2 s) before the fault's start to its end: the work a killed or hung device may\n  \
           have held, re-routed when the coordinator declares the device silent.\n"
    );
    let _ = writeln!(md, "## Faults\n");
    let _ = writeln!(
        md,
        "| Fault | Rep | Sent | Answered | Lost | Duplicate answers dropped | Wrong errors | Mixed answers | p50 ms | p99 ms | Recovery | Backlog answered | Caught, worst |\n\
         |---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for (rep, run) in runs {
        let s = &run.summary;
        let _ = writeln!(
            md,
            "| {} | {rep} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.plan.fault.describe(),
            s.sent,
            s.answered,
            s.lost,
            s.duplicates,
            run.errors_text(),
            run.conflicting.len(),
            ms(s.latency_ms[0]),
            ms(s.latency_ms[2]),
            run.recovery_text(),
            run.backlog_text(),
            run.caught_text()
        );
    }
    let _ = writeln!(md);
    let mut verdicts = Vec::new();
    for (rep, run) in runs {
        for miss in misses(run) {
            verdicts.push(format!(
                "- **{} (rep {rep})**: {miss}",
                run.plan.fault.describe()
            ));
        }
        let within = |d: Option<Duration>| d.is_some_and(|d| d <= Duration::from_secs(2));
        if run.plan.fault != Fault::None && !within(run.recovery) {
            verdicts.push(format!(
                "- **{} (rep {rep})**: recovery {} (target: within 2 s)",
                run.plan.fault.describe(),
                run.recovery_text()
            ));
        }
        let device_fault = matches!(
            run.plan.fault,
            Fault::OneAgentKill | Fault::AgentHang { .. }
        );
        let rerouted_in_time = run
            .caught_worst
            .is_some_and(|w| w <= Duration::from_millis(LIVENESS_MS + REROUTE_SLACK_MS));
        if device_fault && !rerouted_in_time {
            verdicts.push(format!(
                "- **{} (rep {rep})**: requests the device held waited up to {} (target: re-routed within the 2 s liveness timeout + {REROUTE_SLACK_MS} ms)",
                run.plan.fault.describe(),
                run.caught_text()
            ));
        }
    }
    let _ = writeln!(
        md,
        "Targets: 0 lost, 0 answered twice to slim clients, 0 wrong errors, recovery within 2 s\n\
         (work on a killed or hung device: answered within the liveness timeout, 2 s here, plus\n\
         {REROUTE_SLACK_MS} ms for the coordinator's liveness check and the re-routed run).\n"
    );
    if verdicts.is_empty() {
        let _ = writeln!(md, "**All targets met in every run.**\n");
    } else {
        let _ = writeln!(md, "**Targets missed:**\n\n{}\n", verdicts.join("\n"));
    }
    let _ = writeln!(md, "## Soak\n");
    let _ = writeln!(
        md,
        "{soak_s} s at {RATE:.0} requests/s, no fault, same set-up. {}\n\n\
         The full 10-minute soak is the default: leave `SLIM_SOAK_SECONDS` unset (600 s) in the\n\
         command above; `SLIM_SOAK_SECONDS=120` makes it 2 minutes.\n\n\
         Memory (VmRSS from `/proc/<pid>/status`) of every process every 30 s: the coordinator,\n\
         each agent and Mosquitto; the test process holds only the client and the load\n\
         generator's record of every request and answer (estimated, a lower bound, in its own\n\
         column). Requests are counted by the window they were sent in.\n",
        if soak_s < 600 {
            format!("**This run's soak was {soak_s} s, not the 10 minutes of the issue.**")
        } else {
            String::new()
        }
    );
    let s = &soak.summary;
    let _ = writeln!(
        md,
        "Overall: sent {}, answered {}, lost {}, duplicate answers dropped {}, wrong errors {}, mixed answers {}, latency p50 {} ms, p99 {} ms.\n",
        s.sent,
        s.answered,
        s.lost,
        s.duplicates,
        s.errored.values().sum::<usize>(),
        soak.conflicting,
        ms(s.latency_ms[0]),
        ms(s.latency_ms[2])
    );
    let _ = writeln!(md, "{}", rss_growth(soak));
    let daemons: String = soak.daemons.iter().map(|d| format!(" {d} MiB |")).collect();
    let rules: String = soak.daemons.iter().map(|_| "---:|").collect();
    let _ = writeln!(
        md,
        "| Time s |{daemons} Mosquitto MiB | Test process MiB | of which its records (estimate) MiB | Sent in window | Answered | p50 ms | p99 ms |\n\
         |---:|{rules}---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut from: Option<Duration> = None;
    for sample in &soak.samples {
        let window: Vec<&Record> = soak
            .records
            .iter()
            .filter(|r| from.is_some_and(|from| r.sent_at >= from) && r.sent_at < sample.at)
            .collect();
        let mut latencies: Vec<f64> = window
            .iter()
            .filter(|r| r.is_result())
            .filter_map(|r| r.latency())
            .map(|l| l.as_secs_f64() * 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if latencies.is_empty() {
                "—".to_string()
            } else {
                ms(latencies[((latencies.len() - 1) as f64 * p).round() as usize])
            }
        };
        let bookkeeping: usize = soak
            .records
            .iter()
            .filter(|r| r.sent_at < sample.at)
            .map(bookkeeping_bytes)
            .sum();
        let _ = writeln!(
            md,
            "| {:.0} |{} {} | {} | {} | {} | {} | {} | {} |",
            sample.at.as_secs_f64(),
            sample
                .daemons_kib
                .iter()
                .map(|k| format!(" {} |", mib(*k)))
                .collect::<String>(),
            mib(sample.broker_kib),
            mib(sample.own_kib),
            mib(Some(bookkeeping as u64 / 1024)),
            from.map_or("—".into(), |_| window.len().to_string()),
            from.map_or("—".into(), |_| window
                .iter()
                .filter(|r| r.is_result())
                .count()
                .to_string()),
            pct(0.5),
            pct(0.99)
        );
        from = Some(sample.at);
    }
    if !soak.lost_ids.is_empty() {
        let _ = writeln!(
            md,
            "\nLost in the soak: {:?}",
            &soak.lost_ids[..soak.lost_ids.len().min(20)]
        );
    }
    let _ = writeln!(
        md,
        "\n## Not covered\n\n\
         - Power loss of the broker's host (the disk's own cache): a `kill -9` of Mosquitto loses\n  \
           what it held in memory, which the clients' retries recover; the operating system still\n  \
           writes what Mosquitto wrote.\n\n\
         ## CI\n\n\
         The same scenarios, CI-sized (12 s of load at {RATE:.0} requests/s, the fault at 4 s,\n\
         3-5 s down or stopped), run with every `cargo test --workspace` and in `.ci/run`:\n\n\
         ```sh\ncargo build --workspace --bins && cargo test -p slim-tests --test reliability\n```\n\n\
         They assert 0 lost, every request answered with a result, no request answered with\n\
         different kinds of answers, and that latency came back to normal before the end of\n\
         the run."
    );
    md
}

/// Growth of each process's RSS over the soak, from the first sample at or after one minute (the
/// warm-up: model loading, allocator pools) to the last.
fn rss_growth(soak: &Soak) -> String {
    let warm = soak
        .samples
        .iter()
        .find(|s| s.at >= Duration::from_secs(60))
        .or(soak.samples.first());
    let (Some(warm), Some(last)) = (warm, soak.samples.last()) else {
        return "No memory samples.\n".into();
    };
    let growth = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(a), Some(b)) if a > 0 => format!("{:+.1} %", (b as f64 / a as f64 - 1.0) * 100.0),
        _ => "—".into(),
    };
    let mut parts: Vec<String> = soak
        .daemons
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                "{name} {}",
                growth(
                    warm.daemons_kib.get(i).copied().flatten(),
                    last.daemons_kib.get(i).copied().flatten()
                )
            )
        })
        .collect();
    parts.push(format!(
        "Mosquitto {}",
        growth(warm.broker_kib, last.broker_kib)
    ));
    format!(
        "RSS growth from {:.0} s to {:.0} s (target: within 10 %): {}.\n",
        warm.at.as_secs_f64(),
        last.at.as_secs_f64(),
        parts.join(", ")
    )
}
