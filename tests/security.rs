//! Security: TLS with a private CA and client certificates, Redis ACL users,
//! passwords that never show, hostile names, and handlers that never go
//! through a shell. Every server is a private `redis-server` started here
//! (TLS-only ones with certificates made by rcgen on the spot).

mod support;

use support::{stderr_of, term, wait_exit};

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use millrace::RetryPolicy;
use millrace::keys::KeySpace;
use millrace::{
    Client, Config, Error, HandlerError, Mode, PublishOptions, Record, StartAt, TopicSpec, Worker,
};
use millrace::{ReplayTo, Selection};
use millrace::{ScheduleSpec, Scheduler};
use support::RedisServer;
use support::tls::Pki;

const BIN: &str = env!("CARGO_BIN_EXE_millrace");
async fn until(what: &str, secs: u64, f: impl Fn() -> bool) {
    support::wait_until(Duration::from_secs(secs), what, || {
        let ok = f();
        async move { ok }
    })
    .await;
}

/// Publishes `n` messages to a fresh topic and consumes them with a worker
/// (which reads through the blocking pool once it has caught up), then
/// publishes one more after the worker went idle: both connection kinds work.
async fn publish_and_consume(c: &Client, topic: &str) {
    c.create_topic(&TopicSpec::new(topic, 2).unwrap())
        .await
        .unwrap();
    let recs: Vec<Record> = (0..20u32)
        .map(|i| Record::encode(&i).unwrap().key(format!("k{}", i % 4)))
        .collect();
    for r in c.publish_batch(topic, recs).await.unwrap() {
        r.unwrap();
    }
    let seen: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let s = seen.clone();
    let w = Worker::builder(c, "g")
        .handle_raw(topic, move |msg, _ctx| {
            let s = s.clone();
            async move {
                let n: u32 = msg.decode().map_err(HandlerError::permanent)?;
                s.lock().unwrap().insert(n);
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    until("20 handled", 20, || seen.lock().unwrap().len() == 20).await;
    // Caught up, the fetcher waits in a blocking read on a pooled connection.
    c.publish_record(topic, Record::encode(&99u32).unwrap())
        .await
        .unwrap();
    until("the late one handled", 20, || {
        seen.lock().unwrap().contains(&99)
    })
    .await;
    w.shutdown().await.unwrap();
    let mut blocking = c.blocking_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut blocking).await.unwrap();
    assert_eq!(pong, "PONG");
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_consume_over_tls_with_a_private_ca() {
    if support::skip_without_tls() {
        return;
    }
    let pki = Pki::generate();
    let server = RedisServer::start_tls(&pki, false, &[]);
    let config = Config::new(server.url())
        .unwrap()
        .prefix(support::unique_prefix("tls-ca"))
        .unwrap()
        .tls_ca_file(&pki.ca)
        .unwrap();
    assert!(config.has_tls_certificates());
    let c = Client::connect(config).await.unwrap();
    publish_and_consume(&c, "over.tls").await;

    // The same CA given as bytes works as well.
    let pem = std::fs::read(&pki.ca).unwrap();
    let c = Client::connect(Config::new(server.url()).unwrap().tls_ca_pem(pem).unwrap())
        .await
        .unwrap();
    assert_eq!(server_of(&c), support::server_kind_and_version());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_the_handshake_fails_clearly() {
    if support::skip_without_tls() {
        return;
    }
    let pki = Pki::generate();
    let server = RedisServer::start_tls(&pki, false, &[]);
    let e = Client::connect(Config::new(server.url()).unwrap())
        .await
        .unwrap_err();
    match &e {
        Error::TlsHandshake { addr, reason } => {
            assert_eq!(addr, &format!("127.0.0.1:{}", server.port()));
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("expected a TLS handshake error, got {other:?}"),
    }
    assert!(e.is_unreachable(), "the CLI exits 3");
    assert!(!e.is_retryable(), "a certificate does not fix itself");
    assert!(
        e.to_string().starts_with("TLS handshake with 127.0.0.1:"),
        "{e}"
    );

    // A CA that did not sign the server's certificate is no better.
    let e = Client::connect(
        Config::new(server.url())
            .unwrap()
            .tls_ca_file(&pki.stranger_ca)
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::TlsHandshake { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_authenticates_clients_needs_the_client_certificate() {
    if support::skip_without_tls() {
        return;
    }
    let pki = Pki::generate();
    let server = RedisServer::start_tls(&pki, true, &[]);
    let base = || {
        Config::new(server.url())
            .unwrap()
            .tls_ca_file(&pki.ca)
            .unwrap()
    };

    let e = Client::connect(base()).await.unwrap_err();
    match &e {
        Error::TlsHandshake { reason, .. } => {
            assert!(reason.contains("CertificateRequired"), "{reason}")
        }
        other => panic!("expected a TLS handshake error, got {other:?}"),
    }

    let stranger = base()
        .tls_client_cert_files(&pki.stranger_client.cert, &pki.stranger_client.key)
        .unwrap();
    let e = Client::connect(stranger).await.unwrap_err();
    assert!(matches!(e, Error::TlsHandshake { .. }), "{e:?}");

    let config = base()
        .tls_client_cert_files(&pki.client.cert, &pki.client.key)
        .unwrap()
        .prefix(support::unique_prefix("mtls"))
        .unwrap();
    let c = Client::connect(config).await.unwrap();
    publish_and_consume(&c, "mutual.tls").await;

    // Certificate and key as bytes.
    let config = base()
        .tls_client_cert_pem(
            std::fs::read(&pki.client.cert).unwrap(),
            std::fs::read(&pki.client.key).unwrap(),
        )
        .unwrap();
    Client::connect(config).await.unwrap();
}

#[test]
fn unusable_tls_files_are_typed_errors_naming_the_file() {
    let pki = Pki::generate();
    let url = "rediss://127.0.0.1:1";
    let base = || Config::new(url).unwrap();
    let missing = pki.dir().join("missing.pem");

    let e = base().tls_ca_file(&missing).unwrap_err();
    assert!(
        matches!(&e, Error::TlsFile { what: "CA certificate", path, .. } if path == &missing),
        "{e:?}"
    );
    assert!(e.is_invalid_input());
    assert_eq!(
        e.to_string(),
        format!(
            "cannot read the TLS CA certificate {}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    let e = base().tls_ca_file(&pki.client.key).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "invalid TLS CA certificate {}: no CERTIFICATE block found",
            pki.client.key.display()
        )
    );
    assert!(e.is_invalid_input());

    let e = base()
        .tls_client_cert_files(&pki.client.cert, &pki.stranger_client.key)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "invalid TLS client key {}: it is not the key of the client certificate {}",
            pki.stranger_client.key.display(),
            pki.client.cert.display()
        )
    );

    let e = base()
        .tls_client_cert_files(&pki.client.cert, &pki.client.cert)
        .unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "invalid TLS client key {}: no private key",
            pki.client.cert.display()
        )),
        "{e}"
    );
    let e = base()
        .tls_client_cert_files(&missing, &pki.client.key)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::TlsFile {
                what: "client certificate",
                ..
            }
        ),
        "{e:?}"
    );

    let e = base()
        .tls_ca_pem(
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".to_vec(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::TlsPem { path: None, .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("invalid TLS CA certificate (given in memory): "),
        "{e}"
    );

    // A key's bytes never appear in an error about it.
    let key_text = std::fs::read_to_string(&pki.client.key).unwrap();
    let body = key_text.lines().nth(1).unwrap();
    let e = base()
        .tls_client_cert_pem(
            std::fs::read(&pki.client.cert).unwrap(),
            key_text[..key_text.len() / 2].to_string(),
        )
        .unwrap_err();
    assert!(!format!("{e} {e:?}").contains(body), "{e:?}");

    // Certificates for a plain redis:// URL would silently go unused.
    let e = Config::new("redis://u:pw@127.0.0.1:1")
        .unwrap()
        .tls_ca_file(&pki.ca)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid configuration: TLS certificates need a rediss:// URL; redis://u:***@127.0.0.1:1 is not one"
    );

    // Debug names the files, never their contents.
    let config = base()
        .tls_ca_file(&pki.ca)
        .unwrap()
        .tls_client_cert_files(&pki.client.cert, &pki.client.key)
        .unwrap();
    let shown = format!("{config:?}");
    assert!(
        shown.contains(&pki.client.key.display().to_string()),
        "{shown}"
    );
    assert!(!shown.contains("BEGIN"), "{shown}");
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` and `env`, and nothing of millrace's
/// environment inherited.
fn millrace(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    for var in [
        "MILLRACE_REDIS_URL",
        "REDIS_URL",
        "MILLRACE_PREFIX",
        "MILLRACE_TLS_CA",
        "MILLRACE_TLS_CERT",
        "MILLRACE_TLS_KEY",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run millrace");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn the_cli_speaks_tls_with_its_flags_and_environment() {
    if support::skip_without_tls() {
        return;
    }
    let pki = Pki::generate();
    let open = RedisServer::start_tls(&pki, false, &[]);
    let strict = RedisServer::start_tls(&pki, true, &[]);
    let prefix = support::unique_prefix("cli-tls");
    let ca = pki.ca.display().to_string();
    let (cert, key) = (
        pki.client.cert.display().to_string(),
        pki.client.key.display().to_string(),
    );
    let url = open.url();
    let base = ["--redis", url.as_str(), "--prefix", prefix.as_str()];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }

    let r = millrace(
        &with(
            &base,
            &[
                "--tls-ca",
                &ca,
                "topic",
                "create",
                "cli.tls",
                "--partitions",
                "2",
            ],
        ),
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = millrace(
        &with(&base, &["publish", "cli.tls", "{\"n\":1}"]),
        &[("MILLRACE_TLS_CA", &ca)],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = millrace(
        &with(&base, &["tail", "cli.tls", "--json"]),
        &[("MILLRACE_TLS_CA", &ca)],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("\"data\":{\"n\":1}"), "{r:?}");

    // Without the CA: exit 3, one clear line and a hint.
    let r = millrace(&with(&base, &["topic", "list"]), &[]);
    assert_eq!(r.code, 3, "{r:?}");
    let mut lines = r.stderr.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "error: cannot connect to Redis at {url}: TLS handshake with 127.0.0.1:"
        )),
        "{r:?}"
    );
    assert!(first.contains("UnknownIssuer"), "{r:?}");
    assert_eq!(
        lines.next(),
        Some(
            "hint: the server's certificate is not trusted: give the CA that signed it with --tls-ca"
        ),
        "{r:?}"
    );

    // Mutual TLS: the certificate is required, and works from flags or env.
    let strict_url = strict.url();
    let r = millrace(
        &["--redis", &strict_url, "--tls-ca", &ca, "topic", "list"],
        &[],
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr
            .contains("hint: the server requires a client certificate"),
        "{r:?}"
    );
    let r = millrace(
        &[
            "--redis",
            &strict_url,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "topic",
            "list",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = millrace(
        &["--redis", &strict_url, "topic", "list"],
        &[
            ("MILLRACE_TLS_CA", &ca),
            ("MILLRACE_TLS_CERT", &cert),
            ("MILLRACE_TLS_KEY", &key),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");

    // Half a client identity, or an unreadable file: exit 2 before connecting.
    let r = millrace(
        &["--redis", &strict_url, "--tls-cert", &cert, "topic", "list"],
        &[],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr.trim(),
        "error: a TLS client certificate needs its key: add --tls-key (MILLRACE_TLS_KEY)"
    );
    let r = millrace(
        &[
            "--redis",
            &strict_url,
            "--tls-ca",
            "/nonexistent/ca.pem",
            "topic",
            "list",
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr.trim(),
        "error: cannot read the TLS CA certificate /nonexistent/ca.pem: No such file or directory (os error 2)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_reads_tls_files_relative_to_its_toml() {
    if support::skip_without_tls() {
        return;
    }
    let pki = Pki::generate();
    let server = RedisServer::start_tls(&pki, true, &[]);
    let prefix = support::unique_prefix("worker-tls");
    let c = Client::connect(
        Config::new(server.url())
            .unwrap()
            .prefix(&prefix)
            .unwrap()
            .tls_ca_file(&pki.ca)
            .unwrap()
            .tls_client_cert_files(&pki.client.cert, &pki.client.key)
            .unwrap(),
    )
    .await
    .unwrap();
    c.create_topic(&TopicSpec::new("jobs", 2).unwrap())
        .await
        .unwrap();
    for i in 0..5u32 {
        c.publish_record("jobs", Record::encode(&i).unwrap())
            .await
            .unwrap();
    }
    // The TOML lives beside the PEM files and names them relatively.
    let out = pki.dir().join("out.txt");
    let script = pki.dir().join("h.sh");
    // One write per message: concurrent handlers append whole lines.
    write_script(&script, r#"body=$(cat); echo "$body" >> "$OUT""#);
    let toml = format!(
        "redis = \"{}\"\nprefix = \"{prefix}\"\n[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client.key\"\n\
         [[consumers]]\ntopic = \"jobs\"\ngroup = \"g\"\n[consumers.handler]\nexec = [\"{}\"]\n",
        server.url(),
        script.display()
    );
    let cfg = pki.dir().join("worker.toml");
    std::fs::write(&cfg, toml).unwrap();
    // Run from elsewhere, so relative paths cannot resolve against the cwd.
    let mut w = Command::new(BIN)
        .args(["worker", "--config"])
        .arg(&cfg)
        .current_dir("/")
        .env_remove("MILLRACE_REDIS_URL")
        .env_remove("REDIS_URL")
        .env("OUT", &out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    };
    until_worker(&mut w, "5 handled over mutual TLS", || lines() == 5).await;
    term(&w);
    let status = wait_exit(&mut w, Duration::from_secs(20));
    assert!(status.success(), "{status:?}: {}", stderr_of(&mut w));
}

// ---------------------------------------------------------------------------
// Worker processes
// ---------------------------------------------------------------------------

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Polls `f` until it holds; panics with the worker's stderr if the worker
/// exits first or 30 s pass.
async fn until_worker(child: &mut Child, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "worker exited ({status}) before {what}: {}",
                stderr_of(child)
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("timed out waiting for {what}: {}", stderr_of(child));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// ACL users
// ---------------------------------------------------------------------------

/// The password of every ACL user and password-protected server here.
const SECRET: &str = "s3cret-Pa55w0rd";

/// A private server (its default user stays open, for the test's own admin
/// commands) with user `app` under `rule`.
fn server_with_user(rule: &str) -> RedisServer {
    let server = RedisServer::start();
    let mut args = vec!["ACL", "SETUSER", "app", "reset", "on"];
    let pass = format!(">{SECRET}");
    args.push(&pass);
    args.extend(rule.split(' '));
    let reply = support::resp_command(server.port(), &args).unwrap();
    assert_eq!(reply, "+OK", "ACL SETUSER {rule}");
    server
}

fn app_url(server: &RedisServer) -> String {
    format!("redis://app:{SECRET}@127.0.0.1:{}", server.port())
}

async fn admin(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every ACL denial Redis logged, as text.
async fn acl_denials(server: &RedisServer) -> Vec<String> {
    let log: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut admin(server).await)
        .await
        .unwrap();
    log.iter().map(|v| format!("{v:?}")).collect()
}

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy::attempts(attempts)
        .fixed(Duration::from_millis(20))
        .jitter(0.0)
}

/// Everything a millrace user does, through the library: topics, every kind
/// of publish, reading, both consumer modes with retries, dead letters and a
/// rate limit, group admin and reset, schedules, deletion.
async fn exercise_everything(c: &Client) {
    let t = "acl.orders";
    c.create_topic(&TopicSpec::new(t, 2).unwrap().lanes(2))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new(t, 2).unwrap().lanes(2))
        .await
        .unwrap();
    assert_eq!(c.list_topics().await.unwrap(), vec![t.to_string()]);
    for i in 0..10u32 {
        c.publish_record(t, Record::encode(&i).unwrap().key(format!("k{}", i % 3)))
            .await
            .unwrap();
    }
    let urgent = PublishOptions::new().priority(1).dedup_id("once");
    let recs = vec![
        Record::encode(&10u32).unwrap().options(urgent.clone()),
        Record::encode(&10u32).unwrap().options(urgent),
        Record::encode(&11u32)
            .unwrap()
            .options(PublishOptions::new().delay(Duration::from_millis(200))),
        Record::encode(&12u32).unwrap().options(
            PublishOptions::new()
                .delay(Duration::from_millis(200))
                .dedup_id("later"),
        ),
        Record::encode(&999u32).unwrap(),
        Record::encode(&500u32).unwrap().key("flaky"),
    ];
    for r in c.publish_batch(t, recs).await.unwrap() {
        r.unwrap();
    }
    let mut reader = c.reader(t, StartAt::Earliest).await.unwrap();
    let mut read = 0;
    while reader.next().await.unwrap().is_some() {
        read += 1;
    }
    assert_eq!(read, 13, "10 keyed, one deduplicated urgent, 999 and 500");

    let mut workers = Vec::new();
    let handled: Arc<Mutex<HashMap<String, HashSet<u32>>>> = Arc::default();
    for (group, mode) in [("ordered", Mode::Ordered), ("shared", Mode::Shared)] {
        let seen = handled.clone();
        let mut b = Worker::builder(c, group)
            .mode(mode)
            .retry(policy(3))
            .handle_raw(t, move |msg, ctx| {
                let seen = seen.clone();
                async move {
                    let n: u32 = msg.decode().map_err(HandlerError::permanent)?;
                    match n {
                        999 => Err(HandlerError::permanent("bad invoice")),
                        500 if ctx.attempt == 1 => Err(HandlerError::retry("flaky once")),
                        _ => {
                            seen.lock()
                                .unwrap()
                                .entry(ctx.group.to_string())
                                .or_default()
                                .insert(n);
                            Ok(())
                        }
                    }
                }
            });
        if mode == Mode::Shared {
            b = b.rate_limit("1000/1s".parse().unwrap());
        }
        workers.push(b.start().await.unwrap());
    }
    let all: HashSet<u32> = (0..13).chain([500]).collect();
    until("both groups handled everything but 999", 30, || {
        let h = handled.lock().unwrap();
        ["ordered", "shared"]
            .iter()
            .all(|g| h.get(*g).is_some_and(|s| *s == all))
    })
    .await;
    for g in ["ordered", "shared"] {
        let info = c.describe_group(t, g).await.unwrap();
        assert_eq!(info.members.len(), 1);
    }
    let mut dead = Vec::new();
    for _ in 0..200 {
        dead = c.dead_letters(t, None, 10).await.unwrap();
        if dead.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(dead.len(), 2, "999 in both groups: {dead:?}");
    assert!(c.dead_letter(t, &dead[0].id).await.unwrap().is_some());
    // A request and its reply (the reply channel, PUBLISH from ack.lua),
    // and a request's failure (from dead_letter.lua).
    let reply: millrace::Reply<()> = c.request(t, &7u32).group("ordered").await.unwrap();
    assert!(
        c.message_result(t, &reply.message_id, "ordered")
            .await
            .unwrap()
            .is_some()
    );
    let failed = c.request::<_, ()>(t, &999u32).group("shared").await;
    assert!(
        matches!(&failed, Err(millrace::Error::RequestFailed { error, .. }) if error == "bad invoice"),
        "{failed:?}"
    );
    c.pause_group(t, "ordered").await.unwrap();
    assert!(c.is_group_paused(t, "ordered").await.unwrap());
    c.resume_group(t, "ordered").await.unwrap();
    for w in workers {
        w.shutdown().await.unwrap();
    }
    let replayed = c
        .replay_dead_letters(t, &Selection::All, Some("shared"), ReplayTo::Group)
        .await
        .unwrap();
    assert_eq!(replayed, 2, "999 published, and requested");
    assert_eq!(
        c.purge_dead_letters(t, &Selection::All, None)
            .await
            .unwrap(),
        2
    );
    let mut groups = c.list_groups(t).await.unwrap();
    groups.sort();
    assert_eq!(groups, vec!["ordered".to_string(), "shared".to_string()]);
    c.describe_topic(t).await.unwrap();
    c.plan_group_reset(t, "ordered", &StartAt::Earliest)
        .await
        .unwrap();
    c.reset_group(t, "ordered", &StartAt::Earliest, true)
        .await
        .unwrap();
    c.create_group(t, "late", &StartAt::Latest).await.unwrap();

    // A schedule firing every second, published once by a scheduler.
    let spec = ScheduleSpec::new("tick", "* * * * * *", t, serde_json::json!({"tick": 1})).unwrap();
    c.add_schedule(&spec).await.unwrap();
    assert_eq!(c.list_schedules().await.unwrap().len(), 1);
    let before = c.describe_topic(t).await.unwrap().length;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(Scheduler::new(c).run(async {
        let _ = stopped.await;
    }));
    let mut fired = false;
    for _ in 0..150 {
        if c.describe_topic(t).await.unwrap().length > before {
            fired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    scheduler.await.unwrap();
    assert!(fired, "the scheduler published a tick");
    assert!(!c.schedule_last_fires().await.unwrap().is_empty());
    assert!(c.remove_schedule("tick").await.unwrap());

    assert!(c.delete_topic(t).await.unwrap());
    assert!(c.list_topics().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_exactly_the_documented_rule_can_do_everything() {
    let prefix = "tenant-a";
    let rule = millrace::acl::rule(prefix, false);
    // The rule in docs/security.md is this one, word for word.
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md")).unwrap();
    assert!(
        docs.contains(&millrace::acl::rule("mr", false)),
        "docs/security.md shows acl::rule(\"mr\", false)"
    );
    let server = server_with_user(&rule);
    let c = Client::connect(
        Config::new(app_url(&server))
            .unwrap()
            .prefix(prefix)
            .unwrap(),
    )
    .await
    .unwrap();
    // INFO is not in the rule: the server was recognised through HELLO.
    assert_eq!(server_of(&c), support::server_kind_and_version());
    exercise_everything(&c).await;
    // `topic placement` without MEMORY in the rule: no bytes, the rest.
    c.create_topic(&TopicSpec::new("acl.placed", 2).unwrap())
        .await
        .unwrap();
    c.publish_record("acl.placed", millrace::Record::encode(&1u8).unwrap())
        .await
        .unwrap();
    let placed = c.topic_placement("acl.placed").await.unwrap();
    assert!(
        placed.partitions.iter().all(|p| p.bytes.is_none()),
        "{placed:?}"
    );
    assert_eq!(placed.partitions.iter().map(|p| p.messages).sum::<u64>(), 1);
    let denials = acl_denials(&server).await;
    // INFO, answered by HELLO; and on Redis 7.2+ and Valkey the CLIENT
    // SETINFO that redis-rs sends on each new connection and whose refusal
    // it ignores (the rule cannot name it: Redis 7.0 does not know it);
    // and MEMORY USAGE, which `topic placement` does without.
    let harmless = |d: &String| {
        d.contains("\"info\"")
            || d.contains("\"memory|usage\"")
            || (!is_redis_7_0() && d.contains("\"client|setinfo\""))
    };
    assert!(
        denials.iter().all(harmless),
        "only INFO (answered by HELLO) and CLIENT SETINFO may be refused: {denials:#?}"
    );
    // Nothing outside the prefix was written.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();
    assert!(keys.iter().all(|k| k.starts_with("tenant-a:")), "{keys:?}");
}

/// The server, as the client recognised it: `("redis", "7.0.15")`.
fn server_of(c: &Client) -> (String, String) {
    let info = c.server_info();
    (info.server.clone(), info.version.clone())
}

/// Whether the tests run on Redis 7.0 (what CI has), whose ACL refusals are
/// checked word for word; other versions word them differently.
fn is_redis_7_0() -> bool {
    let (kind, version) = support::server_kind_and_version();
    kind == "redis" && version.starts_with("7.0.")
}

/// A permission error's text: on Redis 7.0 exactly `on_7_0` after the
/// prefix; elsewhere the prefix and each of `parts` (the meaning: a NOPERM
/// refusal naming what was refused).
fn assert_denied(text: &str, on_7_0: &str, parts: &[&str]) {
    let prefix = "redis denied permission (ACL): ";
    if is_redis_7_0() {
        assert_eq!(text, format!("{prefix}{on_7_0}"));
    } else {
        assert!(text.starts_with(prefix), "{text}");
        for part in parts {
            assert!(text.contains(part), "{part:?} not in {text:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_rights_on_the_keys_gets_a_permission_error() {
    // The right commands, another tenant's keys.
    let server = server_with_user(&millrace::acl::rule("tenant-b", false));
    let c = Client::connect(
        Config::new(app_url(&server))
            .unwrap()
            .prefix("tenant-a")
            .unwrap(),
    )
    .await
    .expect("connecting touches no keys");
    let e = c
        .create_topic(&TopicSpec::new("orders", 2).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    assert!(e.is_unreachable(), "the CLI exits 3: refused");
    assert!(!e.is_retryable());
    let text = e.to_string();
    assert!(
        text.starts_with("redis denied permission (ACL): "),
        "{text}"
    );
    // Redis 7.2+ and Valkey word it "No permissions to access a key".
    assert_denied(
        &text,
        "NOPERM this user has no permissions to access one of the keys used as arguments",
        &["NOPERM ", "key"],
    );

    let e = c
        .publish_record("orders", Record::encode(&1u8).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_a_needed_command_gets_a_permission_error_naming_it() {
    let full = millrace::acl::rule("mr", false);
    let without = |cmd: &str| full.replace(&format!(" +{cmd}"), "");

    // SCRIPT LOAD happens on connect.
    let server = server_with_user(&without("script|load"));
    let e = Client::connect(Config::new(app_url(&server)).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    // Redis 7.2+ and Valkey: "NOPERM User app has no permissions to run ...".
    assert_denied(
        &e.to_string(),
        "NOPERM this user has no permissions to run the 'script|load' command",
        &["NOPERM ", "'script|load'"],
    );

    // HSET inside the topic_create script.
    let server = server_with_user(&without("hset"));
    let c = Client::connect(Config::new(app_url(&server)).unwrap())
        .await
        .unwrap();
    let e = c
        .create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    if is_redis_7_0() {
        assert!(
            e.to_string().starts_with(
                "redis denied permission (ACL): script topic_create.lua, line 28, HSET: The user executing the script can't run this command"
            ),
            "{e}"
        );
    } else {
        // Later servers refuse it with NOPERM, naming the command.
        assert!(
            e.to_string().starts_with("redis denied permission (ACL): ")
                && e.to_string().to_lowercase().contains("hset"),
            "{e}"
        );
    }

    // XADD, the plain publish.
    let server = server_with_user(&without("xadd"));
    let c = Client::connect(Config::new(app_url(&server)).unwrap())
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    let e = c
        .publish_record("orders", Record::encode(&1u8).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    assert_denied(
        &e.to_string(),
        "NOPERM this user has no permissions to run the 'xadd' command",
        &["NOPERM ", "'xadd'"],
    );

    // A user whose every command is refused: not even HELLO's fallback helps
    // with SCRIPT LOAD, and the message says which command.
    let server = server_with_user("resetkeys ~mr:* -@all");
    let e = Client::connect(Config::new(app_url(&server)).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_passwords_are_login_errors() {
    let server = server_with_user(&millrace::acl::rule("mr", false));
    let wrong = format!("redis://app:not-{SECRET}@127.0.0.1:{}", server.port());
    let e = Client::connect(Config::new(&wrong).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AuthFailed { .. }), "{e:?}");
    assert!(e.is_unreachable() && !e.is_retryable());
    assert_eq!(
        e.to_string(),
        "redis refused the login: wrong user or password, or the user is disabled"
    );

    let protected = RedisServer::start_with(&["--requirepass", SECRET]);
    let e = Client::connect(Config::new(protected.url()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AuthFailed { .. }), "no password: {e:?}");
    assert_eq!(
        e.to_string(),
        "redis refused the login: NOAUTH Authentication required."
    );
}

#[test]
fn the_cli_exits_3_when_redis_refuses_the_user() {
    let server = server_with_user(&millrace::acl::rule("tenant-b", false));
    let url = app_url(&server);
    let r = millrace(
        &[
            "--redis",
            &url,
            "--prefix",
            "tenant-a",
            "topic",
            "create",
            "orders",
            "--partitions",
            "1",
        ],
        &[],
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr
            .starts_with("error: redis denied permission (ACL): "),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("hint: the Redis user lacks a permission millrace needs: see the ACL rule in docs/security.md"),
        "{r:?}"
    );
    let wrong = format!("redis://app:wrong@127.0.0.1:{}", server.port());
    let r = millrace(&["--redis", &wrong, "topic", "list"], &[]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("redis refused the login"), "{r:?}");
    assert!(
        r.stderr
            .contains("hint: check the user and password in the Redis URL"),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------
// Passwords never show
// ---------------------------------------------------------------------------

/// Panics if `text` holds the secret, raw or percent-encoded.
#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for needle in [SECRET, "s3cret", "Pa55w0rd"] {
        assert!(!text.contains(needle), "{what} shows the password: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show_in_config_client_or_errors() {
    let server = RedisServer::start_with(&["--requirepass", SECRET]);
    let port = server.port();
    let dead = support::free_port();
    let urls = [
        format!("redis://:{SECRET}@127.0.0.1:{port}"),
        format!("redis://default:{SECRET}@127.0.0.1:{port}/0"),
        format!("rediss://app:{SECRET}@127.0.0.1:{port}"),
        "redis://app:s3cret%40Pa55w0rd@127.0.0.1:1".to_string(),
    ];
    for url in &urls {
        let config = Config::new(url).unwrap();
        assert_no_secret("Config Debug", &format!("{config:?}"));
        assert_no_secret("redacted_urls", &config.redacted_urls().join(" "));
    }

    let c = Client::connect(Config::new(&urls[0]).unwrap())
        .await
        .unwrap();
    assert_no_secret("Client Debug", &format!("{c:?}"));
    assert_no_secret("Client config", &format!("{:?}", c.config()));

    // Every failed connect, shown both ways.
    let failures = [
        // Wrong password.
        format!("redis://default:not-{SECRET}@127.0.0.1:{port}"),
        // Nobody listening.
        format!("redis://default:{SECRET}@127.0.0.1:{dead}"),
        // TLS to a server that speaks plain TCP.
        format!("rediss://default:{SECRET}@127.0.0.1:{port}"),
        // A host that does not resolve.
        format!("redis://default:{SECRET}@no-such-host.invalid:6379"),
    ];
    for url in &failures {
        let config = Config::new(url)
            .unwrap()
            .connect_timeout(Duration::from_secs(2));
        let e = Client::connect(config).await.unwrap_err();
        assert_no_secret(url, &format!("{e} | {e:?}"));
    }
    // Configuration errors, and a URL that does not even parse.
    for url in [
        format!("redis://u:{SECRET}@[bad"),
        format!("http://u:{SECRET}@h:1"),
        format!("redis://u:{SECRET}@"),
    ] {
        let e = Config::new(&url).unwrap_err();
        assert_no_secret(&url, &format!("{e} | {e:?}"));
    }
}

#[test]
fn the_cli_never_prints_the_password() {
    let server = RedisServer::start_with(&["--requirepass", SECRET]);
    let port = server.port();
    let dead = support::free_port();
    let cases = [
        format!("redis://default:not-{SECRET}@127.0.0.1:{port}"),
        format!("redis://default:{SECRET}@127.0.0.1:{dead}"),
        format!("redis://default:{SECRET}@[bad"),
        format!("redis://default:s3cret%40Pa55w0rd@127.0.0.1:{dead}"),
    ];
    for url in &cases {
        for via_env in [false, true] {
            let r = if via_env {
                millrace(&["topic", "list"], &[("MILLRACE_REDIS_URL", url)])
            } else {
                millrace(&["--redis", url, "topic", "list"], &[])
            };
            assert_ne!(r.code, 0, "{r:?}");
            assert_no_secret("stderr", &r.stderr);
            assert_no_secret("stdout", &r.stdout);
        }
    }
    // Help never shows the environment's values.
    let r = millrace(&["--help"], &[("MILLRACE_REDIS_URL", &cases[0])]);
    assert_eq!(r.code, 0);
    assert_no_secret("--help", &r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_never_logs_or_serves_the_password() {
    let server = RedisServer::start_with(&["--requirepass", SECRET]);
    let url = format!("redis://default:{SECRET}@127.0.0.1:{}", server.port());
    let prefix = support::unique_prefix("worker-secret");
    let c = Client::connect(Config::new(&url).unwrap().prefix(&prefix).unwrap())
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("jobs", 2).unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let env_dump = dir.path().join("env.txt");
    let script = dir.path().join("h.sh");
    // The handler records what it handled and the environment it was given.
    write_script(
        &script,
        r#"body=$(cat); env >> "$ENV_DUMP"; echo "$body" >> "$OUT"; [ "$body" != 2 ] || { echo "no luck" >&2; exit 1; }"#,
    );
    let metrics_port = support::free_port();
    let toml = format!(
        "prefix = \"{prefix}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
         [[consumers]]\ntopic = \"jobs\"\ngroup = \"g\"\n\
         [consumers.retry]\nmax_attempts = 2\nbackoff = \"fixed\"\ndelay = \"20ms\"\n\
         [consumers.handler]\nexec = [\"{}\"]\n",
        script.display()
    );
    let cfg = dir.path().join("w.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut w = Command::new(BIN)
        .args(["worker", "--log-format", "json", "--config"])
        .arg(&cfg)
        .env("MILLRACE_REDIS_URL", &url)
        .env("RUST_LOG", "debug")
        .env("OUT", &out)
        .env("ENV_DUMP", &env_dump)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain stderr as it comes, so debug logging cannot fill the pipe.
    let stderr = w.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let _ = std::io::BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    for i in 0..3u32 {
        c.publish_record("jobs", Record::encode(&i).unwrap())
            .await
            .unwrap();
    }
    let lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
    };
    // 0 and 1 once, 2 twice (it fails, then dead-letters).
    until_worker(&mut w, "4 handler runs", || lines() == 4).await;
    let metrics = scrape(metrics_port, "/metrics").await;
    assert!(metrics.contains("millrace_handled_total"), "{metrics}");
    let health = scrape(metrics_port, "/healthz").await;
    assert!(health.contains("\"redis\":\"ok\""), "{health}");
    term(&w);
    let status = wait_exit(&mut w, Duration::from_secs(20));
    let log = log.join().unwrap();
    assert!(status.success(), "{status:?}: {log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with('{') && l.contains("consumer started")),
        "JSON log lines: {log}"
    );
    assert!(log.contains("no luck"), "the failure is logged: {log}");
    assert_no_secret("worker log", &log);
    assert_no_secret("/metrics", &metrics);
    assert_no_secret("/healthz", &health);
    let env = std::fs::read_to_string(&env_dump).unwrap();
    assert!(env.contains("MILLRACE_TOPIC=jobs"), "{env}");
    assert_no_secret("a handler's environment", &env);

    // A worker refused by Redis says why, without the password.
    let wrong = format!("redis://default:not-{SECRET}@127.0.0.1:{}", server.port());
    let out = Command::new(BIN)
        .args([
            "--redis",
            &wrong,
            "worker",
            "--log-format",
            "json",
            "--config",
        ])
        .arg(&cfg)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("redis refused the login"), "{stderr}");
    assert_no_secret("refused worker", &stderr);
}

async fn scrape(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

// ---------------------------------------------------------------------------
// Hostile names
// ---------------------------------------------------------------------------

/// Names that must never become part of a key: glob characters, braces,
/// colons, whitespace, control characters, very long, empty, unicode, path
/// tricks, other tenants' key shapes.
fn hostile_names() -> Vec<String> {
    [
        "",
        "*",
        "orders*",
        "ord?rs",
        "[ab]c",
        "{orders}",
        "a{b",
        "a}b",
        "a:b",
        "mr:orders",
        "other:{orders}:meta",
        "orders}:x",
        "a|b",
        "a b",
        " orders",
        "orders ",
        "tab\tx",
        "line\nbreak",
        "nul\0x",
        "\u{1b}[31mred",
        "ünïcode",
        "名前",
        "rocket🚀",
        "\u{202e}gnp.exe",
        "ORDERS",
        "..",
        ".",
        "../x",
        ".hidden",
        "-x",
        "_x",
        "a/b",
        "a\\b",
        "a,b",
        "orders.dlq",
        "orders.dlq.dlq",
        "{x}.dlq",
        "Orders.dlq",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["a".repeat(201), "a".repeat(10_000)])
    .collect()
}

fn outcome<T>(r: millrace::Result<T>) -> String {
    match r {
        Ok(_) => "accepted".to_string(),
        Err(e) => format!("{e}"),
    }
}

#[test]
fn hostile_names_are_refused_with_clear_errors() {
    let mut table = String::new();
    for name in hostile_names() {
        let shown: String = format!("{name:?}").chars().take(40).collect();
        table.push_str(&format!("{shown}\n"));
        table.push_str(&format!(
            "  topic:  {}\n",
            outcome(TopicSpec::new(name.clone(), 1))
        ));
        table.push_str(&format!(
            "  group:  {}\n",
            outcome(millrace::keys::validate_name("group", &name))
        ));
        table.push_str(&format!(
            "  prefix: {}\n",
            outcome(
                Config::new("redis://127.0.0.1:1")
                    .unwrap()
                    .prefix(name.clone())
            )
        ));
    }
    insta::assert_snapshot!(table);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_never_reach_redis() {
    // A server of its own: afterwards it must hold no key at all.
    let server = RedisServer::start();
    let c = Client::connect(Config::new(server.url()).unwrap())
        .await
        .unwrap();
    for name in hostile_names() {
        let invalid = |what: &str, e: Error| {
            assert!(
                matches!(e, Error::InvalidName { .. }) && e.is_invalid_input(),
                "{what} {name:?}: {e:?}"
            );
        };
        // `orders.dlq` names the dead-letter view of `orders` (here: not
        // found); names ending in `.dlq` are fine for groups. The snapshot
        // shows both.
        if name != "orders.dlq" {
            let topic = &name;
            invalid(
                "create_group",
                c.create_group(topic, "g", &StartAt::Earliest)
                    .await
                    .unwrap_err(),
            );
            invalid("describe_topic", c.describe_topic(topic).await.unwrap_err());
            invalid(
                "dead_letters",
                c.dead_letters(topic, None, 10).await.unwrap_err(),
            );
            invalid(
                "publish",
                c.publish_record(topic, Record::encode(&1u8).unwrap())
                    .await
                    .unwrap_err(),
            );
            invalid("delete_topic", c.delete_topic(topic).await.unwrap_err());
            let built = Worker::builder(&c, "g")
                .handle_raw(topic, |_m, _c| async { Ok(()) })
                .build();
            invalid("worker topic", built.err().expect("refused"));
        }
        if millrace::keys::validate_name("group", &name).is_err() {
            let group = &name;
            invalid(
                "create_group",
                c.create_group("orders", group, &StartAt::Earliest)
                    .await
                    .unwrap_err(),
            );
            let built = Worker::builder(&c, group)
                .handle_raw("orders", |_m, _c| async { Ok(()) })
                .build();
            invalid("worker group", built.err().expect("refused"));
        }
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// Who a key belongs to: every key must have exactly one owner.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner {
    Prefix(String, &'static str),
    Topic(String, String, &'static str, u32, u8),
    Group(String, String, String, &'static str, u32),
}

#[test]
fn valid_names_never_share_a_key_across_topics_groups_or_prefixes() {
    let prefixes = ["mr", "mr.x", "mr-x", "mrx", "m", "MR", "a"];
    let topics = [
        "a",
        "a.b",
        "a-b",
        "a_b",
        "ab",
        "b",
        "0",
        "a.0",
        "a.1",
        "dlq",
        "g",
        "s",
        "meta",
        "groups",
        "topics",
        "schedules",
        "delayed",
        "wake",
        "a.dlq",
    ];
    let groups = [
        "g", "g.0", "a", "dlq", "rs", "retry", "lease", "x.dlq", "members",
    ];
    let mut owners: HashMap<String, Owner> = HashMap::new();
    let mut own = |key: String, owner: Owner| {
        let prefix = match &owner {
            Owner::Prefix(p, _) | Owner::Topic(p, ..) | Owner::Group(p, ..) => p.clone(),
        };
        assert!(
            key.starts_with(&format!("{prefix}:")),
            "{key} outside {prefix}:"
        );
        if let Some(before) = owners.insert(key.clone(), owner.clone()) {
            assert_eq!(before, owner, "{key} belongs to two owners");
        }
    };
    for prefix in prefixes {
        let k = KeySpace::new(prefix);
        let p = || prefix.to_string();
        own(k.topics(), Owner::Prefix(p(), "topics"));
        own(k.schedules(), Owner::Prefix(p(), "schedules"));
        own(k.schedules_last(), Owner::Prefix(p(), "schedules_last"));
        for topic in topics {
            let t = || topic.to_string();
            // `T.dlq` is the dead-letter view of T: its streams are T's DLQs.
            let view = topic.ends_with(".dlq");
            if !view {
                own(k.meta(topic), Owner::Topic(p(), t(), "meta", 0, 0));
                own(k.groups(topic), Owner::Topic(p(), t(), "groups", 0, 0));
            }
            for part in 0..3 {
                if !view {
                    for lane in 0..3 {
                        own(
                            k.stream(topic, part, lane),
                            Owner::Topic(p(), t(), "stream", part, lane),
                        );
                    }
                    own(
                        k.delayed(topic, part),
                        Owner::Topic(p(), t(), "delayed", part, 0),
                    );
                    own(k.wake(topic, part), Owner::Topic(p(), t(), "wake", part, 0));
                    own(
                        k.dedup(topic, part, "x}:g:y"),
                        Owner::Topic(p(), t(), "dedup", part, 0),
                    );
                }
                let dlq_owner = match topic.strip_suffix(".dlq") {
                    Some(base) => base.to_string(),
                    None => t(),
                };
                own(
                    k.dlq(&dlq_owner, part),
                    Owner::Topic(p(), dlq_owner.clone(), "dlq", part, 0),
                );
                for group in groups {
                    let g = || group.to_string();
                    own(
                        k.retry(topic, part, group),
                        Owner::Group(p(), t(), g(), "retry", part),
                    );
                    own(
                        k.attempts(topic, part, group),
                        Owner::Group(p(), t(), g(), "attempts", part),
                    );
                    own(
                        k.retry_stream(topic, part, group),
                        Owner::Group(p(), t(), g(), "rs", part),
                    );
                    own(
                        k.lease(topic, part, group),
                        Owner::Group(p(), t(), g(), "lease", part),
                    );
                }
            }
            for group in groups {
                let g = || group.to_string();
                own(
                    k.members(topic, group),
                    Owner::Group(p(), t(), g(), "members", 0),
                );
                own(
                    k.member_info(topic, group),
                    Owner::Group(p(), t(), g(), "info", 0),
                );
                own(
                    k.assign(topic, group),
                    Owner::Group(p(), t(), g(), "assign", 0),
                );
                own(
                    k.paused(topic, group),
                    Owner::Group(p(), t(), g(), "paused", 0),
                );
                own(k.rate(topic, group), Owner::Group(p(), t(), g(), "rate", 0));
            }
        }
    }
    assert!(owners.len() > 10_000, "{} keys checked", owners.len());
}

// ---------------------------------------------------------------------------
// Handlers run without a shell
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_arguments_reach_the_program_literally() {
    let c = support::client("no-shell").await;
    let prefix = c.config().key_prefix().to_string();
    c.create_topic(&TopicSpec::new("jobs", 1).unwrap())
        .await
        .unwrap();
    c.publish_record("jobs", Record::encode(&1u8).unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // `touch` makes one file per argument: with a shell in between, these
    // would run commands (and make `evil*`) instead.
    let literal = [
        "$(touch evil1)",
        "x; touch evil2",
        "`touch evil3`",
        "y && touch evil4",
        "z | touch evil5",
        "*",
        "$HOME",
        "'quoted'",
    ];
    let argv: Vec<String> = std::iter::once("touch")
        .chain(literal)
        .map(|a| format!("{a:?}").replace("\\'", "'"))
        .collect();
    let toml = format!(
        "prefix = \"{prefix}\"\n[[consumers]]\ntopic = \"jobs\"\ngroup = \"g\"\n\
         [consumers.handler]\nexec = [{}]\n",
        argv.join(", ")
    );
    let cfg = dir.path().join("w.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut w = Command::new(BIN)
        .args(["--redis", &support::shared_url(), "worker", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .env_remove("MILLRACE_PREFIX")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let made = || -> HashSet<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "w.toml")
            .collect()
    };
    until_worker(&mut w, "the handler ran", || made().len() >= literal.len()).await;
    term(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(20)).success());
    let expected: HashSet<String> = literal.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        made(),
        expected,
        "each argument became one file, nothing ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_never_shows_the_redis_password() {
    use support::serve::{call, http, serve};
    let mut server = RedisServer::start_with(&["--requirepass", SECRET]);
    let url = format!("redis://default:{SECRET}@127.0.0.1:{}", server.port());
    let c = Client::connect(Config::new(&url).unwrap().prefix("pw").unwrap())
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    c.publish_record("orders", Record::encode(&1u32).unwrap())
        .await
        .unwrap();
    let s = serve(&url, "pw", &[]).await;
    let http = http();
    let pages = [
        "/",
        "/login",
        "/app.js",
        "/api/v1/server",
        "/api/v1/topics",
        "/api/v1/topics/orders",
        "/api/v1/topics/orders/messages",
        "/api/v1/topics/orders/history",
        "/api/v1/schedules",
        "/api/v1/openapi.json",
    ];
    for page in pages {
        let (status, body) = call(http.get(format!("{}{page}", s.base))).await;
        assert_eq!(status, 200, "{page}: {body}");
        assert_no_secret(page, &body.to_string());
    }
    // Redis gone: the errors say so, without the URL's password.
    server.stop();
    for page in ["/api/v1/topics", "/api/v1/topics/orders/messages"] {
        let (status, body) = call(http.get(format!("{}{page}", s.base))).await;
        assert_eq!(status, 503, "{page}: {body}");
        assert_no_secret(page, &body.to_string());
    }
}
