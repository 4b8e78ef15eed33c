//! A scenario's rig: a private redis-server (optionally behind the proxy),
//! a topic, the ledger endpoint, a fleet of worker processes and traffic;
//! `finish` heals everything, waits for every group to catch up and checks
//! the promises.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use millrace::{Client, Config, Record, TopicSpec};

use crate::fleet::{Fleet, Plan};
use crate::kafka::partition_of;
use crate::ledger::Ledger;
use crate::proxy::Proxy;
use crate::support::{self, RedisServer};
use crate::traffic::{Published, Traffic};
use crate::verdict::{DeadLetter, Expect, Fault, Handling, History, Msg, Outcome};

pub struct RigOptions {
    /// Worker slots, and how many run at the start.
    pub slots: usize,
    pub running: usize,
    /// Workers and producer reach Redis through the proxy.
    pub proxy: bool,
    pub redis_args: Vec<&'static str>,
    /// Environment of redis-server (the power-loss shim's `LD_PRELOAD`).
    pub redis_env: Vec<(String, String)>,
    pub partitions: u32,
    pub groups: usize,
    pub keys: u32,
    pub session: Duration,
    /// Topic retention (the soak trims, so Redis memory can stay flat).
    pub retention: Option<Duration>,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            slots: 3,
            running: 3,
            proxy: false,
            redis_args: Vec::new(),
            redis_env: Vec::new(),
            partitions: 8,
            groups: 2,
            keys: 64,
            session: Duration::from_secs(2),
            retention: None,
        }
    }
}

/// A small deterministic generator; the seed is printed so a run can be
/// repeated with `MILLRACE_CHAOS_SEED`.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let seed = std::env::var("MILLRACE_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        println!("chaos seed {seed} (MILLRACE_CHAOS_SEED={seed} repeats it)");
        Rng(seed)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

pub struct Rig {
    name: String,
    pub server: RedisServer,
    pub proxy: Option<Proxy>,
    /// Straight to Redis: for checks.
    pub client: Client,
    /// The way the workers go (through the proxy if there is one).
    producer: Client,
    pub ledger: Ledger,
    pub fleet: Fleet,
    pub topic: String,
    pub groups: Vec<String>,
    pub session: Duration,
    prefix: String,
    partitions: u32,
    keys: u32,
    retention: Option<Duration>,
    faults: Vec<Fault>,
    /// When redis-server was killed, and when it was back, each time.
    kills: Vec<(Instant, Instant)>,
    memory: Vec<(Duration, u64, Vec<u64>)>,
}

