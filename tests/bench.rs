//! `millrace bench --json` runs every scenario (a tiny smoke run here; the
//! figures themselves are for `docs/benchmarks.md`, never asserted).

mod support;

use std::process::Command;

#[test]
fn bench_json_has_every_scenario_and_its_ratios() {
    let out = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args([
            "--redis",
            &support::shared_url(),
            "--prefix",
            &support::unique_prefix("bench"),
        ])
        .args(["bench", "--json", "--quick", "--n", "500", "--no-bullmq"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    insta::assert_debug_snapshot!(names);
    let produce = report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "produce.batch")
        .unwrap();
    assert!(produce["ratio_to_ceiling"].as_f64().unwrap() > 0.0);
    assert_eq!(report["bullmq_skipped"], "--no-bullmq");
    assert!(report["redis"].as_str().unwrap().starts_with("redis 7"));
}
