//! `millrace bench --json` runs every scenario (a tiny smoke run here; the
//! figures themselves are for `docs/benchmarks.md`, never asserted, but for
//! the dashboard overview's round trips, which are a count).

mod support;

use std::process::Command;

#[test]
fn bench_json_has_every_scenario_and_its_ratios() {
    let report_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args([
            "--redis",
            &support::shared_url(),
            "--prefix",
            &support::unique_prefix("bench"),
        ])
        .args(["bench", "--json", "--quick", "--n", "500", "--no-bullmq"])
        .arg("--report")
        .arg(report_dir.path())
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
    // Redis's own limits, and each figure's share of them and CPU per
    // message beside theirs.
    let figure = |name: &str| {
        report["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no figure {name}"))
            .clone()
    };
    for name in ["limit.xadd", "limit.read_ack"] {
        let f = figure(name);
        assert!(f["value"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["server_cpu_us"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["ratio_to_limit"].is_null(), "{f}");
    }
    for name in ["produce.batch", "consume.ordered.c100", "end_to_end"] {
        let f = figure(name);
        assert!(f["ratio_to_limit"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["server_cpu_us"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["client_cpu_us"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["server_cpu_ratio"].as_f64().unwrap() > 0.0, "{f}");
    }
    // The scale scenarios: worker processes count their own CPU; the
    // local cluster's figures sum its primaries' CPU and say how much the
    // busiest carried.
    for name in [
        "scale.processes.2.consume",
        "scale.backlog.consume",
        "scale.cluster.3.consume",
    ] {
        let f = figure(name);
        assert!(f["ratio_to_limit"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["server_cpu_us"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["client_cpu_us"].as_f64().unwrap() > 0.0, "{f}");
    }
    assert!(figure("scale.backlog.memory")["value"].as_f64().unwrap() > 0.0);
    for kind in ["produce", "consume"] {
        let share = figure(&format!("scale.cluster.3.{kind}.busiest_share"))["value"]
            .as_f64()
            .unwrap();
        assert!(share > 0.3 && share <= 1.0, "{kind}: {share}");
        let per_one = figure(&format!("scale.cluster.3.{kind}.cpu_per_one_server"))["value"]
            .as_f64()
            .unwrap();
        assert!(per_one > 0.0, "{kind}: {per_one}");
    }
    // Latencies are not per message: no CPU figure.
    assert!(figure("latency.p50")["server_cpu_us"].is_null());
    // --report: the same run as JSON and its charts, each naming what it
    // draws.
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_dir.path().join("bench.json")).unwrap())
            .unwrap();
    assert_eq!(written["figures"], report["figures"]);
    assert_eq!(
        written["latency_ms"].as_array().unwrap().len(),
        100,
        "every latency sample of a quick run"
    );
    for (chart, names) in [
        (
            "throughput.svg",
            &["limit.read_ack", "ceiling.xadd", "consume.ordered.c100"][..],
        ),
        ("limits.svg", &["consume.ordered.c100", "end_to_end"][..]),
        (
            "cpu.svg",
            &["limit.xadd (redis)", "produce.batch (client)"][..],
        ),
        ("latency.svg", &["ms"][..]),
        (
            "scale.svg",
            &[
                "Payload size",
                "Partitions (ordered consume)",
                "Worker processes (ordered, one group)",
                "Cluster primaries (12 partitions)",
            ][..],
        ),
    ] {
        let svg = std::fs::read_to_string(report_dir.path().join(chart)).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}");
        for name in names {
            assert!(svg.contains(name), "{chart} does not show {name}");
        }
    }
    // The dashboard's: the overview of 20 topics × 4 partitions × 2 groups
    // (`--quick`) in 3 round trips and many more commands.
    let value = |name: &str| {
        report["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .and_then(|f| f["value"].as_f64())
            .unwrap()
    };
    assert_eq!(value("serve.overview.round_trips"), 3.0);
    assert!(value("serve.overview.commands") > 100.0);
    assert!(value("serve.overview.before_commands") > value("serve.overview.commands"));
    assert!(value("serve.publish") > 0.0 && value("serve.publish_share") > 0.0);
    assert_eq!(report["bullmq_skipped"], "--no-bullmq");
    // The server it ran on, as the library names it ("redis 7.0.15").
    let (kind, version) = support::server_kind_and_version();
    assert_eq!(report["redis"], format!("{kind} {version}"));
}
