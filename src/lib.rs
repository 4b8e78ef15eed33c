#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
// A type a public item uses must be nameable by users (exported below).
#![warn(unnameable_types)]

// The public face is the list of `pub use` below plus five small public
// modules whose items are contracts of their own (ACL rules, durations, the
// wire format, the key layout and name rules, the partitioner). Everything
// else is private, so the layers under the API can change freely.
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

pub use cancel::CancelOutcome;
pub use client::Client;
pub use compat::{CompatMode, Incompatibility};
pub use config::{Config, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PREFIX, redact_url};
pub use consumer::{
    CANCEL_GRACE, Context, DEFAULT_RESULT_TTL, HEADER_TIMEOUT, HandlerError, LATENCY_BUCKETS,
    LatencyHistogram, PROGRESS_EVERY, Promoter, StatsSnapshot, Worker, WorkerBuilder, WorkerHandle,
    WorkerSettings, WorkerStats,
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
