//! Publishing: records, partition choice, and the batching producer.
//!
//! A publish is turned into one Redis command in the caller's task (encode,
//! size check, partition by key, build `XADD` or a script call), then handed
//! to the producer's batcher, which puts whatever is queued into one pipeline
//! (one per partition on a cluster) and keeps a few pipelines in flight at
//! once, so many concurrent `publish` calls share round trips. Plain publishes
//! are a bare `XADD`; dedup and delayed publishes are scripts
//! (`publish_dedup`, `delay`). Time retention is the `trim` script riding
//! along in the pipeline at most once per partition lane per trim interval
//! (it keeps what live groups have not handled), so `XADD` itself stays
//! cheap; a length cap is `MAXLEN ~` on each `XADD`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::Cmd;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::acks::Acks;
use crate::envelope::{self, Event, Headers, encode_headers, validate_key};
use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;
use crate::retry::{HEADER_MAX_ATTEMPTS, attempts_cap};
use crate::schema::{self, Gate, Seen};
use crate::store::backend::Backend;
use crate::store::keys::{KeySpace, validate_dedup_id};
use crate::store::publish::{self, Due, Prepared, PublishStep, send, unique_nonce};
use crate::store::scripts::Scripts;
use crate::telemetry;
use crate::topic::{Catalog, TopicSpec};

pub use crate::store::publish::Receipt;

/// Default time a dedup id is remembered: 1 hour.
pub const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(3600);

/// When a message becomes visible to consumers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum When {
    /// At once.
    #[default]
    Now,
    /// After a delay, measured on Redis's clock.
    Delay(Duration),
    /// At a time, in milliseconds since the Unix epoch.
    AtMs(u64),
}

/// Everything about a publish except the payload.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct PublishOptions {
    key: Option<String>,
    headers: Headers,
    priority: u8,
    when: When,
    dedup: Option<(String, Duration)>,
    schema_version: Option<u32>,
}

impl PublishOptions {
    /// No key, no headers, lane 0, now, no dedup.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the partition key (overrides an event's own key).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets all headers.
    pub fn headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the priority lane (0, the default, is the most urgent).
    pub fn priority(mut self, lane: u8) -> Self {
        self.priority = lane;
        self
    }

    /// Caps how often this message is attempted: a group gives up after
    /// `attempts` (or its own `max_attempts`, whichever is fewer) and
    /// dead-letters it. Travels as the header [`HEADER_MAX_ATTEMPTS`], so
    /// it holds across retries, dead-lettering and replay; 0 is refused
    /// when publishing.
    pub fn max_attempts(self, attempts: u32) -> Self {
        self.header(HEADER_MAX_ATTEMPTS, attempts.to_string())
    }

    /// Delays visibility by `delay` (on Redis's clock).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.when = When::Delay(delay);
        self
    }

    /// Makes the message visible at `at`.
    pub fn at(mut self, at: SystemTime) -> Self {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.when = When::AtMs(ms);
        self
    }

    /// Makes the publish idempotent: the same id within the TTL (default 1
    /// hour) returns the first message's id and publishes nothing.
    ///
    /// **Scope: the partition.** The id is checked in the partition the
    /// record goes to (the check and the write are one script in that
    /// partition's slot): its key's partition, or for a keyless record the
    /// dedup id's own. So two publishes with the same dedup id are one
    /// message when both have the same key, or both have none; with
    /// different keys they can land in different partitions and are both
    /// published. Retry a publish with the record it had.
    pub fn dedup_id(mut self, id: impl Into<String>) -> Self {
        let ttl = self.dedup.as_ref().map_or(DEFAULT_DEDUP_TTL, |d| d.1);
        self.dedup = Some((id.into(), ttl));
        self
    }

    /// How long a dedup id is remembered.
    pub fn dedup_ttl(mut self, ttl: Duration) -> Self {
        if let Some(d) = &mut self.dedup {
            d.1 = ttl;
        }
        self
    }

    /// Checks the payload against this version of the topic's schema
    /// rather than the latest (on any topic, whether or not it requires
    /// schemas), and stamps it as the message's
    /// [`HEADER_SCHEMA_VERSION`](crate::HEADER_SCHEMA_VERSION). For a
    /// producer that is deployed with one version while a newer one is
    /// registered.
    pub fn schema_version(mut self, version: u32) -> Self {
        self.schema_version = Some(version);
        self
    }
}

