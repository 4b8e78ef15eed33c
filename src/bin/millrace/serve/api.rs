//! `/api/v1`: topics, messages (browse, show, publish), groups (describe,
//! pause, resume), dead letters and schedules, as JSON. Errors are
//! `{"error": kind, "message": text}` with the status their kind means:
//! 400 invalid input, 404 not found, 413 too large, 503 Redis unreachable.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use millrace::{MessageId, StartAt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use crate::tail_cmd::TailLine;

/// Most messages one page of a topic shows.
pub const MAX_PAGE: usize = 500;
/// Most records one publish request may carry.
pub const MAX_BATCH: usize = 10_000;
/// The largest request body accepted (a batch of records).
pub const MAX_BODY: usize = 64 << 20;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/topics", get(topics))
        .route("/topics/{topic}", get(topic))
        .route("/topics/{topic}/messages", get(messages).post(publish))
        .route("/topics/{topic}/messages/{id}", get(message))
        .route("/topics/{topic}/groups/{group}", get(group))
        .route("/topics/{topic}/groups/{group}/pause", post(pause))
        .route("/topics/{topic}/groups/{group}/resume", post(resume))
        .route(
            "/topics/{topic}/groups/{group}/reset",
            get(reset_plan).post(reset),
        )
        .route("/topics/{topic}/dlq", get(dead_letters))
        .route("/topics/{topic}/dlq/replay", post(replay))
        .route("/topics/{topic}/dlq/purge", post(purge))
        .route("/schedules", get(schedules))
        .route("/server", get(server))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// A JSON response.
fn ok(v: Value) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        v.to_string(),
    )
        .into_response()
}

/// An error response: `{"error": kind, "message": text}`.
pub fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut r = ok(json!({"error": kind, "message": message}));
    *r.status_mut() = status;
    r
}

/// A library error as its response.
fn failed(e: millrace::Error) -> Response {
    let (status, kind) = status_of(&e);
    error(status, kind, &e.to_string())
}

