//! The [`Client`]: one handle on Redis for topics, groups, publishing,
//! reading, dead letters and schedules.
//!
//! A thin facade: each method hands its call to the domain module that does
//! the work ([`crate::topic`], [`crate::group`], [`crate::producer`],
//! [`crate::reader`], [`crate::dlq`], [`crate::schedule`]), over one
//! connected backend. Cheap to clone; clones share the connections, the
//! topic cache and the shared producer.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::compat::{CompatMode, Incompatibility};
use crate::config::Config;
use crate::dlq::{self, DeadLetter, ReplayTo, Selection};
use crate::envelope::{Event, Message};
use crate::error::Result;
use crate::group::{self, GroupInfo, ResetPlan, reset};
use crate::id::MessageId;
use crate::overview::{self, Overview, TopicOverview};
use crate::producer::{Producer, ProducerConfig, PublishOptions, Receipt, Record};
use crate::reader::{Reader, StartAt};
use crate::reply::KeptResult;
use crate::request::{self, Reply, Request, Requester};
use crate::schedule::{self, ScheduleSpec};
use crate::schema::{self, Gate, SchemaVersion};
use crate::status::{self, MessageStatus};
use crate::store::backend::Backend;
use crate::store::conn::{BlockingConn, Conn, ServerInfo};
use crate::store::keys::KeySpace;
use crate::topic::{Catalog, Created, SchemaPolicy, TopicInfo, TopicSpec};

/// A connected millrace client.
///
/// ```no_run
/// # async fn run() -> millrace::Result<()> {
/// let client = millrace::Client::connect(millrace::Config::new("redis://127.0.0.1:6379")?).await?;
/// client.create_topic(&millrace::TopicSpec::new("erp.v1.invoice.created", 8)?).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    catalog: Catalog,
    gate: Arc<Gate>,
    producer: Arc<OnceLock<Producer>>,
    requester: Arc<Requester>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", self.config())
            .field("server", self.server_info())
            .finish()
    }
}

impl Client {
    /// Connects, checks that the server is Redis 7.0+ (or compatible),
    /// detects a cluster and preloads the scripts.
    pub async fn connect(config: Config) -> Result<Client> {
        Ok(Client {
            catalog: Catalog::new(Backend::connect(config).await?),
            gate: Arc::default(),
            producer: Arc::default(),
            requester: Arc::default(),
        })
    }

    /// Connects to one URL with the default settings.
    pub async fn open(url: &str) -> Result<Client> {
        Client::connect(Config::new(url)?).await
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        self.catalog.config()
    }

    /// What the server reported on connect.
    pub fn server_info(&self) -> &ServerInfo {
        self.catalog.info()
    }

    /// The key space (prefix and key builders).
    pub fn keys(&self) -> &KeySpace {
        self.catalog.keys()
    }

    /// A clone of the multiplexed connection, for commands of your own.
    pub fn connection(&self) -> Conn {
        self.catalog.connection()
    }

    /// A dedicated connection for blocking reads.
    pub async fn blocking_connection(&self) -> Result<BlockingConn> {
        self.catalog.blocking_connection().await
    }

    /// Redis's clock in milliseconds (`TIME`).
    pub async fn redis_time_ms(&self) -> Result<u64> {
        self.catalog.redis_time_ms().await
    }

    /// The topics and the backend under them, for the domain modules.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// What a request needs: the catalog, the shared producer, the requester.
    fn asking(&self) -> (Catalog, Producer, Arc<Requester>) {
        (
            self.catalog.clone(),
            self.producer().clone(),
            self.requester.clone(),
        )
    }

    /// What this client's producers and workers check payloads against.
    pub(crate) fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// The client's shared producer (auto-batching, default settings),
    /// started on first use.
    pub fn producer(&self) -> &Producer {
        self.producer.get_or_init(|| {
            Producer::start(
                self.catalog.clone(),
                self.gate.clone(),
                ProducerConfig::default(),
            )
        })
    }

