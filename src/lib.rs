//! A job and event queue for Rust services, on Redis Streams.
//!
//! Services publish events to **topics** (`erp.v1.invoice.created`). A
//! topic is split into **partitions** chosen by the event's key, each a
//! Redis stream, so one entity's events stay in order. **Consumer groups**
//! each see every event; inside a group the partitions are shared out
//! among the running members ([`Worker`]s), who hand each message to a
//! handler, retry failures with backoff and move what still fails to the
//! topic's **dead letters**, to inspect and replay after a fix. Lua scripts
//! make each step atomic, and every script stays in one Redis Cluster slot:
//! the same code runs on one Redis or on a cluster.
//!
//! # Publishing
//!
//! An [`Event`] names its topic and its key; [`Client::publish`] encodes it
//! as MessagePack and appends it to its key's partition. Concurrent
//! publishes share pipelines; [`PublishOptions`] delay, prioritise and
//! deduplicate.
//!
//! ```no_run
//! use millrace::{Client, Config, Event, PublishOptions, TopicSpec};
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! #[derive(Serialize, Deserialize)]
//! struct InvoiceCreated { invoice: String, tenant: String, cents: u64 }
//!
//! impl Event for InvoiceCreated {
//!     const TOPIC: &'static str = "erp.v1.invoice.created";
//!     fn key(&self) -> Option<String> { Some(self.tenant.clone()) }
//! }
//!
//! # async fn run() -> millrace::Result<()> {
//! let client = Client::connect(Config::new("redis://127.0.0.1:6379")?).await?;
//! client.create_topic(&TopicSpec::new(InvoiceCreated::TOPIC, 8)?).await?;
//! let invoice = InvoiceCreated { invoice: "inv-1".into(), tenant: "acme".into(), cents: 12_500 };
//! let receipt = client.publish(&invoice).await?;   // partition from the tenant key
//! println!("published {}", receipt.message_id);     // e.g. 3:0:1796405040643-0
//! client
//!     .publish_with(&invoice, PublishOptions::new()
//!         .delay(Duration::from_secs(3600))         // visible in an hour
//!         .dedup_id("reminder-inv-1"))              // at most once per dedup id
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Handling, in a group
//!
//! A [`Worker`] joins a group, takes its share of the partitions (they
//! rebalance as members come and go, without stopping the others) and
//! calls the handler for each message: messages of one key one after
//! another, different keys concurrently. `Ok` acks (its value is the
//! message's result); an error is retried by the group's [`RetryPolicy`],
//! unless it is [permanent](HandlerError::permanent); then, or after the
//! last attempt, the message is dead-lettered. A message keeps one
//! [`MessageId`] through retries, dead-lettering and replay: deduplicate on
//! it.
//!
//! ```no_run
//! # use millrace::{Client, Event, HandlerError, RetryPolicy, Worker};
//! # use serde::{Deserialize, Serialize};
//! # use std::time::Duration;
//! # #[derive(Serialize, Deserialize)] struct InvoiceCreated { invoice: String }
//! # impl Event for InvoiceCreated { const TOPIC: &'static str = "erp.v1.invoice.created"; }
//! # async fn run(client: Client) -> millrace::Result<()> {
//! let worker = Worker::builder(&client, "pdf-report")
//!     .concurrency(16)
//!     .retry(RetryPolicy::attempts(5).exponential(Duration::from_millis(500), Duration::from_secs(60)))
//!     .handle(|invoice: InvoiceCreated, ctx| async move {
//!         if invoice.invoice.is_empty() {
//!             return Err(HandlerError::permanent("no invoice number")); // no retry
//!         }
//!         println!("render {} ({})", invoice.invoice, ctx.message_id);
//!         Ok(())
//!     })
//!     .build()?;
//! // Runs until the signal, then finishes what is in flight, acks it and
//! // hands its partitions over.
//! worker.run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(()) }
//! ```
//!
//! Dead letters: [`Client::dead_letters`], [`Client::replay_dead_letters`]
//! (to the group that gave up or the whole topic). A group can be paused,
//! rate-limited ([`RateLimit`]) and rewound ([`Client::reset_group`]);
//! [`ScheduleSpec`] publishes on a cron schedule; [`Reader`] reads a topic
//! without a group.
//!
//! # Request and reply
//!
//! A request is a message one group answers: the handler's `Ok` value
//! comes back to the requester ([`Client::request`]), or its failure.
//!
//! ```no_run
//! # use std::time::Duration;
//! # async fn run(client: millrace::Client) -> millrace::Result<()> {
//! let price: millrace::Reply<u64> = client
//!     .request("shop.v1.price.quote", &("A-1", 12))
//!     .group("pricing")
//!     .timeout(Duration::from_secs(5))
//!     .await?;
//! println!("{} cents", price.value);
//! # Ok(()) }
//! ```
//!
//! # Looking in
//!
//! - Where a message stands in every group: [`Client::message_status`];
//!   cancel it: [`Client::cancel`].
//! - Every topic and group at once, in three round trips:
//!   [`Client::overview`] (what `millrace serve`'s dashboard shows).
//! - Prometheus series of the workers in this process: [`Metrics`].
//! - Traces: spans named by the OpenTelemetry messaging conventions
//!   (`create`, `receive`, `process`, `settle`) are made through `tracing`,
//!   so the application picks the exporter; with the feature `otel` the
//!   creation's W3C trace context travels in the message's `traceparent`
//!   header and each handler's span links to it ([`TraceRelation`]).
//!
//! # Features
//!
//! The package on crates.io is `millrace-queue` (the name `millrace` there
//! is another project's); the library is `millrace`:
//! `millrace-queue = { version = "0.1", default-features = false }` and
//! `use millrace::Client`.
//!
//! | feature | default | what |
//! |---|---|---|
//! | `cli` | yes | the `millrace` binary (worker, admin commands, dashboard, benchmarks) and what only it needs; a library user turns it off with `default-features = false` |
//! | `otel` | with `cli` | the W3C trace context of the spans, through `tracing-opentelemetry` |
//! | `schemars` | no | `Client::register_schema_for`: a Rust type's JSON Schema as a topic's schema |
//!
//! The repository's `docs/` has the design (what is promised), the
//! architecture (modules, Redis keys, scripts), the CLI reference, the
//! guarantees under faults and the benchmarks; `examples/` has a
//! quickstart, an ERP with three groups, a web service publishing from an
//! axum handler, a worker with graceful shutdown, and request-reply.
#![deny(missing_docs)]
// A type a public item uses must be nameable by users (exported below).
#![warn(unnameable_types)]

