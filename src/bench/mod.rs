//! The benchmark scenarios behind `millrace bench` and `cargo bench`: raw
//! Redis ceilings and millrace on the same server in the same run, each
//! repeated and reported as a median, with ratios to the ceiling (and to
//! BullMQ, when the peer script ran).
//!
//! Throughputs are messages per second; latencies are milliseconds. The
//! machine is shared and noisy: compare ratios from one run, not absolute
//! figures across runs.
//!
//! Only with the hidden feature `tools` (which `cli` turns on): not part of
//! the library's API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::client::Client;
use crate::consumer::{Worker, WorkerHandle};
use crate::error::{Error, Result};
use crate::group::Mode;
use crate::placement::Placement;
use crate::producer::{ProducerConfig, Record};
use crate::rate_limit::RateLimit;
use crate::reader::StartAt;
use crate::topic::{SchemaPolicy, TopicSpec};
use cpu::Meter;

mod cluster;
mod cpu;
mod limits;
mod processes;
mod report;
mod scale;

pub use processes::{WorkerCommand, worker_process};
pub use report::write as write_report;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Messages per throughput repetition.
    pub n: usize,
    /// Repetitions per scenario (the median is reported).
    pub reps: usize,
    /// Latency samples.
    pub latency_samples: usize,
    /// Messages for the memory scenario.
    pub memory_n: usize,
    /// Partitions of the benchmark topics.
    pub partitions: u32,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Run only the scenarios whose name starts with one of these (the
    /// limits and ceilings always run: ratios need them). Empty: run
    /// everything.
    pub only: Vec<String>,
    /// How to start a worker process for `scale.processes.*` (skipped
    /// without).
    pub worker_command: Option<WorkerCommand>,
    /// How the benchmark topics' partitions are placed on a cluster.
    pub placement: Placement,
}

impl BenchOptions {
    /// Whether the scenario `name` (e.g. `consume.ordered.c100`) is selected.
    pub fn selects(&self, name: &str) -> bool {
        name.starts_with("ceiling.")
            || name.starts_with("limit.")
            || self.only.is_empty()
            || self.only.iter().any(|p| name.starts_with(p.as_str()))
    }
}

impl BenchOptions {
    /// The full run (a couple of minutes on 2 cores).
    pub fn full() -> Self {
        BenchOptions {
            n: 100_000,
            reps: 3,
            latency_samples: 1_000,
            memory_n: 100_000,
            partitions: 8,
            payload_bytes: 100,
            only: Vec::new(),
            worker_command: None,
            placement: Placement::Balanced,
        }
    }

