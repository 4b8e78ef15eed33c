//! `/api/v1`: topics, messages (browse, show, publish), groups (describe,
//! pause, resume), dead letters and schedules, as JSON. Errors are
//! `{"error": kind, "message": text}` with the status their kind means:
//! 400 invalid input, 404 not found, 413 too large, 503 Redis unreachable.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
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
        .route("/topics/{topic}/history", get(history))
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
        .route("/topics/{topic}/dlq/{id}", get(dead_letter))
        .route("/schedules", get(schedules).post(add_schedule))
        .route("/schedules/{name}", axum::routing::delete(remove_schedule))
        .route("/server", get(server))
        .route("/openapi.json", get(openapi))
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
/// and pause flag, and the rates the server sampled last: the overview,
/// in a fixed number of Redis round trips (`Client::overview`; its
/// `time_ms` and `round_trips` come along).
async fn topics(State(s): State<Shared>) -> Response {
    match s.client.overview().await {
        Ok(o) => {
            let mut topics = as_values(&o.topics);
            for t in &mut topics {
                with_rates(&s, t);
            }
            ok(json!({ "topics": topics, "time_ms": o.time_ms, "round_trips": o.round_trips }))
        }
        Err(e) => failed(e),
    }
}

/// Every topic as the overview shows it, and when (ms, Redis clock).
pub async fn overview_list(s: &Shared) -> millrace::Result<(u64, Vec<Value>)> {
    let o = s.client.overview().await?;
    Ok((o.time_ms, as_values(&o.topics)))
}

/// The overview's topics as JSON values.
fn as_values(topics: &[millrace::TopicOverview]) -> Vec<Value> {
    topics
        .iter()
        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
        .collect()
}

/// Adds the last sampled rates: `published_per_s` to the topic and
/// `handled_per_s` to each group (null until two samples are in).
fn with_rates(s: &Shared, topic: &mut Value) {
    let name = topic["name"].as_str().unwrap_or_default().to_string();
    let (published, groups) = s.history.latest_rates(&name);
    topic["published_per_s"] = json!(published);
    if let Some(gs) = topic["groups"].as_array_mut() {
        for g in gs {
            let rate = g["group"].as_str().and_then(|n| groups.get(n)).copied();
            g["handled_per_s"] = json!(rate);
        }
    }
}

/// The charts of a topic: the last hour as the server sampled it.
async fn history(State(s): State<Shared>, Path(topic): Path<String>) -> Response {
    if let Err(e) = millrace::keys::validate_topic(&topic) {
        return failed(e);
    }
    ok(s.history.chart(&topic))
}

/// One topic as the overview shows it, with its last sampled rates.
async fn topic(State(s): State<Shared>, Path(topic): Path<String>) -> Response {
    match s.client.topic_overview(&topic).await {
        Ok(t) => {
            let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
            with_rates(&s, &mut v);
            ok(v)
        }
        Err(e) => failed(e),
    }
}

/// Most messages one search examines by default, and at most.
pub const DEFAULT_WINDOW: usize = 10_000;
pub const MAX_WINDOW: usize = 100_000;

#[derive(Deserialize)]
struct Page {
    /// `earliest` (default), `latest`, an RFC 3339 time or a stream id.
    from: Option<String>,
    /// Continue after this message (`<partition>:<lane>:<stream id>`, the
    /// `next` of the page before).
    after: Option<String>,
    limit: Option<usize>,
    /// Only messages with this key.
    key: Option<String>,
    /// Only messages whose payload passes this filter (see `filter.rs`).
    filter: Option<String>,
    /// Most messages a search examines (default 10 000, at most 100 000).
    window: Option<usize>,
}

/// Where a page continues: after this entry, in the reader's order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cursor {
    id: millrace::StreamId,
    partition: u32,
    lane: u8,
}

