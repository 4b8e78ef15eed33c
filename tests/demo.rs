//! `millrace demo`: the whole story runs, says what happened and leaves
//! nothing behind; without a redis-server on PATH it says how to get one.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The binary with no Redis or prefix from the environment.
fn millrace(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_millrace"));
    for var in [
        "MILLRACE_REDIS_URL",
        "REDIS_URL",
        "MILLRACE_PREFIX",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args);
    cmd
}

/// Runs `cmd`, killing it if it takes more than a minute.
fn run(mut cmd: Command) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start millrace");
    // The demo prints a few kilobytes: the pipes never fill up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).expect("stdout");
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).expect("stderr");
    }
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    };
    assert!(status.is_some(), "the demo took over a minute: {run:#?}");
    run
}

/// Checks the story's key moments.
#[track_caller]
fn assert_the_story_is_told(run: &Run) {
    assert_eq!(run.code, Some(0), "{run:#?}");
    for phrase in [
        "created topic erp.v1.invoice.created (6 partitions",
        "pdf-report    2 members sharing the partitions",
        "published 300 invoices",
        "0 out of order",
        "9 invoices failed 3 times in pdf-report (18 retries) and went to the dead-letter queue",
        "replayed 9 dead letters to pdf-report only",
        "dead-letter queue: 0 left; pdf-report has now rendered 300 of 300 invoices",
        "published a payment reminder for inv-acme-1 with a delay of 2 s",
        "ms after it was due",
        "added the cron schedule nightly-report",
        "removed the schedule",
        "shut down 4 workers gracefully",
    ] {
        assert!(
            run.stdout.contains(phrase),
            "stdout lacks {phrase:?}: {run:#?}"
        );
    }
    // The schedule fires every second while the scheduler runs: one report
    // per fire time, on consecutive whole seconds. (How many depends on
    // how long the scheduler ran, and is not asserted.)
    let fires: usize = run
        .stdout
        .split("the schedule fired ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fire count: {run:#?}"));
    assert!(fires >= 1, "the schedule never fired: {run:#?}");
    let seconds: Vec<u32> = run
        .stdout
        .split("the reports of ")
        .nth(1)
        .and_then(|rest| rest.split(" (UTC)").next())
        .unwrap_or_else(|| panic!("no report times: {run:#?}"))
        .split(", ")
        .map(|t| {
            let hms: Vec<u32> = t
                .split(':')
                .map(|n| n.parse().unwrap_or_else(|_| panic!("{t:?}: {run:#?}")))
                .collect();
            assert_eq!(hms.len(), 3, "{t:?} is not HH:MM:SS: {run:#?}");
            hms[0] * 3600 + hms[1] * 60 + hms[2]
        })
        .collect();
    assert_eq!(seconds.len(), fires, "a report per fire: {run:#?}");
    assert!(
        seconds.windows(2).all(|w| (w[0] + 1) % 86_400 == w[1]),
        "fire times are consecutive seconds, each once: {run:#?}"
    );
    let summary = run
        .stdout
        .lines()
        .find(|l| l.starts_with("pdf-report "))
        .unwrap_or_else(|| panic!("no summary row for pdf-report: {run:#?}"));
    let cells: Vec<&str> = summary.split_whitespace().collect();
    // GROUP MEMBERS HANDLED RETRIED DEAD-LETTERED REPLAYED
    assert_eq!(cells[1..6], ["2", "300", "18", "9", "9"], "{run:#?}");
    assert!(
        !run.stderr.contains("WARN") && !run.stderr.contains("ERROR"),
        "log noise on stderr: {run:#?}"
    );
}

#[test]
fn the_demo_tells_the_whole_story_on_a_given_redis_and_cleans_up() {
    let prefix = support::unique_prefix("demo");
    let url = support::shared_url();
    let run = run(millrace(&["--redis", &url, "--prefix", &prefix, "demo"]));
    assert_the_story_is_told(&run);
    assert!(
        run.stdout
            .contains(&format!("using {url} (key prefix \"{prefix}\"")),
        "{run:#?}"
    );
    // Topics, groups, schedules, dead letters and dedup markers are all gone.
    let left = support::resp_command(
        support::shared().port(),
        &[
            "EVAL",
            "return #redis.call('KEYS', ARGV[1])",
            "0",
            &format!("{prefix}:*"),
        ],
    )
    .expect("count keys");
    assert_eq!(left, ":0", "the demo left keys behind");
}

