//! The worker's TOML file: parsed and checked before anything connects.
//!
//! Every error names the file, the key (`consumers[1].retry.delay`) and what
//! was expected, on one line. Parsing is two steps: serde reads the shape
//! (unknown keys are refused), then [`check`] turns strings such as
//! durations, modes and rate limits into typed settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use millrace::Mode;
use millrace::RateLimit;
use millrace::StartAt;
use millrace::duration::parse_duration;
use millrace::{Backoff, RetryPolicy};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use crate::cli::TlsFiles;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    redis: Option<String>,
    prefix: Option<String>,
    instance_id: Option<String>,
    drain_timeout: Option<String>,
    session_timeout: Option<String>,
    metrics: Option<RawMetrics>,
    serve: Option<RawServe>,
    otel: Option<RawOtel>,
    tls: Option<RawTls>,
    #[serde(default)]
    consumers: Vec<RawConsumer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    listen: Option<String>,
    read_only: Option<bool>,
    token_file: Option<PathBuf>,
    sample_every: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtel {
    endpoint: String,
    protocol: Option<String>,
    service_name: Option<String>,
}

/// How spans reach the collector: OTLP's two transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318 by convention).
    HttpProtobuf,
}

/// `[otel]`: where the worker's spans go, and over which transport.
#[derive(Clone, Debug, PartialEq)]
pub struct OtelConfig {
    /// The collector's base URL, e.g. `http://127.0.0.1:4317` (gRPC) or
    /// `http://127.0.0.1:4318` (HTTP: `/v1/traces` is added unless the URL
    /// has a path).
    pub endpoint: String,
    /// `protocol = "grpc" | "http/protobuf"`; without it, gRPC when the
    /// endpoint's port is 4317, else HTTP.
    pub protocol: OtlpProtocol,
    /// `service.name` of the spans (default `millrace-worker`).
    pub service_name: String,
}

/// `[serve]`: the dashboard and HTTP API in the worker's process, as
/// `millrace serve` takes them.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub read_only: bool,
    /// Relative to the file's directory once [`load`] has read it.
    pub token_file: Option<PathBuf>,
    pub sample_every: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumer {
    topic: String,
    group: String,
    mode: Option<String>,
    concurrency: Option<usize>,
    rate_limit: Option<String>,
    start: Option<String>,
    retry: Option<RawRetry>,
    validate: Option<bool>,
    result_ttl: Option<String>,
    acks: Option<String>,
    handler: RawHandler,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    backoff: Option<String>,
    delay: Option<String>,
    max_delay: Option<String>,
    jitter: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandler {
    exec: Option<Vec<String>>,
    http: Option<String>,
    ca: Option<PathBuf>,
    timeout: Option<String>,
}

/// What a consumer's messages are handed to.
#[derive(Clone, Debug, PartialEq)]
pub enum HandlerSpec {
    /// A program, run without a shell, one process per message.
    Exec {
        argv: Vec<String>,
        timeout: Duration,
    },
    /// An HTTP endpoint to POST to.
    Http {
        url: String,
        timeout: Duration,
        /// `ca`: the CA an `https://` endpoint is verified with instead of
        /// the system's roots.
        ca: Option<HandlerCa>,
    },
}

/// A handler's `ca` file and the certificates in it.
#[derive(Clone, Debug, PartialEq)]
pub struct HandlerCa {
    /// As written by [`parse`]; relative to the file's directory once
    /// [`load`] has read it.
    pub path: PathBuf,
    /// Every certificate in the file, at least one: filled in by [`load`]
    /// ([`parse`] reads no files and leaves it empty).
    pub certs: Vec<CertificateDer<'static>>,
}

/// One `[[consumers]]` entry, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerConfig {
    pub topic: String,
    pub group: String,
    pub mode: Mode,
    pub concurrency: usize,
    pub rate_limit: Option<RateLimit>,
    /// Where the group starts if this creates it (an existing group keeps
    /// its position).
    pub start: StartAt,
    pub retry: RetryPolicy,
    /// Check each message against the topic's schema before the handler
    /// runs; a mismatch is dead-lettered at once.
    pub validate: bool,
    /// How long the handler's results are kept (0: not kept).
    pub result_ttl: Duration,
    /// Whether acks and dead-letterings wait for replicas.
    pub acks: millrace::Acks,
    pub handler: HandlerSpec,
}