impl Cursor {
    fn of(m: &millrace::Message) -> Self {
        Cursor {
            id: m.id,
            partition: m.partition,
            lane: m.lane,
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("after: {s:?} is not <partition>:<lane>:<stream id>");
        let mut it = s.splitn(3, ':');
        let (Some(p), Some(l), Some(id)) = (it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        Ok(Cursor {
            partition: p.parse().map_err(|_| bad())?,
            lane: l.parse().map_err(|_| bad())?,
            id: millrace::StreamId::parse(id).map_err(|_| bad())?,
        })
    }

    fn text(&self) -> String {
        format!("{}:{}:{}", self.partition, self.lane, self.id)
    }
}

/// What a page keeps: messages with the key, passing the filter.
struct Search {
    key: Option<String>,
    filter: Option<super::filter::Filter>,
}

impl Search {
    fn is_search(&self) -> bool {
        self.key.is_some() || self.filter.is_some()
    }

    /// The message as the page shows it, if it is kept.
    fn keep(&self, m: &millrace::Message) -> Option<Value> {
        if let Some(key) = &self.key
            && m.key.as_deref() != Some(key.as_str())
        {
            return None;
        }
        let line = serde_json::to_value(TailLine::new(m)).unwrap_or(Value::Null);
        if let Some(f) = &self.filter
            && !line.get("data").is_some_and(|d| f.matches(d))
        {
            return None;
        }
        Some(line)
    }
}

/// A page of a topic's messages in time order: from `from`, or after the
/// cursor `after`; with `key` or `filter`, only the matching ones among at
/// most `window` messages examined. `next` continues where it stopped
/// (absent at the end); `scanned` says how many were examined.
async fn messages(
    State(s): State<Shared>,
    Path(topic): Path<String>,
    q: Result<Query<Page>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return invalid(e.body_text()),
    };
    if let Err(e) = millrace::keys::validate_topic(&topic) {
        return failed(e);
    }
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let window = q.window.unwrap_or(DEFAULT_WINDOW).clamp(1, MAX_WINDOW);
    let filter = match q.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        Some(text) => match super::filter::Filter::parse(text) {
            Ok(f) => Some(f),
            Err(why) => return invalid(format!("filter: {why}")),
        },
        None => None,
    };
    let search = Search {
        key: q.key.filter(|k| !k.is_empty()),
        filter,
    };
    let after = match q.after.as_deref().map(Cursor::parse).transpose() {
        Ok(c) => c,
        Err(why) => return invalid(why),
    };
    let from = q.from.as_deref().unwrap_or("earliest");
    if from == "latest" && after.is_none() {
        return latest_page(&s, &topic, limit, window, &search).await;
    }
    let start: StartAt = match after {
        Some(c) => StartAt::Id(c.id),
        None => match from.parse() {
            Ok(start) => start,
            Err(e) => return failed(e),
        },
    };
    let mut reader = match s.client.reader(&topic, start).await {
        // A plain page needs no more than `limit` of any lane.
        Ok(r) if !search.is_search() => r.batch(limit + 1),
        Ok(r) => r.batch(window.min(500)),
        Err(e) => return failed(e),
    };
    let (mut page, mut scanned, mut last) = (Vec::with_capacity(limit), 0usize, None);
    let mut complete = false;
    while page.len() < limit && scanned < window {
        let m = match reader.next().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                complete = true;
                break;
            }
            Err(e) => return failed(e),
        };
        let at = Cursor::of(&m);
        if after.is_some_and(|c| at <= c) {
            continue;
        }
        scanned += 1;
        last = Some(at);
        if let Some(line) = search.keep(&m) {
            page.push(line);
        }
    }
    ok(json!({
        "messages": page,
        "limit": limit,
        "scanned": scanned,
        "window": window,
        "next": if complete { None } else { last.map(|c| c.text()) },
    }))
}

/// The page that ends at the newest message; a search examines about the
/// last `window` messages (see `Client::latest_window`).
async fn latest_page(
    s: &Shared,
    topic: &str,
    limit: usize,
    window: usize,
    search: &Search,
) -> Response {
    let newest = if search.is_search() {
        s.client.latest_window(topic, window).await
    } else {
        s.client.latest_messages(topic, limit).await
    };
    let newest = match newest {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    let scanned = newest.len();
    let kept: Vec<Value> = newest.iter().filter_map(|m| search.keep(m)).collect();
    let page: Vec<Value> = kept[kept.len().saturating_sub(limit)..].to_vec();
    ok(json!({
        "messages": page,
        "limit": limit,
        "scanned": scanned,
        "window": window,
        "next": Value::Null,
    }))
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
    // A single record is checked by publishing it (nothing is written when
    // it fails); a batch is checked whole first, so it is all or nothing.
    for (i, r) in records.iter().enumerate().filter(|_| !single) {
        if let Err(e) = s.client.check_record(&topic, r).await {
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
    q: Result<Query<ResetQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return invalid(e.body_text()),
    };
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
    q: Result<Query<DlqQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return invalid(e.body_text()),
    };
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

/// The OpenAPI 3.1 document of this API (written by hand beside the
/// routes; a test calls every operation it lists).
async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        include_str!("openapi.json").replacen(
            "\"VERSION\"",
            concat!("\"", env!("CARGO_PKG_VERSION"), "\""),
            1,
        ),
    )
        .into_response()
}