// The public face is the list of `pub use` below plus six small public
// modules whose items are contracts of their own (ACL rules, durations, the
// wire format, the key layout and name rules, the partitioner, the
// placement of partitions on a cluster). Everything
// else is private, so the layers under the API can change freely.
mod acks;
pub mod acl;
// `bench` and `local` serve the binary, benches/ and examples/ (feature
// `tools`, which `cli` turns on); they are not part of the library's API.
#[cfg(feature = "tools")]
#[doc(hidden)]
pub mod bench;
mod cancel;
mod client;
mod compat;
mod config;
mod consumer;
mod dlq;
pub mod duration;
pub mod envelope;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_api;
mod group;
mod id;
#[cfg(feature = "tools")]
#[doc(hidden)]
pub mod local;
mod metrics;
mod overview;
pub mod partitioner;
pub mod placement;
mod producer;
mod rate_limit;
mod reader;
mod reply;
mod request;
mod retry;
mod schedule;
mod scheduler;
mod schema;
mod status;
mod store;
mod telemetry;
mod topic;
mod topic_placement;

pub use acks::{Acks, DEFAULT_ACKS_TIMEOUT};
pub use cancel::CancelOutcome;
pub use client::Client;
pub use compat::{CompatMode, Incompatibility};
pub use config::{Config, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PREFIX, redact_url};
pub use consumer::{
    CANCEL_GRACE, Context, DEFAULT_RESULT_TTL, END_TO_END_BUCKETS, HEADER_TIMEOUT, HandlerError,
    LATENCY_BUCKETS, LatencyHistogram, PROGRESS_EVERY, Promoter, StatsSnapshot, Worker,
    WorkerBuilder, WorkerHandle, WorkerSettings, WorkerStats,
};
pub use dlq::{DeadLetter, ReplayTo, Selection};
pub use envelope::{Event, Headers, Message, StreamId};
pub use error::{Error, PoolFailure, Result};
pub use group::{
    CREATED_CONSUMER, GroupInfo, LaneReset, MemberInfo, Mode, PartitionInfo, ResetPlan,
};
pub use id::MessageId;
pub use metrics::Metrics;
pub use overview::{GroupOverview, Overview, TopicOverview};
pub use placement::Placement;
pub use producer::{
    DEFAULT_DEDUP_TTL, Producer, ProducerConfig, PublishOptions, Receipt, Record, check_record,
};
pub use rate_limit::RateLimit;
pub use reader::{Reader, StartAt};
pub use reply::{HEADER_CORRELATION, HEADER_REPLY_GROUP, HEADER_REPLY_TO, KeptResult};
pub use request::{DEFAULT_REQUEST_TIMEOUT, Reply, Request};
pub use retry::{Backoff, HEADER_MAX_ATTEMPTS, RetryPolicy};
pub use schedule::{
    DEFAULT_RELOAD_INTERVAL, FIRE_DEDUP_TTL, HEADER_FIRE_TIME, HEADER_SCHEDULE, ScheduleSpec,
    Timetable, fire_time_rfc3339,
};
pub use scheduler::Scheduler;
#[cfg(feature = "schemars")]
pub use schema::schema_of;
pub use schema::{GATE_REFRESH, HEADER_SCHEMA_VERSION, SchemaVersion, schema_changes};
pub use status::{GroupState, KEY_SCAN, MessageState, MessageStatus};
pub use store::conn::{BlockingConn, Conn, ServerInfo};
pub use store::keys;
pub use telemetry::{
    HEADER_TRACEPARENT, HEADER_TRACESTATE, TraceParent, TraceRelation, current_traceparent,
};
pub use topic::{
    Created, DEFAULT_RETENTION, MAX_LANES, MAX_PARTITIONS, SchemaPolicy, TopicInfo, TopicSpec,
};
pub use topic_placement::{PartitionPlacement, PrimaryShare, SlotMove, TopicPlacement};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
