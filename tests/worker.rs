//! The `millrace worker` binary against a private Redis: exec and http
//! handlers, exit codes and status codes, timeouts, signals, metrics.

mod support;

use support::{stderr_of, term, wait_exit};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use millrace::{Client, Config, Record, TopicSpec};

const BIN: &str = env!("CARGO_BIN_EXE_millrace");

struct Setup {
    dir: tempfile::TempDir,
    prefix: String,
    client: Client,
}

async fn setup(test: &str, topic: &str, partitions: u32) -> Setup {
    let prefix = support::unique_prefix(test);
    let client = Client::connect(
        Config::new(support::shared_url())
            .unwrap()
            .prefix(&prefix)
            .unwrap(),
    )
    .await
    .unwrap();
    client
        .create_topic(&TopicSpec::new(topic, partitions).unwrap())
        .await
        .unwrap();
    Setup {
        dir: tempfile::tempdir().unwrap(),
        prefix,
        client,
    }
}

impl Setup {
    /// Writes an executable shell script and returns its path.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn config(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, toml).unwrap();
        path
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out.txt")
    }

    fn worker(&self, config: &Path) -> Child {
        Command::new(BIN)
            .args(["--redis", &support::shared_url(), "--prefix", &self.prefix])
            .arg("worker")
            .arg("--config")
            .arg(config)
            .env("OUT", self.out())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Lines the handler script appended to the output file.
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.out())
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

fn consumer(topic: &str, group: &str, handler: &str, extra: &str) -> String {
    format!(
        "[[consumers]]\ntopic = \"{topic}\"\ngroup = \"{group}\"\nconcurrency = 8\n{extra}\n[consumers.handler]\n{handler}\n"
    )
}

fn fast_retry(max: u32) -> String {
    format!(
        "[consumers.retry]\nmax_attempts = {max}\nbackoff = \"fixed\"\ndelay = \"50ms\"\nmax_delay = \"50ms\"\njitter = 0.0\n"
    )
}