/// The whole file, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerConfig {
    pub redis: Option<String>,
    pub prefix: Option<String>,
    pub instance_id: Option<String>,
    pub drain_timeout: Duration,
    pub session_timeout: Duration,
    /// Where `/metrics` and `/healthz` listen, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The dashboard, if the file asks for it.
    pub serve: Option<ServeConfig>,
    /// Traces, if the file asks for them.
    pub otel: Option<OtelConfig>,
    /// `[tls]`: CA, client certificate and key (relative paths are relative
    /// to the file's directory once [`load`] has read it).
    pub tls: TlsFiles,
    pub consumers: Vec<ConsumerConfig>,
}

/// Default address of the metrics endpoints: loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Default address of the dashboard: loopback only.
pub const DEFAULT_SERVE_LISTEN: &str = "127.0.0.1:8080";
/// Default handler timeout.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads and checks the file. The error is one line: `FILE: KEY: problem`.
pub fn load(path: &Path) -> Result<WorkerConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the worker config: {e}", path.display()))?;
    let mut config = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let resolve = |p: Option<PathBuf>| p.map(|p| dir.join(p));
    config.tls = TlsFiles {
        ca: resolve(config.tls.ca.take()),
        cert: resolve(config.tls.cert.take()),
        key: resolve(config.tls.key.take()),
    };
    if let Some(serve) = &mut config.serve {
        serve.token_file = resolve(serve.token_file.take());
    }
    for (i, c) in config.consumers.iter_mut().enumerate() {
        if let HandlerSpec::Http { ca: Some(ca), .. } = &mut c.handler {
            ca.path = dir.join(&ca.path);
            ca.certs = read_ca(&ca.path)
                .map_err(|e| format!("{}: consumers[{i}].handler.ca: {e}", path.display()))?;
        }
    }
    Ok(config)
}

/// The certificates of a PEM file: at least one, each one a certificate
/// rustls can verify with.
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "expected a PEM CA certificate (-----BEGIN CERTIFICATE-----); {} holds none",
            path.display()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| {
            let why = match e {
                rustls::Error::InvalidCertificate(e) => format!("{e:?}"),
                e => e.to_string(),
            };
            format!(
                "{} holds a certificate that cannot be used as a CA ({why})",
                path.display()
            )
        })?;
    }
    Ok(certs)
}

/// Parses and checks TOML text (errors without the file name).
pub fn parse(text: &str) -> Result<WorkerConfig, String> {
    let line_of = |e: &toml::de::Error| {
        e.span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
    };
    let de = toml::de::Deserializer::parse(text).map_err(|e| {
        let at = line_of(&e)
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        format!("{at}{}", e.message().trim().replace('\n', " "))
    })?;
    // The path to the bad key (`consumers[0].retry.max_attempts`).
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = line_of(&inner)
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        let what = inner.message().trim().replace('\n', " ");
        if path == "." || path.is_empty() {
            format!("{what}{at}")
        } else {
            format!("{path}{at}: {what}")
        }
    })?;
    check(raw)
}

fn duration(key: &str, value: Option<&String>, default: Duration) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(v).map_err(|_| {
            format!("{key}: expected a duration such as 500ms, 30s, 5m, 2h; got {v:?}")
        }),
    }
}

