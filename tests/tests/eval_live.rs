//! `slim eval`'s live part end to end, CI-sized: a calibration run, then two routers at two
//! loads, two runs each, on a local cluster; the report has one row per (load, router) with the
//! runs' totals, the sim-to-real table and the ranking verdict, and the live plots exist. With
//! `SLIM_TEST_BROKER` set the cluster runs on that broker.

use slim_tests::{external_broker, repo_path as repo};

/// The cells of the report's table row that starts with `start`.
fn row<'a>(report: &'a str, start: &str) -> Vec<&'a str> {
    let line = report
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no row starting {start:?} in:\n{report}"));
    line.trim_matches('|').split(" | ").map(str::trim).collect()
}

#[test]
fn the_live_part_runs_every_router_at_every_load_and_reports_each_cell() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("evaluation.md");
    let mut args: Vec<String> = [
        "slim",
        "eval",
        "--no-generalise",
        "--presets",
        "efficiency",
        "--seeds",
        "2",
        "--loads",
        "0.1",
        "--requests",
        "200",
        "--live-routers",
        "greedy,random",
        "--live-loads",
        "0.2,0.4",
        "--live-runs",
        "2",
        "--live-duration",
        "1s",
        "--calibration-load",
        "0.05",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for (flag, path) in [
        ("--profiles", "profiles"),
        ("--models", "models"),
        ("--policies", "router/policies"),
    ] {
        args.extend([flag.to_string(), repo(path)]);
    }
    args.extend(["--out".to_string(), out.display().to_string()]);
    if let Some(url) = external_broker() {
        args.extend(["--broker".to_string(), url]);
    }
    assert_eq!(slim::app::main_status(&args), 0, "slim eval failed");

    let report = std::fs::read_to_string(&out).unwrap();
    assert!(report.contains("## Live cluster over MQTT"), "{report}");
    for load in ["0.20", "0.40"] {
        for router in ["greedy", "random"] {
            let cells = report
                .lines()
                .filter(|l| l.starts_with(&format!("| {load} (")))
                .map(|l| {
                    l.trim_matches('|')
                        .split(" | ")
                        .map(str::trim)
                        .collect::<Vec<_>>()
                })
                .find(|c| c[1] == router)
                .unwrap_or_else(|| panic!("no live row for {router} at {load}:\n{report}"));
            // kept up "k of 2": two runs each
            assert!(cells[2].ends_with("of 2"), "{cells:?}");
            let counts: Vec<usize> = cells[12].split(" / ").map(|n| n.parse().unwrap()).collect();
            assert_eq!(counts.len(), 4, "{cells:?}");
            assert!(counts[0] > 0, "nothing sent: {cells:?}");
            assert_eq!(
                counts[0],
                counts[1] + counts[2] + counts[3],
                "sent = answered + errors + lost: {cells:?}"
            );
            if router == "greedy" && load == "0.20" {
                // a fifth of the cluster's capacity: greedy answers everything
                assert_eq!(counts[1], counts[0], "{cells:?}");
            }
            // the twin's row for the same cell
            let twin = row(&report, &format!("| {load} | {router} |"));
            assert_eq!(twin[2], cells[2], "the same runs: {twin:?}");
            assert!(twin[4].contains('±'), "raw twin: {twin:?}");
        }
    }
    assert!(report.contains("Kendall's tau"), "no ranking verdict");
    // the default cluster paces two agents to Jetson profiles: their misses are reported
    assert!(report.contains("\nPacing: "), "no pacing sentence");
    let plots = dir.path().join("eval");
    for plot in ["live_latency_vs_load.svg", "live_latency_cdf.svg"] {
        assert!(plots.join(plot).is_file(), "no {plot}");
    }
}
