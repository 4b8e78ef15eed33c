//! `millrace serve` as a child process for the dashboard's tests (API and
//! browser), and a small HTTP client for its API.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_millrace");

/// A running `millrace serve`, killed when dropped.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// The URL of an API path (`/topics` → `BASE/api/v1/topics`).
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }
}

/// `millrace serve` against `redis` under `prefix` on a free loopback
/// port, with `extra` flags; returns once it answers.
pub async fn serve(redis: &str, prefix: &str, extra: &[&str]) -> Served {
    let port = super::free_port();
    let child = Command::new(BIN)
        .args(["--redis", redis, "--prefix", prefix, "serve"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let probe = format!("{base}/api/v1/server");
    super::wait_until(Duration::from_secs(20), "serve answering", || {
        let url = probe.clone();
        async move { http().get(&url).send().await.is_ok() }
    })
    .await;
    Served { child, base }
}

/// An HTTP client (reqwest is built without a TLS provider of its own:
/// the process's, ring, is installed first).
pub fn http() -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Status and JSON body of a request (a body that is not JSON as a
/// string).
pub async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A library client of the shared server under `prefix`.
pub async fn client(prefix: &str) -> millrace::Client {
    millrace::Client::connect(
        millrace::Config::new(super::shared_url())
            .unwrap()
            .prefix(prefix)
            .unwrap(),
    )
    .await
    .unwrap()
}
