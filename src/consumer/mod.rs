//! The [`Worker`]: a member of a consumer group that handles a topic's
//! messages with your handlers.
//!
//! Built with [`Worker::builder`]: the group, its mode, concurrency, session
//! timeout, an optional static instance id, and one handler per topic (typed
//! events or raw messages). [`Worker::run`] joins the group and handles
//! messages until the shutdown future resolves, then drains in-flight work,
//! acks it, releases its partitions and leaves. The per-topic machinery
//! (heartbeat and leases, fetching, key-ordered dispatch, batched acks) is in
//! `runtime`.

mod dispatch;
pub mod handler;
pub(crate) mod progress;
mod runtime;

pub use progress::PROGRESS_EVERY;
pub use runtime::promote::Promoter;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::envelope::{Event, Message};
use crate::error::{Error, Result};
use crate::group::Mode;
use crate::reader::StartAt;
use crate::store::keys::{validate_name, validate_topic};

pub use handler::{CANCEL_GRACE, Context, HEADER_TIMEOUT, HandlerError, RawHandler};

/// How a worker behaves in its group.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerSettings {
    /// The group.
    pub group: String,
    /// This member's id.
    pub member: String,
    /// Whether the id is a stable instance id (static membership).
    pub is_static: bool,
    /// Ordered or shared.
    pub mode: Mode,
    /// Most handlers running at once, over all topics.
    pub concurrency: usize,
    /// A member without a heartbeat for this long is gone; also the lease TTL.
    pub session_timeout: Duration,
    /// How often the member heartbeats and renews its leases.
    pub heartbeat_interval: Duration,
    /// Longest a read blocks when idle (also bounds how fast a shutdown or a
    /// rebalance is noticed by the reader).
    pub block: Duration,
    /// Messages fetched per stream per read.
    pub batch: usize,
    /// How long shutdown waits for in-flight messages.
    pub drain_timeout: Duration,
    /// Shared mode: a message held this long by a member is taken by another.
    pub visibility_timeout: Duration,
    /// Where a new group starts.
    pub start: StartAt,
    /// Attempts, backoff and when to give up.
    pub retry: crate::retry::RetryPolicy,
    /// Most handler starts per window, for the whole group.
    pub rate_limit: Option<crate::rate_limit::RateLimit>,
    /// Check each message against its topic's schema before the handler
    /// runs (see [`WorkerBuilder::validate_schema`]).
    pub validate_schema: bool,
    /// How long a handler's result is kept (see [`WorkerBuilder::result_ttl`]).
    pub result_ttl: Duration,
    /// Longest one attempt may run (see [`WorkerBuilder::handler_timeout`]).
    pub handler_timeout: Option<Duration>,
    /// How a process span relates to the message's creation (see
    /// [`WorkerBuilder::trace_relation`]).
    pub trace_relation: crate::telemetry::TraceRelation,
    /// Whether acks and dead-letterings wait for replicas (see
    /// [`WorkerBuilder::acks`]).
    pub acks: crate::acks::Acks,
}

pub use crate::reply::DEFAULT_RESULT_TTL;

/// Upper bounds (seconds) of the handler latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the end-to-end latency histogram's buckets
/// ([`WorkerStats::end_to_end`]): from 5 ms to an hour, since a group that
/// lags behind waits minutes.
pub const END_TO_END_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// The most bounds a [`LatencyHistogram`] has (one more counter counts
/// anything longer).
const MAX_BOUNDS: usize = 16;

/// Durations in fixed buckets (for Prometheus): recording one is a bucket
/// search and two relaxed atomic additions.
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Upper bounds in seconds, increasing.
    bounds: &'static [f64],
    /// Per bound, then one for anything longer (the rest unused).
    counts: [AtomicU64; MAX_BOUNDS + 1],
    sum_micros: AtomicU64,
}

/// Buckets of [`LATENCY_BUCKETS`].
impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::with_bounds(&LATENCY_BUCKETS)
    }
}