/// A message to publish: payload bytes and options.
#[derive(Clone, Debug)]
#[must_use]
pub struct Record {
    payload: Vec<u8>,
    options: PublishOptions,
}

impl Record {
    /// A record with raw payload bytes.
    pub fn raw(payload: impl Into<Vec<u8>>) -> Self {
        Record {
            payload: payload.into(),
            options: PublishOptions::new(),
        }
    }

    /// A record with a serde value encoded as MessagePack.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        Ok(Record::raw(envelope::encode(value)?))
    }

    /// A record from a typed event, keyed by the event's key.
    pub fn event<E: Event>(event: &E) -> Result<Self> {
        let mut r = Record::encode(event)?;
        if let Some(k) = event.key() {
            r.options.key = Some(k);
        }
        Ok(r)
    }

    /// Replaces the options (headers, priority, timing, dedup) with
    /// `options`, keeping a key already set if `options` has none. Call it
    /// before the single-option setters, which add to what is there.
    pub fn options(mut self, options: PublishOptions) -> Self {
        let key = options.key.clone().or(self.options.key.take());
        self.options = options;
        self.options.key = key;
        self
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.options = self.options.key(key);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options = self.options.header(name, value);
        self
    }

    /// Sets the priority lane.
    pub fn priority(mut self, lane: u8) -> Self {
        self.options = self.options.priority(lane);
        self
    }

    /// Caps this message's attempts (see [`PublishOptions::max_attempts`]).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.options = self.options.max_attempts(attempts);
        self
    }

    /// Delays visibility.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.options = self.options.delay(delay);
        self
    }

    /// Makes the message visible at `at`.
    pub fn at(mut self, at: SystemTime) -> Self {
        self.options = self.options.at(at);
        self
    }

    /// Makes the publish idempotent by `id`, within the record's partition
    /// (see [`PublishOptions::dedup_id`] for the scope).
    pub fn dedup_id(mut self, id: impl Into<String>) -> Self {
        self.options = self.options.dedup_id(id);
        self
    }

    /// How long the dedup id is remembered (default 1 h). Each remembered id
    /// costs Redis memory until then.
    pub fn dedup_ttl(mut self, ttl: Duration) -> Self {
        self.options = self.options.dedup_ttl(ttl);
        self
    }

    /// Checks the payload against this version of the topic's schema (see
    /// [`PublishOptions::schema_version`]).
    pub fn schema_version(mut self, version: u32) -> Self {
        self.options = self.options.schema_version(version);
        self
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// Batching settings of a [`Producer`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// How long the batcher waits for more publishes after the first one
    /// (default 0: it takes whatever is already queued, which batches well
    /// under load and adds no latency when idle).
    pub linger: Duration,
    /// Most commands in one pipeline (default 1000).
    pub max_batch: usize,
    /// Most pipelines in flight at once (default 4).
    pub max_in_flight: usize,
    /// Publishes that may wait in the queue before `publish` waits (default 100 000).
    pub queue_capacity: usize,
    /// Least time between two retention trims of one partition lane (default 1 s).
    pub trim_interval: Duration,
    /// When a publish counts as done (default [`Acks::Primary`]).
    pub acks: Acks,
}

impl ProducerConfig {
    /// How long the batcher waits for more publishes after the first one.
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Most commands in one pipeline.
    #[must_use]
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Most pipelines in flight at once.
    #[must_use]
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Publishes that may wait in the queue before `publish` waits.
    #[must_use]
    pub fn queue_capacity(mut self, queue_capacity: usize) -> Self {
        self.queue_capacity = queue_capacity;
        self
    }

