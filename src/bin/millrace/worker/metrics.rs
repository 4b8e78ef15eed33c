//! `/metrics` (Prometheus text format) and `/healthz` for a running worker,
//! served on loopback unless the config says otherwise.
//!
//! Counters and the latency histogram come from each consumer's
//! `WorkerStats`; lag, pending, owned partitions and DLQ depth are read from
//! Redis at each scrape (`describe_group`, `describe_topic`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use millrace::Client;
use millrace::WorkerStats;

/// One consumer as the endpoints see it.
pub struct Watched {
    pub topic: String,
    pub group: String,
    pub member: String,
    pub stats: Arc<WorkerStats>,
}

struct AppState {
    client: Client,
    consumers: Vec<Watched>,
}

/// Serves the endpoints on `addr` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    client: Client,
    consumers: Vec<Watched>,
) -> std::io::Result<()> {
    let state = Arc::new(AppState { client, consumers });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The counters and histogram of one consumer, as Prometheus text.
pub fn render_stats(out: &mut String, topic: &str, group: &str, stats: &WorkerStats) {
    let l = labels(&[("topic", topic), ("group", group)]);
    let counters = [
        ("millrace_handled_total", &stats.handled),
        ("millrace_failed_total", &stats.failed),
        ("millrace_retried_total", &stats.retried),
        ("millrace_dead_lettered_total", &stats.dead_lettered),
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

const HELP: &str = "\
# TYPE millrace_handled_total counter
# TYPE millrace_failed_total counter
# TYPE millrace_retried_total counter
# TYPE millrace_dead_lettered_total counter
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

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut out = String::from(HELP);
    for c in &state.consumers {
        render_stats(&mut out, &c.topic, &c.group, &c.stats);
    }
    let mut up = 1;
    let mut dlq_seen = std::collections::HashSet::new();
    for c in &state.consumers {
        match state.client.describe_group(&c.topic, &c.group).await {
            Ok(info) => {
                let mut owned = 0;
                for p in &info.partitions {
                    let pl = labels(&[
                        ("topic", &c.topic),
                        ("group", &c.group),
                        ("partition", &p.partition.to_string()),
                    ]);
                    let _ = writeln!(out, "millrace_lag{pl} {}", p.lag);
                    let _ = writeln!(out, "millrace_pending{pl} {}", p.pending);
                    if p.owner.as_deref() == Some(c.member.as_str()) {
                        owned += 1;
                    }
                }
                let l = labels(&[("topic", &c.topic), ("group", &c.group)]);
                let _ = writeln!(out, "millrace_owned_partitions{l} {owned}");
            }
            Err(_) => up = 0,
        }
        let base = c.topic.strip_suffix(".dlq").unwrap_or(&c.topic).to_string();
        if dlq_seen.insert(base.clone())
            && let Ok(t) = state.client.describe_topic(&base).await
        {
            let _ = writeln!(
                out,
                "millrace_dlq_depth{} {}",
                labels(&[("topic", &base)]),
                t.dlq_length
            );
        }
    }
    let _ = writeln!(out, "millrace_redis_up {up}");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

async fn healthz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let ping: Result<String, _> = redis::cmd("PING")
        .query_async(&mut state.client.connection())
        .await;
    if ping.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"redis\":\"unreachable\"}".to_string(),
        );
    }
    let mut leases = 0;
    for c in &state.consumers {
        if let Ok(info) = state.client.describe_group(&c.topic, &c.group).await {
            leases += info
                .partitions
                .iter()
                .filter(|p| p.owner.as_deref() == Some(c.member.as_str()))
                .count();
        }
    }
    (
        StatusCode::OK,
        format!(
            "{{\"redis\":\"ok\",\"consumers\":{},\"leases\":{leases}}}",
            state.consumers.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_render_as_prometheus_text() {
        let stats = WorkerStats::default();
        stats.handled.fetch_add(3, Ordering::Relaxed);
        let mut out = String::new();
        render_stats(&mut out, "erp.v1.invoice.created", "pdf", &stats);
        assert!(out.contains(
            "millrace_handled_total{topic=\"erp.v1.invoice.created\",group=\"pdf\"} 3\n"
        ));
        assert!(out.contains("millrace_handler_duration_seconds_bucket{topic=\"erp.v1.invoice.created\",group=\"pdf\",le=\"+Inf\"} 0\n"));
    }
}
