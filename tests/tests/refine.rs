//! `slim refine` end to end: the same workload frozen then refined on the default paced
//! cluster, and a report with one row per window and a paired verdict.

use slim_tests::{external_broker, repo_path as repo};

#[test]
fn refine_reports_every_window_of_both_runs_with_a_paired_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("refinement.md");
    let mut args: Vec<String> = [
        "slim",
        "refine",
        "--model",
        "digits",
        "--rate",
        "40",
        "--duration",
        "4s",
        "--window",
        "1s",
        "--online-batch",
        "16",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for (flag, path) in [
        ("--profiles", "profiles"),
        ("--models", "models"),
        ("--policy", "router/policies/efficiency.safetensors"),
    ] {
        args.extend([flag.to_string(), repo(path)]);
    }
    args.extend(["--out".to_string(), out.display().to_string()]);
    if let Some(url) = external_broker() {
        args.extend(["--broker".to_string(), url]);
    }
    assert_eq!(slim::app::main_status(&args), 0, "slim refine failed");

    let report = std::fs::read_to_string(&out).unwrap();
    assert!(report.contains("paced to `jetson-orin-nano`"), "{report}");
    let rows: Vec<Vec<String>> = report
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| window"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 4, "one row per 1 s window of 4 s: {report}");
    for row in &rows {
        for run in [&row[1], &row[2]] {
            // "cost (results, errors)": 40 req/s gives about 40 results a window
            let results: usize = run
                .split_once('(')
                .and_then(|(_, r)| r.split(',').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no result count in {run:?}"));
            assert!(results > 10, "{row:?}");
        }
    }
    assert!(
        report.contains("Refined − frozen, paired by window"),
        "{report}"
    );
    assert!(report.contains("updates applied"), "{report}");
    assert!(
        report.contains("Paced batches that took longer"),
        "the default cluster is paced: {report}"
    );
}