    /// Least time between two retention trims of one partition lane.
    #[must_use]
    pub fn trim_interval(mut self, trim_interval: Duration) -> Self {
        self.trim_interval = trim_interval;
        self
    }

    /// When a publish counts as done: [`Acks::Primary`] (the default) or
    /// [`Acks::replicas`].
    #[must_use]
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::ZERO,
            max_batch: 1000,
            max_in_flight: 4,
            queue_capacity: 100_000,
            trim_interval: Duration::from_secs(1),
            acks: Acks::Primary,
        }
    }
}

struct Job {
    prepared: Prepared,
    reply: oneshot::Sender<Result<Receipt>>,
}

/// Checks a record against a topic and a size limit, as publishing would:
/// the lane, the key, the attempts cap, the dedup id and the encoded size.
/// Lets a caller validate a whole batch before publishing any of it.
pub fn check_record(spec: &TopicSpec, record: &Record, max_bytes: usize) -> Result<()> {
    let options = &record.options;
    if options.priority >= spec.lanes {
        return Err(Error::LaneOutOfRange {
            topic: spec.name.clone(),
            lanes: spec.lanes,
            priority: options.priority,
        });
    }
    let key = options.key.as_deref();
    if let Some(k) = key {
        validate_key(k)?;
    }
    if let Some(cap) = options.headers.get(HEADER_MAX_ATTEMPTS) {
        attempts_cap(cap)?;
    }
    if let Some((id, ttl)) = &options.dedup {
        validate_dedup_id(id)?;
        if ttl.is_zero() {
            return Err(Error::invalid("dedup ttl", "must be more than zero"));
        }
    }
    let headers = if options.headers.is_empty() {
        0
    } else {
        encode_headers(&options.headers)?.len()
    };
    let size = record.payload.len() + headers + key.map_or(0, str::len);
    if size > max_bytes {
        return Err(Error::PayloadTooLarge {
            size,
            limit: max_bytes,
        });
    }
    Ok(())
}

/// Builds the command for one record (pure apart from the nonce and, when
/// `traced`, the creation's span).
fn prepare(
    keys: &KeySpace,
    scripts: &Scripts,
    spec: &TopicSpec,
    record: Record,
    round_robin: &AtomicU64,
    max_bytes: usize,
    traced: bool,
) -> Result<Prepared> {
    check_record(spec, &record, max_bytes)?;
    keys.require(&spec.name)?;
    if spec.is_dead_letter_view() {
        return Err(Error::InvalidName {
            what: "topic",
            name: spec.name.clone(),
            reason: "a dead-letter view is read-only: replay entries instead",
        });
    }
    let Record {
        payload,
        mut options,
    } = record;
    let topic = spec.name.as_str();
    // A keyless idempotent publish is placed by its dedup id, so a retried
    // publish meets its marker in the same partition.
    let partition = match (options.key.as_deref(), &options.dedup) {
        (Some(k), _) => partition_for_key(k, spec.partitions),
        (None, Some((id, _))) => partition_for_key(id, spec.partitions),
        (None, None) => {
            (round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(spec.partitions)) as u32
        }
    };
    // The creation's span, and (feature `otel`) its trace context in the
    // message's headers.
    if traced {
        let span = telemetry::create_span(topic, partition, options.key.as_deref());
        telemetry::inject(&span, &mut options.headers);
    }
    let headers = encode_headers(&options.headers)?;
    let key = options.key.as_deref();
    Ok(publish::prepare(
        keys,
        scripts,
        PublishStep {
            topic,
            partition,
            lane: options.priority,
            key,
            headers: &headers,
            payload: &payload,
            max_len: spec.max_len,
            retention: spec.retention,
            dedup: options.dedup.as_ref().map(|(id, ttl)| (id.as_str(), *ttl)),
            due: match options.when {
                When::Now => Due::Now,
                When::Delay(d) => Due::After(d),
                When::AtMs(ms) => Due::At(ms),
            },
        },
    ))
}

