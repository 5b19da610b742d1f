//! One fault scenario: a private Mosquitto, the daemons as separate processes, a client at a
//! steady rate with retries, the fault injected by PID, and what was measured.

use std::time::{Duration, Instant};

use slim_client::{
    client::{Reply, SlimClient},
    load::{LoadReport, Outcome, Summary},
    samples::{family_samples, Sample},
};
pub use slim_tests::paced_requests::Record;
use slim_tests::{
    daemons::{FleetSpec, ProcessFleet},
    models_dir,
    mosquitto::Mosquitto,
    paced_requests::{self, AnswerLog, Answers, Pace},
    ANSWER_TIMEOUT,
};

/// Agents in every scenario, all at real speed, one thread each.
pub const AGENTS: usize = 3;

/// Requests per second in every scenario and in the soak.
pub const RATE: f64 = 35.0;

/// Consecutive requests under the latency threshold that mark recovery.
pub const RECOVERY_RUN: usize = 5;

/// Agents' telemetry interval and the coordinator's liveness timeout, milliseconds.
pub const TELEMETRY_MS: u64 = 200;
pub const LIVENESS_MS: u64 = 2000;

/// A fault and, where it has one, how long the killed part stays down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    None,
    OneAgentKill,
    AllAgentsKill {
        down: Duration,
    },
    CoordinatorKill {
        down: Duration,
    },
    /// One agent SIGSTOPped (a hung device), SIGCONT after `stopped`.
    AgentHang {
        stopped: Duration,
    },
    BrokerTerm {
        down: Duration,
    },
    BrokerKill9 {
        down: Duration,
    },
}

impl Fault {
    pub fn describe(&self) -> String {
        let s = |d: &Duration| d.as_secs_f64();
        match self {
            Fault::None => "none".into(),
            Fault::OneAgentKill => "one agent killed (not restarted)".into(),
            Fault::AllAgentsKill { down } => {
                format!("all agents killed, restarted after {:.0} s", s(down))
            }
            Fault::CoordinatorKill { down } => {
                format!("coordinator killed, restarted after {:.0} s", s(down))
            }
            Fault::AgentHang { stopped } => {
                format!("one agent SIGSTOP for {:.0} s, then SIGCONT", s(stopped))
            }
            Fault::BrokerTerm { down } => {
                format!("broker SIGTERM, restarted after {:.0} s", s(down))
            }
            Fault::BrokerKill9 { down } => {
                format!("broker kill -9, restarted after {:.0} s", s(down))
            }
        }
    }

    /// How long the fault lasts (0 for a kill without restart).
    pub fn length(&self) -> Duration {
        match *self {
            Fault::None | Fault::OneAgentKill => Duration::ZERO,
            Fault::AllAgentsKill { down }
            | Fault::CoordinatorKill { down }
            | Fault::BrokerTerm { down }
            | Fault::BrokerKill9 { down } => down,
            Fault::AgentHang { stopped } => stopped,
        }
    }