impl LatencyHistogram {
    /// An empty histogram with these upper bounds (increasing, at most 16).
    pub(crate) const fn with_bounds(bounds: &'static [f64]) -> Self {
        assert!(bounds.len() <= MAX_BOUNDS);
        LatencyHistogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BOUNDS + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    /// The buckets' upper bounds in seconds (without `+Inf`).
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    pub(crate) fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound (`le`), the total count and the
    /// sum in seconds, as Prometheus histograms want them.
    pub fn cumulative(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.bounds.len());
        for (i, bound) in self.bounds.iter().enumerate() {
            total += self.counts[i].load(Ordering::Relaxed);
            out.push((*bound, total));
        }
        total += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (out, total, sum)
    }
}

/// Counters of what a worker did, readable while it runs (and shared with
/// the worker: see [`Worker::stats`]).
#[derive(Debug)]
pub struct WorkerStats {
    /// How long handlers ran (every attempt; buckets [`LATENCY_BUCKETS`]).
    pub latency: LatencyHistogram,
    /// From a message's publish time ([`Message::published_at_ms`], Redis's
    /// clock; for a delayed message, the time it became due) to the start
    /// of its first attempt, on this process's clock (0 when that is behind
    /// Redis's). Buckets [`END_TO_END_BUCKETS`].
    ///
    /// [`Message::published_at_ms`]: crate::Message::published_at_ms
    pub end_to_end: LatencyHistogram,
    /// Messages whose handler succeeded.
    pub handled: AtomicU64,
    /// Handler failures (errors and panics).
    pub failed: AtomicU64,
    /// Failures that were retried.
    pub retried: AtomicU64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Handler panics.
    pub panicked: AtomicU64,
    /// Messages cancelled (skipped, stopped, or their retry given up).
    pub cancelled: AtomicU64,
    /// Messages acknowledged.
    pub acked: AtomicU64,
    /// Acks refused because the partition's lease had moved on.
    pub stale_acks: AtomicU64,
    /// Acks and dead-letterings no replica confirmed in time (with
    /// [`WorkerBuilder::acks`]): a failover now may hand them back.
    pub unreplicated: AtomicU64,
    /// Pending messages that had been trimmed away before they were handled.
    pub trimmed_unhandled: AtomicU64,
    /// Partitions gained or lost.
    pub rebalances: AtomicU64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            latency: LatencyHistogram::with_bounds(&LATENCY_BUCKETS),
            end_to_end: LatencyHistogram::with_bounds(&END_TO_END_BUCKETS),
            handled: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            stale_acks: AtomicU64::new(0),
            unreplicated: AtomicU64::new(0),
            trimmed_unhandled: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
        }
    }
}

impl WorkerStats {
    /// Records the time from `published_at_ms` (ms since the Unix epoch)
    /// to now in [`WorkerStats::end_to_end`].
    pub(crate) fn record_end_to_end(&self, published_at_ms: u64) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.end_to_end.record(Duration::from_millis(
            now_ms.saturating_sub(published_at_ms),
        ));
    }
}

/// A snapshot of [`WorkerStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Messages whose handler succeeded.
    pub handled: u64,
    /// Handler failures.
    pub failed: u64,
    /// Failures that were retried.
    pub retried: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Handler panics.
    pub panicked: u64,
    /// Messages cancelled.
    pub cancelled: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Acks refused by fencing.
    pub stale_acks: u64,
    /// Acks and dead-letterings not confirmed by replicas in time.
    pub unreplicated: u64,
    /// Pending messages trimmed before handling.
    pub trimmed_unhandled: u64,
    /// Partition ownership changes.
    pub rebalances: u64,
}

impl WorkerStats {
    /// The current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            handled: g(&self.handled),
            failed: g(&self.failed),
            retried: g(&self.retried),
            dead_lettered: g(&self.dead_lettered),
            panicked: g(&self.panicked),
            cancelled: g(&self.cancelled),
            acked: g(&self.acked),
            stale_acks: g(&self.stale_acks),
            unreplicated: g(&self.unreplicated),
            trimmed_unhandled: g(&self.trimmed_unhandled),
            rebalances: g(&self.rebalances),
        }
    }
}