async fn until(what: &str, secs: u64, f: impl Fn() -> bool) {
    support::wait_until(Duration::from_secs(secs), what, || {
        let ok = f();
        async move { ok }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_handler_handles_every_message_once_in_two_groups() {
    let s = setup("exec-2k", "orders", 4).await;
    let script = s.script(
        "record.sh",
        r#"body=$(cat); echo "$MILLRACE_GROUP|$MILLRACE_KEY|$MILLRACE_ATTEMPT|$MILLRACE_EPOCH|$MILLRACE_ID|$MILLRACE_STREAM_ID|$body" >> "$OUT""#,
    );
    let exec = format!("exec = [\"{}\"]", script.display());
    let cfg = s.config(
        "w.toml",
        &format!(
            "{}{}",
            consumer("orders", "billing", &exec, ""),
            consumer("orders", "audit", &exec, "")
        ),
    );
    let mut w = s.worker(&cfg);
    let recs: Vec<Record> = (0..2_000u32)
        .map(|i| {
            Record::encode(&serde_json::json!({"n": i}))
                .unwrap()
                .key(format!("k{}", i % 50))
        })
        .collect();
    s.client.publish_batch("orders", recs).await.unwrap();
    until("4 000 handlings", 120, || s.lines().len() >= 4_000).await;
    term(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(30)).success());
    let lines = s.lines();
    assert_eq!(lines.len(), 4_000, "each message exactly once per group");
    let mut per_group: HashMap<String, HashSet<String>> = HashMap::new();
    let mut order: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    for l in &lines {
        let parts: Vec<&str> = l.splitn(7, '|').collect();
        let body: serde_json::Value = serde_json::from_str(parts[6]).unwrap();
        assert_eq!(parts[2], "1");
        // The message id: its key's partition, lane 0, the stream id.
        let partition = millrace::partitioner::partition_for_key(parts[1], 4);
        assert_eq!(parts[4], format!("{partition}:0:{}", parts[5]), "{l}");
        ids.entry(parts[0].into())
            .or_default()
            .insert(parts[4].into());
        // Ordered mode: the lease's epoch, at least Redis's clock in ms.
        let epoch: u64 = parts[3].parse().unwrap();
        assert!(epoch > 1_600_000_000_000, "epoch {epoch}");
        per_group
            .entry(parts[0].into())
            .or_default()
            .insert(body["n"].to_string());
        order
            .entry((parts[0].into(), parts[1].into()))
            .or_default()
            .push(body["n"].as_u64().unwrap());
    }
    assert_eq!(per_group["billing"].len(), 2_000);
    assert_eq!(per_group["audit"].len(), 2_000);
    assert_eq!(ids["billing"].len(), 2_000, "one message id per message");
    assert_eq!(ids["billing"], ids["audit"], "the same ids in every group");
    for ((g, k), ns) in order {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{g}/{k} out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_true_dead_letters_a_payload_that_does_not_match_its_schema() {
    let s = setup("exec-validate", "invoices", 2).await;
    let schema = serde_json::json!({"type": "object",
        "properties": {"invoice": {"type": "string"}, "cents": {"type": "integer", "minimum": 0}},
        "required": ["invoice", "cents"]});
    s.client.register_schema("invoices", &schema).await.unwrap();
    let script = s.script(
        "job.sh",
        r#"body=$(cat); echo "${MILLRACE_HEADER_SCHEMA_VERSION:-none}|$body" >> "$OUT""#,
    );
    let exec = format!("exec = [\"{}\"]", script.display());
    let cfg = s.config(
        "w.toml",
        &consumer(
            "invoices",
            "g",
            &exec,
            &format!("validate = true\n{}", fast_retry(3)),
        ),
    );
    let mut w = s.worker(&cfg);
    // The topic does not require schemas, so a producer can send anything.
    let good = serde_json::json!({"invoice": "inv-1", "cents": 5});
    let bad = serde_json::json!({"invoice": "inv-2", "cents": "five"});
    s.client
        .publish_record("invoices", Record::encode(&good).unwrap().schema_version(1))
        .await
        .unwrap();
    s.client
        .publish_record("invoices", Record::encode(&bad).unwrap())
        .await
        .unwrap();
    let c = s.client.clone();
    support::wait_until(Duration::from_secs(20), "one dead letter", || {
        let c = c.clone();
        async move { c.dead_letters("invoices", None, 10).await.unwrap().len() == 1 }
    })
    .await;
    until("the good one handled", 20, || s.lines().len() == 1).await;
    term(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(30)).success());
    let lines = s.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("1|") && lines[0].contains("inv-1"),
        "{lines:?}"
    );
    let dead = s.client.dead_letters("invoices", None, 10).await.unwrap();
    assert_eq!(dead[0].attempts, 1, "a permanent failure: no retry");
    assert!(dead[0].error.contains("/cents: "), "{}", dead[0].error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_timeouts_decide_what_happens() {
    let s = setup("exec-codes", "jobs", 2).await;
    // 65: permanent; 1: retry; "hang": sleeps past the timeout.
    let script = s.script(
        "job.sh",
        r#"body=$(cat); echo "$MILLRACE_ATTEMPT|$body" >> "$OUT"
case "$body" in
  *bad*) echo "invoice is malformed" >&2; exit 65;;
  *flaky*) echo "upstream down" >&2; exit 1;;
  *hang*)
    # A child that outlives the shell unless its whole group is killed;
    # the shell records its own pid, the child's and both process groups.
    sleep 30 &
    read -r x x x x shell_group x < /proc/$$/stat
    read -r x x x x child_group x < /proc/$!/stat
    echo "$$ $! $shell_group $child_group" >> "$OUT.pids"
    wait
    exit 0;;
esac"#,
    );
    let exec = format!("exec = [\"{}\"]\ntimeout = \"2s\"", script.display());
    let cfg = s.config("w.toml", &consumer("jobs", "g", &exec, &fast_retry(3)));
    let mut w = s.worker(&cfg);
    for body in ["bad", "flaky", "hang", "fine"] {
        s.client
            .publish_record("jobs", Record::encode(&body).unwrap().key(body))
            .await
            .unwrap();
    }
    let c = s.client.clone();
    support::wait_until(Duration::from_secs(30), "three dead letters", || {
        let c = c.clone();
        async move { c.dead_letters("jobs", None, 10).await.unwrap().len() == 3 }
    })
    .await;
    term(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(30)).success());
    let lines = s.lines();
    let count = |b: &str| lines.iter().filter(|l| l.contains(b)).count();
    assert_eq!(count("bad"), 1, "exit 65: one attempt");
    assert_eq!(count("flaky"), 3, "exit 1: max_attempts");
    assert_eq!(count("hang"), 3, "timeout: retried");
    assert_eq!(count("fine"), 1);
    let dead = s.client.dead_letters("jobs", None, 10).await.unwrap();
    let by = |k: &str| {
        dead.iter()
            .find(|d| d.key.as_deref() == Some(k))
            .unwrap()
            .clone()
    };
    assert_eq!(by("bad").attempts, 1);
    assert!(
        by("bad").error.contains("invoice is malformed"),
        "{}",
        by("bad").error
    );
    assert_eq!(by("flaky").attempts, 3);
    assert!(by("flaky").error.contains("exited with 1: upstream down"));
    assert!(
        by("hang").error.contains("timed out"),
        "{}",
        by("hang").error
    );
    // Each timed-out attempt ran in a process group of its own, the shell
    // and its child, and the whole group was killed, the child included.
    let pids = std::fs::read_to_string(format!("{}.pids", s.out().display())).unwrap();
    let attempts: Vec<[i32; 4]> = pids
        .lines()
        .map(|l| {
            let v: Vec<i32> = l.split(' ').map(|n| n.parse().unwrap()).collect();
            v.try_into().unwrap()
        })
        .collect();
    assert_eq!(attempts.len(), 3, "{pids}");
    for [shell, child, shell_group, child_group] in &attempts {
        assert_eq!(shell_group, shell, "the handler leads its own group");
        assert_eq!(child_group, shell, "its child is in that group");
        assert_ne!(child, shell);
    }
    // The check itself sees live groups: this process's own.
    // SAFETY: getpgrp has no preconditions.
    let own_group = unsafe { libc::getpgrp() };
    assert!(
        !live_in_group(own_group).is_empty(),
        "/proc shows no live process in this test's own group"
    );
    support::wait_until(
        Duration::from_secs(10),
        "every process of the timed-out handlers' groups to be gone",
        || {
            let left: Vec<_> = attempts
                .iter()
                .flat_map(|&[shell, child, ..]| {
                    let mut left = live_in_group(shell);
                    left.extend([shell, child].into_iter().filter(|&p| alive_in(p, shell)));
                    left
                })
                .collect();
            async move { left.is_empty() }
        },
    )
    .await;
}