/// The status and kind a library error answers with.
fn status_of(e: &millrace::Error) -> (StatusCode, &'static str) {
    use millrace::Error as E;
    match e {
        E::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        E::TopicNotFound(_) | E::GroupNotFound { .. } | E::MessageNotFound { .. } => {
            (StatusCode::NOT_FOUND, "not_found")
        }
        e if e.is_invalid_input() => (StatusCode::BAD_REQUEST, "invalid"),
        e if e.is_unreachable() => (StatusCode::SERVICE_UNAVAILABLE, "unreachable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "failed"),
    }
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid", &message.into())
}

/// Every topic with its lengths and every group's lag, pending, members
/// and pause flag: the overview, in a fixed number of Redis round trips
/// (`Client::overview`; its `time_ms` and `round_trips` come along).
async fn topics(State(s): State<Shared>) -> Response {
    match s.client.overview().await {
        Ok(o) => ok(serde_json::to_value(o).unwrap_or(Value::Null)),
        Err(e) => failed(e),
    }
}

/// One topic as the overview shows it.
async fn topic(State(s): State<Shared>, Path(topic): Path<String>) -> Response {
    match s.client.topic_overview(&topic).await {
        Ok(t) => ok(serde_json::to_value(t).unwrap_or(Value::Null)),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
struct Page {
    /// `earliest` (default), an RFC 3339 time or a stream id.
    from: Option<String>,
    limit: Option<usize>,
}

/// A page of a topic's messages, in time order, from `from`.
async fn messages(
    State(s): State<Shared>,
    Path(topic): Path<String>,
    Query(q): Query<Page>,
) -> Response {
    if let Err(e) = millrace::keys::validate_topic(&topic) {
        return failed(e);
    }
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let start: StartAt = match q.from.as_deref().unwrap_or("earliest").parse() {
        Ok(StartAt::Latest) => {
            return invalid("from=latest shows nothing yet: give earliest, a time or an id");
        }
        Ok(start) => start,
        Err(e) => return failed(e),
    };
    let mut reader = match s.client.reader(&topic, start).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let mut page = Vec::with_capacity(limit);
    while page.len() < limit {
        match reader.next().await {
            Ok(Some(m)) => {
                page.push(serde_json::to_value(TailLine::new(&m)).unwrap_or(Value::Null))
            }
            Ok(None) => break,
            Err(e) => return failed(e),
        }
    }
    ok(json!({ "messages": page, "limit": limit }))
}

/// A message and where it stands in every group.
async fn message(State(s): State<Shared>, Path((topic, id)): Path<(String, String)>) -> Response {
    let id = match MessageId::parse(&id) {
        Ok(id) => id,
        Err(e) => return failed(e),
    };
    match s.client.message_status(&topic, &id).await {
        Ok(Some(status)) => ok(crate::message_cmd::as_json(&status)),
        Ok(None) => failed(millrace::Error::MessageNotFound {
            topic,
            id: id.to_string(),
        }),
        Err(e) => failed(e),
    }
}

/// Publishes one record (a JSON object as a `publish --jsonl` line) or a
/// batch (an array of them); every record is checked before any is sent.
async fn publish(
    State(s): State<Shared>,
    Path(topic): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if let Err(e) = millrace::keys::validate_topic(&topic) {
        return failed(e);
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("the request body is over {} MiB", MAX_BODY >> 20),
            );
        }
        Err(e) => return invalid(e.body_text()),
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return invalid(format!("the body is not JSON: {e}")),
    };
    let (items, single) = match value {
        Value::Array(items) => (items, false),
        other => (vec![other], true),
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return invalid(format!("give 1 to {MAX_BATCH} records"));
    }
    let mut records = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match crate::jsonl::parse_value(item) {
            Ok(r) => records.push(r),
            Err(e) if single => return invalid(e),
            Err(e) => return invalid(format!("record {i}: {e}")),
        }
    }
    for (i, r) in records.iter().enumerate() {
        if let Err(e) = s.client.check_record(&topic, r).await {
            if single {
                return failed(e);
            }
            let (status, kind) = status_of(&e);
            return error(
                status,
                kind,
                &format!("record {i}: {e}; nothing was published"),
            );
        }
    }
    if single {
        return match s.client.publish_record(&topic, records.remove(0)).await {
            Ok(receipt) => {
                let mut r = ok(serde_json::to_value(receipt).unwrap_or(Value::Null));
                *r.status_mut() = StatusCode::CREATED;
                r
            }
            Err(e) => failed(e),
        };
    }
    let results = match s.client.publish_batch(&topic, records).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let mut receipts = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(receipt) => receipts.push(serde_json::to_value(receipt).unwrap_or(Value::Null)),
            Err(e) => return failed(e),
        }
    }
    let mut r = ok(json!({ "receipts": receipts }));
    *r.status_mut() = StatusCode::CREATED;
    r
}

async fn group(State(s): State<Shared>, Path((topic, group)): Path<(String, String)>) -> Response {
    match s.client.describe_group(&topic, &group).await {
        Ok(info) => ok(serde_json::to_value(info).unwrap_or(Value::Null)),
        Err(e) => failed(e),
    }
}

async fn pause(State(s): State<Shared>, Path((topic, group)): Path<(String, String)>) -> Response {
    match s.client.pause_group(&topic, &group).await {
        Ok(_) => ok(json!({"topic": topic, "group": group, "paused": true})),
        Err(e) => failed(e),
    }
}