/// Builds a [`Worker`].
#[must_use = "a WorkerBuilder does nothing until .build() and .run()"]
pub struct WorkerBuilder {
    client: Client,
    settings: WorkerSettings,
    handlers: Vec<(String, RawHandler)>,
    error: Option<Error>,
}

fn generated_member_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{host}-{}-{:x}{:x}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl WorkerBuilder {
    fn new(client: &Client, group: &str) -> Self {
        let error = validate_name("group", group).err();
        WorkerBuilder {
            client: client.clone(),
            settings: WorkerSettings {
                group: group.to_string(),
                member: generated_member_id(),
                is_static: false,
                mode: Mode::Ordered,
                concurrency: 16,
                session_timeout: Duration::from_secs(10),
                heartbeat_interval: Duration::from_secs(1),
                block: Duration::from_millis(500),
                batch: 100,
                drain_timeout: Duration::from_secs(30),
                visibility_timeout: Duration::from_secs(30),
                start: StartAt::Earliest,
                retry: crate::retry::RetryPolicy::default(),
                rate_limit: None,
                validate_schema: false,
                result_ttl: DEFAULT_RESULT_TTL,
                handler_timeout: None,
                trace_relation: crate::telemetry::TraceRelation::Link,
                acks: crate::acks::Acks::Primary,
            },
            handlers: Vec::new(),
            error,
        }
    }

    /// Ordered (default) or shared.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.settings.mode = mode;
        self
    }

    /// Most handlers running at once (default 16).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.settings.concurrency = n.max(1);
        self
    }

    /// Session timeout and lease TTL (default 10 s).
    pub fn session_timeout(mut self, d: Duration) -> Self {
        self.settings.session_timeout = d;
        self
    }

    /// Heartbeat and lease renewal interval (default 1 s).
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.settings.heartbeat_interval = d;
        self
    }

    /// A stable member id: a restart within the session timeout keeps the
    /// member's partitions without a rebalance (static membership).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        let id = id.into();
        if let Err(e) = validate_name("instance id", &id) {
            self.error.get_or_insert(e);
        }
        self.settings.member = id;
        self.settings.is_static = true;
        self
    }

    /// Where the group starts if it does not exist yet (default earliest:
    /// messages published before the group's first worker are handled, not
    /// skipped; use [`StartAt::Latest`] to see only new ones).
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.settings.start = start;
        self
    }

    /// Longest blocking read when idle (default 500 ms).
    pub fn block(mut self, d: Duration) -> Self {
        self.settings.block = d;
        self
    }

    /// Messages fetched per stream per read (default 100). The worker reads
    /// again while fewer than `concurrency + batch × partitions read`
    /// messages are buffered or running.
    pub fn batch(mut self, n: usize) -> Self {
        self.settings.batch = n.clamp(1, 1000);
        self
    }

    /// How long shutdown waits for in-flight messages (default 30 s).
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.settings.drain_timeout = d;
        self
    }

    /// Shared mode: how long a message may stay with one member before
    /// another takes it over (default 30 s).
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.settings.visibility_timeout = d;
        self
    }

    /// The group's retry policy (default: 3 attempts, exponential backoff
    /// from 1 s to 1 min with 20 % jitter). Checked by `build`.
    pub fn retry(mut self, policy: crate::retry::RetryPolicy) -> Self {
        self.settings.retry = policy;
        self
    }

    /// Limits the whole group (all members together) to a number of handler
    /// starts per window, enforced in Redis.
    pub fn rate_limit(mut self, limit: crate::rate_limit::RateLimit) -> Self {
        self.settings.rate_limit = Some(limit);
        self
    }

    /// Checks every message against its topic's schema before the handler
    /// sees it: against the version its producer stamped
    /// ([`HEADER_SCHEMA_VERSION`](crate::HEADER_SCHEMA_VERSION)), or the
    /// latest when it carries none. A message that does not match is a
    /// permanent failure (dead-lettered at once, every failing place in its
    /// error); a topic with no schema registered stops the worker from
    /// starting ([`Error::SchemaNotFound`]).
    pub fn validate_schema(mut self, validate: bool) -> Self {
        self.settings.validate_schema = validate;
        self
    }

    /// How long the group keeps what a handler returns, beside the message
    /// (default 5 minutes; zero keeps nothing). The result is written with
    /// the message's ack, in the same script: `message show` shows it, and
    /// a late or repeated wait for a request's reply reads it. A request's
    /// reply is sent even when nothing is kept.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.settings.result_ttl = ttl;
        self
    }

    /// Whether the group's acks and dead-letterings wait for replicas
    /// (default [`Acks::Primary`](crate::Acks::Primary): they do not). With
    /// [`Acks::replicas`](crate::Acks::replicas), each batch of acks and
    /// each dead-lettering is followed by `WAIT`, so what a failover
    /// would hand back (handled again, at least once) is only what no
    /// replica confirmed in time: those are logged as a warning and
    /// counted in [`WorkerStats::unreplicated`].
    pub fn acks(mut self, acks: crate::acks::Acks) -> Self {
        self.settings.acks = acks;
        self
    }

    /// Longest one attempt of a handler may run (default: no limit); a
    /// message's [`HEADER_TIMEOUT`](crate::HEADER_TIMEOUT) header replaces
    /// it for that message. At the timeout the handler's
    /// [`Context::cancel`] fires, it gets [`CANCEL_GRACE`](crate::CANCEL_GRACE)
    /// to return, then its future is dropped; the attempt is a retryable
    /// failure (`handler timed out after ...`), retried or dead-lettered by
    /// the retry policy.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.settings.handler_timeout = Some(timeout);
        self
    }

    /// How each attempt's `process` span relates to the context the message
    /// was created in, as its `traceparent` header carries it (feature
    /// `otel`): a link (the default, as the OpenTelemetry messaging
    /// conventions recommend) or, with [`TraceRelation::Parent`](crate::TraceRelation::Parent),
    /// a child of it. See [`current_traceparent`](crate::current_traceparent).
    pub fn trace_relation(mut self, relation: crate::telemetry::TraceRelation) -> Self {
        self.settings.trace_relation = relation;
        self
    }

    /// Handles typed events of `E::TOPIC`. A payload that does not decode as
    /// `E` is a permanent failure.
    ///
    /// The handler's `Ok` value is its result (any `Serialize` type; `()`
    /// for none): kept with the ack for the [`result_ttl`](Self::result_ttl)
    /// and sent back to a [request](Client::request)'s requester.
    pub fn handle<E, O, F, Fut>(mut self, f: F) -> Self
    where
        E: Event + 'static,
        O: Serialize + 'static,
        F: Fn(E, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    {
        // The handler's future is made here, not inside the boxed one, so
        // no shared handle is cloned per message.
        let handler: RawHandler = Arc::new(move |msg: Message, ctx: Context| {
            let work = msg.decode::<E>().map(|event| f(event, ctx));
            Box::pin(async move {
                let work = work.map_err(HandlerError::permanent)?;
                crate::reply::encode_output(&work.await?)
            })
        });
        self.handlers.push((E::TOPIC.to_string(), handler));
        self
    }

    /// Handles raw messages of `topic`; the `Ok` value is the result, as
    /// for [`handle`](Self::handle).
    pub fn handle_raw<O, F, Fut>(mut self, topic: &str, f: F) -> Self
    where
        O: Serialize + 'static,
        F: Fn(Message, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    {
        let handler: RawHandler = Arc::new(move |msg, ctx| {
            let work = f(msg, ctx);
            Box::pin(async move { crate::reply::encode_output(&work.await?) })
        });
        self.handlers.push((topic.to_string(), handler));
        self
    }

    /// Builds and starts the worker (see [`Worker::start`]).
    pub async fn start(self) -> Result<WorkerHandle> {
        self.build()?.start().await
    }

    /// Builds the worker and runs it until `shutdown` resolves (see [`Worker::run`]).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<StatsSnapshot> {
        self.build()?.run(shutdown).await
    }

    /// Checks the settings and handlers.
    pub fn build(self) -> Result<Worker> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.handlers.is_empty() {
            return Err(Error::invalid(
                "worker",
                "no handler: add one with .handle()",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (topic, _) in &self.handlers {
            // `T.dlq` is T's dead-letter view, which a group may consume.
            validate_topic(topic.strip_suffix(".dlq").unwrap_or(topic))?;
            if !seen.insert(topic.clone()) {
                return Err(Error::invalid(
                    "worker",
                    format!("two handlers for topic {topic}"),
                ));
            }
        }
        let s = &self.settings;
        s.retry.validate()?;
        if s.heartbeat_interval.is_zero() || s.heartbeat_interval * 2 > s.session_timeout {
            return Err(Error::invalid(
                "worker",
                "the heartbeat interval must be more than zero and at most half the session timeout",
            ));
        }
        Ok(Worker {
            client: self.client,
            settings: Arc::new(self.settings),
            handlers: self.handlers,
            stats: Arc::new(WorkerStats::default()),
        })
    }
}

/// A group member that handles messages; see [`Worker::builder`].
///
/// ```no_run
/// # use millrace::{Client, Event, Worker};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct InvoiceCreated { invoice: String }
/// # impl Event for InvoiceCreated { const TOPIC: &'static str = "erp.v1.invoice.created"; }
/// # async fn run(client: Client) -> millrace::Result<()> {
/// let worker = Worker::builder(&client, "pdf-report")
///     .concurrency(16)
///     .handle(|invoice: InvoiceCreated, ctx| async move {
///         println!("render {} (attempt {})", invoice.invoice, ctx.attempt);
///         Ok(())
///     })
///     .build()?;
/// worker.run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
/// # Ok(()) }
/// ```
pub struct Worker {
    client: Client,
    settings: Arc<WorkerSettings>,
    handlers: Vec<(String, RawHandler)>,
    stats: Arc<WorkerStats>,
}

impl Worker {
    /// Starts building a worker in `group`.
    pub fn builder(client: &Client, group: &str) -> WorkerBuilder {
        WorkerBuilder::new(client, group)
    }

    /// This member's id.
    pub fn member_id(&self) -> &str {
        &self.settings.member
    }

    /// The worker's counters.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Joins the group and handles messages until `shutdown` resolves, then
    /// shuts down gracefully: stop reading, finish in-flight messages (up to
    /// the drain timeout), ack, release partitions, leave the group.
    /// Returns the worker's final counters.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<StatsSnapshot> {
        let handle = self.start().await?;
        shutdown.await;
        handle.shutdown().await
    }

    /// Joins the group and starts handling messages in the background.
    pub async fn start(self) -> Result<WorkerHandle> {
        let workers = Arc::new(Semaphore::new(self.settings.concurrency));
        let killed = CancellationToken::new();
        let mut topics = Vec::new();
        if self.settings.validate_schema {
            for (topic, _) in &self.handlers {
                schema_registered(&self.client, topic).await?;
            }
        }
        for (topic, handler) in self.handlers {
            let handler = if self.settings.validate_schema {
                validating(self.client.clone(), handler)
            } else {
                handler
            };
            self.client
                .create_group(&topic, &self.settings.group, &self.settings.start)
                .await?;
            let spec = self.client.catalog().topic_cached(&topic).await?;
            topics.push(
                runtime::TopicRuntime::start(
                    self.client.catalog().clone(),
                    spec,
                    self.settings.clone(),
                    handler,
                    workers.clone(),
                    self.stats.clone(),
                    killed.clone(),
                )
                .await?,
            );
        }
        Ok(WorkerHandle {
            topics,
            killed,
            stats: self.stats,
            settings: self.settings,
        })
    }
}

/// Fails unless `topic` (or, for a dead-letter view, its topic) has a
/// schema version to check messages against.
async fn schema_registered(client: &Client, topic: &str) -> Result<()> {
    let base = topic.strip_suffix(".dlq").unwrap_or(topic);
    match client
        .gate()
        .seen(client.catalog(), base, None)
        .await?
        .latest()
    {
        Some(_) => Ok(()),
        None => Err(Error::SchemaNotFound {
            topic: base.to_string(),
            version: None,
        }),
    }
}

/// `handler`, called only for messages that match their topic's schema:
/// a mismatch (or a version that is gone) is a permanent failure, a schema
/// that could not be read (Redis unreachable) a retry.
fn validating(client: Client, handler: RawHandler) -> RawHandler {
    Arc::new(move |msg: Message, ctx: Context| {
        let (client, handler) = (client.clone(), handler.clone());
        Box::pin(async move {
            let checked = crate::schema::check_received(
                client.catalog(),
                client.gate(),
                &ctx.topic,
                &msg.payload,
                &msg.headers,
            )
            .await;
            match checked {
                Ok(_) => handler(msg, ctx).await,
                Err(e @ (Error::SchemaViolation { .. } | Error::SchemaNotFound { .. })) => {
                    Err(HandlerError::permanent(e))
                }
                Err(e) => Err(HandlerError::retry(e)),
            }
        })
    })
}

/// A running worker.
pub struct WorkerHandle {
    topics: Vec<runtime::TopicRuntime>,
    killed: CancellationToken,
    stats: Arc<WorkerStats>,
    settings: Arc<WorkerSettings>,
}

impl WorkerHandle {
    /// This member's id.
    pub fn member_id(&self) -> &str {
        &self.settings.member
    }

    /// The worker's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Partitions of `topic` this member currently owns (all of them in
    /// shared mode; none for a topic it does not consume).
    pub fn owned_partitions(&self, topic: &str) -> Vec<u32> {
        self.topics
            .iter()
            .find(|t| t.topic() == topic)
            .map(|t| t.owned())
            .unwrap_or_default()
    }

    /// Partitions this member currently owns, per topic.
    pub fn owned(&self) -> Vec<(String, Vec<u32>)> {
        self.topics
            .iter()
            .map(|t| (t.topic().to_string(), t.owned()))
            .collect()
    }

    /// Graceful shutdown: stop reading, drain in-flight messages within the
    /// drain timeout, ack, release leases, leave the group. Returns the
    /// final counters.
    pub async fn shutdown(self) -> Result<StatsSnapshot> {
        for t in &self.topics {
            t.stop_reading();
        }
        let deadline = tokio::time::Instant::now() + self.settings.drain_timeout;
        for t in &self.topics {
            t.drain(deadline).await;
        }
        let mut first_error = None;
        for t in self.topics {
            if let Err(e) = t.finish().await {
                first_error.get_or_insert(e);
            }
        }
        self.killed.cancel();
        first_error.map_or(Ok(self.stats.snapshot()), Err)
    }

    /// Stops at once without releasing anything, as a crash would: running
    /// handlers are dropped, nothing more is acked, leases and membership are
    /// left to expire. For tests and emergencies.
    pub fn abort(self) {
        self.killed.cancel();
        for t in self.topics {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_is_cumulative() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(500));
        h.record(Duration::from_millis(30));
        h.record(Duration::from_secs(60));
        let (buckets, count, sum) = h.cumulative();
        assert_eq!(buckets[0], (0.001, 1));
        assert_eq!(buckets[5], (0.05, 2));
        assert_eq!(buckets.last().copied(), Some((10.0, 2)));
        assert_eq!(count, 3);
        assert!((sum - 60.0305).abs() < 1e-6);
    }

    #[test]
    fn end_to_end_histogram_has_its_own_buckets() {
        let stats = WorkerStats::default();
        assert_eq!(stats.latency.bounds(), &LATENCY_BUCKETS[..]);
        assert_eq!(stats.end_to_end.bounds(), &END_TO_END_BUCKETS[..]);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // Published 2 minutes ago: in the 300 s bucket, not the 60 s one.
        stats.record_end_to_end(now_ms - 120_000);
        // A publish time ahead of this clock counts as 0.
        stats.record_end_to_end(now_ms + 60_000);
        let (buckets, count, sum) = stats.end_to_end.cumulative();
        assert_eq!(buckets.len(), END_TO_END_BUCKETS.len());
        assert_eq!(buckets[0], (0.005, 1));
        assert_eq!(buckets[12], (60.0, 1));
        assert_eq!(buckets[13], (300.0, 2));
        assert_eq!(count, 2);
        assert!((120.0..121.0).contains(&sum), "{sum}");
        assert_eq!(stats.latency.cumulative().1, 0);
    }
}
