//! `slim calibrate` end to end: a short live run on a local cluster writes a calibration file
//! with a transport delay for every answered request and per-batch overheads for the agents'
//! profiles, and `slim simulate --calibration` reads it. With `SLIM_TEST_BROKER` set the
//! cluster runs on that broker.

use slim_router::calibration::Calibration;
use slim_tests::{external_broker, repo_path as repo};

#[test]
fn calibrate_writes_a_file_that_simulate_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested").join("calibration.toml");
    let mut args: Vec<String> = vec![
        "slim".into(),
        "calibrate".into(),
        "--model".into(),
        "digits".into(),
        "--duration".into(),
        "2s".into(),
        "--rate".into(),
        "40".into(),
        "--slowdowns".into(),
        "1,3".into(),
        "--threads".into(),
        "1,1".into(),
        "--agent-profiles".into(),
        "cpu-2core-measured,cpu-2core-measured".into(),
        "--paced".into(),
        "false,false".into(),
        "--profiles".into(),
        repo("profiles"),
        "--models".into(),
        repo("models"),
        "--out".into(),
        out.display().to_string(),
    ];
    if let Some(url) = external_broker() {
        args.extend(["--broker".to_string(), url]);
    }
    assert_eq!(slim::app::main_status(&args), 0, "slim calibrate failed");

    let c = Calibration::load(&out).expect("the file it wrote loads");
    // 2 s at 40/s: about 80 requests; all are answered on an idle two-agent cluster
    assert!(
        c.transport.samples >= 40,
        "transport measured on {} results",
        c.transport.samples
    );
    assert!(c.transport.mean_ms > 0.0, "{:?}", c.transport);
    assert!(!c.overheads.is_empty(), "no overhead fitted");
    for o in &c.overheads {
        assert_eq!(o.profile, "cpu-2core-measured");
        assert_eq!(o.model, "digits");
        assert!(
            o.samples > 0 && o.batch >= 1 && o.overhead_ms.is_finite(),
            "{o:?}"
        );
    }
    let fitted: u32 = c.overheads.iter().map(|o| o.samples).sum();
    assert_eq!(fitted, c.transport.samples, "every result fits an overhead");
    // random spreads the work over the widths
    let widths: std::collections::BTreeSet<u16> = c
        .overheads
        .iter()
        .map(|o| (o.width * 100.0).round() as u16)
        .collect();
    assert!(widths.len() >= 2, "only widths {widths:?}");

    let simulate = [
        "slim",
        "simulate",
        "--fleet",
        "cpu-2core-measured*2",
        "--profiles",
        &repo("profiles"),
        "--models",
        &repo("models"),
        "--calibration",
        &out.display().to_string(),
        "--seeds",
        "1",
        "--requests",
        "200",
    ];
    assert_eq!(
        slim::app::main_status(simulate),
        0,
        "slim simulate --calibration failed"
    );

    std::fs::write(&out, "version = 1\n").unwrap();
    let broken = [
        "slim",
        "simulate",
        "--fleet",
        "cpu-2core-measured",
        "--profiles",
        &repo("profiles"),
        "--models",
        &repo("models"),
        "--calibration",
        &out.display().to_string(),
    ];
    assert_eq!(
        slim::app::main_status(broken),
        1,
        "a broken calibration file is an error"
    );
}