    /// A new producer with its own batching settings.
    pub fn producer_with(&self, config: ProducerConfig) -> Producer {
        Producer::start(self.catalog.clone(), self.gate.clone(), config)
    }

    /// Publishes a typed event to its topic, keyed by its key.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<Receipt> {
        self.producer()
            .publish(E::TOPIC, Record::event(event)?)
            .await
    }

    /// Publishes a typed event with options (delay, priority, dedup id...).
    pub async fn publish_with<E: Event>(
        &self,
        event: &E,
        options: PublishOptions,
    ) -> Result<Receipt> {
        self.producer()
            .publish(E::TOPIC, Record::event(event)?.options(options))
            .await
    }

    /// Publishes a record to a topic.
    pub async fn publish_record(&self, topic: &str, record: Record) -> Result<Receipt> {
        self.producer().publish(topic, record).await
    }

    /// Publishes many records to a topic; one result per record, in order.
    pub async fn publish_batch(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Vec<Result<Receipt>>> {
        self.producer().publish_batch(topic, records).await
    }

    /// A reader of `topic` from `start` (see [`Reader`]).
    pub async fn reader(&self, topic: &str, start: StartAt) -> Result<Reader> {
        Reader::open(&self.catalog, topic, start).await
    }

    /// The last `count` messages of `topic` across its partitions, oldest
    /// first: a page that ends at the newest message (the reader's
    /// `StartAt::Latest` shows only what comes next). Reads at most `count`
    /// entries per partition lane.
    pub async fn latest_messages(&self, topic: &str, count: usize) -> Result<Vec<Message>> {
        let count = count.max(1);
        crate::reader::latest(&self.catalog, topic, count, count).await
    }

    /// About the last `window` messages of `topic`, oldest first, for
    /// searching recent history with a bound: ⌈window / partitions⌉ from
    /// each partition lane, and the newest `window` of those. Exact when
    /// the partitions are evenly filled; a partition that holds more of the
    /// recent messages than its share shows only its share.
    pub async fn latest_window(&self, topic: &str, window: usize) -> Result<Vec<Message>> {
        let spec = self.catalog.topic(topic).await?;
        let window = window.max(1);
        let per_lane = window.div_ceil(spec.partitions.max(1) as usize);
        crate::reader::latest(&self.catalog, topic, per_lane, window).await
    }

    /// Creates a topic, or succeeds if it exists with the same settings.
    /// Fails with [`Error::TopicConflict`](crate::Error::TopicConflict) if it exists with other settings.
    pub async fn create_topic(&self, spec: &TopicSpec) -> Result<Created> {
        self.catalog.create_topic(spec).await
    }

    /// A topic's settings, or [`Error::TopicNotFound`](crate::Error::TopicNotFound).
    pub async fn topic(&self, name: &str) -> Result<TopicSpec> {
        self.catalog.topic(name).await
    }

    /// Names of all topics, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        self.catalog.list_topics().await
    }

    /// Settings and lengths of a topic.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        self.catalog.describe_topic(name).await
    }

    /// Where a topic's partitions live: each partition's slot, primary,
    /// replicas, messages and bytes; each primary's share of the topic and
    /// of all topics; and, after slots moved, how uneven the topic has
    /// become and which slot moves would even it again (advice only).
    pub async fn topic_placement(&self, name: &str) -> Result<crate::TopicPlacement> {
        self.catalog.topic_placement(name).await
    }

    /// Every topic with its lengths and every group's lag, pending count,
    /// pause flag and live members, as the dashboard shows them: the same
    /// figures as [`describe_topic`](Client::describe_topic) and
    /// [`describe_group`](Client::describe_group), read in three round trips
    /// however many topics, groups and partitions there are
    /// ([`Overview::round_trips`]; on a cluster, one pipeline per slot per
    /// round trip, all in flight at once). Topics deleted meanwhile are
    /// left out.
    pub async fn overview(&self) -> Result<Overview> {
        overview::overview(&self.catalog).await
    }

    /// One topic as [`overview`](Client::overview) shows it, in two round
    /// trips; [`Error::TopicNotFound`](crate::Error::TopicNotFound) if
    /// there is no such topic.
    pub async fn topic_overview(&self, name: &str) -> Result<TopicOverview> {
        overview::topic_overview(&self.catalog, name).await
    }

    /// Deletes a topic and every key of it: streams, delayed, dead letters,
    /// group state. Dedup markers are left to expire with their TTL.
    /// Returns false if there was no such topic; refuses a name that is not
    /// a topic's (a dead-letter view `T.dlq` included) before touching Redis.
    pub async fn delete_topic(&self, name: &str) -> Result<bool> {
        self.catalog.delete_topic(name).await
    }

    /// Creates `group` on every partition lane of `topic` at `start` (no-op
    /// where it exists) and registers it. Idempotent; the start position only
    /// matters the first time.
    pub async fn create_group(&self, topic: &str, group: &str, start: &StartAt) -> Result<()> {
        group::create_group(&self.catalog, topic, group, start).await
    }

    /// Pauses a group: its members stop taking new messages at their next
    /// heartbeat (in-flight work finishes). Idempotent.
    pub async fn pause_group(&self, topic: &str, group: &str) -> Result<()> {
        group::pause_group(&self.catalog, topic, group).await
    }

    /// Resumes a paused group. Idempotent.
    pub async fn resume_group(&self, topic: &str, group: &str) -> Result<()> {
        group::resume_group(&self.catalog, topic, group).await
    }

    /// Whether a group is paused.
    pub async fn is_group_paused(&self, topic: &str, group: &str) -> Result<bool> {
        group::is_group_paused(&self.catalog, topic, group).await
    }

    /// Names of a topic's groups, sorted.
    pub async fn list_groups(&self, topic: &str) -> Result<Vec<String>> {
        group::list_groups(&self.catalog, topic).await
    }

    /// Members, owners, lag and pending of a group.
    pub async fn describe_group(&self, topic: &str, group: &str) -> Result<GroupInfo> {
        group::describe_group(&self.catalog, topic, group).await
    }

    /// What [`reset_group`](Client::reset_group) would do, without changing
    /// anything: per partition lane the group's last-delivered id now and
    /// after the reset, and the lag the reset leaves. See [`ResetPlan`].
    pub async fn plan_group_reset(
        &self,
        topic: &str,
        group: &str,
        to: &StartAt,
    ) -> Result<ResetPlan> {
        reset::plan_group_reset(&self.catalog, topic, group, to).await
    }

    /// Moves `group` to `to` on every partition lane of `topic`
    /// (`XGROUP SETID`), and returns what it changed (see
    /// [`plan_group_reset`](Client::plan_group_reset)). Pending entries stay
    /// pending; they are still redelivered by the group's normal recovery.
    ///
    /// Refuses with [`Error::GroupHasMembers`](crate::Error::GroupHasMembers) while the group has live
    /// members, unless `force`; an unknown group is
    /// [`Error::GroupNotFound`](crate::Error::GroupNotFound).
    pub async fn reset_group(
        &self,
        topic: &str,
        group: &str,
        to: &StartAt,
        force: bool,
    ) -> Result<ResetPlan> {
        reset::reset_group(&self.catalog, topic, group, to, force).await
    }

    /// Registers a JSON Schema (draft 2020-12) as the next version of
    /// `topic`'s subject, after checking it against the earlier versions as
    /// the subject's mode says; a document equal to a registered version
    /// returns that version. Fails with
    /// [`Error::SchemaInvalid`](crate::Error::SchemaInvalid) (every problem,
    /// with its JSON pointer) or
    /// [`Error::SchemaIncompatible`](crate::Error::SchemaIncompatible)
    /// (every reason).
    pub async fn register_schema(
        &self,
        topic: &str,
        schema: &serde_json::Value,
    ) -> Result<SchemaVersion> {
        schema::register(&self.catalog, &self.gate, topic, schema).await
    }

    /// Registers the JSON Schema of the event type `E` (derived by
    /// `schemars`, see [`schema_of`](crate::schema_of)) as the next version
    /// of `E::TOPIC`'s subject (feature `schemars`): a build can refuse a
    /// breaking change to its own structs.
    #[cfg(feature = "schemars")]
    pub async fn register_schema_for<E: Event + schemars::JsonSchema>(
        &self,
    ) -> Result<SchemaVersion> {
        schema::register(
            &self.catalog,
            &self.gate,
            E::TOPIC,
            &schema::schema_of::<E>(),
        )
        .await
    }

    /// Why the JSON Schema of `E` could not be registered on `E::TOPIC` now
    /// (feature `schemars`). Writes nothing.
    #[cfg(feature = "schemars")]
    pub async fn check_schema_for<E: Event + schemars::JsonSchema>(
        &self,
    ) -> Result<Vec<Incompatibility>> {
        schema::check(&self.catalog, E::TOPIC, &schema::schema_of::<E>()).await
    }

    /// Why `schema` could not be registered on `topic` now (empty when it
    /// could, or is registered already). Writes nothing.
    pub async fn check_schema(
        &self,
        topic: &str,
        schema: &serde_json::Value,
    ) -> Result<Vec<Incompatibility>> {
        schema::check(&self.catalog, topic, schema).await
    }

    /// Checks a payload against version `version` of `topic`'s schema (the
    /// latest when `None`) and returns the version it matches. Fails with
    /// [`Error::SchemaViolation`](crate::Error::SchemaViolation) naming
    /// every failing place of the payload, or
    /// [`Error::SchemaNotFound`](crate::Error::SchemaNotFound). Each
    /// version's validator is compiled once per process.
    pub async fn validate_payload(
        &self,
        topic: &str,
        payload: &serde_json::Value,
        version: Option<u32>,
    ) -> Result<u32> {
        schema::validate(&self.catalog, topic, payload, version).await
    }

    /// Every registered version of `topic`'s schema, oldest first.
    pub async fn schemas(&self, topic: &str) -> Result<Vec<SchemaVersion>> {
        schema::versions(&self.catalog, topic).await
    }

    /// One version of `topic`'s schema, the latest when `version` is
    /// `None`; `None` when there is no such version.
    pub async fn schema(&self, topic: &str, version: Option<u32>) -> Result<Option<SchemaVersion>> {
        schema::version(&self.catalog, topic, version).await
    }

    /// The compatibility mode of `topic`'s schema subject: its own when
    /// set, else the default mode ([`Client::default_schema_mode`]).
    pub async fn schema_mode(&self, topic: &str) -> Result<CompatMode> {
        schema::mode(&self.catalog, topic).await
    }

    /// Sets the compatibility mode of `topic`'s schema subject.
    pub async fn set_schema_mode(&self, topic: &str, mode: CompatMode) -> Result<()> {
        schema::set_mode(&self.catalog, topic, mode).await
    }

    /// Drops `topic`'s own compatibility mode: it follows the default mode
    /// ([`Client::default_schema_mode`]) again.
    pub async fn clear_schema_mode(&self, topic: &str) -> Result<()> {
        schema::clear_mode(&self.catalog, topic).await
    }

    /// The compatibility mode of every subject that has no mode of its own
    /// (`BACKWARD` unless set).
    pub async fn default_schema_mode(&self) -> Result<CompatMode> {
        schema::default_mode(&self.catalog).await
    }

    /// Sets the compatibility mode of every subject that has no mode of its
    /// own (under this client's prefix).
    pub async fn set_default_schema_mode(&self, mode: CompatMode) -> Result<()> {
        schema::set_default_mode(&self.catalog, mode).await
    }

    /// Sets whether `topic`'s publishes must match its schema (see
    /// [`SchemaPolicy`]). This client's producers follow at once, other
    /// processes' within [`GATE_REFRESH`](crate::GATE_REFRESH).
    pub async fn set_schema_policy(&self, topic: &str, policy: SchemaPolicy) -> Result<()> {
        schema::set_policy(&self.catalog, &self.gate, topic, policy).await
    }

    /// Checks `record` as publishing it to `topic` would (options, size,
    /// schema), sending nothing (see [`Producer::check`]).
    pub async fn check_record(&self, topic: &str, record: &Record) -> Result<()> {
        self.producer().check(topic, record).await
    }

    /// Where message `id` of `topic` stands: the message (in its lane, or
    /// waiting in the delayed set; `None` once trimmed) and its state in
    /// every group of the topic (not yet read, in flight, waiting to retry,
    /// dead-lettered, done, or gone). `Ok(None)` when there is no such
    /// message. Bounded reads, a few per group; changes nothing.
    pub async fn message_status(
        &self,
        topic: &str,
        id: &MessageId,
    ) -> Result<Option<MessageStatus>> {
        status::message_status(&self.catalog, topic, id).await
    }

    /// A request to `topic`: publishes `payload` (as MessagePack) for the
    /// group named with [`Request::group`] and resolves with what that
    /// group's handler returns ([`Reply`](crate::Reply)), its permanent failure
    /// ([`Error::RequestFailed`](crate::Error::RequestFailed)), or
    /// [`Error::RequestTimeout`](crate::Error::RequestTimeout). A group that
    /// does not exist or has no live member fails at once with
    /// [`Error::NoResponders`](crate::Error::NoResponders), before anything
    /// is published. The reply type `T` is what the handler's result
    /// decodes as (`serde_json::Value` takes anything).
    pub fn request<P: serde::Serialize + ?Sized, T>(&self, topic: &str, payload: &P) -> Request<T> {
        Request::new(self.asking(), topic, request::record_of(payload))
    }

    /// A request whose payload is `record` (raw bytes, or a record built
    /// with [`Record::encode`]); its key, headers and lane are kept, a delay
    /// is not allowed.
    pub fn request_record<T>(&self, topic: &str, record: Record) -> Request<T> {
        Request::new(self.asking(), topic, Ok(record))
    }

    /// Cancels message `id` of `topic` for `group`, wherever it stands (see
    /// [`CancelOutcome`](crate::CancelOutcome)): not yet handled, it is
    /// skipped; waiting to retry, the retry is dropped; running in any
    /// process, its handler is told to stop (within about a second) and
    /// the message is not retried. It is then `cancelled` in
    /// [`message_status`](Self::message_status), and a request waiting for
    /// it fails with the error `cancelled`.
    pub async fn cancel(
        &self,
        topic: &str,
        id: &MessageId,
        group: &str,
    ) -> Result<crate::CancelOutcome> {
        crate::cancel::cancel(&self.catalog, topic, id, group).await
    }

    /// Requests waiting for their reply in this client (its clones share them).
    pub fn requests_in_flight(&self) -> usize {
        self.requester.in_flight()
    }

    /// What `group`'s handler returned for message `id` of `topic`, while
    /// the group keeps it (see
    /// [`WorkerBuilder::result_ttl`](crate::WorkerBuilder::result_ttl)):
    /// `None` when nothing is kept (no result, expired, or not handled yet).
    pub async fn message_result(
        &self,
        topic: &str,
        id: &MessageId,
        group: &str,
    ) -> Result<Option<KeptResult>> {
        crate::store::keys::validate_name("group", group)?;
        self.catalog.topic_cached(topic).await?;
        self.catalog
            .store()
            .kept_result(crate::store::results::ResultOf {
                topic,
                partition: id.partition(),
                group,
                lane: id.lane(),
                first: id.first(),
            })
            .await
    }

    /// The answer `group` gave to message `id` (a request whose wait timed
    /// out or was dropped, or any message whose handler returned a value),
    /// read from its kept result: `Ok(None)` while there is none (not
    /// handled yet, nothing returned, or expired), the value decoded as
    /// `T`, or [`Error::RequestFailed`](crate::Error::RequestFailed) for a
    /// final failure or a cancellation. Ask again as often as needed.
    pub async fn reply<T: serde::de::DeserializeOwned>(
        &self,
        topic: &str,
        id: &MessageId,
        group: &str,
    ) -> Result<Option<Reply<T>>> {
        match self.message_result(topic, id, group).await? {
            Some(kept) => request::reply_from_kept(topic, group, id, kept).map(Some),
            None => Ok(None),
        }
    }

    /// The newest messages published with `key` to `topic` (at most
    /// `limit`, newest first), each with where it stands in every group.
    /// Looks through the newest [`KEY_SCAN`](crate::KEY_SCAN) entries of
    /// each lane of the key's partition, no further back.
    pub async fn messages_by_key(
        &self,
        topic: &str,
        key: &str,
        limit: usize,
    ) -> Result<Vec<MessageStatus>> {
        status::messages_by_key(&self.catalog, topic, key, limit).await
    }

    /// Dead letters of `topic`, oldest first, at most `limit`, optionally of
    /// one group.
    pub async fn dead_letters(
        &self,
        topic: &str,
        group: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        dlq::dead_letters(&self.catalog, topic, group, limit).await
    }

    /// One dead letter by id (`ms-seq` or `P:ms-seq`; a bare id found in
    /// several partitions is an error naming each `P:ms-seq`).
    pub async fn dead_letter(&self, topic: &str, id: &str) -> Result<Option<DeadLetter>> {
        dlq::dead_letter(&self.catalog, topic, id).await
    }

    /// Replays dead letters (to the failing group only, or to the whole
    /// topic). Each leaves the DLQ only once it is back in a stream. Returns
    /// how many were replayed.
    pub async fn replay_dead_letters(
        &self,
        topic: &str,
        selection: &Selection,
        group: Option<&str>,
        to: ReplayTo,
    ) -> Result<usize> {
        dlq::replay_dead_letters(&self.catalog, topic, selection, group, to).await
    }

    /// Deletes dead letters. Returns how many were deleted.
    pub async fn purge_dead_letters(
        &self,
        topic: &str,
        selection: &Selection,
        group: Option<&str>,
    ) -> Result<usize> {
        dlq::purge_dead_letters(&self.catalog, topic, selection, group).await
    }

    /// Adds a schedule, or replaces the one of that name. The topic must
    /// exist ([`Error::TopicNotFound`](crate::Error::TopicNotFound)).
    ///
    /// A new schedule starts from now: fires before this call are never
    /// published. So does a replacement with another cron expression or
    /// zone. A replacement with the same timing (other data, key or
    /// headers, or the same spec again, as a deploy script might add it)
    /// keeps its last fire, so a missed fire is still published on return.
    pub async fn add_schedule(&self, spec: &ScheduleSpec) -> Result<()> {
        schedule::add_schedule(&self.catalog, spec).await
    }

    /// Every schedule, sorted by name.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleSpec>> {
        schedule::list_schedules(&self.catalog).await
    }

    /// Removes a schedule; false if there was none of that name.
    pub async fn remove_schedule(&self, name: &str) -> Result<bool> {
        schedule::remove_schedule(&self.catalog, name).await
    }

    /// When each schedule last fired (ms since the epoch, Redis clock).
    pub async fn schedule_last_fires(&self) -> Result<HashMap<String, u64>> {
        schedule::schedule_last_fires(&self.catalog).await
    }
}