#[test]
fn the_demo_runs_behind_redis_sentinel() {
    let set = support::sentinel::SentinelSet::start(1);
    let prefix = support::unique_prefix("demo-sentinel");
    let url = set.url();
    let run = run(millrace(&["--redis", &url, "--prefix", &prefix, "demo"]));
    assert_the_story_is_told(&run);
    assert!(
        run.stdout
            .contains(&format!("using {url} (key prefix \"{prefix}\"")),
        "{run:#?}"
    );
    // It ran on the primary the sentinels name, and cleaned up there.
    let primary = set.agreed_primary().unwrap();
    let left = support::resp_command(
        primary,
        &[
            "EVAL",
            "return #redis.call('KEYS', ARGV[1])",
            "0",
            &format!("{prefix}:*"),
        ],
    )
    .expect("count keys");
    assert_eq!(left, ":0", "the demo left keys behind");
    let ran = support::resp_command(primary, &["INFO", "commandstats"]).unwrap();
    assert!(
        ran.contains("cmdstat_xadd"),
        "nothing was written on the primary"
    );
}

#[test]
fn the_demo_starts_and_stops_a_private_redis_server() {
    // Fails early with a clear message if redis-server is not installed.
    let bin = support::redis_server_bin();
    let dir = bin.parent().expect("redis-server's directory");
    let path = std::env::join_paths([dir, Path::new("/usr/bin"), Path::new("/bin")]).expect("PATH");
    let mut cmd = millrace(&["demo"]);
    // The binary comes from PATH here; the next test names it instead.
    cmd.env("PATH", path).env_remove("MILLRACE_REDIS_SERVER");
    if !dir.join("redis-server").is_file() {
        // A valkey-server named by MILLRACE_REDIS_SERVER, with no
        // redis-server beside it: the next test covers it.
        eprintln!("skipped: no redis-server in {}", dir.display());
        return;
    }
    let run = run(cmd);
    assert_the_story_is_told(&run);
    let port: u16 = run
        .stdout
        .split("started a private redis-server on 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port: {run:#?}"));
    assert!(
        run.stdout.contains("stopped the private redis-server"),
        "{run:#?}"
    );
    assert!(!support::ping(port), "the private server still runs");
}

#[test]
fn the_demo_starts_the_server_that_millrace_redis_server_names() {
    let bin = support::redis_server_bin();
    let empty = tempfile::tempdir().expect("temp dir");
    let mut cmd = millrace(&["demo"]);
    cmd.env("PATH", empty.path())
        .env("MILLRACE_REDIS_SERVER", &bin);
    let run = run(cmd);
    assert_the_story_is_told(&run);
    assert!(
        run.stdout.contains("stopped the private redis-server"),
        "{run:#?}"
    );
}

#[test]
fn a_millrace_redis_server_that_names_no_file_is_an_error_that_says_so() {
    let empty = tempfile::tempdir().expect("temp dir");
    let missing = empty.path().join("no-such-redis-server");
    let mut cmd = millrace(&["demo"]);
    cmd.env("MILLRACE_REDIS_SERVER", &missing);
    let run = run(cmd);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let first = run.stderr.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!(
            "error: MILLRACE_REDIS_SERVER={} is not a file; point it at a redis-server or \
             valkey-server binary, or unset it to use redis-server from PATH",
            missing.display()
        ),
        "{run:#?}"
    );
}

#[test]
fn without_redis_server_on_path_the_demo_says_how_to_install_it() {
    let empty = tempfile::tempdir().expect("temp dir");
    let mut cmd = millrace(&["demo"]);
    cmd.env("PATH", empty.path())
        .env_remove("MILLRACE_REDIS_SERVER");
    let run = run(cmd);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{run:#?}");
    assert!(
        lines[0].starts_with("error: redis-server not found on PATH"),
        "{run:#?}"
    );
    assert_eq!(
        lines[1],
        "hint: install redis-server (Debian/Ubuntu: apt-get install redis-server)"
    );
}

#[test]
fn demo_serve_keeps_the_data_on_a_dashboard_until_ctrl_c() {
    use std::io::BufRead;
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = millrace(&["demo", "--serve", "--listen", &listen])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start millrace");
    // Lines as they come, on a thread: the demo prints as it goes.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen
        .iter()
        .any(|l: &String| l.starts_with("dashboard: http://"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no dashboard line: {seen:#?}");
            }
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("http://{listen}/"))),
        "{seen:#?}"
    );
    // The dashboard shows what the story left.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::Write;
    write!(
        stream,
        "GET /api/v1/topics HTTP/1.0\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.contains("erp.v1.invoice.created"), "{answer}");
    // Ctrl-C ends it cleanly, and the private server with it.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(status.code(), Some(0), "{rest:#?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("stopped the private redis-server")),
        "{rest:#?}"
    );
}