/// Remembers when each partition lane was last trimmed.
#[derive(Default)]
struct Trimmer {
    last: HashMap<String, Instant, foldhash::fast::RandomState>,
}

impl Trimmer {
    /// `trim` script calls due for these publishes.
    fn due<'a>(
        &mut self,
        scripts: &Scripts,
        interval: Duration,
        items: impl Iterator<Item = &'a Prepared>,
    ) -> Vec<(u32, Cmd)> {
        let now = Instant::now();
        let mut out = Vec::new();
        for p in items {
            let Some((stream, retention_ms)) = &p.trim else {
                continue;
            };
            let fresh = self
                .last
                .get(stream)
                .is_some_and(|t| now.duration_since(*t) < interval);
            if fresh {
                continue;
            }
            self.last.insert(stream.clone(), now);
            // The script keeps what a live group has not handled yet.
            let c = publish::trim(scripts, stream, *retention_ms);
            out.push((p.partition, c));
        }
        out
    }
}

/// A batching publisher. Clones share one batcher.
#[derive(Clone)]
pub struct Producer {
    client: Catalog,
    gate: Arc<Gate>,
    tx: mpsc::Sender<Job>,
    round_robin: Arc<AtomicU64>,
    config: Arc<ProducerConfig>,
    trimmer: Arc<std::sync::Mutex<Trimmer>>,
}

impl Producer {
    pub(crate) fn start(client: Catalog, gate: Arc<Gate>, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let trimmer = Arc::new(std::sync::Mutex::new(Trimmer::default()));
        let batcher = Batcher {
            backend: (*client).clone(),
            config: config.clone(),
            trimmer: trimmer.clone(),
        };
        tokio::spawn(batcher.run(rx));
        Producer {
            client,
            gate,
            tx,
            round_robin: Arc::new(AtomicU64::new(unique_nonce())),
            config: Arc::new(config),
            trimmer,
        }
    }

    /// Checks `record` against `spec`'s schema as its policy or the
    /// record's pinned version asks, stamping the version it matched.
    /// The common case, a topic read lately as not requiring schemas and a
    /// record that pins no version, is decided here without waiting; the
    /// rest is boxed, so it does not weigh on every publish's future.
    async fn stamp(&self, spec: &TopicSpec, record: &mut Record) -> Result<()> {
        if spec.is_dead_letter_view() {
            // Refused by `prepare`: nothing is published there.
            return Ok(());
        }
        if record.options.schema_version.is_none() && self.gate.lets_through(&spec.name) {
            schema::drop_stamp(&mut record.options.headers);
            return Ok(());
        }
        Box::pin(self.stamp_checked(spec, record)).await
    }

    /// [`Producer::stamp`] after asking the gate.
    async fn stamp_checked(&self, spec: &TopicSpec, record: &mut Record) -> Result<()> {
        let pinned = record.options.schema_version;
        let seen = self.gate.seen(&self.client, &spec.name, pinned).await?;
        seen.stamp(
            &spec.name,
            pinned,
            &record.payload,
            &mut record.options.headers,
        )
    }

    /// Checks `record` as publishing it to `topic` would (its options, its
    /// size, and its payload against the topic's schema when the topic
    /// requires one or the record pins a version), sending nothing: for a
    /// caller that checks a whole batch before publishing any of it.
    pub async fn check(&self, topic: &str, record: &Record) -> Result<()> {
        // Its own round robin: checking must not move where publishes go.
        self.prepare(topic, record.clone(), &AtomicU64::new(0), false)
            .await
            .map(|_| ())
    }

