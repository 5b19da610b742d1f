//! `slim bench --knee` on a real cluster: the anchor is measured, every step's requests are all
//! accounted for (results, errors, lost), and the overload step offers twice the knee and loses
//! nothing: every request sent in it gets an answer, a result or an error.
//!
//! On the embedded broker, or on the broker `SLIM_TEST_BROKER` names.

use std::time::Duration;

use slim::knee::{run, KneeSpec, OVERLOAD};
use slim_router::RouterKind;
use slim_tests::{external_broker, models_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_knee_run_accounts_for_every_request_and_overload_loses_none() {
    let spec = KneeSpec {
        broker_url: external_broker(),
        models_dir: models_dir(),
        // The widest cifar: slow enough that the sweep's full-anchor step saturates the agent
        // and the overload step queues and refuses work.
        model: "cifar-slimresnet".into(),
        width: 1.0,
        agents: 1,
        threads: 1,
        backend: slim_agent::backend::BackendChoice::Cpu,
        router: RouterKind::LeastLoaded,
        loads: vec![1.0],
        step: Duration::from_secs(2),
        drain: Duration::from_secs(30),
        anchor_budget: Duration::from_millis(300),
        seed: 7,
        pushback: true,
        samples: slim_client::samples::family_samples(&models_dir(), "cifar-slimresnet").unwrap(),
        topic_prefix: format!("slim-test/knee-{}/v1", std::process::id()),
    };
    let report = run(&spec).await.expect("the knee runs");
    let md = report.markdown();
    eprintln!("{md}");
    assert!(
        report.anchor.b1 > 0.0 && report.anchor.batched.1 > 0.0,
        "{md}"
    );
    assert_eq!(report.anchor.width, 1.0);
    assert_eq!(report.anchor.backend, "cpu", "the backend asked for");
    assert!(
        md.contains("1 agent(s) on cpu"),
        "the report names the backend\n{md}"
    );
    assert_eq!(report.steps.len(), 2, "one sweep step, then overload\n{md}");
    for step in &report.steps {
        assert!(step.sent > 0, "{md}");
        assert_eq!(
            step.answered + step.errored() + step.lost,
            step.sent,
            "every request is a result, an error or lost\n{md}"
        );
        assert_eq!(step.lost, 0, "no request may go unanswered\n{md}");
    }
    let knee = report.knee().expect("a knee");
    assert!(knee.answered > 0, "{md}");
    let overload = report.overload().expect("an overload step");
    assert!(
        (overload.offered - OVERLOAD * knee.throughput).abs() < 1e-6,
        "the overload step offers {OVERLOAD}x the knee's throughput\n{md}"
    );
    assert!(
        md.contains("Knee: ") && md.contains("every request was answered"),
        "{md}"
    );
}