async fn connect(url: &str, prefix: &str) -> Client {
    Client::connect(
        Config::new(url)
            .unwrap()
            .prefix(prefix)
            .unwrap()
            .response_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap()
}

impl Rig {
    pub async fn new(name: &str, o: RigOptions) -> Rig {
        support::init_tracing();
        let args = o.redis_args.clone();
        let env: Vec<(&str, &str)> = o
            .redis_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let server = tokio::task::block_in_place(|| RedisServer::start_with_env(&args, &env));
        let proxy = if o.proxy {
            Some(Proxy::start(server.port()).await)
        } else {
            None
        };
        let via = proxy
            .as_ref()
            .map(Proxy::url)
            .unwrap_or_else(|| server.url());
        let prefix = support::unique_prefix(name);
        let client = connect(&server.url(), &prefix).await;
        let producer = connect(&via, &prefix).await;
        let topic = "erp.v1.invoice.created".to_string();
        let mut spec = TopicSpec::new(&topic, o.partitions).unwrap();
        if let Some(r) = o.retention {
            spec = spec.retention(r);
        }
        client.create_topic(&spec).await.unwrap();
        let ledger = Ledger::new(o.partitions);
        let ledger_url = ledger.serve().await;
        let groups: Vec<String> = ["audit", "pdf-report", "notification"]
            .iter()
            .take(o.groups)
            .map(|g| g.to_string())
            .collect();
        let mut fleet = Fleet::new(
            Plan {
                redis_url: via,
                prefix: prefix.clone(),
                topic: topic.clone(),
                groups: groups.clone(),
                ledger_url,
                concurrency: 16,
                session_timeout: o.session,
                max_attempts: 50,
            },
            o.slots,
        );
        for slot in 0..o.running.min(o.slots) {
            fleet.start(slot);
        }
        Rig {
            name: name.to_string(),
            server,
            proxy,
            client,
            producer,
            ledger,
            fleet,
            topic,
            groups,
            session: o.session,
            prefix,
            partitions: o.partitions,
            keys: o.keys,
            retention: o.retention,
            faults: Vec::new(),
            kills: Vec::new(),
            memory: Vec::new(),
        }
    }

    /// Starts publishing `rate` messages per second.
    pub fn traffic(&self, rate: u32) -> Traffic {
        Traffic::start(&self.producer, &self.topic, self.keys, rate, 8)
    }

    /// Records a fault that happened at once, now (recovery is measured
    /// from here).
    pub fn fault(&mut self, what: impl Into<String>) {
        let now = Instant::now();
        self.fault_since(what, now);
    }

    /// Records a fault that began at `start` and was healed now.
    pub fn fault_since(&mut self, what: impl Into<String>, start: Instant) {
        self.faults.push(Fault {
            what: what.into(),
            start,
            end: Instant::now(),
        });
    }

    /// SIGTERMs the worker in `slot`; it must exit 0 within the drain time.
    pub fn stop_worker(&mut self, slot: usize) {
        let Some(worker) = self.fleet.worker_in(slot) else {
            return;
        };
        let code = tokio::task::block_in_place(|| self.fleet.stop(slot, Duration::from_secs(20)));
        if code != Some(0) {
            println!(
                "worker {worker} exited {code:?} on SIGTERM; its last log lines:\n{}",
                self.fleet.log_tail(worker, 8)
            );
        }
    }

    /// Keeps at least `n` workers running.
    pub fn ensure_running(&mut self, n: usize) {
        for slot in 0..self.fleet.slots() {
            let running = (0..self.fleet.slots())
                .filter(|s| self.fleet.is_running(*s))
                .count();
            if running >= n {
                return;
            }
            if !self.fleet.is_running(slot) {
                self.fleet.start(slot);
            }
        }
    }

    /// SIGKILLs redis-server, waits `down`, starts it again on its port.
    pub fn restart_redis(&mut self, down: Duration) {
        let killed = Instant::now();
        tokio::task::block_in_place(|| {
            self.server.stop();
            std::thread::sleep(down);
            self.server.restart();
        });
        self.kills.push((killed, Instant::now()));
        self.fault_since(format!("redis-server killed, back after {down:?}"), killed);
    }

    fn info_field(&self, section: &str, field: &str) -> u64 {
        let info = support::resp_command(self.server.port(), &["INFO", section]).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Pushes Redis past its `maxmemory` with one big string.
    pub fn fill_memory(&mut self) {
        let max = self.info_field("memory", "maxmemory");
        let used = self.info_field("memory", "used_memory");
        assert!(max > 0, "the rig's Redis has no maxmemory");
        let size = (max.saturating_sub(used) + (2 << 20)).to_string();
        let r = support::resp_command(self.server.port(), &["SETRANGE", "oom:filler", &size, "x"]);
        assert!(r.as_ref().is_ok_and(|r| r.starts_with(':')), "{r:?}");
    }

    pub fn free_memory(&mut self) {
        support::resp_command(self.server.port(), &["DEL", "oom:filler"]).unwrap();
    }

    /// While Redis is out of memory: publishes fail with a clear error and
    /// write nothing (stream, delayed set, dedup marker). Returns the error.
    pub async fn check_nothing_half_written(&self) -> String {
        let before = self.client.describe_topic(&self.topic).await.unwrap();
        let probe = Record::encode(&(100_000u32, 0u32))
            .unwrap()
            .key("k100000")
            .dedup_id("oom-probe");
        let err = self
            .producer
            .publish_record(&self.topic, probe)
            .await
            .expect_err("a publish succeeded while Redis was out of memory");
        let delayed = Record::encode(&(100_001u32, 0u32))
            .unwrap()
            .key("k100001")
            .delay(Duration::from_secs(3600));
        self.producer
            .publish_record(&self.topic, delayed)
            .await
            .expect_err("a delayed publish succeeded while Redis was out of memory");
        let batch: Vec<Record> = (0..10u32)
            .map(|i| Record::encode(&(100_002u32, i)).unwrap().key("k100002"))
            .collect();
        let results = self.producer.publish_batch(&self.topic, batch).await;
        assert!(
            results.is_err() || results.as_ref().is_ok_and(|r| r.iter().all(|r| r.is_err())),
            "part of a batch was published while Redis was out of memory"
        );
        let after = self.client.describe_topic(&self.topic).await.unwrap();
        assert_eq!(
            (before.length, before.delayed),
            (after.length, after.delayed),
            "something was written while Redis was out of memory"
        );
        let text = err.to_string();
        assert!(
            text.contains("out of memory"),
            "the error does not say Redis is out of memory: {text}"
        );
        text
    }

    /// After memory frees: the dedup id refused while out of memory was not
    /// recorded, so the same publish now writes (once).
    pub async fn check_publish_after_oom(&self) {
        let probe = || {
            Record::encode(&(100_000u32, 0u32))
                .unwrap()
                .key("k100000")
                .dedup_id("oom-probe")
        };
        let first = publish_until_ok(|| self.producer.publish_record(&self.topic, probe())).await;
        assert!(!first.duplicate, "a refused publish left its dedup marker");
        let again = self
            .producer
            .publish_record(&self.topic, probe())
            .await
            .unwrap();
        assert!(again.duplicate);
    }

    /// Records Redis `used_memory` and every worker's resident memory.
    pub fn sample_memory(&mut self, at: Duration) {
        let redis = self.info_field("memory", "used_memory");
        let workers = (0..self.fleet.slots())
            .filter_map(|s| self.fleet.pid(s))
            .filter_map(rss_bytes)
            .collect();
        self.memory.push((at, redis, workers));
    }

    /// Heals every fault, stops the traffic, waits for every group to handle
    /// every acknowledged message, stops the workers, and reports.
    pub async fn finish(mut self, traffic: Traffic) -> Report {
        let published = traffic.stop().await;
        if let Some(p) = &self.proxy {
            p.set_stalled(false);
            p.set_refusing(false);
        }
        self.fleet.reap_dead();
        self.ensure_running(1);
        let healed = Instant::now();
        let acked: BTreeSet<Msg> = published
            .acked
            .iter()
            .flat_map(|(k, n)| (0..*n).map(move |s| (*k, s)))
            .collect();
        // What the streams hold, read with XRANGE. With retention, absence
        // proves nothing, but every entry must still be readable.
        let (stored, undecodable) = self.stored().await;
        let stored = self.retention.is_none().then_some(stored);
        let expected: BTreeSet<Msg> = match &stored {
            Some(s) => acked.intersection(s).copied().collect(),
            None => acked.clone(),
        };
        // Waits until every group handled every expected message (or it
        // went to a dead-letter stream, which the verdicts then reject).
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let dead: BTreeSet<(String, Msg)> = self
                .dead_letters()
                .await
                .into_iter()
                .filter_map(|d| Some((d.group, d.message.ok()?)))
                .collect();
            let all_in = self.groups.iter().all(|g| {
                let done = self.ledger.distinct_done(g);
                expected
                    .iter()
                    .all(|m| done.contains(m) || dead.contains(&(g.clone(), *m)))
            });
            if all_in || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let catch_up = healed.elapsed();
        let unsettled = self.settle(Duration::from_secs(30)).await;
        self.fleet.reap_dead();
        for slot in 0..self.fleet.slots() {
            if self.fleet.is_running(slot) {
                self.stop_worker(slot);
            }
        }
        let history = History {
            groups: self.groups.clone(),
            acked,
            stored,
            undecodable,
            handlings: self.ledger.handlings(),
            protocol_errors: self.ledger.protocol_errors(),
            dead_letters: self.dead_letters().await,
            exits: self.fleet.exits.clone(),
            faults: self.faults.clone(),
            unsettled,
        };
        let expect = Expect {
            redis_may_lose: false,
            paused: self.fleet.paused_ever,
            effect: self.session * 3,
        };
        let late = late_first_handlings(&history, healed);
        let crashes = crash_losses(&self.kills, &history.lost_by_redis(), &published);
        Report {
            name: self.name.clone(),
            late,
            crashes,
            published: published.total(),
            publish_errors: published.errors,
            publish_error_texts: published.error_texts.clone(),
            longest_publish_outage: published
                .outages
                .iter()
                .map(|(a, b)| *b - *a)
                .max()
                .unwrap_or_default(),
            recovery: recovery_times(&self.faults, &history.handlings),
            catch_up,
            memory: self.memory.clone(),
            history,
            expect,
        }
    }

    /// A plain redis-rs connection straight to the rig's server, opened
    /// anew (the last one may have met a restart).
    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.server.url()).unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => return c,
                Err(e) if Instant::now() > end => panic!("cannot reach the rig's Redis: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A key of the topic's layout, written here (the layout is pinned by
    /// tests/snapshots/topics__key_layout_of_an_example_topic.snap).
    fn key(&self, p: u32, rest: &str) -> String {
        format!("{}:{{{}:{p}}}:{rest}", self.prefix, self.topic)
    }

    /// Every stream entry of `key`, by `XRANGE` pages (empty if none).
    /// Reads on `conn`; a connection a restart broke is replaced.
    async fn xrange(&self, conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<Entry> {
        let mut tries = 0;
        'again: loop {
            tries += 1;
            if tries > 1 {
                *conn = self.raw().await;
            }
            let mut out = Vec::new();
            let mut from = "-".to_string();
            loop {
                let page = redis::cmd("XRANGE")
                    .arg(key)
                    .arg(&from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(5000)
                    .query_async::<redis::Value>(conn)
                    .await;
                let page = match page {
                    Ok(v) => entries(&v),
                    Err(e) if tries < 10 => {
                        println!("XRANGE {key}: {e}; again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'again;
                    }
                    Err(e) => panic!("XRANGE {key}: {e}"),
                };
                let Some((last, _)) = page.last() else {
                    return out;
                };
                from = format!("({last}");
                out.extend(page);
            }
        }
    }

    /// Every `(key, seq)` the topic's streams hold now, and every entry
    /// that could not be read as one (fields `k h d`, payload MessagePack
    /// `[key, seq]`, key `k<key>` on the partition Kafka's partitioner
    /// gives it).
    async fn stored(&self) -> (BTreeSet<Msg>, Vec<String>) {
        let mut out = BTreeSet::new();
        let mut bad = Vec::new();
        let mut conn = self.raw().await;
        for p in 0..self.partitions {
            for (id, fields) in self.xrange(&mut conn, &self.key(p, "s:0")).await {
                match message_of(&fields) {
                    Ok((k, s)) if partition_of(&format!("k{k}"), self.partitions) == p => {
                        out.insert((k, s));
                    }
                    Ok(m) => bad.push(format!("p{p} {id}: {m:?} is not on this partition")),
                    Err(e) => bad.push(format!("p{p} {id}: {e}")),
                }
            }
        }
        (out, bad)
    }

    /// Every dead letter, read from the dead-letter streams with `XRANGE`.
    async fn dead_letters(&self) -> Vec<DeadLetter> {
        let mut out = Vec::new();
        let mut conn = self.raw().await;
        for p in 0..self.partitions {
            for (id, fields) in self.xrange(&mut conn, &self.key(p, "dlq")).await {
                let group = field(&fields, b"g")
                    .map(|g| String::from_utf8_lossy(g).into_owned())
                    .unwrap_or_else(|| format!("(no group field in {id})"));
                out.push(DeadLetter {
                    group,
                    partition: p,
                    message: message_of(&fields),
                });
            }
        }
        out
    }

    /// Waits until, in Redis, every group has nothing pending (`XPENDING`)
    /// and has been delivered everything (its last-delivered id is the
    /// stream's last generated id), on every lane stream and its retry
    /// stream. Returns what was left at `within`, or `None`.
    async fn settle(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let mut conn = self.raw().await;
            let mut left = Vec::new();
            for g in &self.groups {
                for p in 0..self.partitions {
                    for (what, key) in [
                        ("lane 0", self.key(p, "s:0")),
                        ("retry stream", self.key(p, &format!("g:{g}:rs"))),
                    ] {
                        match stream_position(&mut conn, &key, g).await {
                            Ok(None) => {}
                            Ok(Some(why)) => left.push(format!("group {g} p{p} {what}: {why}")),
                            Err(e) => left.push(format!("group {g} p{p} {what}: {e}")),
                        }
                    }
                }
            }
            if left.is_empty() {
                return None;
            }
            if Instant::now() > deadline {
                return Some(left.join("; "));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Why `group` is not settled on the stream `key` (`None` if it is, or if
/// the stream does not exist).
async fn stream_position(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    group: &str,
) -> redis::RedisResult<Option<String>> {
    let exists: i64 = redis::cmd("EXISTS").arg(key).query_async(conn).await?;
    if exists == 0 {
        return Ok(None);
    }
    let stream = pairs(
        &redis::cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .query_async(conn)
            .await?,
    );
    let last = text(stream.get("last-generated-id"));
    let length = text(stream.get("length"));
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await?;
    let redis::Value::Array(groups) = groups else {
        return Ok(Some(format!("XINFO GROUPS answered {groups:?}")));
    };
    let Some(mine) = groups
        .iter()
        .map(pairs)
        .find(|g| text(g.get("name")) == group)
    else {
        return Ok((length != "0").then(|| format!("{length} entries and no consumer group")));
    };
    let delivered = text(mine.get("last-delivered-id"));
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .query_async(conn)
        .await?;
    let pending = match &pending {
        redis::Value::Array(a) => a.first().map(|v| text(Some(v))).unwrap_or_default(),
        other => format!("{other:?}"),
    };
    if pending == "0" && delivered == last {
        Ok(None)
    } else {
        Ok(Some(format!(
            "pending {pending}, last delivered {delivered}, last generated {last}"
        )))
    }
}

/// An `XINFO` reply's field-value pairs.
fn pairs(v: &redis::Value) -> BTreeMap<String, redis::Value> {
    match v {
        redis::Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| match c {
                [k, v] => Some((text(Some(k)), v.clone())),
                _ => None,
            })
            .collect(),
        redis::Value::Map(items) => items
            .iter()
            .map(|(k, v)| (text(Some(k)), v.clone()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A reply value as text (integers and strings alike).
fn text(v: Option<&redis::Value>) -> String {
    match v {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        Some(redis::Value::Int(n)) => n.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// A stream entry: its id and its field-value pairs.
type Entry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// An `XRANGE` reply as entries.
fn entries(v: &redis::Value) -> Vec<Entry> {
    let bytes = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => b.clone(),
        other => format!("{other:?}").into_bytes(),
    };
    let redis::Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|e| match e {
            redis::Value::Array(pair) if pair.len() == 2 => {
                let id = text(Some(&pair[0]));
                let fields = match &pair[1] {
                    redis::Value::Array(f) => f
                        .chunks(2)
                        .filter(|c| c.len() == 2)
                        .map(|c| (bytes(&c[0]), bytes(&c[1])))
                        .collect(),
                    _ => Vec::new(),
                };
                Some((id, fields))
            }
            _ => None,
        })
        .collect()
}

fn field<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &[u8]) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.as_slice())
}

/// The `(key, seq)` of a stream or dead-letter entry: its payload `d` is
/// MessagePack `[key, seq]` and its key `k` must be `k<key>`.
fn message_of(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Msg, String> {
    let d = field(fields, b"d").ok_or("no payload field d")?;
    let m: Msg = rmp_serde::from_slice(d).map_err(|e| format!("payload {d:?}: {e}"))?;
    let k = field(fields, b"k").ok_or("no key field k")?;
    if k != format!("k{}", m.0).as_bytes() {
        return Err(format!(
            "key field {:?} for payload {m:?}",
            String::from_utf8_lossy(k)
        ));
    }
    Ok(m)
}

/// Messages first handled more than 5 s after the faults healed: what held
/// them is worth a look.
fn late_first_handlings(h: &History, healed: Instant) -> Vec<String> {
    let mut first: BTreeMap<(&str, Msg), &Handling> = BTreeMap::new();
    for x in h.handlings.iter().filter(|x| x.outcome == Outcome::Done) {
        let e = first.entry((x.group.as_str(), x.msg())).or_insert(x);
        if x.start < e.start {
            *e = x;
        }
    }
    first
        .values()
        .filter(|x| x.start > healed + Duration::from_secs(5))
        .take(5)
        .map(|x| {
            format!(
                "group {} k{} seq {} (partition {}) first handled {:?} after healing by worker {} at attempt {}",
                x.group,
                x.key,
                x.seq,
                x.partition,
                x.start - healed,
                x.worker,
                x.attempt
            )
        })
        .collect()
}

/// Retries a publish while Redis recovers (used right after a fault heals).
async fn publish_until_ok<F, Fut>(mut f: F) -> millrace::Receipt
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = millrace::Result<millrace::Receipt>>,
{
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Ok(r) => return r,
            Err(e) if Instant::now() > end => panic!("publish still fails: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// What each kill of redis-server lost: the acknowledged publishes Redis
/// no longer had, each counted against the server that acknowledged it
/// (the first kill whose restart came after the acknowledgement: a reply
/// read just before a kill may be noted a moment after it); `window` runs
/// from the oldest lost acknowledgement to the kill (the traffic the crash
/// took back).
fn crash_losses(
    kills: &[(Instant, Instant)],
    lost: &BTreeSet<Msg>,
    published: &Published,
) -> Vec<CrashLoss> {
    let mut out: Vec<CrashLoss> = kills
        .iter()
        .map(|_| CrashLoss {
            lost: 0,
            window: Duration::ZERO,
        })
        .collect();
    for m in lost {
        let Some(at) = published.acked_at.get(m) else {
            continue;
        };
        if let Some(i) = kills.iter().position(|(_, up)| up > at) {
            out[i].lost += 1;
            out[i].window = out[i].window.max(kills[i].0.saturating_duration_since(*at));
        }
    }
    out
}

/// One kill of redis-server: acknowledged publishes lost, and the span from
/// the oldest of them being acknowledged to the kill.
#[derive(Clone, Copy, Debug)]
pub struct CrashLoss {
    pub lost: u64,
    pub window: Duration,
}

/// For each fault: how long from its end until every partition of every
/// group was handling again (the first successful handling that started
/// after it).
fn recovery_times(faults: &[Fault], handlings: &[Handling]) -> Vec<(String, Option<Duration>)> {
    faults
        .iter()
        .map(|f| {
            let mut first: BTreeMap<(&str, u32), Instant> = BTreeMap::new();
            for h in handlings
                .iter()
                .filter(|h| h.outcome == Outcome::Done && h.start >= f.end)
            {
                let e = first
                    .entry((h.group.as_str(), h.partition))
                    .or_insert(h.start);
                if h.start < *e {
                    *e = h.start;
                }
            }
            (f.what.clone(), first.values().max().map(|t| *t - f.end))
        })
        .collect()
}

pub struct Report {
    pub name: String,
    /// Per kill of redis-server, what it lost.
    pub crashes: Vec<CrashLoss>,
    pub late: Vec<String>,
    pub published: u64,
    pub publish_errors: usize,
    pub publish_error_texts: Vec<String>,
    pub longest_publish_outage: Duration,
    pub recovery: Vec<(String, Option<Duration>)>,
    pub catch_up: Duration,
    pub memory: Vec<(Duration, u64, Vec<u64>)>,
    /// The evidence the verdicts judge.
    pub history: History,
    pub expect: Expect,
}

impl Report {
    pub fn print(&self) {
        let h = &self.history;
        // A line of its own: the test harness may have printed "test ... " first.
        println!("\n== scenario {}", self.name);
        println!(
            "published (acknowledged): {}  publish errors: {}  longest publish outage: {:?}",
            self.published, self.publish_errors, self.longest_publish_outage
        );
        for t in &self.publish_error_texts {
            println!("  publish error: {t}");
        }
        let lost_by_redis = h.lost_by_redis().len();
        if !self.crashes.is_empty() {
            let mut lost: Vec<u64> = self.crashes.iter().map(|c| c.lost).collect();
            let mut window: Vec<Duration> = self.crashes.iter().map(|c| c.window).collect();
            lost.sort();
            window.sort();
            println!(
                "lost by redis (acknowledged, gone after the restart): {} over {} crashes; per crash median {} / max {} messages, window median {:?} / max {:?}",
                lost_by_redis,
                self.crashes.len(),
                lost[lost.len() / 2],
                lost[lost.len() - 1],
                window[window.len() / 2],
                window[window.len() - 1],
            );
            println!(
                "  per crash (messages, ms from the oldest lost ack to the kill): {:?}",
                self.crashes
                    .iter()
                    .map(|c| (c.lost, c.window.as_millis()))
                    .collect::<Vec<_>>()
            );
        } else if lost_by_redis > 0 {
            println!("lost by redis: {lost_by_redis}");
        }
        for g in h.figures() {
            println!(
                "group {}: handled {}  lost {}  duplicates {}  dead-lettered {}{}",
                g.group,
                g.handled,
                g.lost.len(),
                g.duplicates,
                g.dead_lettered,
                if g.lost.is_empty() {
                    String::new()
                } else {
                    format!("  e.g. {:?}", &g.lost[..g.lost.len().min(5)])
                }
            );
        }
        let count = |o: Outcome| h.handlings.iter().filter(|x| x.outcome == o).count();
        println!(
            "max simultaneous owners per partition: {}  order violations: {}  handler failures injected: {}  stale starts fenced off by epoch: {}  ends voided by a later epoch: {}  requests dropped by a dying worker: {}",
            h.max_owners().0,
            h.order_violations().len(),
            count(Outcome::FailedOnPurpose),
            count(Outcome::Fenced),
            count(Outcome::Voided),
            count(Outcome::Dropped),
        );
        println!(
            "worker exits: {}",
            h.exits
                .iter()
                .map(|x| format!("{}:{:?}:{}", x.worker, x.cause, x.status))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut rec: Vec<Duration> = self.recovery.iter().filter_map(|(_, d)| *d).collect();
        rec.sort();
        if !rec.is_empty() {
            println!(
                "recovery after {} faults: median {:?}, max {:?}; all caught up {:?} after the last",
                rec.len(),
                rec[rec.len() / 2],
                rec[rec.len() - 1],
                self.catch_up
            );
        }
        for (what, d) in &self.recovery {
            println!("  {what}: {d:?}");
        }
        for (at, redis, workers) in &self.memory {
            println!(
                "memory at {:>4}s: redis used_memory {} KiB, workers RSS (slot order) {:?} KiB",
                at.as_secs(),
                redis / 1024,
                workers.iter().map(|b| b / 1024).collect::<Vec<_>>()
            );
        }
        for l in &self.late {
            println!("  late: {l}");
        }
        match &h.unsettled {
            None => println!(
                "settled: in Redis, every group has nothing pending and was delivered every entry"
            ),
            Some(left) => println!("  NOT settled: {left}"),
        }
    }

    /// Every promise held, and Redis lost nothing it acknowledged.
    pub fn assert_held(&self) {
        self.assert_with(&self.expect);
    }

    /// Every promise held on what Redis kept: what Redis itself lost (a
    /// rollback of its state) is only reported.
    pub fn assert_held_except_redis_loss(&self) {
        self.assert_with(&Expect {
            redis_may_lose: true,
            ..self.expect
        });
    }

    fn assert_with(&self, e: &Expect) {
        self.print();
        let v = self.history.judge(e);
        for x in v.iter().take(20) {
            println!("  VIOLATION {x}");
        }
        assert!(
            v.is_empty(),
            "scenario {}: {} violations, the first: {}",
            self.name,
            v.len(),
            v[0]
        );
    }
}

/// Sums a counter's samples on a worker's `/metrics`.
pub async fn scrape_counter(port: u16, name: &str) -> u64 {
    // reqwest is built without a TLS crypto provider of its own (the
    // binary's handlers install ring): install it here too, or building a
    // client panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