    async fn prepare(
        &self,
        topic: &str,
        mut record: Record,
        round_robin: &AtomicU64,
        traced: bool,
    ) -> Result<Prepared> {
        let spec = self.client.topic_cached(topic).await?;
        self.stamp(&spec, &mut record).await?;
        prepare(
            self.client.keys(),
            self.client.scripts(),
            &spec,
            record,
            round_robin,
            self.client.config().max_message_bytes,
            traced,
        )
    }

    /// Publishes one record to `topic`.
    pub async fn publish(&self, topic: &str, record: Record) -> Result<Receipt> {
        let prepared = self.prepare(topic, record, &self.round_robin, true).await?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { prepared, reply })
            .await
            .map_err(|_| Error::ProducerClosed)?;
        rx.await.map_err(|_| Error::ProducerClosed)?
    }

    /// Publishes many records to `topic` in pipelines of `max_batch`,
    /// returning one result per record, in order. Records that fail
    /// validation (their options, size or schema) fail alone; the others
    /// are still published. To publish all or nothing, [`Producer::check`]
    /// each record first.
    pub async fn publish_batch(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Vec<Result<Receipt>>> {
        let spec = self.client.topic_cached(topic).await?;
        let spec = &*spec;
        let records: Vec<Record> = records.into_iter().collect();
        // What the records are checked against, read before any is sent
        // (preparing a chunk must not wait, or chunks could start out of
        // order): the latest version's reading, and each pinned version's.
        // Pins are few (usually none), so a short list, not a map.
        let mut pins: Vec<Option<u32>> = Vec::new();
        for r in &records {
            if let Some(v) = r.options.schema_version
                && !pins.contains(&Some(v))
            {
                pins.push(Some(v));
            }
        }
        let mut seen: Vec<(Option<u32>, Arc<Seen>)> = Vec::with_capacity(pins.len() + 1);
        if !spec.is_dead_letter_view() {
            if !self.gate.lets_through(&spec.name) {
                pins.push(None);
            }
            for pinned in pins {
                seen.push((
                    pinned,
                    self.gate.seen(&self.client, &spec.name, pinned).await?,
                ));
            }
        }
        let seen = &seen;
        let backend: &Backend = &self.client;
        let conn = &backend.connection();
        let (keys, scripts) = (backend.keys(), backend.scripts());
        let max_bytes = backend.config().max_message_bytes;
        // Records are prepared a chunk at a time, when the chunk's pipeline
        // is about to start, so encoding the next chunks overlaps with the
        // ones in flight. Pipelines are started in order (`buffered` polls
        // each new future before the next, and preparing does not await),
        // so records of one key keep their order across chunks, while up to
        // `max_in_flight` pipelines are in flight.
        let chunk = self.config.max_batch.max(1);
        let mut records = records.into_iter().enumerate();
        let chunks = std::iter::from_fn(move || {
            let part: Vec<(usize, Record)> = records.by_ref().take(chunk).collect();
            (!part.is_empty()).then_some(part)
        });
        let mut sends = futures_util::stream::iter(chunks)
            .map(|part| async move {
                let mut done = Vec::with_capacity(part.len());
                let (mut idx, mut items) = (Vec::with_capacity(part.len()), Vec::new());
                for (i, mut r) in part {
                    let pinned = r.options.schema_version;
                    let stamped = match seen.iter().find(|(p, _)| *p == pinned) {
                        Some((_, s)) => {
                            s.stamp(&spec.name, pinned, &r.payload, &mut r.options.headers)
                        }
                        // A topic that lets unpinned records through.
                        None => {
                            schema::drop_stamp(&mut r.options.headers);
                            Ok(())
                        }
                    };
                    match stamped.and_then(|()| {
                        prepare(keys, scripts, spec, r, &self.round_robin, max_bytes, true)
                    }) {
                        Ok(p) => {
                            idx.push(i);
                            items.push(p);
                        }
                        Err(e) => done.push((i, Err(e))),
                    }
                }
                if !items.is_empty() {
                    let trims = self
                        .trimmer
                        .lock()
                        .map(|mut t| t.due(scripts, self.config.trim_interval, items.iter()))
                        .unwrap_or_default();
                    let sent = send(conn, scripts, items, trims, self.config.acks).await;
                    done.extend(idx.into_iter().zip(sent));
                }
                done
            })
            .buffered(self.config.max_in_flight.max(1));
        let mut out: Vec<Option<Result<Receipt>>> = Vec::new();
        while let Some(done) = sends.next().await {
            for (i, r) in done {
                if out.len() <= i {
                    out.resize_with(i + 1, || None);
                }
                out[i] = Some(r);
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::ProducerClosed)))
            .collect())
    }
}

