//! The `millrace` binary as scripts see it: exit codes, stdout, stderr and
//! JSON shapes, run against a private redis-server with a fresh `--prefix`
//! per test. What users and scripts read is pinned with insta snapshots.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

const TOPIC: &str = "erp.v1.invoice.created";

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    #[track_caller]
    fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit {code}: {self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// The binary, pointed at the shared test server under a prefix of its own.
struct Millrace {
    url: String,
    prefix: String,
}

impl Millrace {
    fn new(test: &str) -> Self {
        Millrace {
            url: support::shared_url(),
            prefix: support::unique_prefix(test),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_millrace"));
        for var in [
            "MILLRACE_REDIS_URL",
            "REDIS_URL",
            "MILLRACE_PREFIX",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd.args(["--redis", &self.url, "--prefix", &self.prefix])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn millrace");
        let mut input = child.stdin.take().expect("stdin");
        let stdin = stdin.to_string();
        // Written from a thread so a large input cannot deadlock against
        // the child's output.
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(stdin.as_bytes());
        });
        let out = child.wait_with_output().expect("wait for millrace");
        writer.join().expect("stdin writer");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        self.run(&[
            "topic",
            "create",
            name,
            "--partitions",
            &partitions.to_string(),
        ])
        .ok();
    }

    fn length(&self, topic: &str) -> u64 {
        let info = self
            .run(&["topic", "describe", topic, "--json"])
            .ok()
            .json();
        info["length"].as_u64().expect("length")
    }
}

/// Every stderr of a failure: one `error:` line, then at most a `hint:`.
#[track_caller]
fn assert_one_error_line(run: &Run) {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        matches!(lines.as_slice(), [e] | [e, _] if e.starts_with("error: ")),
        "stderr should be one error line and an optional hint: {run:#?}"
    );
    if let [_, hint] = lines.as_slice() {
        assert!(hint.starts_with("hint: "), "{run:#?}");
    }
    assert!(!run.stderr.contains("panicked"), "{run:#?}");
}

#[test]
fn top_level_help_lists_the_commands_and_global_flags() {
    let run = Millrace::new("help").run(&["--help"]).ok();
    insta::assert_snapshot!("help", run.stdout);
}

#[test]
fn usage_errors_exit_2() {
    let m = Millrace::new("usage");
    let run = m.run(&["topic", "create", TOPIC]).code(2);
    assert!(run.stderr.contains("--partitions"), "{run:#?}");
    m.run(&["no-such-command"]).code(2);
    m.run(&["publish", TOPIC]).code(2);
}

/// `topic placement` on a single server: every partition on the one
/// server, the hash scheme whatever was asked for, nothing to move.
#[test]
fn placement_on_a_single_server_is_one_primary_with_everything() {
    let m = Millrace::new("placement_single");
    m.create_topic(TOPIC, 3);
    for i in 0..4 {
        m.run(&["publish", TOPIC, "--key", &format!("k{i}"), "--json", "{}"])
            .ok();
    }
    let mut v = m.run(&["topic", "placement", TOPIC, "--json"]).ok().json();
    // The server's port and Redis's memory estimate vary by run.
    let addr = v["primaries"][0]["node"].as_str().unwrap().to_string();
    assert_eq!(addr, format!("127.0.0.1:{}", support::shared().port()));
    for p in v["partitions"].as_array_mut().unwrap() {
        assert_eq!(p["primary"], addr.as_str());
        assert!(p["bytes"].as_u64().is_some(), "{p}");
        p["primary"] = "[server]".into();
        p["bytes"] = "[bytes]".into();
    }
    v["primaries"][0]["node"] = "[server]".into();
    insta::assert_json_snapshot!("placement_json_single_server", v);
    let text = m.run(&["topic", "placement", TOPIC]).ok().stdout;
    let text = text.replace(&addr, "[server]");
    let text: String = text
        .lines()
        .map(|l| {
            // The BYTES column is the last one.
            match l.rsplit_once(' ') {
                Some((head, last)) if last.parse::<u64>().is_ok() && head.contains("[server]") => {
                    format!("{head} [bytes]\n")
                }
                _ => format!("{l}\n"),
            }
        })
        .collect();
    insta::assert_snapshot!("placement_text_single_server", text);
    let run = m.run(&["topic", "placement", "no.such.topic"]).code(1);
    assert!(run.stderr.contains("does not exist"), "{run:#?}");
    m.run(&[
        "topic",
        "create",
        "x",
        "--partitions",
        "1",
        "--placement",
        "sideways",
    ])
    .code(2);
}

#[test]
fn a_created_topic_is_described_with_its_settings_and_lengths() {
    let m = Millrace::new("create_describe");
    let run = m
        .run(&[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "4",
            "--lanes",
            "2",
            "--retention",
            "2d",
            "--max-len",
            "100000",
        ])
        .ok();
    assert_eq!(run.stdout, format!("created topic {TOPIC}\n"));
    let info = m.run(&["topic", "describe", TOPIC, "--json"]).ok().json();
    insta::assert_json_snapshot!("describe_json", info);

    let human = m.run(&["topic", "describe", TOPIC]).ok();
    assert!(human.stdout.contains("retention     2d"), "{human:#?}");

    let list = m.run(&["topic", "list", "--json"]).ok().json();
    assert_eq!(
        list,
        json!([{"name": TOPIC, "partitions": 4, "lanes": 2,
                "retention_ms": 172_800_000, "max_len": 100_000}])
    );
}

#[test]
fn creating_again_with_the_same_settings_succeeds() {
    let m = Millrace::new("create_again");
    m.create_topic(TOPIC, 4);
    let run = m.run(&["topic", "create", TOPIC, "--partitions", "4"]).ok();
    assert_eq!(
        run.stdout,
        format!("topic {TOPIC} exists with the same settings\n")
    );
}

#[test]
fn creating_again_with_other_settings_fails_and_says_what_differs() {
    let m = Millrace::new("create_conflict");
    m.create_topic(TOPIC, 4);
    let run = m
        .run(&[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "8",
            "--retention",
            "1d",
        ])
        .code(2);
    assert_one_error_line(&run);
    assert_eq!(run.stdout, "");
    insta::assert_snapshot!("create_conflict_stderr", run.stderr);
}

#[test]
fn an_invalid_topic_name_is_refused_before_connecting() {
    let mut m = Millrace::new("invalid_name");
    // Nothing listens here: the name is checked first.
    m.url = format!("redis://127.0.0.1:{}", support::free_port());
    let run = m
        .run(&["topic", "create", "Invoices Created", "--partitions", "4"])
        .code(2);
    assert_one_error_line(&run);
    insta::assert_snapshot!("invalid_name_stderr", run.stderr);
    let dlq = m
        .run(&["publish", "erp.v1.invoice.created.dlq", "1"])
        .code(2);
    assert!(dlq.stderr.contains(".dlq is reserved"), "{dlq:#?}");
}

#[test]
fn a_bad_duration_exits_2() {
    let m = Millrace::new("bad_duration");
    let run = m
        .run(&[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "4",
            "--retention",
            "7 days",
        ])
        .code(2);
    assert_one_error_line(&run);
    assert!(
        run.stderr
            .starts_with("error: --retention: invalid duration: \"7 days\""),
        "{run:#?}"
    );
    m.create_topic(TOPIC, 4);
    let run = m.run(&["publish", TOPIC, "--delay", "soon", "{}"]).code(2);
    assert_one_error_line(&run);
    assert_eq!(m.length(TOPIC), 0);
}