fn check(raw: RawConfig) -> Result<WorkerConfig, String> {
    if let Some(p) = &raw.prefix {
        millrace::keys::validate_prefix(p).map_err(|e| format!("prefix: {e}"))?;
    }
    if let Some(id) = &raw.instance_id {
        millrace::keys::validate_name("instance id", id)
            .map_err(|e| format!("instance_id: {e}"))?;
    }
    if let Some(url) = &raw.redis {
        millrace::Config::new(url).map_err(|e| format!("redis: {e}"))?;
    }
    let metrics = match &raw.metrics {
        None => None,
        Some(m) => {
            let listen = m.listen.as_deref().unwrap_or(DEFAULT_METRICS_LISTEN);
            Some(listen.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "metrics.listen: expected an address such as 127.0.0.1:9464; got {listen:?}"
                )
            })?)
        }
    };
    let serve = match raw.serve {
        None => None,
        Some(v) => {
            let listen = v.listen.as_deref().unwrap_or(DEFAULT_SERVE_LISTEN);
            let listen = listen.parse::<SocketAddr>().map_err(|_| {
                format!("serve.listen: expected an address such as 127.0.0.1:8080; got {listen:?}")
            })?;
            if !listen.ip().is_loopback() && v.token_file.is_none() {
                return Err(format!(
                    "serve.listen: {listen} is beyond loopback: give serve.token_file (anyone who can reach it could publish, replay and purge)"
                ));
            }
            Some(ServeConfig {
                listen,
                read_only: v.read_only.unwrap_or(false),
                token_file: v.token_file,
                sample_every: duration(
                    "serve.sample_every",
                    v.sample_every.as_ref(),
                    Duration::from_secs(10),
                )?,
            })
        }
    };
    let otel = match raw.otel {
        None => None,
        Some(o) => {
            let url = url::Url::parse(&o.endpoint).map_err(|e| {
                format!(
                    "otel.endpoint: expected a URL such as http://127.0.0.1:4317; got {:?} ({e})",
                    o.endpoint
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "otel.endpoint: expected an http:// or https:// URL; got {:?}",
                    o.endpoint
                ));
            }
            let protocol = match o.protocol.as_deref() {
                Some("grpc") => OtlpProtocol::Grpc,
                Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
                None if url.port_or_known_default() == Some(4317) => OtlpProtocol::Grpc,
                None => OtlpProtocol::HttpProtobuf,
                Some(other) => {
                    return Err(format!(
                        "otel.protocol: expected \"grpc\" or \"http/protobuf\"; got {other:?}"
                    ));
                }
            };
            let service_name = o.service_name.unwrap_or_else(|| "millrace-worker".into());
            if service_name.is_empty() {
                return Err("otel.service_name: expected a name, got an empty string".into());
            }
            Some(OtelConfig {
                endpoint: o.endpoint,
                protocol,
                service_name,
            })
        }
    };
    let tls = match raw.tls {
        None => TlsFiles::default(),
        Some(t) => {
            if t.cert.is_some() != t.key.is_some() {
                return Err(
                    "tls: expected cert and key together (the client certificate and its key)"
                        .into(),
                );
            }
            TlsFiles {
                ca: t.ca,
                cert: t.cert,
                key: t.key,
            }
        }
    };
    if raw.consumers.is_empty() {
        return Err("consumers: expected at least one [[consumers]] entry".into());
    }
    let mut consumers = Vec::new();
    for (i, c) in raw.consumers.into_iter().enumerate() {
        let key = |k: &str| format!("consumers[{i}].{k}");
        millrace::keys::validate_topic(c.topic.strip_suffix(".dlq").unwrap_or(&c.topic))
            .map_err(|e| format!("{}: {e}", key("topic")))?;
        millrace::keys::validate_name("group", &c.group)
            .map_err(|e| format!("{}: {e}", key("group")))?;
        let mode = match c.mode.as_deref() {
            None | Some("ordered") => Mode::Ordered,
            Some("shared") => Mode::Shared,
            Some(other) => {
                return Err(format!(
                    "{}: expected \"ordered\" or \"shared\"; got {other:?}",
                    key("mode")
                ));
            }
        };
        let concurrency = c.concurrency.unwrap_or(16);
        if concurrency == 0 {
            return Err(format!("{}: expected at least 1", key("concurrency")));
        }
        let rate_limit = c
            .rate_limit
            .as_deref()
            .map(|r| {
                r.parse::<RateLimit>().map_err(|_| {
                    format!(
                        "{}: expected N/DURATION such as \"100/1s\"; got {r:?}",
                        key("rate_limit")
                    )
                })
            })
            .transpose()?;
        // The forms of `group reset --to`, with the same parser.
        let start = match c.start.as_deref() {
            None => StartAt::Earliest,
            Some(v) => v.parse::<StartAt>().map_err(|_| {
                format!(
                    "{}: expected earliest, latest, an RFC 3339 time such as \"2026-12-01T00:00:00Z\" or a stream id such as \"1764237600000-0\"; got {v:?}",
                    key("start")
                )
            })?,
        };
        let mut retry = RetryPolicy::default();
        if let Some(r) = &c.retry {
            if let Some(n) = r.max_attempts {
                retry.max_attempts = n;
            }
            if let Some(b) = &r.backoff {
                retry.backoff = b.parse::<Backoff>().map_err(|_| {
                    format!(
                        "{}: expected \"fixed\" or \"exponential\"; got {b:?}",
                        key("retry.backoff")
                    )
                })?;
            }
            retry.delay = duration(&key("retry.delay"), r.delay.as_ref(), retry.delay)?;
            retry.max_delay = duration(
                &key("retry.max_delay"),
                r.max_delay.as_ref(),
                retry.max_delay.max(retry.delay),
            )?;
            if let Some(j) = r.jitter {
                retry.jitter = j;
            }
            retry
                .validate()
                .map_err(|e| format!("{}: {e}", key("retry")))?;
        }
        let timeout = duration(
            &key("handler.timeout"),
            c.handler.timeout.as_ref(),
            DEFAULT_HANDLER_TIMEOUT,
        )?;
        let result_ttl = duration(
            &key("result_ttl"),
            c.result_ttl.as_ref(),
            millrace::DEFAULT_RESULT_TTL,
        )?;
        let acks = match &c.acks {
            None => millrace::Acks::Primary,
            Some(spec) => {
                millrace::Acks::parse(spec).map_err(|e| format!("{}: {e}", key("acks")))?
            }
        };
        let ca = c.handler.ca.map(|path| HandlerCa {
            path,
            certs: Vec::new(),
        });
        let handler = match (c.handler.exec, c.handler.http) {
            (Some(argv), None) => {
                if ca.is_some() {
                    return Err(format!(
                        "{}: expected only with http = \"https://...\"; this handler is exec",
                        key("handler.ca")
                    ));
                }
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(format!(
                        "{}: expected a program and its arguments, e.g. [\"./bin/render\", \"--stdin\"]",
                        key("handler.exec")
                    ));
                }
                HandlerSpec::Exec { argv, timeout }
            }
            (None, Some(url)) => {
                let https = url.starts_with("https://");
                if !https && !url.starts_with("http://") {
                    return Err(format!(
                        "{}: expected an http:// or https:// URL; got {url:?}",
                        key("handler.http")
                    ));
                }
                if ca.is_some() && !https {
                    return Err(format!(
                        "{}: expected only with http = \"https://...\"; got http = {url:?}",
                        key("handler.ca")
                    ));
                }
                HandlerSpec::Http { url, timeout, ca }
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{}: expected exec or http, not both",
                    key("handler")
                ));
            }
            (None, None) => {
                return Err(format!(
                    "{}: expected exec = [...] or http = \"...\"",
                    key("handler")
                ));
            }
        };
        if consumers
            .iter()
            .any(|o: &ConsumerConfig| o.topic == c.topic && o.group == c.group)
        {
            return Err(format!(
                "{}: topic {} and group {} appear twice",
                key("group"),
                c.topic,
                c.group
            ));
        }
        consumers.push(ConsumerConfig {
            topic: c.topic,
            group: c.group,
            mode,
            concurrency,
            rate_limit,
            start,
            retry,
            validate: c.validate.unwrap_or(false),
            result_ttl,
            acks,
            handler,
        });
    }
    Ok(WorkerConfig {
        redis: raw.redis,
        prefix: raw.prefix,
        instance_id: raw.instance_id,
        drain_timeout: duration(
            "drain_timeout",
            raw.drain_timeout.as_ref(),
            Duration::from_secs(30),
        )?,
        session_timeout: duration(
            "session_timeout",
            raw.session_timeout.as_ref(),
            Duration::from_secs(10),
        )?,
        metrics,
        serve,
        otel,
        tls,
        consumers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
redis = "redis://127.0.0.1:6379"
prefix = "mr"
instance_id = "worker-a"

[metrics]
listen = "127.0.0.1:9464"

[[consumers]]
topic = "erp.v1.invoice.created"
group = "pdf-report"
mode = "ordered"
concurrency = 16
rate_limit = "100/1s"

[consumers.retry]
max_attempts = 5
backoff = "exponential"
delay = "500ms"
max_delay = "1m"
jitter = 0.2

[consumers.handler]
exec = ["./bin/render-pdf", "--stdin"]
timeout = "30s"
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.consumers.len(), 1);
        let k = &c.consumers[0];
        assert_eq!(k.retry.max_attempts, 5);
        assert_eq!(k.retry.delay, Duration::from_millis(500));
        assert_eq!(k.rate_limit.unwrap().permits, 100);
        assert_eq!(
            k.handler,
            HandlerSpec::Exec {
                argv: vec!["./bin/render-pdf".into(), "--stdin".into()],
                timeout: Duration::from_secs(30)
            }
        );
        assert_eq!(c.metrics.unwrap().to_string(), "127.0.0.1:9464");
        assert!(!k.validate, "validation on receipt is off unless asked for");
    }

    #[test]
    fn result_ttl_is_a_duration_zero_keeps_none() {
        assert_eq!(
            parse(EXAMPLE).unwrap().consumers[0].result_ttl,
            millrace::DEFAULT_RESULT_TTL
        );
        let off = EXAMPLE.replace("concurrency = 16", "concurrency = 16\nresult_ttl = \"0s\"");
        assert_eq!(parse(&off).unwrap().consumers[0].result_ttl, Duration::ZERO);
        let bad = EXAMPLE.replace(
            "concurrency = 16",
            "concurrency = 16\nresult_ttl = \"soon\"",
        );
        let e = parse(&bad).unwrap_err();
        assert!(e.contains("result_ttl"), "{e}");
    }

    #[test]
    fn acks_are_primary_or_replicas() {
        assert_eq!(
            parse(EXAMPLE).unwrap().consumers[0].acks,
            millrace::Acks::Primary
        );
        let on = EXAMPLE.replace(
            "concurrency = 16",
            "concurrency = 16\nacks = \"replicas:1:2s\"",
        );
        assert_eq!(
            parse(&on).unwrap().consumers[0].acks,
            millrace::Acks::replicas(1, Duration::from_secs(2))
        );
        let bad = EXAMPLE.replace("concurrency = 16", "concurrency = 16\nacks = \"all\"");
        let e = parse(&bad).unwrap_err();
        assert!(e.contains("acks") && e.contains("replicas:N"), "{e}");
    }

    #[test]
    fn validate_is_a_boolean() {
        let on = EXAMPLE.replace("concurrency = 16", "concurrency = 16\nvalidate = true");
        assert!(parse(&on).unwrap().consumers[0].validate);
        let bad = EXAMPLE.replace("concurrency = 16", "concurrency = 16\nvalidate = \"yes\"");
        let e = parse(&bad).unwrap_err();
        assert!(e.contains("validate"), "{e}");
    }

    #[test]
    fn otel_needs_an_http_endpoint_and_picks_the_protocol_by_port() {
        assert_eq!(parse(EXAMPLE).unwrap().otel, None);
        let with =
            |table: &str| EXAMPLE.replace("[metrics]", &format!("[otel]\n{table}\n\n[metrics]"));
        let o = parse(&with("endpoint = \"http://127.0.0.1:4318\""))
            .unwrap()
            .otel
            .unwrap();
        assert_eq!(o.endpoint, "http://127.0.0.1:4318");
        assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(o.service_name, "millrace-worker");
        // OTLP's gRPC port means gRPC, unless the file says otherwise.
        let o = parse(&with("endpoint = \"http://127.0.0.1:4317\""))
            .unwrap()
            .otel
            .unwrap();
        assert_eq!(o.protocol, OtlpProtocol::Grpc);
        let o = parse(&with(
            "endpoint = \"http://127.0.0.1:4317\"\nprotocol = \"http/protobuf\"",
        ))
        .unwrap()
        .otel
        .unwrap();
        assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
        let o = parse(&with(
            "endpoint = \"https://c.example\"\nprotocol = \"grpc\"",
        ))
        .unwrap()
        .otel
        .unwrap();
        assert_eq!(o.protocol, OtlpProtocol::Grpc);
        for (bad, says) in [
            ("endpoint = \"127.0.0.1:4317\"", "otel.endpoint: expected"),
            (
                "endpoint = \"grpc://127.0.0.1:4317\"",
                "http:// or https://",
            ),
            (
                "endpoint = \"http://h:4318\"\nprotocol = \"http/json\"",
                "otel.protocol: expected \"grpc\" or \"http/protobuf\"; got \"http/json\"",
            ),
            (
                "endpoint = \"http://h:4318\"\nservice_name = \"\"",
                "otel.service_name",
            ),
            ("endpoint = \"http://h:4318\"\nsampler = 1", "sampler"),
        ] {
            let e = parse(&with(bad)).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn serve_listens_on_loopback_and_beyond_only_with_a_token() {
        assert_eq!(parse(EXAMPLE).unwrap().serve, None);
        let bare = EXAMPLE.replace("[metrics]", "[serve]\n\n[metrics]");
        let s = parse(&bare).unwrap().serve.unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert!(!s.read_only);
        assert_eq!(s.sample_every, Duration::from_secs(10));
        let open = EXAMPLE.replace(
            "[metrics]",
            "[serve]\nlisten = \"0.0.0.0:8080\"\n\n[metrics]",
        );
        let e = parse(&open).unwrap_err();
        assert!(
            e.starts_with("serve.listen: 0.0.0.0:8080 is beyond loopback"),
            "{e}"
        );
        let guarded = EXAMPLE.replace(
            "[metrics]",
            "[serve]\nlisten = \"0.0.0.0:8080\"\ntoken_file = \"token\"\nread_only = true\n\n[metrics]",
        );
        let s = parse(&guarded).unwrap().serve.unwrap();
        assert_eq!(s.token_file, Some(PathBuf::from("token")));
        assert!(s.read_only);
        let typo = EXAMPLE.replace("[metrics]", "[serve]\nlisen = \"x\"\n\n[metrics]");
        assert!(parse(&typo).unwrap_err().contains("lisen"));
    }

    #[test]
    fn metrics_listen_on_loopback_unless_told_otherwise() {
        let bare = EXAMPLE.replace("listen = \"127.0.0.1:9464\"", "");
        let addr = parse(&bare).unwrap().metrics.unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.to_string(), DEFAULT_METRICS_LISTEN);
        assert_eq!(parse(&bare.replace("[metrics]", "")).unwrap().metrics, None);
    }

    #[test]
    fn tls_files_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        let text = EXAMPLE.replace(
            "[metrics]",
            "[tls]\nca = \"certs/ca.pem\"\ncert = \"/abs/client.pem\"\nkey = \"client.key\"\n\n[metrics]",
        );
        std::fs::write(&path, text).unwrap();
        let tls = load(&path).unwrap().tls;
        assert_eq!(tls.ca, Some(dir.path().join("certs/ca.pem")));
        assert_eq!(tls.cert, Some(PathBuf::from("/abs/client.pem")));
        assert_eq!(tls.key, Some(dir.path().join("client.key")));
        let half = EXAMPLE.replace("[metrics]", "[tls]\ncert = \"c.pem\"\n\n[metrics]");
        assert_eq!(
            parse(&half).unwrap_err(),
            "tls: expected cert and key together (the client certificate and its key)"
        );
        let typo = EXAMPLE.replace("[metrics]", "[tls]\ncacert = \"c.pem\"\n\n[metrics]");
        assert!(
            parse(&typo).unwrap_err().starts_with("tls.cacert"),
            "{}",
            parse(&typo).unwrap_err()
        );
    }

    /// EXAMPLE with `start = VALUE`, parsed.
    fn start(value: &str) -> Result<StartAt, String> {
        let text = EXAMPLE.replace("concurrency = 16", &format!("start = {value:?}"));
        parse(&text).map(|c| c.consumers[0].start.clone())
    }

    #[test]
    fn start_takes_the_forms_of_group_reset_to() {
        let bare = parse(EXAMPLE).unwrap();
        assert_eq!(bare.consumers[0].start, StartAt::Earliest);
        assert_eq!(start("earliest"), Ok(StartAt::Earliest));
        assert_eq!(start("latest"), Ok(StartAt::Latest));
        assert_eq!(
            start("2026-12-01T00:00:00Z"),
            Ok(StartAt::TimeMs(1_796_083_200_000))
        );
        assert_eq!(
            start("2026-12-01T01:00:00.250+01:00"),
            Ok(StartAt::TimeMs(1_796_083_200_250))
        );
        assert_eq!(
            start("1764237600000-0"),
            Ok(StartAt::Id(millrace::StreamId {
                ms: 1_764_237_600_000,
                seq: 0
            }))
        );
        assert_eq!(
            start("1764237600000-7"),
            Ok(StartAt::Id(millrace::StreamId {
                ms: 1_764_237_600_000,
                seq: 7
            }))
        );
        // A bare millisecond time is an id too (`<ms>-0`), as in Redis.
        assert_eq!(
            start("1764237600000"),
            Ok(StartAt::Id(millrace::StreamId {
                ms: 1_764_237_600_000,
                seq: 0
            }))
        );
        let expected = "consumers[0].start: expected earliest, latest, an RFC 3339 time such as \"2026-12-01T00:00:00Z\" or a stream id such as \"1764237600000-0\"; got";
        for bad in [
            "",
            "Earliest",
            "now",
            "2026-12-01",
            "2026-13-01T00:00:00Z",
            "1764237600000-x",
            "-1-0",
        ] {
            let e = start(bad).unwrap_err();
            assert_eq!(e, format!("{expected} {bad:?}"));
        }
    }

    #[test]
    fn a_ca_goes_with_an_https_handler_only() {
        let https = EXAMPLE.replace(
            "exec = [\"./bin/render-pdf\", \"--stdin\"]",
            "http = \"https://hooks.internal/pdf\"\nca = \"certs/ca.pem\"",
        );
        match &parse(&https).unwrap().consumers[0].handler {
            HandlerSpec::Http { url, ca, .. } => {
                assert_eq!(url, "https://hooks.internal/pdf");
                let ca = ca.as_ref().unwrap();
                assert_eq!(ca.path, PathBuf::from("certs/ca.pem"));
                assert!(ca.certs.is_empty(), "parse reads no files");
            }
            other => panic!("{other:?}"),
        }
        let plain = https.replace("https://", "http://");
        assert_eq!(
            parse(&plain).unwrap_err(),
            "consumers[0].handler.ca: expected only with http = \"https://...\"; got http = \"http://hooks.internal/pdf\""
        );
        let without = https.replace("ca = \"certs/ca.pem\"", "");
        match &parse(&without).unwrap().consumers[0].handler {
            HandlerSpec::Http { ca, .. } => assert_eq!(ca, &None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn load_reads_the_ca_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        std::fs::write(dir.path().join("certs/ca.pem"), cert.pem()).unwrap();
        let write = |ca: &str| {
            let path = dir.path().join("w.toml");
            let text = EXAMPLE.replace(
                "exec = [\"./bin/render-pdf\", \"--stdin\"]",
                &format!("http = \"https://127.0.0.1:8443/pdf\"\nca = {ca:?}"),
            );
            std::fs::write(&path, text).unwrap();
            path
        };
        let path = write("certs/ca.pem");
        match &load(&path).unwrap().consumers[0].handler {
            HandlerSpec::Http { ca: Some(ca), .. } => {
                assert_eq!(ca.path, dir.path().join("certs/ca.pem"));
                assert_eq!(ca.certs, vec![cert.der().clone()]);
            }
            other => panic!("{other:?}"),
        }
        // Each error names the file, the key and the CA file.
        std::fs::write(dir.path().join("empty.pem"), "no certificate here\n").unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(
            dir.path().join("broken.pem"),
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("junk.pem"),
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let errors: String = [
            "missing.pem",
            "empty.pem",
            "key.pem",
            "broken.pem",
            "junk.pem",
            "certs",
        ]
        .iter()
        .map(|ca| {
            let e = load(&write(ca)).unwrap_err();
            format!("{}\n", e.replace(&dir.path().display().to_string(), "DIR"))
        })
        .collect();
        insta::assert_snapshot!(errors);
    }

    #[test]
    fn errors_name_the_key_and_what_was_expected() {
        let cases = [
            EXAMPLE.replace("\"500ms\"", "\"fast\""),
            EXAMPLE.replace("\"ordered\"", "\"fifo\""),
            EXAMPLE.replace("\"100/1s\"", "\"lots\""),
            EXAMPLE.replace(
                "exec = [\"./bin/render-pdf\", \"--stdin\"]",
                "http = \"ftp://x\"",
            ),
            EXAMPLE.replace(
                "exec = [\"./bin/render-pdf\", \"--stdin\"]",
                "http = \"http://x/hook\"\nca = \"ca.pem\"",
            ),
            EXAMPLE.replace("timeout = \"30s\"", "ca = \"ca.pem\""),
            EXAMPLE.replace("concurrency = 16", "start = \"yesterday\""),
            EXAMPLE.replace("concurrency = 16", "start = \"2026-12-01T00:00:00\""),
            EXAMPLE.replace("exec = [\"./bin/render-pdf\", \"--stdin\"]", ""),
            EXAMPLE.replace("concurrency = 16", "concurency = 16"),
            EXAMPLE.replace("\"erp.v1.invoice.created\"", "\"Invoices\""),
            EXAMPLE.replace("listen = \"127.0.0.1:9464\"", "listen = \"everywhere\""),
            EXAMPLE.replace("max_attempts = 5", "max_attempts = \"five\""),
            "[[consumers]]\ntopic = \"t\"\n".to_string(),
            "".to_string(),
        ];
        let text: String = cases
            .iter()
            .map(|c| format!("{}\n", parse(c).unwrap_err()))
            .collect();
        insta::assert_snapshot!(text);
    }
}
