//! The `millrace worker` binary with `https://` handlers against a local
//! HTTPS server whose certificate is signed by a CA made in the test: with
//! `ca` the message is delivered and acked; without it (the test CA is in no
//! root store the worker trusts) the handshake fails, retryably, and the
//! message stays unacked. Also: a `start` time or id in the worker's TOML.

mod support;

use support::tls::Pki;
use support::{term, wait_exit};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace::{Client, Config, Record, StreamId, TopicSpec};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

const BIN: &str = env!("CARGO_BIN_EXE_millrace");

/// A topic under a fresh prefix of the shared private Redis, and a temp dir
/// for the worker's files.
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

/// A running `millrace worker`, killed if the test ends without stopping it.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    /// The JSON log lines (`--log-format json`) written so far.
    fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// SIGTERM, then the exit status (within 30 s).
    fn stop(&mut self) -> std::process::ExitStatus {
        term(&self.child);
        wait_exit(&mut self.child, Duration::from_secs(30))
    }
}

impl Setup {
    /// Writes `toml` as the worker's config file.
    fn config(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, toml).unwrap();
        path
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out.txt")
    }

    /// Starts the worker on `config`; `system_roots` is the PEM file the
    /// process takes for the system's root store (`SSL_CERT_FILE`), so that
    /// what "the system trusts" does not depend on the machine.
    fn worker(&self, config: &Path, system_roots: &Path) -> Worker {
        let log = self.dir.path().join(format!(
            "{}.log",
            config.file_stem().unwrap().to_string_lossy()
        ));
        let child = Command::new(BIN)
            .args(["--redis", &support::shared_url(), "--prefix", &self.prefix])
            .args(["worker", "--log-format", "json", "--config"])
            .arg(config)
            .env("OUT", self.out())
            .env("RUST_LOG", "warn")
            .env("SSL_CERT_FILE", system_roots)
            .env_remove("SSL_CERT_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Worker { child, log }
    }

    /// Lines the exec handler appended to the output file.
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.out())
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Waits until the group has handled and acked everything (no lag, no
    /// pending).
    async fn until_acked(&self, topic: &str, group: &str) {
        let c = self.client.clone();
        let what = format!("group {group} to have acked everything");
        support::wait_until(Duration::from_secs(30), &what, || {
            let c = c.clone();
            async move {
                c.describe_group(topic, group)
                    .await
                    .is_ok_and(|i| (i.lag, i.pending) == (0, 0))
            }
        })
        .await;
    }
}

fn consumer(topic: &str, group: &str, extra: &str, handler: &str) -> String {
    format!(
        "[[consumers]]\ntopic = \"{topic}\"\ngroup = \"{group}\"\nconcurrency = 4\n{extra}\n[consumers.handler]\n{handler}\n"
    )
}

/// Fixed 50 ms retries, up to `max` attempts.
fn fast_retry(max: u32) -> String {
    format!(
        "[consumers.retry]\nmax_attempts = {max}\nbackoff = \"fixed\"\ndelay = \"50ms\"\nmax_delay = \"50ms\"\njitter = 0.0\n"
    )
}

/// What the HTTPS server saw: each request's headers and body, and how many
/// TLS handshakes failed.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(axum::http::HeaderMap, String)>>,
    failed_handshakes: AtomicUsize,
}

impl Seen {
    /// The requests the worker made for `group` (`X-Millrace-Group`).
    fn requests_of(&self, group: &str) -> Vec<(axum::http::HeaderMap, String)> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _)| h.get("x-millrace-group").is_some_and(|g| g == group))
            .cloned()
            .collect()
    }
}

/// Accepts TCP connections and completes a TLS handshake on each; one that
/// fails is counted and dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    seen: Arc<Seen>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(5), self.tls.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                _ => {
                    self.seen.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An HTTPS endpoint on 127.0.0.1 with the server certificate of `pki`