#[test]
fn a_published_message_reads_back_with_key_data_headers_and_partition() {
    let m = Millrace::new("publish_tail");
    m.create_topic(TOPIC, 4);
    let receipt = m
        .run(&[
            "publish",
            TOPIC,
            "--key",
            "tenant-1",
            "--header",
            "traceparent=00-abc-def-01",
            "--header",
            "source=cli",
            "--json",
            r#"{"invoice": "inv-1", "cents": 420, "lines": [1, 2.5, null]}"#,
        ])
        .ok()
        .json();
    let partition = millrace::partitioner::partition_for_key("tenant-1", 4);
    assert_eq!(receipt["partition"], partition);
    assert_eq!(receipt["duplicate"], false);
    let receipt_id = receipt["id"].as_str().expect("id");
    assert_eq!(
        receipt["message_id"],
        json!(format!("{partition}:0:{receipt_id}"))
    );
    // A keyless one, in human mode: stdout is just the message id.
    let second = m.run(&["publish", TOPIC, r#""plain string""#]).ok();
    let second_message = second.stdout.trim_end().to_string();
    let (p2, rest) = second_message.split_once(':').expect("P:L:ID");
    let second_id = rest.strip_prefix("0:").expect("lane 0").to_string();
    assert!(p2.parse::<u32>().is_ok_and(|p| p < 4), "{second_message}");
    assert_is_stream_id(&second_id);

    let lines = m.run(&["tail", TOPIC, "--json"]).ok().json_lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let mut first = lines[0].clone();
    assert_eq!(first["id"], receipt["id"]);
    assert_eq!(first["message_id"], receipt["message_id"]);
    let id = first["id"].as_str().expect("id").to_string();
    assert_is_stream_id(&id);
    assert_published_at_matches_id(&first, &id);
    first["id"] = json!("[id]");
    first["message_id"] = json!("[message_id]");
    first["published_at"] = json!("[published_at]");
    insta::assert_json_snapshot!("tail_json_line", first);

    assert_eq!(lines[1]["id"], json!(second_id));
    assert_eq!(lines[1]["message_id"], json!(second_message));
    assert_eq!(lines[1]["key"], Value::Null);
    assert_eq!(lines[1]["data"], json!("plain string"));
    assert_eq!(lines[1]["headers"], json!({}));

    let human = m.run(&["tail", TOPIC, "--count", "1"]).ok();
    let expected_tail = format!(
        "  {partition}:0:{id}  key=tenant-1  headers={{\"source\":\"cli\",\"traceparent\":\"00-abc-def-01\"}}  {{\"cents\":420,\"invoice\":\"inv-1\",\"lines\":[1,2.5,null]}}\n"
    );
    assert!(human.stdout.ends_with(&expected_tail), "{human:#?}");
}

#[track_caller]
fn assert_is_stream_id(id: &str) {
    let ok = id
        .split_once('-')
        .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok());
    assert!(ok, "not a stream id: {id:?}");
}

/// `published_at` is RFC 3339 in UTC with milliseconds, and is the id's time.
#[track_caller]
fn assert_published_at_matches_id(line: &Value, id: &str) {
    let at = line["published_at"].as_str().expect("published_at");
    assert!(at.ends_with('Z') && at.len() == 24, "{at}");
    let t = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let ms = (t.unix_timestamp_nanos() / 1_000_000) as u64;
    assert_eq!(id.split('-').next(), Some(ms.to_string().as_str()));
}

#[test]
fn a_repeated_dedup_id_prints_the_first_id_and_publishes_nothing() {
    let m = Millrace::new("dedup");
    m.create_topic(TOPIC, 4);
    let args = ["publish", TOPIC, "--dedup-id", "inv-42", r#"{"n": 1}"#];
    let first = m.run(&args).ok();
    assert_eq!(first.stderr, "");
    let again = m.run(&args).ok();
    assert_eq!(again.stdout, first.stdout);
    assert!(again.stderr.starts_with("duplicate: "), "{again:#?}");
    assert_eq!(m.length(TOPIC), 1);
}

#[test]
fn data_can_come_from_stdin_and_must_be_json() {
    let m = Millrace::new("stdin_data");
    m.create_topic(TOPIC, 2);
    m.run_with_stdin(&["publish", TOPIC, "-"], "{\"from\": \"stdin\"}\n")
        .ok();
    let run = m.run(&["publish", TOPIC, "not json"]).code(2);
    assert_one_error_line(&run);
    let lines = m.run(&["tail", TOPIC, "--json"]).ok().json_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["data"], json!({"from": "stdin"}));
}

fn jsonl(n: usize) -> String {
    (0..n)
        .map(|i| {
            let mut line = json!({"data": {"n": i}, "key": format!("tenant-{}", i % 10)});
            if i % 3 == 0 {
                line["headers"] = json!({"batch": "b1"});
            }
            line.to_string() + "\n"
        })
        .collect()
}

#[test]
fn jsonl_publishes_every_line_and_keeps_each_key_in_order() {
    let m = Millrace::new("jsonl_500");
    m.create_topic(TOPIC, 4);
    let run = m
        .run_with_stdin(&["publish", TOPIC, "--jsonl"], &jsonl(500))
        .ok();
    assert_eq!(run.stdout, "published 500 messages\n");

    let info = m.run(&["topic", "describe", TOPIC, "--json"]).ok().json();
    assert_eq!(info["length"], 500);
    let per_partition: u64 = info["partition_lengths"]
        .as_array()
        .expect("partition_lengths")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(per_partition, 500);

    let some = m.run(&["tail", TOPIC, "--count", "7", "--json"]).ok();
    assert_eq!(some.json_lines().len(), 7);

    let all = m.run(&["tail", TOPIC, "--json"]).ok().json_lines();
    assert_eq!(all.len(), 500);
    let mut last_per_key = std::collections::HashMap::new();
    for line in &all {
        let key = line["key"].as_str().expect("key").to_string();
        let n = line["data"]["n"].as_u64().expect("n");
        assert_eq!(format!("tenant-{}", n % 10), key);
        if let Some(prev) = last_per_key.insert(key, n) {
            assert!(prev < n, "key order broken: {prev} then {n}");
        }
    }

    let json = m
        .run_with_stdin(&["publish", TOPIC, "--jsonl", "--json"], &jsonl(3))
        .ok()
        .json();
    assert_eq!(json, json!({"published": 3, "duplicates": 0, "failed": 0}));
}

#[test]
fn a_bad_jsonl_line_publishes_nothing_and_names_the_line() {
    let m = Millrace::new("jsonl_bad");
    m.create_topic(TOPIC, 4);
    let input = "{\"data\": 1}\n{\"data\": 2}\n{\"data\": {\"n\": 3}\n{\"data\": 4}\n";
    let run = m
        .run_with_stdin(&["publish", TOPIC, "--jsonl"], input)
        .code(2);
    assert_one_error_line(&run);
    assert_eq!(run.stdout, "");
    insta::assert_snapshot!("jsonl_bad_line_stderr", run.stderr);
    assert_eq!(m.length(TOPIC), 0);

    // Each kind of mistake is caught before anything is sent.
    for (input, line, says) in [
        (
            "{\"data\": 1}\n{\"data\": 2, \"tenant\": \"x\"}\n",
            2,
            "unknown field",
        ),
        ("\n{\"key\": \"k\"}\n", 2, "missing field \"data\""),
        ("{\"data\": 1, \"priority\": 1}\n", 1, "out of range"),
        (
            "{\"data\": 1}\n{\"data\": 1, \"delay\": \"1 minute\"}\n",
            2,
            "invalid duration",
        ),
        ("{\"data\": 1, \"key\": \"\"}\n", 1, "key"),
        (
            "{\"data\": 1, \"headers\": {\"a\": 1}}\n",
            1,
            "header \"a\"",
        ),
        ("[1, 2]\n", 1, "expected a JSON object"),
    ] {
        let run = m
            .run_with_stdin(&["publish", TOPIC, "--jsonl"], input)
            .code(2);
        assert_one_error_line(&run);
        assert!(
            run.stderr.starts_with(&format!("error: line {line}: ")) && run.stderr.contains(says),
            "{input:?} should fail at line {line} saying {says:?}: {run:#?}"
        );
    }
    assert_eq!(m.length(TOPIC), 0);
}

#[test]
fn unreachable_redis_exits_3_with_one_error_line() {
    let mut m = Millrace::new("redis_down");
    m.url = format!("redis://app:s3cret@127.0.0.1:{}", support::free_port());
    for args in [
        &["topic", "list"][..],
        &["topic", "create", TOPIC, "--partitions", "2"],
        &["publish", TOPIC, "{}"],
        &["tail", TOPIC],
    ] {
        let run = m.run(args).code(3);
        assert_one_error_line(&run);
        assert!(run.stderr.contains("cannot connect to Redis"), "{run:#?}");
        assert!(run.stderr.contains("app:***@"), "{run:#?}");
        assert!(!run.stderr.contains("s3cret"), "password shown: {run:#?}");
        assert!(
            run.stderr
                .contains("hint: is redis-server running? set --redis or MILLRACE_REDIS_URL"),
            "{run:#?}"
        );
    }
}

#[test]
fn delete_needs_yes() {
    let m = Millrace::new("delete");
    m.create_topic(TOPIC, 2);
    m.run(&["publish", TOPIC, "1"]).ok();
    let run = m.run(&["topic", "delete", TOPIC]).code(2);
    assert_one_error_line(&run);
    assert!(run.stderr.contains("--yes"), "{run:#?}");
    assert_eq!(m.length(TOPIC), 1, "nothing deleted without --yes");

    let run = m.run(&["topic", "delete", TOPIC, "--yes"]).ok();
    assert_eq!(run.stdout, format!("deleted topic {TOPIC}\n"));
    let gone = m.run(&["topic", "describe", TOPIC]).code(1);
    assert_one_error_line(&gone);
    assert!(gone.stderr.contains("does not exist"), "{gone:#?}");
    assert_eq!(m.run(&["topic", "list", "--json"]).ok().json(), json!([]));
}

#[test]
fn missing_topics_exit_1() {
    let m = Millrace::new("missing");
    for args in [
        &["publish", TOPIC, "1"][..],
        &["tail", TOPIC],
        &["topic", "describe", TOPIC],
        &["topic", "delete", TOPIC, "--yes"],
    ] {
        let run = m.run(args).code(1);
        assert_one_error_line(&run);
    }
}

#[test]
fn tail_into_a_closed_pipe_ends_quietly() {
    let m = Millrace::new("broken_pipe");
    m.create_topic(TOPIC, 2);
    let pad = "x".repeat(300);
    let input: String = (0..3000)
        .map(|i| json!({"data": {"n": i, "pad": pad}}).to_string() + "\n")
        .collect();
    m.run_with_stdin(&["publish", TOPIC, "--jsonl"], &input)
        .ok();

    // Like `millrace tail ... | head -1`: read one line, then close.
    let mut child = m
        .command(&["tail", TOPIC, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read a line");
    assert!(first.starts_with("{\"message_id\":"), "{first}");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn tail_follow_prints_new_messages_as_they_come() {
    // A server of its own, so the only blocked reader on it is this tail.
    let server = support::RedisServer::start();
    let m = Millrace {
        url: server.url(),
        prefix: support::unique_prefix("follow"),
    };
    m.create_topic(TOPIC, 2);
    m.run(&["publish", TOPIC, "--key", "k", r#"{"before": true}"#])
        .ok();
    let mut child = m
        .command(&["tail", TOPIC, "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = |what: &str| -> Value {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{what}: no line within 10 s ({e})"));
        serde_json::from_str(&line).expect("JSON")
    };
    // What exists is printed first...
    assert_eq!(
        next_line("the existing message")["data"],
        json!({"before": true})
    );
    // ...then tail waits at the end instead of stopping.
    let mut wait_until_waiting = |when: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !support::blocked_in_xread(server.port()) {
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "tail --follow exited {when}"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "tail --follow never waited in XREAD {when}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_until_waiting("at the end of the topic");
    // Published while it waits: it must arrive.
    m.run(&["publish", TOPIC, "--key", "k", r#"{"live": true}"#])
        .ok();
    let line = next_line("the new message");
    assert_eq!(line["data"], json!({"live": true}));
    assert_eq!(line["key"], "k");
    // And it goes on waiting.
    wait_until_waiting("after the new message");
    let _ = child.kill();
    let _ = child.wait();
}

/// Gives `m`'s topic a group `audit` (from the start) holding 10 messages of
/// one key, 4 of them read by a plain Redis consumer and not acked; returns
/// the partition they are in.
fn group_with_lag_and_pending(m: &Millrace, topic: &str) -> u32 {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let config = millrace::Config::new(&m.url)
            .unwrap()
            .prefix(&m.prefix)
            .unwrap();
        let client = millrace::Client::connect(config).await.unwrap();
        client
            .create_group(topic, "audit", &millrace::StartAt::Earliest)
            .await
            .unwrap();
        let records: Vec<millrace::Record> = (0..10u32)
            .map(|i| millrace::Record::encode(&i).unwrap().key("same"))
            .collect();
        let receipts = client.publish_batch(topic, records).await.unwrap();
        let p = receipts[0].as_ref().unwrap().partition;
        assert!(receipts.iter().all(|r| r.as_ref().unwrap().partition == p));
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("audit")
            .arg("reader-1")
            .arg("COUNT")
            .arg(4)
            .arg("STREAMS")
            .arg(client.keys().stream(topic, p, 0))
            .arg(">")
            .query_async(&mut client.connection())
            .await
            .unwrap();
        p
    })
}

#[test]
fn group_describe_shows_lag_and_pending_per_partition() {
    let m = Millrace::new("group_describe");
    m.create_topic(TOPIC, 2);
    assert_eq!(m.run(&["group", "list", TOPIC]).ok().stdout, "no groups\n");
    assert_eq!(
        m.run(&["group", "list", TOPIC, "--json"]).ok().json(),
        json!([])
    );
    let p = group_with_lag_and_pending(&m, TOPIC);

    assert_eq!(
        m.run(&["group", "list", TOPIC, "--json"]).ok().json(),
        json!(["audit"])
    );
    assert_eq!(m.run(&["group", "list", TOPIC]).ok().stdout, "audit\n");

    let info = m
        .run(&["group", "describe", TOPIC, "audit", "--json"])
        .ok()
        .json();
    let parts = info["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 2);
    let part = &parts[p as usize];
    assert_eq!(part["partition"], p);
    assert_eq!((&part["lag"], &part["pending"]), (&json!(6), &json!(4)));
    let other = &parts[1 - p as usize];
    assert_eq!((&other["lag"], &other["pending"]), (&json!(0), &json!(0)));
    assert_eq!((&info["lag"], &info["pending"]), (&json!(6), &json!(4)));
    // A plain Redis consumer is not a member, and nobody holds a lease.
    assert_eq!(info["members"], json!([]));
    assert!(parts.iter().all(|p| p["owner"].is_null()), "{info:#}");
    insta::assert_json_snapshot!("group_describe_json", info);

    let human = m.run(&["group", "describe", TOPIC, "audit"]).ok();
    assert!(
        human.stdout.starts_with(&format!(
            "group audit on topic {TOPIC}: 0 members, lag 6, pending 4\n\nno members\n\nPARTITION  OWNER  LAG  PENDING\n"
        )),
        "{human:#?}"
    );
    assert!(
        human
            .stdout
            .contains(&format!("\n{p}          -      6    4\n")),
        "{human:#?}"
    );
}

#[test]
fn group_describe_of_an_unknown_group_exits_1_and_points_to_group_list() {
    let m = Millrace::new("group_unknown");
    m.create_topic(TOPIC, 2);
    let run = m.run(&["group", "describe", TOPIC, "nobody"]).code(1);
    assert_one_error_line(&run);
    assert_eq!(run.stdout, "");
    insta::assert_snapshot!("group_unknown_stderr", run.stderr);

    // An unknown topic is reported as by `topic describe`.
    let other = "erp.v1.invoice.voided";
    for args in [
        &["group", "describe", other, "audit"][..],
        &["group", "list", other],
        &["group", "list", other, "--json"],
    ] {
        let run = m.run(args).code(1);
        assert_one_error_line(&run);
        assert!(
            run.stderr
                .starts_with(&format!("error: topic {other} does not exist\n")),
            "{run:#?}"
        );
    }
}

#[test]
fn an_invalid_group_name_is_refused_before_connecting() {
    let mut m = Millrace::new("group_invalid");
    // Nothing listens here: the names are checked first.
    m.url = format!("redis://127.0.0.1:{}", support::free_port());
    let run = m.run(&["group", "describe", TOPIC, "Audit Team"]).code(2);
    assert_one_error_line(&run);
    assert!(
        run.stderr
            .starts_with("error: invalid group name \"Audit Team\": "),
        "{run:#?}"
    );
    for args in [
        &["group", "describe", "Bad Topic", "audit"][..],
        &["group", "list", "Bad Topic"],
    ] {
        let run = m.run(args).code(2);
        assert_one_error_line(&run);
        assert!(run.stderr.contains("invalid topic name"), "{run:#?}");
    }
}

#[test]
fn group_help_lists_its_commands() {
    let run = Millrace::new("group_help").run(&["group", "--help"]).ok();
    insta::assert_snapshot!("group_help", run.stdout);
}

#[test]
fn a_schedule_added_from_the_command_line_lists_as_json_and_removes_once() {
    let m = Millrace::new("schedule_cli");
    m.create_topic(TOPIC, 2);
    let run = m
        .run(&[
            "schedule",
            "add",
            "nightly-report",
            "--cron",
            "0 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--topic",
            TOPIC,
            "--key",
            "tenant-1",
            "--header",
            "source=cli",
            r#"{"report": "sales"}"#,
        ])
        .ok();
    assert!(
        run.stdout
            .starts_with("added schedule nightly-report: next fire "),
        "{run:#?}"
    );
    let mut list = m.run(&["schedule", "list", "--json"]).ok().json();
    // 02:00 in Berlin is 00:00 or 01:00 UTC, depending on the season.
    let next = list[0]["next_fire"]
        .as_str()
        .expect("next_fire")
        .to_string();
    assert!(
        next.ends_with("T00:00:00Z") || next.ends_with("T01:00:00Z"),
        "{next}"
    );
    list[0]["next_fire"] = json!("[next_fire]");
    insta::assert_json_snapshot!("schedule_list_json", list);

    m.run(&["schedule", "remove", "nightly-report"]).ok();
    let run = m.run(&["schedule", "remove", "nightly-report"]).code(1);
    assert_one_error_line(&run);
    assert_eq!(
        run.stderr,
        "error: schedule nightly-report does not exist\n\
         hint: `millrace schedule list` shows the schedules\n"
    );
    let run = m
        .run(&[
            "schedule",
            "add",
            "x",
            "--cron",
            "0 9 * * funday",
            "--topic",
            TOPIC,
            "1",
        ])
        .code(2);
    assert_one_error_line(&run);
}

#[test]
fn the_scheduler_publishes_and_exits_0_on_sigterm() {
    let m = Millrace::new("scheduler_cli");
    m.create_topic(TOPIC, 1);
    m.run(&[
        "schedule",
        "add",
        "tick",
        "--cron",
        "* * * * * *",
        "--topic",
        TOPIC,
        "1",
    ])
    .ok();
    let child = m
        .command(&["scheduler"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while m.length(TOPIC) == 0 {
        assert!(std::time::Instant::now() < deadline, "no fire within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child by its pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let out = child.wait_with_output().expect("wait for the scheduler");
    assert_eq!(out.status.code(), Some(0), "{out:#?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

/// Runs a worker of group `pdf` over `m`'s topic until `bad` invoices
/// (keys `tenant-0`..) are dead-lettered by its handler (a permanent
/// failure: "bad invoice") and `good` others are acked, then shuts it down.
fn dead_letters_from_a_worker(m: &Millrace, topic: &str, bad: u32, good: u32) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let config = millrace::Config::new(&m.url)
            .unwrap()
            .prefix(&m.prefix)
            .unwrap();
        let client = millrace::Client::connect(config).await.unwrap();
        let worker = millrace::Worker::builder(&client, "pdf")
            .handle_raw(topic, |msg, _ctx| async move {
                let v: Value = msg.decode().map_err(millrace::HandlerError::permanent)?;
                if v["bad"] == json!(true) {
                    Err(millrace::HandlerError::permanent("bad invoice"))
                } else {
                    Ok(())
                }
            })
            .start()
            .await
            .unwrap();
        let records: Vec<millrace::Record> = (0..bad + good)
            .map(|i| {
                let data = json!({"invoice": format!("inv-{i}"), "bad": i < bad});
                millrace::Record::encode(&data)
                    .unwrap()
                    .key(format!("tenant-{i}"))
                    .header("source", "test")
            })
            .collect();
        for r in client.publish_batch(topic, records).await.unwrap() {
            r.unwrap();
        }
        support::wait_until(Duration::from_secs(20), "dead letters", || {
            let s = worker.stats();
            async move { s.dead_lettered == u64::from(bad) && s.acked == u64::from(good) }
        })
        .await;
        worker.shutdown().await.unwrap();
    });
}

#[test]
fn dead_letters_list_as_json_show_and_replay_to_the_topic() {
    let m = Millrace::new("dlq_list_replay");
    m.create_topic(TOPIC, 4);
    dead_letters_from_a_worker(&m, TOPIC, 3, 2);

    let run = m.run(&["dlq", "list", TOPIC, "--json"]).ok();
    let lines = run.json_lines();
    assert_eq!(lines.len(), 3, "{run:#?}");
    for line in &lines {
        let fields: Vec<&str> = line
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            [
                "attempts",
                "data",
                "error",
                "failed_at",
                "group",
                "headers",
                "id",
                "key",
                "lane",
                "message_id",
                "origin_id",
                "partition"
            ]
        );
        assert_is_stream_id(line["id"].as_str().expect("id"));
        assert_is_stream_id(line["origin_id"].as_str().expect("origin_id"));
        assert_eq!(
            line["message_id"],
            json!(format!(
                "{}:{}:{}",
                line["partition"],
                line["lane"],
                line["origin_id"].as_str().unwrap()
            ))
        );
        let at = line["failed_at"].as_str().expect("failed_at");
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
        assert!(at.ends_with('Z') && at.len() == 24, "{at}");
        let key = line["key"].as_str().expect("key");
        assert_eq!(
            line["partition"],
            millrace::partitioner::partition_for_key(key, 4)
        );
        assert_eq!(line["data"]["bad"], true);
    }
    let mut first = lines
        .iter()
        .find(|l| l["key"] == "tenant-0")
        .expect("tenant-0 is dead-lettered")
        .clone();
    for field in ["id", "message_id", "origin_id", "failed_at"] {
        first[field] = json!(format!("[{field}]"));
    }
    insta::assert_json_snapshot!("dlq_list_json_line", first);

    // The dead-letter view reads like a topic: `tail T.dlq`.
    let view = format!("{TOPIC}.dlq");
    let tailed = m.run(&["tail", &view, "--json"]).ok().json_lines();
    assert_eq!(tailed.len(), 3, "{tailed:#?}");
    for t in &tailed {
        assert_eq!(t["data"]["bad"], true);
        assert_eq!(t["headers"]["millrace-group"], "pdf");
        assert_eq!(t["headers"]["millrace-error"], "bad invoice");
        assert_eq!(t["lane"], 0);
    }
    let mut tailed_ids: Vec<String> = tailed
        .iter()
        .map(|t| format!("{}:{}", t["partition"], t["id"].as_str().unwrap()))
        .collect();
    let mut listed_ids: Vec<String> = lines
        .iter()
        .map(|l| format!("{}:{}", l["partition"], l["id"].as_str().unwrap()))
        .collect();
    tailed_ids.sort();
    listed_ids.sort();
    assert_eq!(
        tailed_ids, listed_ids,
        "tail shows the dead letters dlq list shows"
    );
    let nested = m.run(&["tail", &format!("{view}.dlq")]).code(2);
    assert!(nested.stderr.contains(".dlq"), "{nested:#?}");

    // Human: a table addressed by PARTITION:ID.
    let human = m.run(&["dlq", "list", TOPIC]).ok();
    let table: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(table.len(), 4, "{human:#?}");
    let header: Vec<&str> = table[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "MESSAGE", "GROUP", "ATTEMPTS", "FAILED", "AT", "ERROR"
        ]
    );
    let address = |l: &Value| format!("{}:{}", l["partition"], l["id"].as_str().unwrap());
    for (row, line) in table[1..].iter().zip(&lines) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        let failed_at = line["failed_at"].as_str().unwrap();
        assert_eq!(
            cells,
            [
                &address(line),
                line["message_id"].as_str().unwrap(),
                "pdf",
                "1",
                failed_at,
                "bad",
                "invoice"
            ],
            "{human:#?}"
        );
    }

    // One in full, by PARTITION:ID or by the bare ID.
    let shown = m
        .run(&["dlq", "show", TOPIC, &address(&lines[1]), "--json"])
        .ok()
        .json();
    assert_eq!(shown, lines[1]);
    // And by the message's id (one group gave up on it: one dead letter).
    let by_message = m
        .run(&[
            "dlq",
            "show",
            TOPIC,
            lines[1]["message_id"].as_str().unwrap(),
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(by_message, lines[1]);
    // A bare id is looked up in every partition (two partitions may hold
    // the same one: that case has a test of its own).
    for line in &lines {
        let id = &line["id"];
        if lines.iter().filter(|l| &l["id"] == id).count() == 1 {
            let bare = m
                .run(&["dlq", "show", TOPIC, id.as_str().unwrap(), "--json"])
                .ok()
                .json();
            assert_eq!(&bare, line);
        }
    }
    let human = m.run(&["dlq", "show", TOPIC, &address(&lines[1])]).ok();
    assert!(
        human.stdout.starts_with(&format!(
            "dead letter  {}\nmessage id   {}\ngroup        pdf\n",
            address(&lines[1]),
            lines[1]["message_id"].as_str().unwrap()
        )),
        "{human:#?}"
    );
    assert!(
        human.stdout.ends_with("error        bad invoice\n"),
        "{human:#?}"
    );
    let missing = m.run(&["dlq", "show", TOPIC, "0:1-0"]).code(1);
    assert_one_error_line(&missing);
    assert_eq!(
        missing.stderr,
        format!(
            "error: dead letter 0:1-0 does not exist on topic {TOPIC}\n\
             hint: `millrace dlq list {TOPIC}` shows its dead letters\n"
        )
    );
    let bad_id = m.run(&["dlq", "show", TOPIC, "three"]).code(2);
    assert_one_error_line(&bad_id);

    // Another group has none.
    let other = m
        .run(&["dlq", "list", TOPIC, "--group", "other", "--json"])
        .ok();
    assert_eq!(other.stdout, "");
    assert_eq!(
        m.run(&["dlq", "list", TOPIC, "--group", "other"])
            .ok()
            .stdout,
        "no dead letters\n"
    );
    let limited = m.run(&[
        "dlq", "list", TOPIC, "--group", "pdf", "--limit", "2", "--json",
    ]);
    assert_eq!(limited.ok().json_lines(), lines[..2]);

    // --id and --all together, or neither: a usage error, nothing replayed.
    let id = address(&lines[0]);
    m.run(&["dlq", "replay", TOPIC, "--id", &id, "--all"])
        .code(2);
    m.run(&["dlq", "replay", TOPIC]).code(2);
    assert_eq!(
        m.run(&["dlq", "list", TOPIC, "--json"])
            .ok()
            .json_lines()
            .len(),
        3
    );

    assert_eq!(m.length(TOPIC), 5);
    let run = m.run(&["dlq", "replay", TOPIC, "--all", "--to-topic"]).ok();
    assert_eq!(
        run.stdout,
        format!("replayed 3 dead letters to topic {TOPIC}\n")
    );
    assert_eq!(
        m.run(&["dlq", "list", TOPIC]).ok().stdout,
        "no dead letters\n"
    );
    let info = m.run(&["topic", "describe", TOPIC, "--json"]).ok().json();
    assert_eq!(
        (&info["length"], &info["dlq_length"]),
        (&json!(8), &json!(0))
    );
    let replayed: Vec<Value> = m
        .run(&["tail", TOPIC, "--json"])
        .ok()
        .json_lines()
        .into_iter()
        .filter(|l| l["data"]["bad"] == true)
        .collect();
    assert_eq!(replayed.len(), 6, "each bad invoice twice: {replayed:#?}");
    // The replay is a new entry of the same message: a new stream id, the
    // message id it was dead-lettered with.
    for line in &lines {
        let again: Vec<&Value> = replayed
            .iter()
            .filter(|r| r["message_id"] == line["message_id"])
            .collect();
        assert_eq!(again.len(), 2, "{line:#?} in {replayed:#?}");
        assert_ne!(again[0]["id"], again[1]["id"]);
    }
}

#[test]
fn dead_letters_replay_to_their_group_and_purge_needs_yes() {
    let m = Millrace::new("dlq_purge");
    m.create_topic(TOPIC, 2);
    dead_letters_from_a_worker(&m, TOPIC, 4, 0);
    let lines = m.run(&["dlq", "list", TOPIC, "--json"]).ok().json_lines();
    assert_eq!(lines.len(), 4);
    let address = |l: &Value| format!("{}:{}", l["partition"], l["id"].as_str().unwrap());

    // To the failing group only: the topic does not grow.
    let run = m
        .run(&[
            "dlq",
            "replay",
            TOPIC,
            "--id",
            &address(&lines[0]),
            "--group",
            "pdf",
        ])
        .ok();
    assert_eq!(run.stdout, "replayed 1 dead letter to group pdf\n");
    assert_eq!(m.length(TOPIC), 4);
    // An id that matches nothing (here: already replayed) replays nothing.
    let run = m
        .run(&["dlq", "replay", TOPIC, "--id", &address(&lines[0])])
        .ok();
    assert_eq!(run.stdout, "replayed 0 dead letters to their groups\n");

    let refused = m.run(&["dlq", "purge", TOPIC, "--all"]).code(2);
    assert_one_error_line(&refused);
    assert!(
        refused.stderr.starts_with(&format!(
            "error: refusing to purge dead letters of topic {TOPIC} without --yes\nhint: "
        )) && refused.stderr.contains("dlq list"),
        "{refused:#?}"
    );
    m.run(&["dlq", "purge", TOPIC, "--id", "1-0", "--all", "--yes"])
        .code(2);
    assert_eq!(
        m.run(&["dlq", "list", TOPIC, "--json"])
            .ok()
            .json_lines()
            .len(),
        3
    );

    let run = m
        .run(&["dlq", "purge", TOPIC, "--id", &address(&lines[1]), "--yes"])
        .ok();
    assert_eq!(run.stdout, "purged 1 dead letter\n");
    let run = m
        .run(&["dlq", "purge", TOPIC, "--all", "--group", "other", "--yes"])
        .ok();
    assert_eq!(run.stdout, "purged 0 dead letters\n");
    let run = m.run(&["dlq", "purge", TOPIC, "--all", "--yes"]).ok();
    assert_eq!(run.stdout, "purged 2 dead letters\n");
    assert_eq!(m.run(&["dlq", "list", TOPIC, "--json"]).ok().stdout, "");
    let info = m.run(&["topic", "describe", TOPIC, "--json"]).ok().json();
    assert_eq!(info["dlq_length"], 0);
}

/// An `XRANGE` reply: ids and their field-value pairs.
type StreamEntries = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

/// Copies the dead letter of partition `from` at `id` into the dead-letter
/// streams of partitions 0 and 1 under the id `copy_id`.
fn copy_dead_letter(m: &Millrace, topic: &str, from: u32, id: &str, copy_id: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let config = millrace::Config::new(&m.url)
            .unwrap()
            .prefix(&m.prefix)
            .unwrap();
        let client = millrace::Client::connect(config).await.unwrap();
        let entries: StreamEntries = redis::cmd("XRANGE")
            .arg(client.keys().dlq(topic, from))
            .arg(id)
            .arg(id)
            .query_async(&mut client.connection())
            .await
            .unwrap();
        let [(_, fields)] = entries.as_slice() else {
            panic!("{from}:{id} not found: {entries:?}");
        };
        for p in [0, 1] {
            let mut xadd = redis::cmd("XADD");
            xadd.arg(client.keys().dlq(topic, p)).arg(copy_id);
            for (name, value) in fields {
                xadd.arg(name).arg(value);
            }
            let _: String = xadd.query_async(&mut client.connection()).await.unwrap();
        }
    });
}

#[test]
fn a_bare_dlq_id_in_two_partitions_is_refused() {
    let m = Millrace::new("dlq_ambiguous");
    m.create_topic(TOPIC, 2);
    dead_letters_from_a_worker(&m, TOPIC, 1, 0);
    let lines = m.run(&["dlq", "list", TOPIC, "--json"]).ok().json_lines();
    let [line] = lines.as_slice() else {
        panic!("{lines:#?}")
    };
    let partition = u32::try_from(line["partition"].as_u64().unwrap()).unwrap();
    copy_dead_letter(
        &m,
        TOPIC,
        partition,
        line["id"].as_str().unwrap(),
        "9999999999999-0",
    );
    assert_eq!(
        m.run(&["dlq", "list", TOPIC, "--json"])
            .ok()
            .json_lines()
            .len(),
        3
    );

    let expected = format!(
        "error: dead-letter id 9999999999999-0 is in 2 partitions of {TOPIC}: \
         0:9999999999999-0, 1:9999999999999-0\n\
         hint: give it as PARTITION:ID, as `millrace dlq list` shows it\n"
    );
    for args in [
        &["dlq", "show", TOPIC, "9999999999999-0"][..],
        &["dlq", "replay", TOPIC, "--id", "9999999999999-0"],
        &["dlq", "purge", TOPIC, "--id", "9999999999999-0", "--yes"],
    ] {
        let run = m.run(args).code(2);
        assert_eq!(run.stderr, expected, "{run:#?}");
    }
    assert_eq!(
        m.run(&["dlq", "list", TOPIC, "--json"])
            .ok()
            .json_lines()
            .len(),
        3
    );

    let shown = m
        .run(&["dlq", "show", TOPIC, "1:9999999999999-0", "--json"])
        .ok()
        .json();
    assert_eq!(
        (&shown["partition"], &shown["data"]),
        (&json!(1), &line["data"])
    );
    let run = m
        .run(&["dlq", "purge", TOPIC, "--id", "1:9999999999999-0", "--yes"])
        .ok();
    assert_eq!(run.stdout, "purged 1 dead letter\n");
    // Now only partition 0 holds it: the bare id is enough.
    let run = m
        .run(&["dlq", "purge", TOPIC, "--id", "9999999999999-0", "--yes"])
        .ok();
    assert_eq!(run.stdout, "purged 1 dead letter\n");
    assert_eq!(
        m.run(&["dlq", "list", TOPIC, "--json"]).ok().json_lines(),
        lines
    );
}

#[test]
fn dlq_commands_check_names_and_topics() {
    let mut m = Millrace::new("dlq_invalid");
    for args in [
        &["dlq", "list", TOPIC][..],
        &["dlq", "show", TOPIC, "1-0"],
        &["dlq", "replay", TOPIC, "--all"],
        &["dlq", "purge", TOPIC, "--all", "--yes"],
    ] {
        let run = m.run(args).code(1);
        assert_one_error_line(&run);
        assert!(
            run.stderr
                .starts_with(&format!("error: topic {TOPIC} does not exist\n")),
            "{run:#?}"
        );
    }
    // Nothing listens here: names and ids are checked first.
    m.url = format!("redis://127.0.0.1:{}", support::free_port());
    for args in [
        &["dlq", "list", "Bad Topic"][..],
        &["dlq", "list", TOPIC, "--group", "PDF"],
        &["dlq", "list", "erp.v1.invoice.created.dlq"],
        &["dlq", "show", TOPIC, "p3:1-0"],
        &["dlq", "replay", TOPIC, "--id", "1-0", "latest"],
        &["dlq", "purge", TOPIC, "--id", "x", "--yes"],
        &["group", "pause", TOPIC, "Audit Team"],
    ] {
        let run = m.run(args).code(2);
        assert_one_error_line(&run);
    }
}

#[test]
fn a_group_pauses_and_resumes() {
    let m = Millrace::new("group_pause");
    m.create_topic(TOPIC, 2);
    group_with_lag_and_pending(&m, TOPIC);
    let paused = |m: &Millrace| {
        m.run(&["group", "describe", TOPIC, "audit", "--json"])
            .ok()
            .json()["paused"]
            .clone()
    };
    assert_eq!(paused(&m), false);

    let run = m.run(&["group", "pause", TOPIC, "audit"]).ok();
    assert_eq!(
        run.stdout,
        format!(
            "paused group audit on {TOPIC} (members stop taking new messages within a heartbeat)\n"
        )
    );
    assert_eq!(paused(&m), true);
    let human = m.run(&["group", "describe", TOPIC, "audit"]).ok();
    assert!(
        human.stdout.starts_with(&format!(
            "group audit on topic {TOPIC}: paused, 0 members, lag 6, pending 4\n"
        )),
        "{human:#?}"
    );
    // Pausing again is fine.
    m.run(&["group", "pause", TOPIC, "audit"]).ok();

    let run = m.run(&["group", "resume", TOPIC, "audit"]).ok();
    assert_eq!(run.stdout, format!("resumed group audit on {TOPIC}\n"));
    assert_eq!(paused(&m), false);
    let human = m.run(&["group", "describe", TOPIC, "audit"]).ok();
    assert!(
        human
            .stdout
            .starts_with(&format!("group audit on topic {TOPIC}: 0 members")),
        "{human:#?}"
    );

    for cmd in ["pause", "resume"] {
        let run = m.run(&["group", cmd, TOPIC, "nobody"]).code(1);
        assert_one_error_line(&run);
        assert_eq!(
            run.stderr,
            format!(
                "error: group nobody does not exist on topic {TOPIC}\n\
                 hint: `millrace group list {TOPIC}` shows its groups\n"
            )
        );
    }
}

#[test]
fn dlq_help_lists_its_commands() {
    let run = Millrace::new("dlq_help").run(&["dlq", "--help"]).ok();
    insta::assert_snapshot!("dlq_help", run.stdout);
}

#[test]
fn group_reset_is_a_dry_run_unless_executed() {
    let m = Millrace::new("group_reset");
    m.create_topic(TOPIC, 2);
    let p = group_with_lag_and_pending(&m, TOPIC);
    let lag_pending = |m: &Millrace| {
        let info = m
            .run(&["group", "describe", TOPIC, "audit", "--json"])
            .ok()
            .json();
        (info["lag"].clone(), info["pending"].clone())
    };
    assert_eq!(lag_pending(&m), (json!(6), json!(4)));

    // The dry run prints the plan and changes nothing.
    let run = m
        .run(&["group", "reset", TOPIC, "audit", "--to", "earliest"])
        .ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    let words =
        |line: &str| -> Vec<String> { line.split_whitespace().map(str::to_string).collect() };
    assert_eq!(
        words(lines[0]),
        ["PARTITION", "LANE", "FROM", "TO", "LAG", "AFTER"],
        "{run:#?}"
    );
    let row = words(lines[1 + p as usize]);
    assert_eq!((row[0].as_str(), row[1].as_str()), (&*p.to_string(), "0"));
    assert_ne!(row[2], "0-0", "4 were read: {run:#?}");
    assert_eq!((row[3].as_str(), row[4].as_str()), ("0-0", "10"));
    let other = 1 - p;
    assert_eq!(
        words(lines[1 + other as usize]),
        [other.to_string().as_str(), "0", "0-0", "0-0", "0"]
    );
    assert_eq!(
        lines.last(),
        Some(&"dry run: nothing changed; add --execute to apply")
    );
    assert!(
        run.stdout
            .contains("\nlag after reset: 10 (4 pending stay pending)\n")
    );
    assert_eq!(run.stderr, "");
    let plan = m
        .run(&[
            "group", "reset", TOPIC, "audit", "--to", "earliest", "--json",
        ])
        .ok()
        .json();
    assert_eq!(
        (&plan["applied"], &plan["lag_after"]),
        (&json!(false), &json!(10))
    );
    let parts = plan["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[p as usize]["to"], "0-0");
    assert_eq!(parts[p as usize]["lag_before"], 6);
    assert_eq!(lag_pending(&m), (json!(6), json!(4)));

    // --execute applies; pending entries stay pending.
    let run = m
        .run(&[
            "group",
            "reset",
            TOPIC,
            "audit",
            "--to",
            "earliest",
            "--execute",
        ])
        .ok();
    assert!(
        run.stdout
            .ends_with(&format!("\nreset group audit on {TOPIC} to earliest\n")),
        "{run:#?}"
    );
    assert_eq!(lag_pending(&m), (json!(10), json!(4)));
    let plan = m
        .run(&[
            "group",
            "reset",
            TOPIC,
            "audit",
            "--to",
            "latest",
            "--execute",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(
        (&plan["applied"], &plan["lag_after"]),
        (&json!(true), &json!(0))
    );
    assert_eq!(lag_pending(&m), (json!(0), json!(4)));

    // A bad position, or --force without --execute, is bad usage.
    let run = m
        .run(&["group", "reset", TOPIC, "audit", "--to", "yesterday"])
        .code(2);
    assert_one_error_line(&run);
    assert!(run.stderr.starts_with("error: invalid --to: "), "{run:#?}");
    m.run(&[
        "group", "reset", TOPIC, "audit", "--to", "latest", "--force",
    ])
    .code(2);
    let run = m
        .run(&["group", "reset", TOPIC, "nobody", "--to", "latest"])
        .code(1);
    assert_one_error_line(&run);
}

#[test]
fn group_reset_refuses_while_members_are_live_unless_forced() {
    let m = Millrace::new("group_reset_live");
    m.create_topic(TOPIC, 2);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let worker = rt.block_on(async {
        let config = millrace::Config::new(&m.url)
            .unwrap()
            .prefix(&m.prefix)
            .unwrap();
        let client = millrace::Client::connect(config).await.unwrap();
        let worker = millrace::Worker::builder(&client, "pdf")
            .instance_id("worker-a")
            .handle_raw(TOPIC, |_msg, _ctx| async { Ok(()) })
            .start()
            .await
            .unwrap();
        support::wait_until(Duration::from_secs(10), "a live member", || {
            let client = client.clone();
            async move {
                let info = client.describe_group(TOPIC, "pdf").await.unwrap();
                !info.members.is_empty()
            }
        })
        .await;
        worker
    });

    let run = m
        .run(&[
            "group",
            "reset",
            TOPIC,
            "pdf",
            "--to",
            "earliest",
            "--execute",
        ])
        .code(2);
    assert_one_error_line(&run);
    assert_eq!(run.stdout, "");
    insta::assert_snapshot!("group_reset_live_members_stderr", run.stderr);

    // The dry run works, with a warning.
    let run = m
        .run(&["group", "reset", TOPIC, "pdf", "--to", "earliest"])
        .ok();
    assert_eq!(
        run.stderr,
        "warning: the group has 1 live member(s): --execute refuses unless --force\n"
    );
    let run = m
        .run(&[
            "group",
            "reset",
            TOPIC,
            "pdf",
            "--to",
            "earliest",
            "--execute",
            "--force",
        ])
        .ok();
    assert!(
        run.stdout
            .ends_with(&format!("\nreset group pdf on {TOPIC} to earliest\n")),
        "{run:#?}"
    );
    rt.block_on(worker.shutdown()).unwrap();
}

#[test]
fn schema_commands_register_check_list_show_diff_and_mode() {
    let m = Millrace::new("schema_cli");
    m.create_topic(TOPIC, 2);
    let v1 = r#"{"type":"object","properties":{"invoice":{"type":"string"},"cents":{"type":"integer"}},"required":["invoice"],"additionalProperties":false}"#;
    let v2 = r#"{"type":"object","properties":{"invoice":{"type":"string"},"cents":{"type":"integer"},"note":{"type":"string"}},"required":["invoice"],"additionalProperties":false}"#;
    let broken = r#"{"type":"object","properties":{"invoice":{"type":"string"},"cents":{"type":"string"}},"required":["invoice","cents"],"additionalProperties":false}"#;

    // Register from stdin (-): the version is printed; again, the same one.
    let first = m
        .run_with_stdin(&["schema", "register", TOPIC, "-"], v1)
        .ok();
    assert_eq!(first.stdout, "1\n");
    let again = m
        .run_with_stdin(&["schema", "register", TOPIC, "-", "--json"], v1)
        .ok()
        .json();
    assert_eq!(again, json!({"topic": TOPIC, "version": 1}));
    let check = m.run_with_stdin(&["schema", "check", TOPIC, "-"], v2).ok();
    assert_eq!(check.stdout, "compatible (BACKWARD)\n");
    assert_eq!(
        m.run_with_stdin(&["schema", "register", TOPIC, "-"], v2)
            .ok()
            .stdout,
        "2\n"
    );

    // Incompatible: exit 1, every reason on stderr, each with its path.
    let refused = m
        .run_with_stdin(&["schema", "check", TOPIC, "-"], broken)
        .code(1);
    let lines: Vec<&str> = refused.stderr.lines().collect();
    assert!(lines.len() >= 3, "{refused:#?}");
    assert!(
        lines.iter().any(|l| l.contains("/properties/cents")),
        "{refused:#?}"
    );
    assert!(
        lines.last().unwrap().starts_with(&format!(
            "error: the schema is not BACKWARD compatible with topic {TOPIC}'s: "
        )),
        "{refused:#?}"
    );
    let refused = m
        .run_with_stdin(&["schema", "register", TOPIC, "-", "--json"], broken)
        .code(1)
        .json();
    assert_eq!(refused["compatible"], false);
    let reasons = refused["reasons"].as_array().expect("reasons");
    assert!(reasons.len() >= 2, "{refused:#}");
    for r in reasons {
        assert!(r["path"].as_str().unwrap().starts_with('/'), "{r}");
        assert!(!r["message"].as_str().unwrap().is_empty(), "{r}");
        assert_eq!(r["version"], 2);
    }
    assert_eq!(
        m.run(&["schema", "list", TOPIC, "--json"])
            .ok()
            .json_lines()
            .len(),
        2,
        "nothing registered"
    );

    // An invalid document, or text that is not JSON: exit 2.
    let invalid = m
        .run_with_stdin(&["schema", "register", TOPIC, "-"], r#"{"type":"objekt"}"#)
        .code(2);
    assert_one_error_line(&invalid);
    assert!(invalid.stderr.contains("/type: "), "{invalid:#?}");
    m.run_with_stdin(&["schema", "check", TOPIC, "-"], "{not json")
        .code(2);

    // List, show, diff.
    let table = m.run(&["schema", "list", TOPIC]).ok();
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(rows.len(), 3, "{table:#?}");
    assert!(rows[0].starts_with("VERSION  SCHEMA"), "{table:#?}");
    let shown = m
        .run(&["schema", "show", TOPIC, "--version", "1", "--json"])
        .ok()
        .json();
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["schema"], serde_json::from_str::<Value>(v1).unwrap());
    let pretty = m.run(&["schema", "show", TOPIC]).ok();
    assert_eq!(
        serde_json::from_str::<Value>(&pretty.stdout).unwrap(),
        serde_json::from_str::<Value>(v2).unwrap()
    );
    let missing = m.run(&["schema", "show", TOPIC, "--version", "9"]).code(1);
    assert_one_error_line(&missing);
    let diff = m
        .run(&["schema", "diff", TOPIC, "1", "2", "--json"])
        .ok()
        .json();
    assert_eq!(diff["backward"], json!([]), "{diff:#}");
    assert!(
        !diff["forward"].as_array().unwrap().is_empty(),
        "old readers of a closed model refuse the new property: {diff:#}"
    );
    let human = m.run(&["schema", "diff", TOPIC, "1", "2"]).ok();
    assert!(
        human.stdout.starts_with("version 1 -> 2\nbackward ("),
        "{human:#?}"
    );

    // The mode: BACKWARD by default, set, and refused when unknown.
    assert_eq!(
        m.run(&["schema", "mode", TOPIC]).ok().stdout,
        "BACKWARD (schema optional)\n"
    );
    assert_eq!(
        m.run(&["schema", "mode", TOPIC, "full_transitive", "--json"])
            .ok()
            .json(),
        json!({"topic": TOPIC, "mode": "FULL_TRANSITIVE", "schema": "optional"})
    );
    m.run(&["schema", "mode", TOPIC, "SIDEWAYS"]).code(2);
    m.run(&["schema", "mode", TOPIC, "--schema", "always"])
        .code(2);
    assert_eq!(
        m.run(&["schema", "mode", TOPIC]).ok().stdout,
        "FULL_TRANSITIVE (schema optional)\n"
    );

    // The default mode: of topics without one of their own.
    assert_eq!(m.run(&["schema", "default-mode"]).ok().stdout, "BACKWARD\n");
    assert_eq!(
        m.run(&["schema", "default-mode", "FULL", "--json"])
            .ok()
            .json(),
        json!({"mode": "FULL"})
    );
    m.create_topic("erp.v1.other", 1);
    assert_eq!(
        m.run(&["schema", "mode", "erp.v1.other"]).ok().stdout,
        "FULL (schema optional)\n"
    );
    assert_eq!(
        m.run(&["schema", "mode", TOPIC]).ok().stdout,
        "FULL_TRANSITIVE (schema optional)\n",
        "a topic's own mode wins"
    );
    // Dropped, it follows the default again.
    assert_eq!(
        m.run(&["schema", "mode", TOPIC, "default"]).ok().stdout,
        "FULL (schema optional)\n"
    );
    m.run(&["schema", "default-mode", "SIDEWAYS"]).code(2);
}

#[test]
fn a_topic_that_requires_schemas_refuses_a_bad_payload_with_every_path() {
    let m = Millrace::new("schema_enforce");
    m.run(&[
        "topic",
        "create",
        TOPIC,
        "--partitions",
        "2",
        "--schema",
        "required",
    ])
    .ok();
    let v1 = r#"{"type":"object","properties":{"invoice":{"type":"string"},"cents":{"type":"integer","minimum":0}},"required":["invoice","cents"],"additionalProperties":false}"#;
    // No version yet: nothing is taken.
    m.run(&["publish", TOPIC, r#"{"invoice":"a","cents":1}"#])
        .code(1);
    m.run_with_stdin(&["schema", "register", TOPIC, "-"], v1)
        .ok();
    let described = m.run(&["topic", "describe", TOPIC, "--json"]).ok().json();
    assert_eq!(described["schema"], "required");
    assert_eq!(described["schema_version"], 1);

    // Valid: published, and read back with its version.
    m.run(&[
        "publish",
        TOPIC,
        r#"{"invoice":"a","cents":1}"#,
        "--key",
        "k",
    ])
    .ok();
    let tail = m.run(&["tail", TOPIC, "--json"]).ok().json_lines();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0]["headers"]["schema-version"], "1");

    // Invalid: exit 2, each failing place on a line of its own, then one
    // error line; nothing written.
    let refused = m
        .run(&["publish", TOPIC, r#"{"invoice":7,"cents":-1,"x":true}"#])
        .code(2);
    let lines: Vec<&str> = refused.stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{refused:#?}");
    for place in ["  /invoice: ", "  /cents: ", "  /: "] {
        assert!(
            lines.iter().any(|l| l.starts_with(place)),
            "{place} in {refused:#?}"
        );
    }
    assert!(
        lines[3].starts_with(&format!(
            "error: the payload does not match schema version 1 of topic {TOPIC}: 3 failing places above"
        )),
        "{refused:#?}"
    );
    // A pinned version that does not exist: not found.
    m.run(&[
        "publish",
        TOPIC,
        r#"{"invoice":"a","cents":1}"#,
        "--schema-version",
        "4",
    ])
    .code(1);

    // --jsonl: the bad line named, nothing published, not even the lines
    // before it.
    let input = "{\"data\": {\"invoice\":\"a\",\"cents\":1}}\n\
                 {\"data\": {\"invoice\":\"b\",\"cents\":2}, \"key\": \"k\"}\n\
                 {\"data\": {\"invoice\":\"c\",\"cents\":-3}}\n\
                 {\"data\": {\"invoice\":\"d\",\"cents\":4}}\n";
    let run = m
        .run_with_stdin(&["publish", TOPIC, "--jsonl"], input)
        .code(2);
    assert!(
        run.stderr
            .contains("error: line 3: the payload does not match"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("  /cents: "), "{run:#?}");
    assert_eq!(m.length(TOPIC), 1, "nothing of the input was published");
    // The control: the same input without the bad line publishes.
    let good: String = input
        .lines()
        .filter(|l| !l.contains("-3"))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    m.run_with_stdin(&["publish", TOPIC, "--jsonl"], &good).ok();
    assert_eq!(m.length(TOPIC), 4);

    // The policy can be relaxed: then anything goes, unstamped.
    assert_eq!(
        m.run(&["schema", "mode", TOPIC, "--schema", "optional"])
            .ok()
            .stdout,
        "BACKWARD (schema optional)\n"
    );
    m.run(&["publish", TOPIC, r#"{"invoice":7}"#]).ok();
    assert_eq!(m.length(TOPIC), 5);
}

#[test]
fn message_show_says_where_a_message_stands_in_each_group() {
    let m = Millrace::new("message_show");
    m.create_topic(TOPIC, 2);
    dead_letters_from_a_worker(&m, TOPIC, 1, 1);
    let lines = m.run(&["tail", TOPIC, "--json"]).ok().json_lines();
    let id_of = |bad: bool| {
        lines
            .iter()
            .find(|l| l["data"]["bad"] == json!(bad))
            .unwrap()["message_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (bad, good) = (id_of(true), id_of(false));

    let shown = m
        .run(&["message", "show", TOPIC, &bad, "--json"])
        .ok()
        .json();
    assert_eq!(shown["message_id"], bad.as_str());
    assert_eq!(shown["stored"], "stored");
    assert_eq!(shown["data"]["bad"], true);
    assert_eq!(shown["groups"][0]["group"], "pdf");
    assert_eq!(shown["groups"][0]["state"], "dead_lettered");
    assert_eq!(shown["groups"][0]["error"], "bad invoice");
    assert_eq!(shown["groups"][0]["attempt"], 1);
    // The dead letter it names is the one `dlq show` finds.
    let letter = shown["groups"][0]["dead_letter"].as_str().unwrap();
    let dlq = m.run(&["dlq", "show", TOPIC, letter, "--json"]).ok().json();
    assert_eq!(dlq["message_id"], bad.as_str());

    let human = m.run(&["message", "show", TOPIC, &good]).ok();
    let rows: Vec<&str> = human.stdout.lines().collect();
    assert!(rows[0].contains(&good), "{human:#?}");
    assert!(rows.iter().any(|r| r.starts_with("GROUP")), "{human:#?}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("pdf") && r.contains("done")),
        "{human:#?}"
    );
    // By its bare stream id, looked up in every partition: found, or, when
    // the other message has the same stream id in its own partition (both
    // went in one pipeline), refused naming both.
    let stream_id = |id: &str| id.splitn(3, ':').nth(2).unwrap().to_string();
    let bare = stream_id(&good);
    if bare == stream_id(&bad) {
        let both = m.run(&["message", "show", TOPIC, &bare]).code(2);
        assert!(
            both.stderr.contains(&good) && both.stderr.contains(&bad),
            "{both:#?}"
        );
    } else {
        let by_bare = m
            .run(&["message", "show", TOPIC, &bare, "--json"])
            .ok()
            .json();
        assert_eq!(by_bare["message_id"], good.as_str());
    }

    // By key: the key's messages, newest first, at most --limit.
    let found = m
        .run(&["message", "find", TOPIC, "--key", "tenant-0", "--json"])
        .ok()
        .json_lines();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["message_id"], bad.as_str());
    assert_eq!(found[0]["groups"][0]["state"], "dead_lettered");
    let mut later = Vec::new();
    for n in 0..3 {
        let data = format!(r#"{{"n":{n}}}"#);
        let out = m.run(&["publish", TOPIC, &data, "--key", "tenant-1"]).ok();
        later.push(out.stdout.trim().to_string());
    }
    let newest: Vec<String> = m
        .run(&[
            "message", "find", TOPIC, "--key", "tenant-1", "--limit", "2", "--json",
        ])
        .ok()
        .json_lines()
        .iter()
        .map(|l| l["message_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(newest, [later[2].clone(), later[1].clone()]);
    let table = m.run(&["message", "find", TOPIC, "--key", "tenant-1"]).ok();
    assert_eq!(
        table.stdout.lines().count(),
        5,
        "a header and four rows: {table:#?}"
    );
    let none = m.run(&["message", "find", TOPIC, "--key", "nobody"]).ok();
    assert!(none.stdout.starts_with("no messages with key"), "{none:#?}");

    // Unknown: exit 1, "not found"; malformed: exit 2.
    let (p, _) = good.split_once(':').unwrap();
    let missing = m
        .run(&["message", "show", TOPIC, &format!("{p}:0:9999999999999-0")])
        .code(1);
    assert_one_error_line(&missing);
    assert!(missing.stderr.contains("not found"), "{missing:#?}");
    m.run(&["message", "show", TOPIC, "1:2:3:4"]).code(2);
}