    /// A smoke run (seconds).
    pub fn quick() -> Self {
        BenchOptions {
            n: 5_000,
            reps: 1,
            latency_samples: 100,
            memory_n: 5_000,
            partitions: 8,
            payload_bytes: 100,
            only: Vec::new(),
            worker_command: None,
            placement: Placement::Balanced,
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figure {
    /// Scenario name, e.g. `consume.ordered.c100`.
    pub name: String,
    /// The median.
    pub value: f64,
    /// `msg/s`, `ms`, `bytes`, `count` or `share` (a fraction, 1.0 = all).
    pub unit: &'static str,
    /// Every repetition.
    pub samples: Vec<f64>,
    /// Value divided by the raw Redis ceiling of the same kind, if any.
    pub ratio_to_ceiling: Option<f64>,
    /// Value divided by Redis's own limit of the same kind (`limit.xadd`,
    /// `limit.read_ack`), if measured.
    pub ratio_to_limit: Option<f64>,
    /// The Redis server's CPU time per message, microseconds (median over
    /// the repetitions; from `INFO cpu`, so it counts whatever else that
    /// server did meanwhile).
    pub server_cpu_us: Option<f64>,
    /// This process's CPU time per message, microseconds (`getrusage`: the
    /// client, and the worker when it runs in this process).
    pub client_cpu_us: Option<f64>,
    /// `server_cpu_us` divided by the same kind of limit's.
    pub server_cpu_ratio: Option<f64>,
    /// Value divided by BullMQ's figure of the same kind, if measured.
    pub ratio_to_bullmq: Option<f64>,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchReport {
    /// The figures, in run order.
    pub figures: Vec<Figure>,
    /// Redis server and version.
    pub redis: String,
    /// Cores, OS.
    pub machine: String,
    /// BullMQ's raw output, when it ran.
    pub bullmq: Option<serde_json::Value>,
    /// Why BullMQ did not run, if it did not.
    pub bullmq_skipped: Option<String>,
    /// Options used.
    pub n: usize,
    /// Repetitions.
    pub reps: usize,
    /// Every idle publish → handler latency sample, ms (for the report's
    /// distribution; empty when `latency` did not run).
    pub latency_ms: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

async fn fresh_topic(client: &Client, name: &str, partitions: u32) -> Result<()> {
    fresh_placed_topic(client, name, partitions, Placement::Balanced).await
}

/// [`fresh_topic`] with `placement` (on a cluster).
async fn fresh_placed_topic(
    client: &Client,
    name: &str,
    partitions: u32,
    placement: Placement,
) -> Result<()> {
    client.delete_topic(name).await?;
    client
        .create_topic(&TopicSpec::new(name, partitions)?.placement(placement))
        .await?;
    Ok(())
}

/// `XADD key id` of a raw benchmark entry: millrace's three fields, key
/// and headers empty (a keyless message without headers).
fn xadd_entry(key: &str, id: &str, payload: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key)
        .arg(id)
        .arg("k")
        .arg("")
        .arg("h")
        .arg("")
        .arg("d")
        .arg(payload);
    cmd
}

fn records(n: usize, payload: &[u8]) -> Vec<Record> {
    (0..n)
        .map(|i| Record::raw(payload.to_vec()).key(format!("key-{}", i % 1000)))
        .collect()
}

/// Raw redis-rs: pipelines of 1 000 `XADD`s over the partitions, 4 in flight.
async fn raw_xadd(client: &Client, o: &BenchOptions, payload: &[u8], m: &Meter) -> Result<f64> {
    let keys: Vec<String> = (0..o.partitions)
        .map(|p| format!("{}:bench-raw:{{r:{p}}}", client.keys().prefix()))
        .collect();
    let mut conn = client.connection();
    for k in &keys {
        let _: () = redis::cmd("DEL").arg(k).query_async(&mut conn).await?;
    }
    let sem = Arc::new(Semaphore::new(4));
    m.start(client).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in 0..o.n.div_ceil(1000) {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::ProducerClosed)?;
        let mut conn = client.connection();
        let mut pipe = redis::pipe();
        for i in 0..1000.min(o.n - chunk * 1000) {
            pipe.add_command(xadd_entry(
                &keys[(chunk * 1000 + i) % keys.len()],
                "*",
                payload,
            ))
            .ignore();
        }
        tasks.push(tokio::spawn(async move {
            let r: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
            drop(permit);
            r
        }));
    }
    for t in tasks {
        t.await.map_err(|_| Error::ProducerClosed)??;
    }
    let r = rate(o.n, started.elapsed());
    m.stop(client, o.n).await?;
    for k in &keys {
        let _: () = redis::cmd("DEL").arg(k).query_async(&mut conn).await?;
    }
    Ok(r)
}

/// Raw redis-rs: per partition, `XREADGROUP COUNT 100` then `XACK`, one task
/// per partition.
async fn raw_read_ack(client: &Client, o: &BenchOptions, payload: &[u8], m: &Meter) -> Result<f64> {
    fresh_topic(client, "bench.raw", o.partitions).await?;
    client
        .publish_batch("bench.raw", records(o.n, payload))
        .await?;
    let keys: Vec<String> = (0..o.partitions)
        .map(|p| client.keys().stream("bench.raw", p, 0))
        .collect();
    for k in &keys {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(k)
            .arg("raw")
            .arg("0")
            .query_async(&mut client.connection())
            .await?;
    }
    m.start(client).await?;
    let started = Instant::now();
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|k| {
            let mut conn = client.connection();
            tokio::spawn(async move {
                let mut done = 0usize;
                loop {
                    let v: redis::Value = redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg("raw")
                        .arg("c")
                        .arg("COUNT")
                        .arg(100)
                        .arg("STREAMS")
                        .arg(&k)
                        .arg(">")
                        .query_async(&mut conn)
                        .await?;
                    let ids = entry_ids(&v);
                    if ids.is_empty() {
                        return Ok::<usize, redis::RedisError>(done);
                    }
                    let _: i64 = redis::cmd("XACK")
                        .arg(&k)
                        .arg("raw")
                        .arg(&ids)
                        .query_async(&mut conn)
                        .await?;
                    done += ids.len();
                }
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.map_err(|_| Error::ProducerClosed)??;
    }
    let r = rate(total, started.elapsed());
    m.stop(client, total).await?;
    client.delete_topic("bench.raw").await?;
    Ok(r)
}

fn entry_ids(v: &redis::Value) -> Vec<String> {
    use redis::Value;
    let mut out = Vec::new();
    if let Value::Array(streams) = v {
        for s in streams {
            if let Value::Array(kv) = s
                && let Some(Value::Array(entries)) = kv.get(1)
            {
                for e in entries {
                    if let Value::Array(parts) = e
                        && let Some(Ok(id)) =
                            parts.first().map(|p| redis::from_redis_value(p.clone()))
                    {
                        out.push(id);
                    }
                }
            }
        }
    }
    out
}

/// millrace `publish` from 4 000 concurrent callers (auto-batched).
async fn produce_concurrent(
    client: &Client,
    o: &BenchOptions,
    payload: &[u8],
    m: &Meter,
) -> Result<f64> {
    fresh_topic(client, "bench.produce", o.partitions).await?;
    let payload = payload.to_vec();
    publish_concurrently(
        client,
        o,
        "bench.produce",
        move || Record::raw(payload.clone()),
        m,
    )
    .await
}

/// `produce.concurrent` with every publish confirmed by one replica
/// (`Acks::replicas(1, 5s)`: `WAIT 1` ends each pipeline).
async fn produce_acks_replica(
    client: &Client,
    o: &BenchOptions,
    payload: &[u8],
    m: &Meter,
) -> Result<f64> {
    fresh_topic(client, "bench.produce", o.partitions).await?;
    let payload = payload.to_vec();
    let config = ProducerConfig::default().acks(crate::Acks::replicas(1, Duration::from_secs(5)));
    publish_concurrently_with(
        client,
        o,
        "bench.produce",
        config,
        move || Record::raw(payload.clone()),
        m,
    )
    .await
}

/// A replica for `produce.acks_replica`: none needed when the server has
/// one already; a private one when the server is on loopback (`port`);
/// `Err` with the reason to skip the scenario otherwise.
async fn replica_for_acks(
    client: &Client,
) -> std::result::Result<Option<crate::local::PrivateRedis>, String> {
    let mut conn = client.connection();
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("INFO replication: {e}"))?;
    let connected = |info: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix("connected_slaves:"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    if connected(&info) > 0 {
        return Ok(None);
    }
    let url = client
        .config()
        .redacted_urls()
        .first()
        .cloned()
        .unwrap_or_default();
    let parsed = url::Url::parse(&url).map_err(|e| e.to_string())?;
    let port = match (parsed.scheme(), parsed.host_str(), parsed.port()) {
        ("redis", Some("127.0.0.1" | "localhost"), Some(port)) => port,
        _ => return Err("the server has no replica and is not a private loopback one".into()),
    };
    let replica = crate::local::PrivateRedis::start_replica_of(port).map_err(|e| e.to_string())?;
    // Until the replica has synced, WAIT counts none.
    let started = Instant::now();
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("INFO replication: {e}"))?;
        if info.contains("state=online") {
            return Ok(Some(replica));
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the private replica did not come online in 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The schema `produce.schema` checks every publish against: an invoice
/// with a string, a bounded integer, an enum and a free-text note.
fn bench_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "invoice": {"type": "string", "minLength": 1, "maxLength": 64},
            "cents": {"type": "integer", "minimum": 0},
            "currency": {"enum": ["EUR", "USD", "GBP"]},
            "note": {"type": "string"},
        },
        "required": ["invoice", "cents", "currency"],
        "additionalProperties": false,
    })
}

/// A MessagePack payload matching [`bench_schema`], about `bytes` long.
fn schema_payload(bytes: usize) -> Result<Vec<u8>> {
    let mut value =
        serde_json::json!({"invoice": "inv-000123", "cents": 420, "currency": "EUR", "note": ""});
    let base = crate::envelope::encode(&value)?.len();
    value["note"] = "x".repeat(bytes.saturating_sub(base + 2)).into();
    crate::envelope::encode(&value)
}

/// `produce.concurrent` on a topic that requires schemas: every publish
/// decoded and checked against the latest version before it is sent.
async fn produce_schema(client: &Client, o: &BenchOptions, m: &Meter) -> Result<f64> {
    let topic = "bench.schema";
    client.delete_topic(topic).await?;
    client
        .create_topic(&TopicSpec::new(topic, o.partitions)?.schema(SchemaPolicy::Required))
        .await?;
    client.register_schema(topic, &bench_schema()).await?;
    let payload = schema_payload(o.payload_bytes)?;
    let rate =
        publish_concurrently(client, o, topic, move || Record::raw(payload.clone()), m).await?;
    client.delete_topic(topic).await?;
    Ok(rate)
}

/// `o.n` publishes through one producer from 4 000 concurrent callers.
async fn publish_concurrently(
    client: &Client,
    o: &BenchOptions,
    topic: &'static str,
    record: impl Fn() -> Record + Clone + Send + 'static,
    m: &Meter,
) -> Result<f64> {
    publish_concurrently_with(client, o, topic, ProducerConfig::default(), record, m).await
}

/// [`publish_concurrently`] through a producer configured as `config`.
async fn publish_concurrently_with(
    client: &Client,
    o: &BenchOptions,
    topic: &'static str,
    config: ProducerConfig,
    record: impl Fn() -> Record + Clone + Send + 'static,
    m: &Meter,
) -> Result<f64> {
    let producer = client.producer_with(config);
    // As many publishes in flight as the XADD ceiling has (4 pipelines of
    // 1 000): the comparison is then of the work per message, not of how
    // deep the pipelines can get.
    let callers = 4000.min(o.n);
    m.start(client).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let producer = producer.clone();
            let record = record.clone();
            let n = o.n;
            tokio::spawn(async move {
                for i in (c..n).step_by(callers) {
                    let r = record().key(format!("key-{}", i % 1000));
                    producer.publish(topic, r).await?;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|_| Error::ProducerClosed)??;
    }
    let r = rate(o.n, started.elapsed());
    m.stop(client, o.n).await?;
    Ok(r)
}

/// millrace `publish_batch` of the whole set.
async fn produce_batch(
    client: &Client,
    o: &BenchOptions,
    payload: &[u8],
    m: &Meter,
) -> Result<f64> {
    fresh_placed_topic(client, "bench.produce", o.partitions, o.placement).await?;
    let recs = records(o.n, payload);
    m.start(client).await?;
    let started = Instant::now();
    let results = client.publish_batch("bench.produce", recs).await?;
    let r = rate(o.n, started.elapsed());
    m.stop(client, o.n).await?;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e);
    }
    Ok(r)
}

/// What a consume scenario runs: `groups` groups of one worker each, in
/// `mode` with `concurrency`, over `n` messages.
#[derive(Clone, Copy)]
struct Consume {
    mode: Mode,
    concurrency: usize,
    groups: usize,
    n: usize,
}

/// A worker with a no-op handler over a pre-filled topic, per group.
async fn consume(
    client: &Client,
    o: &BenchOptions,
    payload: &[u8],
    run: Consume,
    m: &Meter,
) -> Result<f64> {
    fresh_placed_topic(client, "bench.consume", o.partitions, o.placement).await?;
    let n = run.n;
    client
        .publish_batch("bench.consume", records(n, payload))
        .await?;
    drain(client, run, m).await
}

/// The workers of `run` over `bench.consume`, already filled with `run.n`
/// messages: the rate from the first handling to the last.
async fn drain(client: &Client, run: Consume, m: &Meter) -> Result<f64> {
    let Consume {
        mode,
        concurrency,
        groups,
        n,
    } = run;
    let done = Arc::new(AtomicUsize::new(0));
    // The clock starts at the first handling, not before the workers start:
    // joining the group and taking the leases is start-up, not throughput
    // (BullMQ's side likewise starts timing once its worker is ready).
    let first: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    // CPU from the workers' start (joining costs little beside n messages).
    m.start(client).await?;
    let mut handles = Vec::new();
    for g in 0..groups {
        let (d, f) = (done.clone(), first.clone());
        handles.push(
            Worker::builder(client, &format!("bench-{g}"))
                .mode(mode)
                .start_at(StartAt::Earliest)
                .concurrency(concurrency)
                .heartbeat_interval(Duration::from_millis(200))
                .handle_raw("bench.consume", move |_m, _c| {
                    f.get_or_init(Instant::now);
                    d.fetch_add(1, Ordering::Relaxed);
                    async { Ok(()) }
                })
                .start()
                .await?,
        );
    }
    let total = n * groups;
    while done.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = first.get().map(Instant::elapsed).unwrap_or_default();
    let r = rate(total, elapsed);
    m.stop(client, total).await?;
    for h in handles {
        h.shutdown().await?;
    }
    Ok(r)
}

/// Producer and worker at once: publish in batches while one worker drains.
async fn end_to_end(client: &Client, o: &BenchOptions, payload: &[u8], m: &Meter) -> Result<f64> {
    fresh_topic(client, "bench.e2e", o.partitions).await?;
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let w = Worker::builder(client, "bench")
        .start_at(StartAt::Earliest)
        .concurrency(100)
        .handle_raw("bench.e2e", move |_m, _c| {
            d.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        })
        .start()
        .await?;
    m.start(client).await?;
    let started = Instant::now();
    for chunk in records(o.n, payload).chunks(5_000) {
        client.publish_batch("bench.e2e", chunk.to_vec()).await?;
    }
    while done.load(Ordering::Relaxed) < o.n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let r = rate(o.n, started.elapsed());
    m.stop(client, o.n).await?;
    w.shutdown().await?;
    Ok(r)
}

/// Idle worker, one publish at a time: publish call → handler start.
async fn latency(client: &Client, o: &BenchOptions, payload: &[u8]) -> Result<Vec<f64>> {
    fresh_topic(client, "bench.latency", o.partitions).await?;
    let seen: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let notify = Arc::new(tokio::sync::Notify::new());
    let (s2, n2) = (seen.clone(), notify.clone());
    let w = Worker::builder(client, "bench")
        .start_at(StartAt::Latest)
        .concurrency(1)
        .block(Duration::from_secs(1))
        .handle_raw("bench.latency", move |m, _c| {
            let at = Instant::now();
            let seq = m
                .headers
                .get("seq")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if let Ok(mut s) = s2.lock() {
                s.insert(seq, at);
            }
            n2.notify_one();
            async { Ok(()) }
        })
        .start()
        .await?;
    // Let the worker settle into its idle blocking read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut samples = Vec::with_capacity(o.latency_samples);
    for seq in 0..o.latency_samples as u64 {
        let wait = notify.notified();
        let sent = Instant::now();
        client
            .publish_record(
                "bench.latency",
                Record::raw(payload.to_vec()).header("seq", seq.to_string()),
            )
            .await?;
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .map_err(|_| Error::Timeout(Duration::from_secs(5)))?;
        let at = seen.lock().ok().and_then(|s| s.get(&seq).copied());
        if let Some(at) = at {
            samples.push(at.duration_since(sent).as_secs_f64() * 1e3);
        }
    }
    w.shutdown().await?;
    samples.sort_by(|a, b| a.total_cmp(b));
    Ok(samples)
}

/// A pricing worker for the request scenarios: answers each request with
/// its payload's length.
async fn responder(client: &Client, topic: &str, concurrency: usize) -> Result<WorkerHandle> {
    fresh_topic(client, topic, 8).await?;
    Worker::builder(client, "bench")
        .start_at(StartAt::Latest)
        .concurrency(concurrency)
        .block(Duration::from_secs(1))
        .handle_raw(topic, |m, _c| async move { Ok(m.payload.len() as u64) })
        .start()
        .await
}

/// One request and its reply.
async fn ask(client: &Client, topic: &str, payload: &[u8]) -> Result<()> {
    let _: crate::Reply<u64> = client
        .request_record(topic, Record::raw(payload.to_vec()))
        .group("bench")
        .timeout(Duration::from_secs(30))
        .await?;
    Ok(())
}

/// Idle worker, one request at a time: request call → reply in hand (the
/// result kept with the ack, the reply published by the ack script).
async fn request_latency(client: &Client, o: &BenchOptions, payload: &[u8]) -> Result<Vec<f64>> {
    let w = responder(client, "bench.request", 1).await?;
    // Let the worker settle into its idle blocking read; the first request
    // starts the client's reply listener.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ask(client, "bench.request", payload).await?;
    let mut samples = Vec::with_capacity(o.latency_samples);
    for _ in 0..o.latency_samples {
        let sent = Instant::now();
        ask(client, "bench.request", payload).await?;
        samples.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    w.shutdown().await?;
    samples.sort_by(|a, b| a.total_cmp(b));
    Ok(samples)
}

/// Requests answered per second with 100 in flight (a tenth of `n`).
async fn request_throughput(client: &Client, o: &BenchOptions, payload: &[u8]) -> Result<f64> {
    use futures_util::{StreamExt, TryStreamExt};
    let w = responder(client, "bench.request.c100", 100).await?;
    let n = (o.n / 10).max(100);
    let started = Instant::now();
    futures_util::stream::iter(0..n)
        .map(|_| ask(client, "bench.request.c100", payload))
        .buffer_unordered(100)
        .try_for_each(|()| async { Ok(()) })
        .await?;
    let r = rate(n, started.elapsed());
    w.shutdown().await?;
    Ok(r)
}

/// Delayed messages: lateness after their due time.
async fn delayed(client: &Client, o: &BenchOptions, payload: &[u8]) -> Result<Vec<f64>> {
    fresh_topic(client, "bench.delayed", o.partitions).await?;
    let seen: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let s2 = seen.clone();
    let w = Worker::builder(client, "bench")
        .start_at(StartAt::Earliest)
        .concurrency(64)
        .handle_raw("bench.delayed", move |m, _c| {
            let due: u64 = m
                .headers
                .get("due")
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            if let Ok(mut s) = s2.lock() {
                s.push((due, now));
            }
            async { Ok(()) }
        })
        .start()
        .await?;
    let n = o.latency_samples;
    let base = client.redis_time_ms().await?;
    let recs: Vec<Record> = (0..n as u64)
        .map(|i| {
            let due = base + 200 + (i * 797) % 800;
            Record::raw(payload.to_vec())
                .key(format!("k{i}"))
                .header("due", due.to_string())
                .at(std::time::UNIX_EPOCH + Duration::from_millis(due))
        })
        .collect();
    client.publish_batch("bench.delayed", recs).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().map(|s| s.len()).unwrap_or(0) < n {
        if Instant::now() > deadline {
            return Err(Error::Timeout(Duration::from_secs(30)));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.shutdown().await?;
    let mut late: Vec<f64> = seen
        .lock()
        .map(|s| s.iter().map(|(due, at)| *at as f64 - *due as f64).collect())
        .unwrap_or_default();
    late.sort_by(|a, b| a.total_cmp(b));
    Ok(late)
}

/// A group-wide rate limit: three members share one fixed window of permits
/// a second (`LIMIT/1s`, on Redis's clock) over a backlog. The figure is
/// the median share of a window's permits that were used, over the whole
/// windows of the run (1.0: the group handles at the limit). That the limit
/// is never exceeded is a test (`tests/retries.rs`), not a figure.
async fn rate_limit_fill(client: &Client, o: &BenchOptions, payload: &[u8]) -> Result<f64> {
    // Full runs: 1 000 a second; smoke runs: 50. Three whole windows.
    let limit = (o.n / 100).clamp(50, 1_000);
    let windows = 3;
    fresh_topic(client, "bench.rate", o.partitions).await?;
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut members = Vec::new();
    for _ in 0..3 {
        let s = starts.clone();
        members.push(
            Worker::builder(client, "bench")
                .start_at(StartAt::Earliest)
                .concurrency(100)
                .rate_limit(RateLimit {
                    permits: limit as u32,
                    per: Duration::from_secs(1),
                })
                .handle_raw("bench.rate", move |_m, _c| {
                    if let Ok(mut s) = s.lock() {
                        s.push(Instant::now());
                    }
                    async { Ok(()) }
                })
                .start()
                .await?,
        );
    }
    // Every member owns its partitions before the backlog arrives (handing
    // partitions over is not what this measures).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let owned: Vec<usize> = members
            .iter()
            .map(|m| m.owned_partitions("bench.rate").len())
            .collect();
        if owned.iter().all(|n| *n > 0) && owned.iter().sum::<usize>() == o.partitions as usize {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout(Duration::from_secs(30)));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // This process's clock against Redis's, to place each start in its window.
    let before = Instant::now();
    let redis_ms = client.redis_time_ms().await?;
    let at = before + (Instant::now() - before) / 2;
    let n = limit * (windows + 2);
    client
        .publish_batch("bench.rate", records(n, payload))
        .await?;
    let wait = Duration::from_secs(windows as u64 + 30);
    let deadline = Instant::now() + wait;
    while starts.lock().map(|s| s.len()).unwrap_or(0) < n {
        if Instant::now() > deadline {
            return Err(Error::Timeout(wait));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for m in members {
        m.shutdown().await?;
    }
    client.delete_topic("bench.rate").await?;
    let mut per_window: std::collections::BTreeMap<i64, usize> = Default::default();
    for s in starts.lock().map(|s| s.clone()).unwrap_or_default() {
        let ms = if s >= at {
            redis_ms as i64 + (s - at).as_millis() as i64
        } else {
            redis_ms as i64 - (at - s).as_millis() as i64
        };
        *per_window.entry(ms.div_euclid(1_000)).or_default() += 1;
    }
    // The first and the last window are partial.
    let counts: Vec<usize> = per_window.values().copied().collect();
    let whole = if counts.len() > 2 {
        &counts[1..counts.len() - 1]
    } else {
        &counts[..]
    };
    let fills: Vec<f64> = whole.iter().map(|c| *c as f64 / limit as f64).collect();
    Ok(median(fills))
}

async fn used_memory(client: &Client) -> Result<u64> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut client.connection())
        .await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::Decode("INFO memory has no used_memory".into()))
}

/// Redis memory per waiting message.
async fn memory(client: &Client, o: &BenchOptions, payload: &[u8]) -> Result<f64> {
    fresh_topic(client, "bench.memory", o.partitions).await?;
    let before = used_memory(client).await?;
    client
        .publish_batch("bench.memory", records(o.memory_n, payload))
        .await?;
    let after = used_memory(client).await?;
    client.delete_topic("bench.memory").await?;
    Ok(after.saturating_sub(before) as f64 / o.memory_n as f64)
}

async fn reps<F, Fut>(o: &BenchOptions, mut f: F) -> Result<Vec<f64>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<f64>>,
{
    let mut v = Vec::with_capacity(o.reps);
    for _ in 0..o.reps.max(1) {
        v.push(f().await?);
    }
    Ok(v)
}

/// Runs every scenario on `client`'s server (under its prefix).
pub async fn run(
    client: &Client,
    o: &BenchOptions,
    bullmq: Option<serde_json::Value>,
    bullmq_skipped: Option<String>,
) -> Result<BenchReport> {
    let payload = vec![b'x'; o.payload_bytes];
    let p = &payload;
    let meter = Meter::default();
    let m = &meter;
    let mut latency_ms = Vec::new();
    let mut figures = Vec::new();
    let mut push = |name: &str, unit: &'static str, samples: Vec<f64>| {
        // The CPU of the repetitions since the last figure (none for
        // figures whose scenario does not meter).
        let cpu = meter.take();
        figures.push(Figure {
            name: name.to_string(),
            value: median(samples.clone()),
            unit,
            samples,
            ratio_to_ceiling: None,
            ratio_to_limit: None,
            server_cpu_us: cpu.map(|c| c.server_us),
            client_cpu_us: cpu.map(|c| c.client_us),
            server_cpu_ratio: None,
            ratio_to_bullmq: None,
        });
    };
    tracing::info!("bench: limits");
    match limits::target(client) {
        Ok(info) => {
            let v = reps(o, || limits::xadd(client, &info, o, p, m)).await?;
            push("limit.xadd", "msg/s", v);
            let v = reps(o, || limits::read_ack(client, &info, o, p, m)).await?;
            push("limit.read_ack", "msg/s", v);
        }
        Err(why) => tracing::warn!("bench: the limits need one plain TCP server, not {why}"),
    }
    tracing::info!("bench: ceilings");
    push(
        "ceiling.xadd",
        "msg/s",
        reps(o, || raw_xadd(client, o, p, m)).await?,
    );
    push(
        "ceiling.read_ack",
        "msg/s",
        reps(o, || raw_read_ack(client, o, p, m)).await?,
    );
    tracing::info!("bench: produce");
    if o.selects("produce.concurrent") {
        let v = reps(o, || produce_concurrent(client, o, p, m)).await?;
        push("produce.concurrent", "msg/s", v);
    }
    if o.selects("produce.batch") {
        let v = reps(o, || produce_batch(client, o, p, m)).await?;
        push("produce.batch", "msg/s", v);
    }
    if o.selects("produce.schema") {
        let v = reps(o, || produce_schema(client, o, m)).await?;
        push("produce.schema", "msg/s", v);
    }
    if o.selects("produce.acks_replica") {
        // A replica only for this scenario: feeding one costs the primary
        // too, and the other figures are measured without.
        match replica_for_acks(client).await {
            Ok(replica) => {
                let v = reps(o, || produce_acks_replica(client, o, p, m)).await?;
                push("produce.acks_replica", "msg/s", v);
                drop(replica);
            }
            Err(why) => tracing::warn!("bench: produce.acks_replica skipped: {why}"),
        }
    }
    tracing::info!("bench: consume");
    let consumes = [
        ("consume.ordered.c100", Mode::Ordered, 100, o.n),
        ("consume.ordered.c1", Mode::Ordered, 1, o.n / 4),
        ("consume.shared.c100", Mode::Shared, 100, o.n),
        ("consume.shared.c1", Mode::Shared, 1, o.n / 4),
    ];
    for (name, mode, concurrency, n) in consumes {
        if o.selects(name) {
            let v = reps(o, || {
                consume(
                    client,
                    o,
                    p,
                    Consume {
                        mode,
                        concurrency,
                        groups: 1,
                        n,
                    },
                    m,
                )
            })
            .await?;
            push(name, "msg/s", v);
        }
    }
    tracing::info!("bench: end to end");
    if o.selects("end_to_end") {
        let v = reps(o, || end_to_end(client, o, p, m)).await?;
        push("end_to_end", "msg/s", v);
    }
    tracing::info!("bench: latency");
    if o.selects("latency") {
        let lat = latency(client, o, p).await?;
        latency_ms = lat.clone();
        push("latency.p50", "ms", vec![percentile(&lat, 0.5)]);
        push("latency.p99", "ms", vec![percentile(&lat, 0.99)]);
        push("latency.p999", "ms", vec![percentile(&lat, 0.999)]);
    }
    tracing::info!("bench: request-reply");
    if o.selects("request.latency") {
        let lat = request_latency(client, o, p).await?;
        push("request.latency.p50", "ms", vec![percentile(&lat, 0.5)]);
        push("request.latency.p99", "ms", vec![percentile(&lat, 0.99)]);
    }
    if o.selects("request.c100") {
        let v = reps(o, || request_throughput(client, o, p)).await?;
        push("request.c100", "msg/s", v);
    }
    tracing::info!("bench: delayed");
    if o.selects("delayed") {
        let late = delayed(client, o, p).await?;
        push("delayed.lateness.p50", "ms", vec![percentile(&late, 0.5)]);
        push("delayed.lateness.p99", "ms", vec![percentile(&late, 0.99)]);
    }
    tracing::info!("bench: rate limit");
    if o.selects("rate_limit") {
        let fill = rate_limit_fill(client, o, p).await?;
        push("rate_limit.window_fill", "share", vec![fill]);
    }
    tracing::info!("bench: memory");
    if o.selects("memory") {
        push(
            "memory.per_waiting_message",
            "bytes",
            vec![memory(client, o, p).await?],
        );
    }
    tracing::info!("bench: fan-out");
    for groups in [1usize, 2, 4] {
        let name = format!("fanout.groups{groups}");
        if o.selects(&name) {
            let n = o.n / groups;
            let v = reps(o, || {
                consume(
                    client,
                    o,
                    p,
                    Consume {
                        mode: Mode::Ordered,
                        concurrency: 100,
                        groups,
                        n,
                    },
                    m,
                )
            })
            .await?;
            push(&name, "msg/s", v);
        }
    }
    tracing::info!("bench: scale");
    scale::run(client, o, m, &mut push).await?;
    cluster::run(client, o, m, &mut push).await?;
    // Ratios to the ceilings and to BullMQ.
    let get = |figs: &[Figure], name: &str| figs.iter().find(|f| f.name == name).map(|f| f.value);
    let xadd = get(&figures, "ceiling.xadd");
    let read = get(&figures, "ceiling.read_ack");
    let limit = |name: &str| figures.iter().find(|f| f.name == name).cloned();
    let (limit_xadd, limit_read) = (limit("limit.xadd"), limit("limit.read_ack"));
    let bull = |key: &str| -> Option<f64> {
        let v = bullmq.as_ref()?;
        let mut cur = v;
        for part in key.split('.') {
            cur = cur.get(part)?;
        }
        cur.as_f64()
    };
    for f in &mut figures {
        let ceiling = match f.name.as_str() {
            n if n.starts_with("produce.") => xadd,
            n if n.starts_with("consume.")
                || n.starts_with("end_to_end")
                || n.starts_with("fanout.") =>
            {
                read
            }
            _ => None,
        };
        f.ratio_to_ceiling = ceiling.map(|c| f.value / c);
        let of_kind = match f.name.as_str() {
            n if n.starts_with("limit.") => None,
            n if n.starts_with("produce.")
                || n == "ceiling.xadd"
                || (n.starts_with("scale.") && n.ends_with(".produce")) =>
            {
                limit_xadd.as_ref()
            }
            n if n.starts_with("consume.")
                || n.starts_with("end_to_end")
                || n.starts_with("fanout.")
                || n == "ceiling.read_ack"
                || (n.starts_with("scale.") && n.ends_with(".consume")) =>
            {
                limit_read.as_ref()
            }
            _ => None,
        };
        if let Some(l) = of_kind.filter(|_| f.unit == "msg/s") {
            f.ratio_to_limit = Some(f.value / l.value);
            f.server_cpu_ratio = f
                .server_cpu_us
                .zip(l.server_cpu_us)
                .filter(|(_, base)| *base > 0.0)
                .map(|(mine, base)| mine / base);
        }
        let peer = match f.name.as_str() {
            "produce.concurrent" | "produce.batch" => bull("add_per_s"),
            "consume.ordered.c100" | "consume.shared.c100" => bull("worker_c100_per_s"),
            "consume.ordered.c1" | "consume.shared.c1" => bull("worker_c1_per_s"),
            "latency.p50" => bull("latency_ms.p50"),
            "latency.p99" => bull("latency_ms.p99"),
            "latency.p999" => bull("latency_ms.p999"),
            "memory.per_waiting_message" => bull("memory_bytes_per_job"),
            _ => None,
        };
        f.ratio_to_bullmq = peer.filter(|p| *p > 0.0).map(|p| f.value / p);
    }
    // Shares of one figure of this run over another: what checking every
    // publish against a schema costs (over the same publishes unchecked),
    // what waiting for a replica costs (over the primary's acks alone), and
    // a round trip against one way (publish → handler start).
    for (name, part, whole) in [
        (
            "produce.schema_share",
            "produce.schema",
            "produce.concurrent",
        ),
        (
            "produce.acks_replica_share",
            "produce.acks_replica",
            "produce.concurrent",
        ),
        (
            "request.latency.p50_per_one_way",
            "request.latency.p50",
            "latency.p50",
        ),
    ] {
        if let (Some(part), Some(whole)) = (get(&figures, part), get(&figures, whole))
            && whole > 0.0
        {
            figures.push(Figure {
                name: name.to_string(),
                value: part / whole,
                unit: "share",
                samples: vec![part / whole],
                ..Figure::default()
            });
        }
    }
    let info = client.server_info();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Ok(BenchReport {
        figures,
        redis: format!("{} {}", info.server, info.version),
        machine: format!(
            "{cores} cores, {} {}",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
        bullmq,
        bullmq_skipped,
        n: o.n,
        reps: o.reps,
        latency_ms,
    })
}

/// The report as a human table.
pub fn table(r: &BenchReport) -> String {
    let mut out = format!(
        "millrace bench: {} messages per run, median of {}; {} on {}\n\
         (SRV-US / CLI-US: the Redis server's / this process's CPU microseconds per message; \
         SRV/LIM: the server's CPU per message over its limit's)\n\n",
        r.n, r.reps, r.redis, r.machine
    );
    out.push_str(&format!(
        "{:<30} {:>14} {:<6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "SCENARIO", "VALUE", "UNIT", "/CEILING", "/LIMIT", "/BULLMQ", "SRV-US", "SRV/LIM", "CLI-US"
    ));
    for f in &r.figures {
        let ratio = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        let value = if matches!(f.unit, "msg/s" | "bytes" | "count") {
            format!("{:.0}", f.value)
        } else {
            format!("{:.3}", f.value)
        };
        out.push_str(&format!(
            "{:<30} {:>14} {:<6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            f.name,
            value,
            f.unit,
            ratio(f.ratio_to_ceiling),
            ratio(f.ratio_to_limit),
            ratio(f.ratio_to_bullmq),
            ratio(f.server_cpu_us),
            ratio(f.server_cpu_ratio),
            ratio(f.client_cpu_us),
        ));
    }
    match (&r.bullmq, &r.bullmq_skipped) {
        (Some(b), _) => out.push_str(&format!("\nBullMQ (same Redis, same run): {b}\n")),
        (None, Some(why)) => out.push_str(&format!("\nBullMQ skipped: {why}\n")),
        _ => {}
    }
    out
}

/// Where the BullMQ peer script lives in this source tree.
pub const BULLMQ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/bullmq");

/// Runs the BullMQ peer script against `url` (installing its pinned
/// packages with `npm ci` first). `Err` says why it could not run.
pub async fn run_bullmq(
    dir: &std::path::Path,
    url: &str,
    quick: bool,
) -> std::result::Result<serde_json::Value, String> {
    use tokio::process::Command;
    let found = |bin: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
    };
    if !found("node") || !found("npm") {
        return Err("node or npm is not installed".into());
    }
    if !dir.join("bench.mjs").is_file() {
        return Err(format!("{} has no bench.mjs", dir.display()));
    }
    if !dir.join("node_modules").is_dir() {
        let install = Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .output()
            .await
            .map_err(|e| format!("npm ci: {e}"))?;
        if !install.status.success() {
            return Err(format!(
                "npm ci failed: {}",
                String::from_utf8_lossy(&install.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
    }
    let mut cmd = Command::new("node");
    cmd.arg("bench.mjs")
        .arg("--redis")
        .arg(url)
        .current_dir(dir);
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd.output().await.map_err(|e| format!("node: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "bench.mjs failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bench.mjs printed no JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 0.5), 51.0);
        assert_eq!(percentile(&s, 0.99), 99.0);
    }
}