    pub fn tag(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::OneAgentKill => "agent",
            Fault::AllAgentsKill { .. } => "agents",
            Fault::CoordinatorKill { .. } => "coord",
            Fault::AgentHang { .. } => "hang",
            Fault::BrokerTerm { .. } => "term",
            Fault::BrokerKill9 { .. } => "kill9",
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub fault: Fault,
    /// How long requests are sent.
    pub duration: Duration,
    /// When the fault starts, from the first request.
    pub fault_at: Duration,
}

/// The CI-sized plan: 12 s of load at 35 requests/s, the fault at 4 s.
pub fn ci_plan(fault: Fault) -> Plan {
    Plan {
        fault,
        duration: Duration::from_secs(12),
        fault_at: Duration::from_secs(4),
    }
}

/// A lower estimate of the memory the test itself keeps per request, bytes: this record, the
/// answer log's entry, and the client's waiter and answered-id entries. The soak reports it
/// beside the test process's RSS, so the load generator's own growth is not taken for a leak.
pub fn bookkeeping_bytes(r: &Record) -> usize {
    let entry = std::mem::size_of::<String>() + r.id.len();
    let answer = match &r.answer {
        Some((_, Reply::Result(result))) => {
            result.agent.len()
                + result.model.len()
                + result.router.len()
                + result
                    .top_k
                    .iter()
                    .map(|c| std::mem::size_of::<slim_protocol::ClassScore>() + c.label.len())
                    .sum::<usize>()
        }
        Some((_, Reply::Error(e))) => e.message.len() + e.origin.len(),
        None => 0,
    };
    std::mem::size_of::<Record>() + r.id.len() + answer + 3 * entry + 2 * 32
}

fn kind(reply: &Reply) -> String {
    match reply {
        Reply::Result(r) if r.model == "digits" => "result".into(),
        Reply::Result(r) => format!("result for model {}", r.model),
        Reply::Error(e) => format!("error {}", e.code.as_str()),
    }
}

/// Records every answer published on the client's reply topic, a digits result as `result`.
pub fn log_answers(client: &SlimClient) -> (AnswerLog, tokio::task::JoinHandle<()>) {
    paced_requests::log_answers(client, kind)
}

/// Sends requests every `1/RATE` s for `duration` from `t0`, each retried by the client until
/// `t0 + duration + drain`; returns once every one is answered or that time has passed.
pub async fn drive(
    client: &SlimClient,
    samples: &[Sample],
    tag: &str,
    duration: Duration,
    drain: Duration,
    t0: Instant,
) -> Vec<Record> {
    let pace = Pace {
        rate: RATE,
        duration,
        drain,
    };
    paced_requests::drive(client, samples, tag, pace, t0).await
}

/// Everything one scenario measured.
#[derive(Debug)]
pub struct Run {
    pub plan: Plan,
    pub summary: Summary,
    pub lost_ids: Vec<String>,
    /// Requests whose answers were of different kinds (e.g. a result and an error).
    pub conflicting: Vec<(String, Vec<String>)>,
    /// Answers seen on the reply topic beyond the first per request.
    pub extra_answers: usize,
    pub fault_start: Duration,
    pub fault_end: Duration,
    pub pre_fault_p50: Duration,
    pub recovery: Option<Duration>,
    /// Longest latency of a request sent from one liveness timeout before the fault's start to
    /// its end (the requests a killed or hung device may have held).
    pub caught_worst: Option<Duration>,
    /// When the last request sent before the fault's end was answered, after the fault's end.
    pub backlog_cleared: Option<Duration>,
    /// The coordinator's log, last lines.
    pub coordinator_log_tail: String,
    pub broker_log_tail: String,
    pub wall: Duration,
}

impl Run {
    pub fn errors_text(&self) -> String {
        if self.summary.errored.is_empty() {
            return "0".into();
        }
        let codes: Vec<String> = self
            .summary
            .errored
            .iter()
            .map(|(code, n)| format!("{n} {code}"))
            .collect();
        codes.join(", ")
    }

    pub fn recovery_text(&self) -> String {
        match (self.plan.fault, self.recovery) {
            (Fault::None, _) => "—".into(),
            (_, Some(r)) => format!("{:.2} s", r.as_secs_f64()),
            (_, None) => "not within the run".into(),
        }
    }

    pub fn caught_text(&self) -> String {
        match (self.plan.fault, self.caught_worst) {
            (Fault::None, _) => "—".into(),
            (_, Some(w)) => format!("{:.2} s", w.as_secs_f64()),
            (_, None) => "not all answered".into(),
        }
    }

