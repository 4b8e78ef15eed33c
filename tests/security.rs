//! Security: TLS with a private CA and client certificates, Redis ACL users,
//! passwords that never show, hostile names, and handlers that never go
//! through a shell. Every server is a private `redis-server` started here
//! (TLS-only ones with certificates made by rcgen on the spot).

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use millrace::{Client, Config, Error, HandlerError, Record, TopicSpec, Worker};
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
    assert!(c.server_info().version.starts_with('7'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_the_handshake_fails_clearly() {
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

fn term(child: &Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("worker did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}
