//! A flood of requests, as fast as one client can publish them, reaches the agents: every
//! request is routed, none refused, and the emulated agents stay online. Before the coordinator
//! published on its own connection, such a flood stalled it for good (a full publish queue
//! waiting on the session that waited on the core); before agents' telemetry had its own
//! connection, a long flood had every agent taken offline as silent.
//!
//! It runs `slim bench --saturate`'s machinery (emulated agents, one publisher) on the embedded
//! broker, or, when `SLIM_TEST_BROKER` is set (the Mosquitto pass), on a private Mosquitto with
//! the shipped settings: a default Mosquitto queues 1000 messages per client and drops the rest
//! of such a flood (docs/deploy.md, "Queue depth").

use slim::saturate::{run, SaturationSpec};
use slim_agent::model::Manifest;
use slim_protocol::{ErrorCode, ErrorReply, MAX_RETRY_AFTER_MS};
use slim_router::RouterKind;
use slim_tests::{external_broker, models_dir, mosquitto::Mosquitto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_is_routed_in_full_to_emulated_agents() {
    let private = external_broker().map(|_| Mosquitto::start("flood"));
    let manifest = Manifest::load(&models_dir().join("digits")).expect("the digits manifest");
    let spec = SaturationSpec {
        broker_url: private.as_ref().map(Mosquitto::url),
        messages: 6000,
        fleets: vec![5, 200],
        routers: vec![RouterKind::LeastLoaded],
        policy: None,
        model: manifest.model_info(),
        profile: None,
        samples: slim_client::samples::family_samples(&models_dir(), "digits").unwrap(),
        topic_prefix: "slim-test/flood".into(),
    };
    // A stalled coordinator also stalls the publisher (the broker stops acknowledging), so the
    // deadlock shows as a timeout, not as missing messages.
    let report = tokio::time::timeout(std::time::Duration::from_secs(180), run(&spec))
        .await
        .expect("the flood finished within 3 minutes (a stalled coordinator never finishes)")
        .expect("the saturation cases run");
    eprintln!("{}", report.markdown());
    assert_eq!(report.cases().len(), 4, "two anchors and two routing cases");
    for case in report.cases() {
        assert_eq!(
            (case.received, case.refused),
            (spec.messages as u64, 0),
            "{}: every message must arrive and none be refused\n{}",
            case.name,
            report.markdown()
        );
    }
}

/// A real agent, paced to a slow device, bounded to 16 held requests, offered far more than it
/// serves by a client that sends every request (`pushback` off) or that holds the model's
/// requests as the coordinator asks (on). Returns the run and the number of each answer's
/// origin: `coordinator`, `client`, an agent.
async fn flood_a_bounded_agent(pushback: bool) -> (slim_client::load::Summary, Vec<ErrorReply>) {
    use slim_client::{client::Reply, load::run_open_loop, samples::family_samples};
    use slim_tests::{client, digits_load, repo_root, spec, start};

    let mut spec = spec(&[40.0]);
    spec.agent_profiles = vec![repo_root().join("profiles/jetson-orin-nano.toml")];
    spec.agent_paced = vec![true];
    spec.agent_max_queued = Some(16);
    let cluster = start(spec).await;
    let client = client(&cluster, &[]).await.with_pushback(pushback);
    let samples = family_samples(&models_dir(), "digits").unwrap();
    let load = digits_load(1000.0, std::time::Duration::from_secs(3)).with_width(0.25);
    let report = run_open_loop(&client, &samples, &load).await.unwrap();
    cluster.shutdown().await;
    let summary = report.summary();
    let errors: Vec<ErrorReply> = report
        .outcomes
        .iter()
        .filter_map(|o| match &o.reply {
            Reply::Error(e) => Some(e.clone()),
            Reply::Result(_) => None,
        })
        .collect();
    eprintln!(
        "pushback {pushback}: sent {}, results {}, errors {:?} ({} held by the client), lost {}",
        summary.sent, summary.answered, summary.errored, summary.held_locally, summary.lost
    );
    assert_eq!(summary.lost, 0, "every request is answered");
    assert!(summary.answered > 0, "the agent serves what it holds");
    assert_eq!(
        summary.answered + summary.errored.get("overloaded").copied().unwrap_or(0),
        summary.sent,
        "a result or overloaded, nothing else: {:?}",
        summary.errored
    );
    (summary, errors)
}

fn from(errors: &[ErrorReply], origin: &str) -> usize {
    errors.iter().filter(|e| e.origin == origin).count()
}

/// Every request is answered, a result or `overloaded`, none lost; once the agent's reports
/// show it full, the coordinator refuses at once instead of sending more its way (before, the
/// excess piled up on the way to the agent and was answered seconds late, or not at all). Each
/// of its refusals says how long to hold the model's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_an_agents_bound_is_refused_by_the_coordinator_and_nothing_is_lost() {
    let (summary, errors) = flood_a_bounded_agent(false).await;
    let by_coordinator = from(&errors, "coordinator");
    assert!(
        by_coordinator > summary.sent / 4,
        "most of the excess is refused by the coordinator ({by_coordinator} of {})",
        summary.sent
    );
    let shed: Vec<_> = errors
        .iter()
        .filter(|e| e.origin == "coordinator" && e.code == ErrorCode::Overloaded)
        .collect();
    assert!(
        shed.iter().all(|e| e
            .retry_after_ms
            .is_some_and(|ms| (1..=MAX_RETRY_AFTER_MS).contains(&ms))),
        "every shed request carries a hold of 1 to {MAX_RETRY_AFTER_MS} ms"
    );
    assert_eq!((summary.held_locally, from(&errors, "client")), (0, 0));
}

/// The same flood from a client that holds the model's requests as the coordinator asks:
/// the excess is answered by the client itself, without reaching the broker, and still nothing
/// is lost and the agent keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holds_the_flood_the_coordinator_asks_it_to_and_nothing_is_lost() {
    let (summary, errors) = flood_a_bounded_agent(true).await;
    let held = from(&errors, "client");
    assert!(
        held > summary.sent / 4,
        "most of the excess is held by the client ({held} of {})",
        summary.sent
    );
    assert_eq!(held as u64, summary.held_locally);
    assert!(
        errors
            .iter()
            .filter(|e| e.origin == "client")
            .all(|e| e.code == ErrorCode::Overloaded && e.retry_after_ms.is_some()),
        "a held request is answered overloaded, with the hold left"
    );
    assert!(
        from(&errors, "coordinator") > 0,
        "the holds come from the coordinator's refusals"
    );
}