struct Batcher {
    backend: Backend,
    config: ProducerConfig,
    trimmer: Arc<std::sync::Mutex<Trimmer>>,
}

impl Batcher {
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        let sem = Arc::new(Semaphore::new(self.config.max_in_flight.max(1)));
        let max = self.config.max_batch.max(1);
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            if self.config.linger.is_zero() {
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
            } else {
                let deadline = tokio::time::Instant::now() + self.config.linger;
                while batch.len() < max {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(j)) => batch.push(j),
                        _ => break,
                    }
                }
            }
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            let trims = self
                .trimmer
                .lock()
                .map(|mut t| {
                    t.due(
                        self.backend.scripts(),
                        self.config.trim_interval,
                        batch.iter().map(|j| &j.prepared),
                    )
                })
                .unwrap_or_default();
            let backend = self.backend.clone();
            let acks = self.config.acks;
            tokio::spawn(async move {
                let (items, replies): (Vec<Prepared>, Vec<_>) =
                    batch.into_iter().map(|j| (j.prepared, j.reply)).unzip();
                let results =
                    send(&backend.connection(), backend.scripts(), items, trims, acks).await;
                drop(permit);
                for (reply, r) in replies.into_iter().zip(results) {
                    // The caller may have given up waiting; that is fine.
                    let _ = reply.send(r);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(partitions: u32) -> TopicSpec {
        TopicSpec::new("t", partitions).unwrap().lanes(2)
    }

    #[test]
    fn keyed_records_go_to_the_key_partition() {
        let (k, s) = (KeySpace::new("mr"), Scripts::new());
        let rr = AtomicU64::new(0);
        let record = || Record::raw(b"x".to_vec()).key("tenant-1");
        // Until the topic's settings (and so its tags) were read, nothing
        // is built for it: never a guess at its keys.
        let unknown = prepare(&k, &s, &spec(8), record(), &rr, 100, true);
        assert!(matches!(unknown, Err(Error::PlacementUnknown(t)) if t == "t"));
        k.remember("t", crate::placement::Tags::Hash);
        let p = prepare(&k, &s, &spec(8), record(), &rr, 100, true).unwrap();
        assert_eq!(p.partition, partition_for_key("tenant-1", 8));
        assert_eq!(
            rr.load(Ordering::Relaxed),
            0,
            "keyed records leave round robin alone"
        );
    }

    #[test]
    fn limits_are_checked_before_anything_is_sent() {
        let (k, s) = (KeySpace::new("mr"), Scripts::new());
        let rr = AtomicU64::new(0);
        let big = prepare(
            &k,
            &s,
            &spec(1),
            Record::raw(vec![0u8; 101]),
            &rr,
            100,
            true,
        );
        assert!(matches!(
            big,
            Err(Error::PayloadTooLarge {
                size: 101,
                limit: 100
            })
        ));
        let lane = prepare(
            &k,
            &s,
            &spec(1),
            Record::raw(vec![]).priority(2),
            &rr,
            100,
            true,
        );
        assert!(matches!(lane, Err(Error::LaneOutOfRange { .. })));
        let key = prepare(
            &k,
            &s,
            &spec(1),
            Record::raw(vec![]).key(""),
            &rr,
            100,
            true,
        );
        assert!(matches!(
            key,
            Err(Error::InvalidArgument { what: "key", .. })
        ));
    }
}
