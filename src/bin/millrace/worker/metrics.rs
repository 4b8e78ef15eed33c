//! `/metrics` (Prometheus text format) and `/healthz` for a running worker,
//! served on loopback unless the config says otherwise.
//!
//! `/metrics` is the library's `millrace::Metrics` (counters and the latency
//! histograms from each consumer's `WorkerStats`; lag, pending, owned
//! partitions, members, DLQ depth and the published counter read from
//! Redis at each scrape).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use millrace::{Client, Metrics, WorkerStats};

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
    metrics: Metrics,
}

/// Serves the endpoints on `addr` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    client: Client,
    consumers: Vec<Watched>,
) -> std::io::Result<()> {
    let registry = Metrics::new(&client);
    for c in &consumers {
        registry.add(&c.topic, &c.group, &c.member, c.stats.clone());
    }
    let state = Arc::new(AppState {
        client,
        consumers,
        metrics: registry,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let text = state.metrics.render().await;
    ([(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)], text)
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
