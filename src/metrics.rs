//! Prometheus metrics of the workers running in this process: the series
//! `millrace worker` serves at `/metrics`, for a service of your own.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::client::Client;
use crate::consumer::WorkerStats;

/// The workers whose metrics a scrape reports, and the client that reads
/// their groups' lag, pending counts, leases and dead letters from Redis.
///
/// [`Metrics::render`] returns the Prometheus text format (the same series
/// `millrace worker` serves at `/metrics`):
///
/// | Series | Type | Labels | From |
/// |---|---|---|---|
/// | `millrace_handled_total` | counter | `topic`, `group` | [`WorkerStats::handled`] |
/// | `millrace_failed_total` | counter | `topic`, `group` | [`WorkerStats::failed`] (errors and panics) |
/// | `millrace_retried_total` | counter | `topic`, `group` | [`WorkerStats::retried`] |
/// | `millrace_dead_lettered_total` | counter | `topic`, `group` | [`WorkerStats::dead_lettered`] |
/// | `millrace_panicked_total` | counter | `topic`, `group` | [`WorkerStats::panicked`] |
/// | `millrace_acked_total` | counter | `topic`, `group` | [`WorkerStats::acked`] |
/// | `millrace_stale_acks_total` | counter | `topic`, `group` | [`WorkerStats::stale_acks`] |
/// | `millrace_trimmed_unhandled_total` | counter | `topic`, `group` | [`WorkerStats::trimmed_unhandled`] |
/// | `millrace_rebalances_total` | counter | `topic`, `group` | [`WorkerStats::rebalances`] |
/// | `millrace_handler_duration_seconds` | histogram | `topic`, `group`, `le` | [`WorkerStats::latency`] (buckets: [`LATENCY_BUCKETS`](crate::LATENCY_BUCKETS)) |
/// | `millrace_lag` | gauge | `topic`, `group`, `partition` | [`Client::describe_group`] |
/// | `millrace_pending` | gauge | `topic`, `group`, `partition` | [`Client::describe_group`] |
/// | `millrace_owned_partitions` | gauge | `topic`, `group` | partition leases held by the member |
/// | `millrace_dlq_depth` | gauge | `topic` | [`Client::describe_topic`] (once per topic) |
/// | `millrace_redis_up` | gauge | none | 0 if a group could not be read at this scrape |
///
/// The counters and the histogram are read from memory; the gauges cost a
/// few Redis round trips per watched worker at each scrape. Redis being
/// unreachable does not fail the scrape: the gauges it would have given are
/// left out and `millrace_redis_up` is 0.
///
/// `Metrics` is a cheap handle (clones share the same list of workers), so
/// it can be the state of an HTTP route and still take workers started
/// later. Serving it with axum:
///
/// ```no_run
/// use axum::extract::State;
/// use axum::http::header::CONTENT_TYPE;
/// use axum::response::IntoResponse;
/// use axum::routing::get;
/// use millrace::{Client, Metrics, Worker};
///
/// async fn metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
///     ([(CONTENT_TYPE, Metrics::CONTENT_TYPE)], metrics.render().await)
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::open("redis://127.0.0.1:6379").await?;
/// let worker = Worker::builder(&client, "pdf-report")
///     .handle_raw("erp.v1.invoice.created", |_msg, _ctx| async { Ok(()) })
///     .build()?;
///
/// let registry = Metrics::new(&client);
/// // Before `start`, which consumes the worker.
/// registry.add(
///     "erp.v1.invoice.created",
///     "pdf-report",
///     worker.member_id(),
///     worker.stats(),
/// );
/// let handle = worker.start().await?;
///
/// let app = axum::Router::new()
///     .route("/metrics", get(metrics))
///     .with_state(registry);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.ok(); })
///     .await?;
/// handle.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Metrics {
    client: Client,
    watched: Arc<Mutex<Vec<Watched>>>,
}