/// What the page needs to know of this server: whether it may offer
/// changes.
async fn server(State(s): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    let (signed_in, csrf) = super::session_of(&s, &headers);
    ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "read_only": s.read_only,
        "token_required": s.token.is_some(),
        "signed_in": signed_in,
        "csrf": csrf,
    }))
}

/// One dead letter in full: payload (as JSON, or base64 when it is not
/// MessagePack), headers, the whole error.
async fn dead_letter(
    State(s): State<Shared>,
    Path((topic, id)): Path<(String, String)>,
) -> Response {
    match s.client.dead_letter(&topic, &id).await {
        Ok(Some(d)) => ok(
            serde_json::to_value(crate::dlq_cmd::DeadLetterLine::new(&d)).unwrap_or(Value::Null),
        ),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no dead letter {id} in {topic}"),
        ),
        Err(e) => failed(e),
    }
}

/// How many coming fire times a schedule lists.
pub const NEXT_FIRES: usize = 5;

/// A schedule as the API shows it: its settings, its next fire times
/// (RFC 3339, UTC) and the time its fires are done through (a fire time
/// at or before it will not fire again: the last fire, or when the
/// schedule was added or replaced).
fn schedule_json(spec: &millrace::ScheduleSpec, now_ms: u64, last: Option<u64>) -> Value {
    let mut next = Vec::with_capacity(NEXT_FIRES);
    let mut after = now_ms;
    while next.len() < NEXT_FIRES {
        match spec.next_fire_after(after) {
            Ok(Some(t)) => {
                next.push(millrace::fire_time_rfc3339(t));
                after = t;
            }
            _ => break,
        }
    }
    let mut v = serde_json::to_value(spec).unwrap_or(Value::Null);
    v["next_fires"] = json!(next);
    v["fired_through"] = json!(last.map(millrace::fire_time_rfc3339));
    v
}

async fn schedules(State(s): State<Shared>) -> Response {
    let (list, last, now) = match tokio::try_join!(
        s.client.list_schedules(),
        s.client.schedule_last_fires(),
        s.client.redis_time_ms()
    ) {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let rows: Vec<Value> = list
        .iter()
        .map(|spec| schedule_json(spec, now, last.get(&spec.name).copied()))
        .collect();
    ok(json!({ "schedules": rows }))
}

/// Adds a schedule (or replaces the one of that name): the body is the
/// schedule as `GET /schedules` lists it (name, cron, tz?, topic, key?,
/// data, headers?).
async fn add_schedule(State(s): State<Shared>, body: Bytes) -> Response {
    let spec: millrace::ScheduleSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => {
            return invalid(format!(
                "expected {{\"name\", \"cron\", \"tz\"?, \"topic\", \"key\"?, \"data\", \"headers\"?}}: {e}"
            ));
        }
    };
    if let Err(e) = spec.validate() {
        return failed(e);
    }
    if let Err(e) = s.client.add_schedule(&spec).await {
        return failed(e);
    }
    let now = match s.client.redis_time_ms().await {
        Ok(now) => now,
        Err(e) => return failed(e),
    };
    let mut r = ok(schedule_json(&spec, now, None));
    *r.status_mut() = StatusCode::CREATED;
    r
}

async fn remove_schedule(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    if let Err(e) = millrace::keys::validate_name("schedule", &name) {
        return failed(e);
    }
    match s.client.remove_schedule(&name).await {
        Ok(true) => ok(json!({ "removed": name })),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("schedule {name} does not exist"),
        ),
        Err(e) => failed(e),
    }
}