    pub fn backlog_text(&self) -> String {
        match (self.plan.fault, self.backlog_cleared) {
            (Fault::None, _) => "—".into(),
            (_, Some(b)) => format!("{:.2} s", b.as_secs_f64()),
            (_, None) => "never".into(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "fault: {} (from {:.2} s to {:.2} s)",
            self.plan.fault.describe(),
            self.fault_start.as_secs_f64(),
            self.fault_end.as_secs_f64()
        )?;
        write!(f, "{}", self.summary)?;
        writeln!(
            f,
            "  lost ids   {:?}",
            &self.lost_ids[..self.lost_ids.len().min(20)]
        )?;
        writeln!(
            f,
            "  answers    {} beyond the first seen on the reply topic; conflicting kinds: {:?}",
            self.extra_answers,
            &self.conflicting[..self.conflicting.len().min(10)]
        )?;
        writeln!(
            f,
            "  recovery   {} (pre-fault p50 {:.1} ms, threshold {:.1} ms); requests sent before the fault's end all answered {} after it",
            self.recovery_text(),
            self.pre_fault_p50.as_secs_f64() * 1000.0,
            3.0 * self.pre_fault_p50.as_secs_f64() * 1000.0,
            self.backlog_text()
        )?;
        writeln!(
            f,
            "  caught     worst latency of the requests sent from {:.1} s before the fault to its end: {}",
            LIVENESS_MS as f64 / 1000.0,
            self.caught_text()
        )?;
        write!(f, "  wall time  {:.1} s", self.wall.as_secs_f64())
    }
}

/// The fleet of every scenario on `broker`: three agents and a coordinator, each a process.
pub fn fleet_spec(broker: &Mosquitto, tag: &str) -> FleetSpec {
    FleetSpec {
        broker_url: broker.url(),
        topic_prefix: format!("slim-reliability/{tag}/v1"),
        agents: AGENTS,
        models: vec!["digits".into()],
        telemetry_interval_ms: TELEMETRY_MS,
        telemetry_timeout_ms: LIVENESS_MS,
        dir: broker.dir().join("fleet"),
    }
}

/// Starts the fleet, waits until it is online, and connects the client (QoS 1, persistent
/// session, retries).
pub async fn start_fleet(spec: FleetSpec) -> (ProcessFleet, SlimClient) {
    let mut fleet = ProcessFleet::start(spec);
    if let Err(e) = fleet.wait_ready(Duration::from_secs(60)).await {
        panic!("the fleet does not come up: {e:#}");
    }
    let mut options = fleet.broker();
    options.clean_session = false;
    let prefix = fleet.spec.topic_prefix.clone();
    let client = SlimClient::connect(
        &options,
        &prefix,
        &format!("{}-c", prefix.replace('/', "-")),
        &[],
    )
    .await
    .expect("the test client connects");
    (fleet, client)
}

/// Injects `fault` into the fleet or the broker.
async fn inject(fault: Fault, fleet: &mut ProcessFleet, broker: &mut Mosquitto) {
    match fault {
        Fault::None => {}
        Fault::OneAgentKill => fleet.agents[0].kill9(),
        Fault::AllAgentsKill { down } => {
            fleet.agents.iter_mut().for_each(|a| a.kill9());
            tokio::time::sleep(down).await;
            fleet.agents.iter_mut().for_each(|a| a.restart());
        }
        Fault::CoordinatorKill { down } => {
            fleet.coordinator.kill9();
            tokio::time::sleep(down).await;
            fleet.coordinator.restart();
        }
        Fault::AgentHang { stopped } => {
            fleet.agents[0].stop();
            tokio::time::sleep(stopped).await;
            fleet.agents[0].cont();
        }
        Fault::BrokerTerm { down } => {
            tokio::task::block_in_place(|| broker.term());
            tokio::time::sleep(down).await;
            tokio::task::block_in_place(|| broker.restart());
        }
        Fault::BrokerKill9 { down } => {
            tokio::task::block_in_place(|| broker.kill9());
            tokio::time::sleep(down).await;
            tokio::task::block_in_place(|| broker.restart());
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts a private Mosquitto and the fleet on it, runs the load with the fault injected, and
/// measures.
pub async fn run_fault(plan: Plan) -> Run {
    let began = Instant::now();
    let broker = Mosquitto::start(plan.fault.tag());
    let (fleet, client) = start_fleet(fleet_spec(&broker, plan.fault.tag())).await;
    let (answers, logger) = log_answers(&client);
    let samples = family_samples(&models_dir(), "digits").unwrap();

    let t0 = Instant::now();
    let injector = tokio::spawn(async move {
        let (mut fleet, mut broker) = (fleet, broker);
        tokio::time::sleep_until((t0 + plan.fault_at).into()).await;
        let start = t0.elapsed();
        inject(plan.fault, &mut fleet, &mut broker).await;
        (fleet, broker, start, t0.elapsed())
    });
    let records = drive(
        &client,
        &samples,
        plan.fault.tag(),
        plan.duration,
        ANSWER_TIMEOUT,
        t0,
    )
    .await;
    let (fleet, broker, fault_start, fault_end) = injector.await.expect("the fault injector");
    // Late duplicates, if any, arrive within moments.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let duplicates = client.duplicate_answers();
    logger.abort();
    let answers = answers.lock().unwrap().clone();
    let coordinator = tail(&fleet.coordinator.log(), 15);
    let broker_log_tail = tail(&broker.log(), 40);
    drop(fleet);
    drop(client);
    drop(broker);
    measure(
        plan,
        &records,
        &answers,
        duplicates,
        (fault_start, fault_end),
        coordinator,
        broker_log_tail,
        began.elapsed(),
    )
}

#[allow(clippy::too_many_arguments)]
pub fn measure(
    plan: Plan,
    records: &[Record],
    answers: &Answers,
    duplicates: u64,
    (fault_start, fault_end): (Duration, Duration),
    coordinator: String,
    broker_log_tail: String,
    wall: Duration,
) -> Run {
    let report = LoadReport {
        sent: records.len(),
        outcomes: records
            .iter()
            .filter_map(|r| {
                r.answer.as_ref().map(|(at, reply)| Outcome {
                    latency: at.saturating_sub(r.sent_at),
                    reply: reply.clone(),
                    label: r.label,
                    sent_after: r.sent_at,
                    deadline_ms: None,
                })
            })
            .collect(),
        elapsed: records
            .iter()
            .filter_map(|r| r.answer.as_ref().map(|(at, _)| *at))
            .max()
            .unwrap_or_default(),
        duplicates,
        with_deadline: 0,
        held_locally: 0,
        sending: Duration::ZERO,
    };
    let lost_ids = paced_requests::lost(records)
        .into_iter()
        .map(String::from)
        .collect();
    let mut conflicting: Vec<(String, Vec<String>)> = answers
        .iter()
        .filter(|(_, kinds)| kinds.iter().any(|k| k != &kinds[0]))
        .map(|(id, kinds)| (id.clone(), kinds.clone()))
        .collect();
    conflicting.sort();
    let extra_answers = paced_requests::extra_answers(answers);
    let mut before: Vec<Duration> = records
        .iter()
        .filter(|r| r.sent_at >= Duration::from_secs(1) && r.sent_at < fault_start)
        .filter(|r| r.is_result())
        .filter_map(Record::latency)
        .collect();
    before.sort();
    let pre_fault_p50 = before.get(before.len() / 2).copied().unwrap_or_default();
    let threshold = pre_fault_p50 * 3;
    let after: Vec<&Record> = records.iter().filter(|r| r.sent_at >= fault_end).collect();
    let recovery = after.windows(RECOVERY_RUN).find_map(|w| {
        w.iter()
            .all(|r| r.is_result() && r.latency().is_some_and(|l| l < threshold))
            .then(|| w[0].answer.as_ref().unwrap().0.saturating_sub(fault_end))
    });
    let caught_from = fault_start.saturating_sub(Duration::from_millis(LIVENESS_MS));
    let caught: Vec<&Record> = records
        .iter()
        .filter(|r| r.sent_at >= caught_from && r.sent_at < fault_end.max(fault_start))
        .collect();
    let caught_worst = caught
        .iter()
        .all(|r| r.answer.is_some())
        .then(|| caught.iter().filter_map(|r| r.latency()).max())
        .flatten();
    let backlog = records.iter().filter(|r| r.sent_at < fault_end);
    let backlog_cleared = if backlog.clone().all(|r| r.answer.is_some()) {
        Some(
            backlog
                .filter_map(|r| {
                    r.answer
                        .as_ref()
                        .map(|(at, _)| at.saturating_sub(fault_end))
                })
                .max()
                .unwrap_or_default(),
        )
    } else {
        None
    };
    Run {
        plan,
        summary: report.summary(),
        lost_ids,
        conflicting,
        extra_answers,
        fault_start,
        fault_end,
        pre_fault_p50,
        recovery,
        backlog_cleared,
        caught_worst,
        coordinator_log_tail: coordinator,
        broker_log_tail,
        wall,
    }
}

/// The targets of #21 that hold on every run: everything answered with a result, nothing lost,
/// no request answered with different kinds of answers. Empty when all are met.
pub fn misses(run: &Run) -> Vec<String> {
    let mut misses = Vec::new();
    let expected = (run.plan.duration.as_secs_f64() * RATE).round() as usize;
    if run.summary.sent != expected {
        misses.push(format!(
            "{} requests sent, {expected} planned",
            run.summary.sent
        ));
    }
    if run.summary.lost != 0 {
        misses.push(format!(
            "{} lost: {:?}",
            run.summary.lost,
            &run.lost_ids[..run.lost_ids.len().min(20)]
        ));
    }
    if run.summary.answered != run.summary.sent {
        misses.push(format!(
            "{} of {} answered with a result; errors: {}",
            run.summary.answered,
            run.summary.sent,
            run.errors_text()
        ));
    }
    if !run.conflicting.is_empty() {
        misses.push(format!(
            "{} requests answered with different kinds of answers: {:?}",
            run.conflicting.len(),
            &run.conflicting[..run.conflicting.len().min(10)]
        ));
    }
    misses
}