/// One worker's part in a scrape.
#[derive(Clone)]
struct Watched {
    topic: String,
    group: String,
    member: String,
    stats: Arc<WorkerStats>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let watched = self.snapshot();
        f.debug_struct("Metrics")
            .field(
                "watched",
                &watched
                    .iter()
                    .map(|w| (&w.topic, &w.group, &w.member))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The `Content-Type` of what [`Metrics::render`] returns (Prometheus
    /// text format 0.0.4).
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4";

    /// An empty registry whose gauges are read through `client`.
    pub fn new(client: &Client) -> Metrics {
        Metrics {
            client: client.clone(),
            watched: Arc::default(),
        }
    }

    /// Adds a worker's consumption of `topic` in `group`: `member` is its
    /// [`Worker::member_id`](crate::Worker::member_id) (for the partitions it
    /// owns) and `stats` its [`Worker::stats`](crate::Worker::stats), taken
    /// before [`Worker::start`](crate::Worker::start).
    ///
    /// A worker's counters cover all the topics it handles: add a worker
    /// that handles several topics once per topic and each topic's series
    /// show the worker's totals (so do not sum them over topics).
    pub fn add(&self, topic: &str, group: &str, member: &str, stats: Arc<WorkerStats>) {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Watched {
                topic: topic.to_string(),
                group: group.to_string(),
                member: member.to_string(),
                stats,
            });
    }

    /// The metrics now, in the Prometheus text format
    /// ([`Metrics::CONTENT_TYPE`]). Reads each watched group (and each
    /// topic's dead letters) from Redis; a failed read leaves those gauges
    /// out and sets `millrace_redis_up` to 0 rather than failing.
    pub async fn render(&self) -> String {
        let watched = self.snapshot();
        let mut out = String::from(TYPES);
        for w in &watched {
            render_stats(&mut out, &w.topic, &w.group, &w.stats);
        }
        let mut up = 1;
        let mut dlq_seen = HashSet::new();
        for w in &watched {
            match self.client.describe_group(&w.topic, &w.group).await {
                Ok(info) => {
                    let mut owned = 0;
                    for p in &info.partitions {
                        let pl = labels(&[
                            ("topic", &w.topic),
                            ("group", &w.group),
                            ("partition", &p.partition.to_string()),
                        ]);
                        let _ = writeln!(out, "millrace_lag{pl} {}", p.lag);
                        let _ = writeln!(out, "millrace_pending{pl} {}", p.pending);
                        if p.owner.as_deref() == Some(w.member.as_str()) {
                            owned += 1;
                        }
                    }
                    let l = labels(&[("topic", &w.topic), ("group", &w.group)]);
                    let _ = writeln!(out, "millrace_owned_partitions{l} {owned}");
                }
                Err(_) => up = 0,
            }
            let base = w.topic.strip_suffix(".dlq").unwrap_or(&w.topic);
            if dlq_seen.insert(base.to_string())
                && let Ok(t) = self.client.describe_topic(base).await
            {
                let l = labels(&[("topic", base)]);
                let _ = writeln!(out, "millrace_dlq_depth{l} {}", t.dlq_length);
            }
        }
        let _ = writeln!(out, "millrace_redis_up {up}");
        out
    }

    fn snapshot(&self) -> Vec<Watched> {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The `# TYPE` lines, first in every scrape.
const TYPES: &str = "\
# TYPE millrace_handled_total counter
# TYPE millrace_failed_total counter
# TYPE millrace_retried_total counter
# TYPE millrace_dead_lettered_total counter
# TYPE millrace_panicked_total counter
# TYPE millrace_acked_total counter
# TYPE millrace_stale_acks_total counter
# TYPE millrace_trimmed_unhandled_total counter
# TYPE millrace_rebalances_total counter
# TYPE millrace_handler_duration_seconds histogram
# TYPE millrace_lag gauge
# TYPE millrace_pending gauge
# TYPE millrace_owned_partitions gauge
# TYPE millrace_dlq_depth gauge
# TYPE millrace_redis_up gauge
";

/// `{k="v",...}`, values escaped as the text format wants (`\\`, `\"`,
/// `\n`).
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// The counters and histogram of one consumer.
fn render_stats(out: &mut String, topic: &str, group: &str, stats: &WorkerStats) {
    let l = labels(&[("topic", topic), ("group", group)]);
    let counters: [(&str, &AtomicU64); 9] = [
        ("millrace_handled_total", &stats.handled),
        ("millrace_failed_total", &stats.failed),
        ("millrace_retried_total", &stats.retried),
        ("millrace_dead_lettered_total", &stats.dead_lettered),
        ("millrace_panicked_total", &stats.panicked),
        ("millrace_acked_total", &stats.acked),
        ("millrace_stale_acks_total", &stats.stale_acks),
        ("millrace_trimmed_unhandled_total", &stats.trimmed_unhandled),
        ("millrace_rebalances_total", &stats.rebalances),
    ];
    for (name, v) in counters {
        let _ = writeln!(out, "{name}{l} {}", v.load(Ordering::Relaxed));
    }
    let (buckets, count, sum) = stats.latency.cumulative();
    for (le, n) in buckets {
        let bl = labels(&[("topic", topic), ("group", group), ("le", &le.to_string())]);
        let _ = writeln!(out, "millrace_handler_duration_seconds_bucket{bl} {n}");
    }
    let bl = labels(&[("topic", topic), ("group", group), ("le", "+Inf")]);
    let _ = writeln!(out, "millrace_handler_duration_seconds_bucket{bl} {count}");
    let _ = writeln!(out, "millrace_handler_duration_seconds_sum{l} {sum}");
    let _ = writeln!(out, "millrace_handler_duration_seconds_count{l} {count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_render_as_prometheus_text() {
        let stats = WorkerStats::default();
        stats.handled.fetch_add(3, Ordering::Relaxed);
        stats.panicked.fetch_add(1, Ordering::Relaxed);
        let mut out = String::new();
        render_stats(&mut out, "erp.v1.invoice.created", "pdf", &stats);
        let l = "{topic=\"erp.v1.invoice.created\",group=\"pdf\"}";
        assert!(
            out.contains(&format!("millrace_handled_total{l} 3\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("millrace_panicked_total{l} 1\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("millrace_failed_total{l} 0\n")),
            "{out}"
        );
        assert!(out.contains("millrace_handler_duration_seconds_bucket{topic=\"erp.v1.invoice.created\",group=\"pdf\",le=\"0.001\"} 0\n"), "{out}");
        assert!(out.contains("millrace_handler_duration_seconds_bucket{topic=\"erp.v1.invoice.created\",group=\"pdf\",le=\"10\"} 0\n"), "{out}");
        assert!(out.contains("millrace_handler_duration_seconds_bucket{topic=\"erp.v1.invoice.created\",group=\"pdf\",le=\"+Inf\"} 0\n"), "{out}");
        assert!(
            out.contains(&format!("millrace_handler_duration_seconds_sum{l} 0\n")),
            "{out}"
        );
    }

    #[test]
    fn every_series_has_a_type_line() {
        let stats = WorkerStats::default();
        let mut out = String::new();
        render_stats(&mut out, "t", "g", &stats);
        for line in out.lines() {
            let name = line.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| f.ends_with("_seconds"))
                .unwrap_or(name);
            assert!(TYPES.contains(&format!("# TYPE {family} ")), "{family}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("topic", "a\\b\"c\nd"), ("group", "g")]),
            "{topic=\"a\\\\b\\\"c\\nd\",group=\"g\"}"
        );
    }
}