async fn resume(State(s): State<Shared>, Path((topic, group)): Path<(String, String)>) -> Response {
    match s.client.resume_group(&topic, &group).await {
        Ok(_) => ok(json!({"topic": topic, "group": group, "paused": false})),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
struct ResetQuery {
    /// `earliest`, `latest`, an RFC 3339 time or a stream id.
    to: String,
}

/// What a reset to `to` would do (nothing is changed): the preview the
/// page shows before its confirm.
async fn reset_plan(
    State(s): State<Shared>,
    Path((topic, group)): Path<(String, String)>,
    Query(q): Query<ResetQuery>,
) -> Response {
    let to: StartAt = match q.to.parse() {
        Ok(t) => t,
        Err(e) => return failed(e),
    };
    match s.client.plan_group_reset(&topic, &group, &to).await {
        Ok(plan) => ok(serde_json::to_value(plan).unwrap_or(Value::Null)),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
struct ResetBody {
    to: String,
    /// Reset even while the group has live members.
    #[serde(default)]
    force: bool,
}

/// Moves the group to `to` (refused with 409 while it has live members,
/// unless `force`).
async fn reset(
    State(s): State<Shared>,
    Path((topic, group)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let b: ResetBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return invalid(format!("expected {{\"to\": ..., \"force\"?: bool}}: {e}")),
    };
    let to: StartAt = match b.to.parse() {
        Ok(t) => t,
        Err(e) => return failed(e),
    };
    match s.client.reset_group(&topic, &group, &to, b.force).await {
        Ok(plan) => ok(serde_json::to_value(plan).unwrap_or(Value::Null)),
        Err(e @ millrace::Error::GroupHasMembers { .. }) => {
            error(StatusCode::CONFLICT, "conflict", &e.to_string())
        }
        Err(e) => failed(e),
    }
}

/// Which dead letters a replay or purge takes: `ids` (dead-letter or
/// message ids) or `all`, optionally of one `group`.
#[derive(Deserialize)]
struct Chosen {
    ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
    group: Option<String>,
    /// Replay only: `group` (default: the group that gave up) or `topic`.
    to: Option<String>,
}

/// What a replay or purge body chose, or what is wrong with it.
fn chosen(body: &[u8]) -> Result<(Chosen, millrace::Selection), String> {
    let c: Chosen = serde_json::from_slice(body).map_err(|e| {
        format!("expected {{\"ids\": [...]}} or {{\"all\": true}}, with \"group\"? : {e}")
    })?;
    let selection = match (&c.ids, c.all) {
        (Some(ids), false) if !ids.is_empty() => millrace::Selection::Ids(ids.clone()),
        (None, true) => millrace::Selection::All,
        _ => return Err("give either a non-empty \"ids\" or \"all\": true".to_string()),
    };
    Ok((c, selection))
}

async fn replay(State(s): State<Shared>, Path(topic): Path<String>, body: Bytes) -> Response {
    let (c, selection) = match chosen(&body) {
        Ok(x) => x,
        Err(why) => return invalid(why),
    };
    let to = match c.to.as_deref().unwrap_or("group") {
        "group" => millrace::ReplayTo::Group,
        "topic" => millrace::ReplayTo::Topic,
        other => return invalid(format!("\"to\" is group or topic, not {other:?}")),
    };
    match s
        .client
        .replay_dead_letters(&topic, &selection, c.group.as_deref(), to)
        .await
    {
        Ok(n) => ok(json!({ "replayed": n })),
        Err(e) => failed(e),
    }
}

async fn purge(State(s): State<Shared>, Path(topic): Path<String>, body: Bytes) -> Response {
    let (c, selection) = match chosen(&body) {
        Ok(x) => x,
        Err(why) => return invalid(why),
    };
    match s
        .client
        .purge_dead_letters(&topic, &selection, c.group.as_deref())
        .await
    {
        Ok(n) => ok(json!({ "purged": n })),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
struct DlqQuery {
    group: Option<String>,
    limit: Option<usize>,
}

async fn dead_letters(
    State(s): State<Shared>,
    Path(topic): Path<String>,
    Query(q): Query<DlqQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    match s
        .client
        .dead_letters(&topic, q.group.as_deref(), limit)
        .await
    {
        Ok(list) => ok(json!({ "dead_letters": list, "limit": limit })),
        Err(e) => failed(e),
    }
}

/// What the page needs to know of this server: whether it may offer
/// changes.
async fn server(State(s): State<Shared>) -> Response {
    ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "read_only": s.read_only,
        "token_required": s.token.is_some(),
    }))
}

async fn schedules(State(s): State<Shared>) -> Response {
    match s.client.list_schedules().await {
        Ok(list) => ok(json!({ "schedules": list })),
        Err(e) => failed(e),
    }
}