/// A process's state and process group from `/proc/PID/stat`, if it exists.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// True if `pid` is a running (not exited, not a zombie) process of group
/// `group`: a reused pid in another group does not count.
fn alive_in(pid: i32, group: i32) -> bool {
    matches!(proc_stat(pid), Some((state, g)) if g == group && state != 'Z' && state != 'X')
}

/// Every running process of process group `group`.
fn live_in_group(group: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| alive_in(pid, group))
        .collect()
}

/// A tiny HTTP endpoint: 2xx, 422 or 503 by payload; records what it saw.
async fn test_server() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    use axum::http::{HeaderMap, StatusCode};
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let s2 = s2.clone();
            async move {
                let attempt = headers
                    .get("x-millrace-attempt")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                s2.lock().unwrap().push((body.clone(), attempt));
                if body.contains("reject") {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else if body.contains("busy") {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_handler_acks_dead_letters_and_retries_by_status() {
    let s = setup("http", "hooks", 2).await;
    let (url, seen) = test_server().await;
    let port = support::free_port();
    let cfg = s.config(
        "w.toml",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n{}",
            consumer("hooks", "g", &format!("http = \"{url}\""), &fast_retry(3))
        ),
    );
    let mut w = s.worker(&cfg);
    for (i, body) in ["ok-1", "reject", "busy", "ok-2"].iter().enumerate() {
        s.client
            .publish_record("hooks", Record::encode(body).unwrap().key(format!("k{i}")))
            .await
            .unwrap();
    }
    let c = s.client.clone();
    support::wait_until(Duration::from_secs(20), "two dead letters", || {
        let c = c.clone();
        async move { c.dead_letters("hooks", None, 10).await.unwrap().len() == 2 }
    })
    .await;
    until("both oks", 10, || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(b, _)| b.contains("ok-"))
            .count()
            == 2
    })
    .await;
    let calls = seen.lock().unwrap().clone();
    let count = |b: &str| calls.iter().filter(|(x, _)| x.contains(b)).count();
    assert_eq!((count("ok-1"), count("ok-2")), (1, 1));
    assert_eq!(count("reject"), 1, "422 is permanent");
    assert_eq!(count("busy"), 3, "503 is retried to max_attempts");
    assert!(calls.iter().any(|(b, a)| b.contains("busy") && a == "3"));
    let dead = s.client.dead_letters("hooks", None, 10).await.unwrap();
    assert!(
        dead.iter()
            .any(|d| d.error.contains("422") && d.attempts == 1)
    );

    // The metrics agree with what happened.
    let text = scrape(port, "/metrics").await;
    let metric = |name: &str| -> u64 {
        let prefix = format!("{name}{{topic=\"hooks\",group=\"g\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(metric("millrace_handled_total"), 2);
    assert_eq!(metric("millrace_dead_lettered_total"), 2);
    assert_eq!(metric("millrace_failed_total"), 4);
    assert_eq!(metric("millrace_retried_total"), 2);
    assert_eq!(metric("millrace_handler_duration_seconds_count"), 6);
    assert_eq!(metric("millrace_end_to_end_latency_seconds_count"), 4);
    assert_eq!(metric("millrace_group_members"), 1);
    assert!(
        text.contains("millrace_dlq_messages{topic=\"hooks\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("millrace_published_total{topic=\"hooks\"} 4\n"),
        "{text}"
    );
    assert!(
        text.contains("millrace_owned_partitions{topic=\"hooks\",group=\"g\"} 2"),
        "{text}"
    );
    // The endpoint's body follows the naming rules, and promtool (where
    // installed; always in CI) finds nothing to say.
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let violations = support::prom::naming_violations(body);
    assert!(violations.is_empty(), "{violations:#?}\n{body}");
    support::prom::promtool_check_metrics(body);
    let health = scrape(port, "/healthz").await;
    assert!(health.contains("\"redis\":\"ok\""), "{health}");
    term(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(30)).success());
}

async fn scrape(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_a_second_worker_takes_over() {
    let s = setup("sigterm", "work", 4).await;
    let script = s.script(
        "slow.sh",
        r#"body=$(cat); sleep 0.05; echo "$MILLRACE_KEY|$body" >> "$OUT""#,
    );
    let exec = format!("exec = [\"{}\"]", script.display());
    let toml = format!(
        "session_timeout = \"3s\"\ndrain_timeout = \"10s\"\n{}",
        consumer("work", "g", &exec, "")
    );
    let cfg = s.config("w.toml", &toml);
    let mut a = s.worker(&cfg);
    let mut b = s.worker(&cfg);
    let recs: Vec<Record> = (0..600u32)
        .map(|i| Record::encode(&i).unwrap().key(format!("k{}", i % 20)))
        .collect();
    s.client.publish_batch("work", recs).await.unwrap();
    until("work under way", 30, || s.lines().len() >= 100).await;
    term(&a);
    let status = wait_exit(&mut a, Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}: {}", stderr_of(&mut a));
    until("all 600 handled", 60, || {
        s.lines().iter().collect::<HashSet<_>>().len() == 600
    })
    .await;
    term(&b);
    assert!(wait_exit(&mut b, Duration::from_secs(30)).success());
    let info = s.client.describe_group("work", "g").await.unwrap();
    assert_eq!((info.lag, info.pending), (0, 0), "nothing lost");
    // Drained, not dropped: what A had started it finished and acked, so
    // B did none of it again.
    let lines = s.lines();
    let distinct: HashSet<&String> = lines.iter().collect();
    assert_eq!(
        (lines.len(), distinct.len()),
        (600, 600),
        "each message handled once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_worker_loses_nothing_and_keeps_key_order() {
    let s = setup("sigkill", "work", 4).await;
    let script = s.script(
        "slow.sh",
        r#"body=$(cat); sleep 0.02; echo "$MILLRACE_KEY|$body" >> "$OUT""#,
    );
    let exec = format!("exec = [\"{}\"]", script.display());
    let toml = format!(
        "session_timeout = \"2s\"\n{}",
        consumer("work", "g", &exec, "")
    );
    let cfg = s.config("w.toml", &toml);
    let mut a = s.worker(&cfg);
    let mut b = s.worker(&cfg);
    let recs: Vec<Record> = (0..400u32)
        .map(|i| Record::encode(&i).unwrap().key(format!("k{}", i % 10)))
        .collect();
    s.client.publish_batch("work", recs).await.unwrap();
    until("work under way", 30, || s.lines().len() >= 60).await;
    a.kill().unwrap();
    a.wait().unwrap();
    until("every message handled at least once", 60, || {
        s.lines().iter().collect::<HashSet<_>>().len() == 400
    })
    .await;
    term(&b);
    assert!(wait_exit(&mut b, Duration::from_secs(15)).success());
    // First-handling order per key is publish order.
    let mut seen = HashSet::new();
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for l in s.lines() {
        if seen.insert(l.clone()) {
            let (k, n) = l.split_once('|').unwrap();
            per_key
                .entry(k.into())
                .or_default()
                .push(n.parse().unwrap());
        }
    }
    for (k, ns) in per_key {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{k}: {ns:?}");
    }
}

#[tokio::test]
async fn config_errors_are_reported_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[consumers]]\ntopic = \"t\"\ngroup = \"g\"\n[consumers.handler]\nexec = [\"true\"]\ntimeout = \"soon\"\n",
    )
    .unwrap();
    let port = support::free_port();
    let out = Command::new(BIN)
        .args([
            "--redis",
            &format!("redis://127.0.0.1:{port}"),
            "worker",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err =
        String::from_utf8_lossy(&out.stderr).replace(&dir.path().display().to_string(), "DIR");
    insta::assert_snapshot!(err, @r#"error: DIR/bad.toml: consumers[0].handler.timeout: expected a duration such as 500ms, 30s, 5m, 2h; got "soon""#);
}

/// Runs `millrace request` against the setup's prefix: exit code, stdout, stderr.
async fn request(s: &Setup, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args([
            "--redis",
            &support::shared_url(),
            "--prefix",
            &s.prefix,
            "request",
        ])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// An HTTP endpoint that answers `{"echo": <body>}`.
async fn echo_server() -> String {
    let app = axum::Router::new().route(
        "/quote",
        axum::routing::post(|body: String| async move {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                serde_json::json!({ "echo": v }).to_string(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/quote", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millrace_request_gets_exec_and_http_results_failures_and_timeouts() {
    let s = setup("request-cli", "quotes", 2).await;
    s.client
        .create_topic(&TopicSpec::new("hooks", 1).unwrap())
        .await
        .unwrap();
    let script = s.script(
        "price.sh",
        r#"body=$(cat)
case "$body" in
  *bad*) echo "no price for it" >&2; exit 65;;
  *flaky*) if [ "$MILLRACE_ATTEMPT" -lt 2 ]; then echo "try again" >&2; exit 1; fi;;
  *slow*) sleep 2;;
  *gate*) touch "$OUT.started"; while [ ! -e "$OUT.go" ]; do sleep 0.02; done;;
esac
echo "{\"attempt\": $MILLRACE_ATTEMPT, \"got\": $body}""#,
    );
    let url = echo_server().await;
    let cfg = s.config(
        "w.toml",
        &format!(
            "{}{}",
            consumer(
                "quotes",
                "pricing",
                &format!("exec = [\"{}\"]", script.display()),
                &fast_retry(3)
            ),
            consumer("hooks", "web", &format!("http = \"{url}\""), "")
        ),
    );
    let mut w = s.worker(&cfg);
    // Wait for both groups to have a live member (a request before that
    // is refused: no responders).
    let c = s.client.clone();
    support::wait_until(Duration::from_secs(20), "both groups up", || {
        let c = c.clone();
        async move {
            let up = |t: &'static str, g: &'static str| {
                let c = c.clone();
                async move {
                    c.describe_group(t, g)
                        .await
                        .is_ok_and(|i| !i.members.is_empty())
                }
            };
            up("quotes", "pricing").await && up("hooks", "web").await
        }
    })
    .await;

    // An exec handler's stdout is the result.
    let (code, out, err) = request(&s, &["quotes", r#"{"sku":"A"}"#, "--group", "pricing"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, r#"{"attempt":1,"got":{"sku":"A"}}"#);
    let (code, out, _) = request(
        &s,
        &[
            "quotes",
            r#"{"sku":"B"}"#,
            "--group",
            "pricing",
            "--key",
            "B",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"]["got"]["sku"], "B");
    assert_eq!(
        (v["topic"].as_str(), v["group"].as_str()),
        (Some("quotes"), Some("pricing"))
    );
    let id: millrace::MessageId = v["message_id"].as_str().unwrap().parse().unwrap();
    let kept = s
        .client
        .message_result("quotes", &id, "pricing")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.json().unwrap()["got"]["sku"], "B");
    // A retried handler answers once, with its final outcome.
    let (code, out, _) = request(&s, &["quotes", r#""flaky""#, "--group", "pricing"]).await;
    assert_eq!((code, out.as_str()), (0, r#"{"attempt":2,"got":"flaky"}"#));
    // A permanent failure: exit 1 with the handler's error.
    let (code, _, err) = request(&s, &["quotes", r#""bad""#, "--group", "pricing"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("failed message") && err.contains("no price for it"),
        "{err}"
    );
    // No reply in time: exit 4.
    let (code, _, err) = request(
        &s,
        &[
            "quotes",
            r#""slow""#,
            "--group",
            "pricing",
            "--timeout",
            "300ms",
        ],
    )
    .await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no reply from group pricing"), "{err}");
    // Nobody to answer: exit 1 at once.
    let (code, _, err) = request(&s, &["quotes", "1", "--group", "nobody"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no responders") && err.contains("does not exist"),
        "{err}"
    );
    // An http handler's JSON body is the result.
    let (code, out, err) = request(&s, &["hooks", r#"{"n":7}"#, "--group", "web"]).await;
    assert_eq!((code, out.as_str()), (0, r#"{"echo":{"n":7}}"#), "{err}");

    // The worker is SIGKILLed right after it acked: the reply, published
    // with the ack, still arrives.
    let started = s.dir.path().join("out.txt.started");
    let asking = {
        let (prefix, url) = (s.prefix.clone(), support::shared_url());
        tokio::process::Command::new(BIN)
            .args(["--redis", &url, "--prefix", &prefix, "request"])
            .args([
                "quotes",
                r#""gate""#,
                "--group",
                "pricing",
                "--timeout",
                "30s",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    until("the gated handler running", 20, || started.exists()).await;
    std::fs::write(s.dir.path().join("out.txt.go"), "").unwrap();
    let c = s.client.clone();
    support::wait_until(Duration::from_secs(20), "the gated message acked", || {
        let c = c.clone();
        async move {
            let p = c.describe_group("quotes", "pricing").await.unwrap();
            p.pending == 0 && p.lag == 0
        }
    })
    .await;
    w.kill().unwrap();
    let answered = asking.wait_with_output().await.unwrap();
    assert!(answered.status.success());
    assert_eq!(
        String::from_utf8_lossy(&answered.stdout).trim(),
        r#"{"attempt":1,"got":"gate"}"#
    );
    let _ = w.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_exec_handler_is_cancelled_with_sigterm_then_sigkill() {
    let s = setup("exec-cancel", "renders", 1).await;
    // The first message's handler stops on SIGTERM; the second's ignores
    // it (and is killed 3 s later).
    let script = s.script(
        "render.sh",
        r#"body=$(cat)
case "$body" in
  *polite*) trap 'echo "TERM $MILLRACE_ID" >> "$OUT"; exit 0' TERM;;
  *) trap '' TERM;;
esac
echo "started $MILLRACE_ID $$" >> "$OUT"
while true; do sleep 0.05; done"#,
    );
    let cfg = s.config(
        "w.toml",
        &consumer(
            "renders",
            "pdf",
            &format!("exec = [\"{}\"]\ntimeout = \"10m\"", script.display()),
            &fast_retry(5),
        ),
    );
    let mut w = s.worker(&cfg);
    for body in ["polite", "stubborn"] {
        let id = s
            .client
            .publish_record("renders", Record::encode(&body).unwrap().key(body))
            .await
            .unwrap()
            .message_id;
        until("the handler started", 20, || {
            s.lines()
                .iter()
                .any(|l| l.starts_with(&format!("started {id} ")))
        })
        .await;
        let pid: i32 = s
            .lines()
            .iter()
            .find_map(|l| l.strip_prefix(&format!("started {id} "))?.parse().ok())
            .unwrap();
        let asked = std::time::Instant::now();
        let out = Command::new(BIN)
            .args(["--redis", &support::shared_url(), "--prefix", &s.prefix])
            .args([
                "message",
                "cancel",
                "renders",
                &id.to_string(),
                "--group",
                "pdf",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["outcome"], "requested");
        let c = s.client.clone();
        support::wait_until(Duration::from_secs(15), "cancelled", || {
            let (c, id) = (c.clone(), id.clone());
            async move {
                let st = c.message_status("renders", &id).await.unwrap().unwrap();
                st.groups[0].state == millrace::MessageState::Cancelled
            }
        })
        .await;
        let took = asked.elapsed();
        until("the handler's process group gone", 10, || {
            live_in_group(pid).is_empty()
        })
        .await;
        if body == "polite" {
            assert!(s.lines().contains(&format!("TERM {id}")), "{:?}", s.lines());
            assert!(
                took < Duration::from_secs(3),
                "stopped at SIGTERM: {took:?}"
            );
        } else {
            assert!(
                took >= Duration::from_secs(3),
                "SIGKILL only after the grace: {took:?}"
            );
        }
        let started = s
            .lines()
            .iter()
            .filter(|l| l.starts_with(&format!("started {id} ")))
            .count();
        assert_eq!(started, 1, "a cancelled message is not retried");
    }
    term(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_handler_reports_progress_on_stderr() {
    let s = setup("exec-progress", "renders", 1).await;
    let script = s.script(
        "render.sh",
        r#"cat > /dev/null
echo 'millrace-progress: {"page": 1, "of": 3}' >&2
while [ ! -e "$OUT.go" ]; do sleep 0.02; done
echo '{"pages": 3}'"#,
    );
    let cfg = s.config(
        "w.toml",
        &consumer(
            "renders",
            "pdf",
            &format!("exec = [\"{}\"]", script.display()),
            "",
        ),
    );
    let mut w = s.worker(&cfg);
    let id = s
        .client
        .publish_record("renders", Record::encode(&"inv-1").unwrap())
        .await
        .unwrap()
        .message_id;
    let group = |c: Client, id: millrace::MessageId| async move {
        let groups = c
            .message_status("renders", &id)
            .await
            .unwrap()
            .unwrap()
            .groups;
        groups.first().cloned().unwrap_or_default()
    };
    let c = s.client.clone();
    support::wait_until(Duration::from_secs(20), "progress shown", || {
        let (c, id) = (c.clone(), id.clone());
        async move { group(c, id).await.progress.is_some() }
    })
    .await;
    let g = group(c.clone(), id.clone()).await;
    assert_eq!(g.state, millrace::MessageState::InFlight);
    assert_eq!(g.progress, Some(serde_json::json!({"page": 1, "of": 3})));
    std::fs::write(s.dir.path().join("out.txt.go"), "").unwrap();
    support::wait_until(Duration::from_secs(20), "done", || {
        let (c, id) = (c.clone(), id.clone());
        async move { group(c, id).await.state == millrace::MessageState::Done }
    })
    .await;
    let g = group(c.clone(), id.clone()).await;
    assert_eq!(g.result, Some(serde_json::json!({"pages": 3})));
    assert_eq!(
        g.progress,
        Some(serde_json::json!({"page": 1, "of": 3})),
        "kept with the result"
    );
    term(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_table_makes_the_worker_its_own_dashboard() {
    let s = setup("worker-serve", "orders", 2).await;
    let script = s.script("ok.sh", "cat > /dev/null");
    let port = support::free_port();
    let cfg = s.config(
        "w.toml",
        &format!(
            "[serve]\nlisten = \"127.0.0.1:{port}\"\nread_only = true\nsample_every = \"500ms\"\n\n{}",
            consumer(
                "orders",
                "billing",
                &format!("exec = [\"{}\"]", script.display()),
                ""
            )
        ),
    );
    let mut w = s.worker(&cfg);
    for i in 0..5u32 {
        s.client
            .publish_record("orders", Record::encode(&i).unwrap())
            .await
            .unwrap();
    }
    // The worker's own dashboard shows its group, live and caught up.
    support::wait_until(
        Duration::from_secs(30),
        "the worker's dashboard shows billing caught up",
        || {
            let body = get_body(port, "/api/v1/topics").unwrap_or_default();
            let ok = serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| {
                let g = &v["topics"][0]["groups"][0];
                g["group"] == "billing" && g["members"] == 1 && g["lag"] == 0
            });
            async move { ok }
        },
    )
    .await;
    // Read-only, as the table says: a change is refused.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /api/v1/topics/orders/groups/billing/pause HTTP/1.0\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 403"), "{out}");
    assert!(!s.client.is_group_paused("orders", "billing").await.unwrap());
    term(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(30)).success());
}

/// The body of `GET path` over HTTP/1.0, or none while nothing listens.
fn get_body(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// A stand-in OTLP/HTTP collector: every body posted to `/v1/traces`.
async fn collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use axum::routing::post;
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let keep = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(body.to_vec());
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), bodies)
}

/// What a stand-in OTLP/gRPC collector was sent: each request's path and
/// its body (gRPC length-prefixed protobuf).
type GrpcCalls = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A stand-in OTLP/gRPC collector (HTTP/2 without TLS): it answers every
/// call with an empty message and status 0, and keeps what it was sent.
async fn grpc_collector() -> (String, GrpcCalls) {
    let calls = GrpcCalls::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keep = calls.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                // Not HTTP/2 (an OTLP/HTTP exporter's request): dropped.
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                // Each call on a task of its own: the connection is driven
                // by accept(), which must go on while a body is read.
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let keep = keep.clone();
                    tokio::spawn(async move {
                        let path = request.uri().path().to_string();
                        let mut body = request.into_body();
                        let mut bytes = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            bytes.extend_from_slice(&chunk);
                        }
                        keep.lock().unwrap().push((path, bytes));
                        let response = axum::http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut send = respond.send_response(response, false).unwrap();
                        // An empty ExportTraceServiceResponse, then status 0.
                        let _ = send.send_data(bytes::Bytes::from_static(&[0; 5]), false);
                        let mut trailers = axum::http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let _ = send.send_trailers(trailers);
                    });
                }
            });
        }
    });
    (format!("http://{addr}"), calls)
}

/// The 16 bytes of a `traceparent`'s trace id.
fn trace_id_bytes(traceparent: &str) -> Vec<u8> {
    let hex = traceparent.split('-').nth(1).unwrap();
    (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otel_table_exports_spans_and_hands_the_process_span_to_exec_and_http_handlers() {
    let s = setup("worker-otel", "orders", 1).await;
    let script = s.script(
        "tp.sh",
        "cat > /dev/null; echo \"$TRACEPARENT\" >> \"$OUT\"",
    );
    let (endpoint, bodies) = collector().await;
    let exec = format!("exec = [\"{}\"]", script.display());
    // An http handler too: it records the traceparent header it gets.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let keep = seen.clone();
    let hook = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let keep = keep.clone();
            async move {
                let tp = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                keep.lock().unwrap().push(tp);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });
    let http = format!("http = \"{hook_url}\"");
    let cfg = s.config(
        "w.toml",
        &format!(
            "[otel]\nendpoint = \"{endpoint}\"\nservice_name = \"pdf-worker\"\n\n{}{}",
            consumer("orders", "billing", &exec, ""),
            consumer("orders", "hooks", &http, "")
        ),
    );
    // The publisher's context, as an instrumented service would send it.
    let publisher = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    s.client
        .publish_record(
            "orders",
            Record::encode(&1u32)
                .unwrap()
                .header("traceparent", publisher),
        )
        .await
        .unwrap();
    let mut w = s.worker(&cfg);
    until("the handler ran", 30, || s.lines().len() == 1).await;
    // The program got its process span's context: a trace of its own
    // (the span links to the publisher's), not the publisher's.
    let got = s.lines()[0].clone();
    let tp = millrace::TraceParent::parse(&got).unwrap_or_else(|| panic!("{got:?}"));
    assert_ne!(
        format!("{:032x}", tp.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    // The http endpoint got its own process span's context the same way.
    until("the hook was called", 30, || {
        seen.lock().unwrap().len() == 1
    })
    .await;
    let hooked = seen.lock().unwrap()[0].clone();
    let htp = millrace::TraceParent::parse(&hooked).unwrap_or_else(|| panic!("{hooked:?}"));
    assert_ne!(
        htp.trace_id, tp.trace_id,
        "each group's process span is a trace of its own"
    );
    assert_ne!(
        format!("{:032x}", htp.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    // Stopped, the worker flushes its spans to the collector: the process
    // span's trace id and the link to the publisher's are in them.
    term(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(30)).success());
    let all: Vec<u8> = bodies.lock().unwrap().concat();
    assert!(!all.is_empty(), "no spans exported");
    let contains = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&trace_id_bytes(&got)), "the process span's trace");
    assert!(
        contains(&trace_id_bytes(publisher)),
        "the link to the publisher"
    );
    assert!(contains(b"pdf-worker"), "the service name");
    assert!(contains(b"process orders"), "the span's name");

    // The control: without [otel] the program gets the message's own
    // context as it came.
    let plain = s.config("plain.toml", &consumer("orders", "audit", &exec, ""));
    let mut w = s.worker(&plain);
    until("the second handler ran", 30, || s.lines().len() == 2).await;
    assert_eq!(s.lines()[1], publisher);
    term(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otel_table_with_protocol_grpc_exports_spans_over_otlp_grpc() {
    let s = setup("worker-otel-grpc", "orders", 1).await;
    let script = s.script("ok.sh", "cat > /dev/null; echo done >> \"$OUT\"");
    let exec = format!("exec = [\"{}\"]", script.display());
    let publisher = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (endpoint, calls) = grpc_collector().await;
    let run = |file: &str, protocol: &str, group: &str, handled: usize| {
        let cfg = s.config(
            file,
            &format!(
                "[otel]\nendpoint = \"{endpoint}\"\nprotocol = \"{protocol}\"\n\
                 service_name = \"pdf-worker\"\n\n{}",
                consumer("orders", group, &exec, "")
            ),
        );
        let s = &s;
        async move {
            let mut w = s.worker(&cfg);
            until("the handler ran", 30, || s.lines().len() == handled).await;
            // Stopped, the worker flushes its spans.
            term(&w);
            assert!(wait_exit(&mut w, Duration::from_secs(30)).success());
        }
    };
    s.client
        .publish_record(
            "orders",
            Record::encode(&1u32)
                .unwrap()
                .header("traceparent", publisher),
        )
        .await
        .unwrap();
    run("grpc.toml", "grpc", "billing", 1).await;
    let got = calls.lock().unwrap().clone();
    assert!(!got.is_empty(), "no spans exported over gRPC");
    for (path, _) in &got {
        assert_eq!(
            path,
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
    }
    let all: Vec<u8> = got.into_iter().flat_map(|(_, b)| b).collect();
    let contains = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"process orders"), "the span's name");
    assert!(contains(b"pdf-worker"), "the service name");
    assert!(
        contains(&trace_id_bytes(publisher)),
        "the link to the publisher"
    );

    // The control: the same collector named with protocol http/protobuf
    // gets HTTP/1.1 requests, which it drops; no gRPC call arrives.
    calls.lock().unwrap().clear();
    run("http.toml", "http/protobuf", "audit", 2).await;
    assert!(calls.lock().unwrap().is_empty());
}