/// (SANs 127.0.0.1 and localhost, signed by `pki.ca`): answers 204 to
/// `POST /hook` and records what it saw. Returns its URL.
async fn https_server(pki: &Pki) -> (String, Arc<Seen>) {
    let certs = CertificateDer::pem_file_iter(&pki.server.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&pki.server.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let seen = Arc::new(Seen::default());
    let recorder = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let recorder = recorder.clone();
            async move {
                recorder.requests.lock().unwrap().push((headers, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = TlsListener {
        tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        seen: seen.clone(),
    };
    let url = format!("https://{}/hook", listener.tcp.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// A message to publish: a JSON payload, a key and a header.
fn invoice() -> Record {
    Record::encode(&serde_json::json!({"invoice": 42}))
        .unwrap()
        .key("customer-7")
        .header("trace", "t-1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_handlers_ca_is_delivered_and_acked() {
    let pki = Pki::generate();
    let (url, seen) = https_server(&pki).await;
    let s = setup("https-ca", "hooks", 2).await;
    let handler = format!("http = \"{url}\"\nca = \"{}\"", pki.ca.display());
    let cfg = s.config("w.toml", &consumer("hooks", "g", "", &handler));
    // The machine's roots are replaced by an unrelated CA: only `ca` can
    // make the server trusted.
    let mut w = s.worker(&cfg, &pki.stranger_ca);
    let receipt = s.client.publish_record("hooks", invoice()).await.unwrap();
    support::wait_until(Duration::from_secs(30), "the POST", || {
        let n = seen.requests_of("g").len();
        async move { n == 1 }
    })
    .await;
    s.until_acked("hooks", "g").await;
    let (headers, body) = seen.requests_of("g").remove(0);
    let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload, serde_json::json!({"invoice": 42}));
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("x-millrace-topic").as_deref(), Some("hooks"));
    assert_eq!(header("x-millrace-group").as_deref(), Some("g"));
    assert_eq!(header("x-millrace-key").as_deref(), Some("customer-7"));
    assert_eq!(header("x-millrace-attempt").as_deref(), Some("1"));
    assert_eq!(header("x-millrace-header-trace").as_deref(), Some("t-1"));
    assert_eq!(
        header("x-millrace-id"),
        Some(receipt.message_id.to_string())
    );
    assert_eq!(header("x-millrace-stream-id"), Some(receipt.id));
    assert_eq!(seen.failed_handshakes.load(Ordering::SeqCst), 0);
    let status = w.stop();
    assert!(status.success(), "exit {status:?}");
    assert!(
        s.client
            .dead_letters("hooks", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let failures: Vec<_> = w
        .log_lines()
        .into_iter()
        .filter(|l| l["fields"]["message"] == "handler failed")
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
}

/// The worker's "handler failed" log lines (attempt, permanent, error).
fn handler_failures(w: &Worker) -> Vec<(u64, bool, String)> {
    w.log_lines()
        .iter()
        .filter(|l| l["fields"]["message"] == "handler failed")
        .map(|l| {
            let f = &l["fields"];
            (
                f["attempt"].as_u64().unwrap(),
                f["permanent"].as_bool().unwrap(),
                f["error"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits for a handler failure at attempt 3 or later.
async fn until_retried(w: &Worker) {
    support::wait_until(
        Duration::from_secs(30),
        "a third failed attempt in the worker's log",
        || {
            let n = handler_failures(w)
                .iter()
                .filter(|(attempt, ..)| *attempt >= 3)
                .count();
            async move { n > 0 }
        },
    )
    .await;
}

/// Asserts the group has not acked its one message, nor dead-lettered it.
async fn assert_unacked(s: &Setup, topic: &str, group: &str) {
    let info = s.client.describe_group(topic, group).await.unwrap();
    assert_eq!(info.lag + info.pending, 1, "{info:?}");
    assert!(
        s.client
            .dead_letters(topic, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Asserts every failure so far was a retryable one naming the untrusted
/// certificate.
fn assert_tls_failures(w: &Worker) {
    let failures = handler_failures(w);
    assert!(failures.len() >= 3, "{failures:?}");
    for (_, permanent, error) in &failures {
        assert!(!permanent, "a TLS failure is retryable: {error}");
        assert!(
            error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_without_ca_does_not_trust_a_private_ca() {
    let pki = Pki::generate();
    let (url, seen) = https_server(&pki).await;
    let s = setup("https-no-ca", "hooks", 2).await;
    let toml = format!(
        "drain_timeout = \"1s\"\n{}",
        consumer("hooks", "g", &fast_retry(100), &format!("http = \"{url}\""))
    );
    let cfg = s.config("w.toml", &toml);
    // The system's roots: a CA that did not sign the server's certificate.
    let mut w = s.worker(&cfg, &pki.stranger_ca);
    s.client.publish_record("hooks", invoice()).await.unwrap();
    until_retried(&w).await;
    assert_tls_failures(&w);
    assert!(seen.requests_of("g").is_empty(), "no request got through");
    support::wait_until(
        Duration::from_secs(10),
        "the server to see the handshakes fail",
        || {
            let n = seen.failed_handshakes.load(Ordering::SeqCst);
            async move { n >= 3 }
        },
    )
    .await;
    assert_unacked(&s, "hooks", "g").await;
    w.stop();
    assert_unacked(&s, "hooks", "g").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_the_system_roots_decide_and_a_ca_replaces_them() {
    let pki = Pki::generate();
    let (url, seen) = https_server(&pki).await;
    let s = setup("https-system", "hooks", 2).await;
    let toml = format!(
        "drain_timeout = \"1s\"\n{}{}",
        consumer("hooks", "system", "", &format!("http = \"{url}\"")),
        consumer(
            "hooks",
            "stranger",
            &fast_retry(100),
            &format!("http = \"{url}\"\nca = \"{}\"", pki.stranger_ca.display())
        ),
    );
    let cfg = s.config("w.toml", &toml);
    // The system trusts the test CA: a handler without `ca` does too; one
    // whose `ca` is another CA trusts that CA only.
    let mut w = s.worker(&cfg, &pki.ca);
    s.client.publish_record("hooks", invoice()).await.unwrap();
    s.until_acked("hooks", "system").await;
    assert_eq!(seen.requests_of("system").len(), 1);
    until_retried(&w).await;
    assert_tls_failures(&w);
    assert!(seen.requests_of("stranger").is_empty());
    assert_unacked(&s, "hooks", "stranger").await;
    w.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_time_or_id_skips_what_came_before() {
    let s = setup("start-at", "events", 1).await;
    let script = s.dir.path().join("record.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nbody=$(cat); echo \"$MILLRACE_GROUP|$body\" >> \"$OUT\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let publish = |body: &'static str| {
        let c = s.client.clone();
        async move {
            let r = c
                .publish_record("events", Record::encode(&body).unwrap())
                .await
                .unwrap();
            StreamId::parse(&r.id).unwrap()
        }
    };
    let before = publish("before").await;
    // A time on Redis's clock after the first message's millisecond.
    let c = s.client.clone();
    support::wait_until(
        Duration::from_secs(5),
        "Redis's clock past the first message",
        || {
            let c = c.clone();
            async move { c.redis_time_ms().await.unwrap() > before.ms }
        },
    )
    .await;
    let t = s.client.redis_time_ms().await.unwrap();
    let after_1 = publish("after-1").await;
    let after_2 = publish("after-2").await;
    assert!(
        after_1.ms >= t && after_2 > after_1,
        "{t} {after_1:?} {after_2:?}"
    );
    let time = chrono::DateTime::from_timestamp_millis(t as i64)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let exec = format!("exec = [\"{}\"]", script.display());
    let toml = format!(
        "{}{}{}",
        consumer("events", "from-time", &format!("start = \"{time}\""), &exec),
        consumer(
            "events",
            "from-id",
            &format!("start = \"{after_2}\""),
            &exec
        ),
        consumer("events", "from-earliest", "", &exec),
    );
    let cfg = s.config("w.toml", &toml);
    // Exec handlers need no root store at all.
    let mut w = s.worker(&cfg, Path::new("/nonexistent"));
    for g in ["from-time", "from-id", "from-earliest"] {
        s.until_acked("events", g).await;
    }
    assert!(w.stop().success());
    let mut lines = s.lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "from-earliest|\"after-1\"",
            "from-earliest|\"after-2\"",
            "from-earliest|\"before\"",
            "from-id|\"after-2\"",
            "from-time|\"after-1\"",
            "from-time|\"after-2\"",
        ],
        "start {time}"
    );
}
