//! A scenario's rig: a private redis-server (optionally behind the proxy),
//! a topic, the ledger endpoint, a fleet of worker processes and traffic;
//! `finish` heals everything, waits for every group to catch up and checks
//! the promises.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use millrace::{Client, Config, Record, TopicSpec};

use crate::fleet::{Fleet, Plan};
use crate::ledger::{Handling, Ledger};
use crate::proxy::Proxy;
use crate::support::{self, RedisServer};
use crate::traffic::{Published, Traffic};

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
    keys: u32,
    retention: Option<Duration>,
    events: Vec<(String, Instant)>,
    /// When redis-server was killed, and when it was back, each time.
    kills: Vec<(Instant, Instant)>,
    started: Instant,
    memory: Vec<(Duration, u64, Vec<u64>)>,
    exits: Vec<(usize, Option<i32>)>,
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
        let ledger = Ledger::default();
        let ledger_url = ledger.serve().await;
        let groups: Vec<String> = ["audit", "pdf-report", "notification"]
            .iter()
            .take(o.groups)
            .map(|g| g.to_string())
            .collect();
        let mut fleet = Fleet::new(
            Plan {
                redis_url: via,
                prefix,
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
            keys: o.keys,
            retention: o.retention,
            events: Vec::new(),
            kills: Vec::new(),
            started: Instant::now(),
            memory: Vec::new(),
            exits: Vec::new(),
        }
    }

    /// Starts publishing `rate` messages per second.
    pub fn traffic(&self, rate: u32) -> Traffic {
        Traffic::start(&self.producer, &self.topic, self.keys, rate, 8)
    }

    /// Records that a fault ended now (recovery is measured from here).
    pub fn fault(&mut self, what: impl Into<String>) {
        self.events.push((what.into(), Instant::now()));
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
        self.exits.push((worker, code));
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
        self.fault(format!("redis-server killed, back after {down:?}"));
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
            .key("probe")
            .dedup_id("oom-probe");
        let err = self
            .producer
            .publish_record(&self.topic, probe)
            .await
            .expect_err("a publish succeeded while Redis was out of memory");
        let delayed = Record::encode(&(100_001u32, 0u32))
            .unwrap()
            .key("probe")
            .delay(Duration::from_secs(3600));
        self.producer
            .publish_record(&self.topic, delayed)
            .await
            .expect_err("a delayed publish succeeded while Redis was out of memory");
        let batch: Vec<Record> = (0..10u32)
            .map(|i| Record::encode(&(100_002u32, i)).unwrap())
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
                .key("probe")
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
        self.ensure_running(1);
        let healed = Instant::now();
        let acked: HashSet<(u32, u32)> = published
            .acked
            .iter()
            .flat_map(|(k, n)| (0..*n).map(move |s| (*k, s)))
            .collect();
        // What Redis itself no longer has (a rollback of its state lost it
        // after acknowledging it): read from the streams, when no retention
        // trims them. Groups are waited for, and judged, on the rest.
        let lost_by_redis: HashSet<(u32, u32)> = if self.retention.is_none() {
            let stored = self.stored().await;
            acked.difference(&stored).copied().collect()
        } else {
            HashSet::new()
        };
        let expected: HashSet<(u32, u32)> = acked.difference(&lost_by_redis).copied().collect();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut missing = BTreeMap::new();
        loop {
            missing.clear();
            for g in &self.groups {
                let mut seen = self.ledger.distinct(g);
                seen.extend(self.dead_lettered(g).await);
                let m: Vec<(u32, u32)> = expected.difference(&seen).copied().collect();
                if !m.is_empty() {
                    missing.insert(g.clone(), m);
                }
            }
            if missing.is_empty() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let catch_up = healed.elapsed();
        let unsettled = self.settle(Duration::from_secs(30)).await;
        let crashed = self.fleet.crashed();
        let groups_info = if missing.is_empty() {
            String::new()
        } else {
            let mut s = String::new();
            for g in &self.groups {
                if let Ok(i) = self.client.describe_group(&self.topic, g).await {
                    s.push_str(&format!("{g}: lag {} pending {}; ", i.lag, i.pending));
                }
            }
            s
        };
        for slot in 0..self.fleet.slots() {
            if self.fleet.is_running(slot) {
                self.stop_worker(slot);
            }
        }
        let mut groups = Vec::new();
        for g in &self.groups {
            let distinct = self.ledger.distinct(g);
            let dead = self.dead_lettered(g).await;
            let lost = missing.get(g).cloned().unwrap_or_default();
            groups.push(GroupFigures {
                group: g.clone(),
                handled: expected.intersection(&distinct).count() as u64,
                duplicates: self.ledger.total(g) as u64 - distinct.len() as u64,
                dead_lettered: dead.len() as u64,
                lost: lost.len() as u64,
                lost_examples: lost.into_iter().take(5).collect(),
            });
        }
        let handlings = self.ledger.handlings();
        // Messages first handled long after the faults healed: what held them.
        let mut first_seen: BTreeMap<(String, u32, u32), &Handling> = BTreeMap::new();
        for h in &handlings {
            first_seen
                .entry((h.group.clone(), h.key, h.seq))
                .or_insert(h);
        }
        let late: Vec<String> = first_seen
            .values()
            .filter(|h| h.start > healed + Duration::from_secs(5))
            .take(5)
            .map(|h| {
                format!(
                    "group {} k{} seq {} (partition {}) first handled {:?} after healing by worker {} at attempt {}",
                    h.group,
                    h.key,
                    h.seq,
                    h.partition,
                    h.start - healed,
                    h.worker,
                    h.attempt
                )
            })
            .collect();
        let crashes = crash_losses(&self.kills, &lost_by_redis, &published);
        Report {
            late,
            lost_by_redis: lost_by_redis.len() as u64,
            crashes,
            unsettled,
            name: self.name.clone(),
            published: published.total(),
            publish_errors: published.errors,
            publish_error_texts: published.error_texts.clone(),
            longest_publish_outage: published
                .outages
                .iter()
                .map(|(a, b)| *b - *a)
                .max()
                .unwrap_or_default(),
            groups,
            max_owners: self.ledger.max_owners(),
            overlaps: self.ledger.overlaps(),
            fenced: self.ledger.fenced(),
            paused_ever: self.fleet.paused_ever,
            order_violations: order_violations(
                &self.ledger,
                &published,
                &handlings,
                &self.events,
                self.started,
            ),
            recovery: recovery_times(&self.events, &handlings),
            catch_up,
            crashed,
            exits: self.exits.clone(),
            memory: self.memory.clone(),
            groups_info,
            failed_on_purpose: self.ledger.failed_on_purpose(),
            handlings,
        }
    }

    /// Every `(key, seq)` the topic's streams hold now (read again from the
    /// start if a read fails: the first command on a connection broken by a
    /// restart fails).
    async fn stored(&self) -> HashSet<(u32, u32)> {
        let mut tries = 0;
        'again: loop {
            tries += 1;
            let mut out = HashSet::new();
            let mut r = match self
                .client
                .reader(&self.topic, millrace::StartAt::Earliest)
                .await
            {
                Ok(r) => r,
                Err(e) if tries < 10 => {
                    println!("reading the topic back: {e}; again");
                    continue 'again;
                }
                Err(e) => panic!("cannot read the topic back: {e}"),
            };
            loop {
                match r.next().await {
                    Ok(Some(m)) => {
                        if let Ok(ks) = m.decode::<(u32, u32)>() {
                            out.insert(ks);
                        }
                    }
                    Ok(None) => return out,
                    Err(e) if tries < 10 => {
                        println!("reading the topic back: {e}; again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'again;
                    }
                    Err(e) => panic!("cannot read the topic back: {e}"),
                }
            }
        }
    }

    /// Waits until every group has nothing pending and no lag in Redis
    /// (every handled message acknowledged there too, every partition read
    /// to its end). Returns what was left at `within`, or `None`.
    async fn settle(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let mut left = String::new();
            for g in &self.groups {
                match self.client.describe_group(&self.topic, g).await {
                    Ok(i) if i.lag == 0 && i.pending == 0 => {}
                    Ok(i) => {
                        let parts: Vec<String> = i
                            .partitions
                            .iter()
                            .filter(|p| p.lag > 0 || p.pending > 0)
                            .map(|p| {
                                format!(
                                    "p{} lag {} pending {} owner {:?}",
                                    p.partition, p.lag, p.pending, p.owner
                                )
                            })
                            .collect();
                        left.push_str(&format!("group {g}: {}; ", parts.join(", ")));
                    }
                    Err(e) => left.push_str(&format!("group {g}: {e}; ")),
                }
            }
            if left.is_empty() {
                return None;
            }
            if Instant::now() > deadline {
                left.push_str(&self.stream_state().await);
                return Some(left);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Each lane stream's counters and each group's position on it, as
    /// Redis reports them (to tell a stuck group from a miscounted lag).
    async fn stream_state(&self) -> String {
        let mut out = String::from("\n  streams:");
        let conn = self.client.connection();
        let parts = self
            .client
            .topic(&self.topic)
            .await
            .map(|t| t.partitions)
            .unwrap_or(0);
        for p in 0..parts {
            let key = self.client.keys().stream(&self.topic, p, 0);
            let xinfo = |what: &'static str| {
                let cmd = redis::cmd("XINFO").arg(what).arg(&key).clone();
                let mut conn = conn.clone();
                async move {
                    cmd.query_async::<redis::Value>(&mut conn)
                        .await
                        .unwrap_or(redis::Value::Nil)
                }
            };
            let stream = xinfo("STREAM").await;
            let wanted = [
                "length",
                "last-generated-id",
                "max-deleted-entry-id",
                "entries-added",
                "recorded-first-entry-id",
            ];
            out.push_str(&format!("\n    p{p}: {}", info_fields(&stream, &wanted)));
            if let redis::Value::Array(groups) = xinfo("GROUPS").await {
                let wanted = [
                    "name",
                    "last-delivered-id",
                    "entries-read",
                    "lag",
                    "pending",
                ];
                for g in &groups {
                    out.push_str(&format!("\n      {}", info_fields(g, &wanted)));
                }
            }
        }
        out
    }

    async fn dead_lettered(&self, group: &str) -> HashSet<(u32, u32)> {
        self.client
            .dead_letters(&self.topic, Some(group), 100_000)
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|d| rmp_serde::from_slice::<(u32, u32)>(&d.payload).ok())
            .collect()
    }
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

/// Per group and key, first handlings must come in publish order (0, 1,
/// 2..., with gaps where Redis lost a message).
/// Each violation says when and where the early and the late message were
/// first handled, and which fault came last before.
fn order_violations(
    ledger: &Ledger,
    published: &Published,
    handlings: &[Handling],
    events: &[(String, Instant)],
    started: Instant,
) -> Vec<String> {
    let first = |g: &str, k: u32, seq: u32| {
        handlings
            .iter()
            .find(|h| h.group == g && h.key == k && h.seq == seq)
    };
    let describe = |h: Option<&Handling>| match h {
        None => "never".to_string(),
        Some(h) => {
            let fault = events
                .iter()
                .rev()
                .find(|(_, at)| *at <= h.start)
                .map(|(what, at)| format!("{what} {:?} before", h.start - *at))
                .unwrap_or_default();
            format!(
                "at {:?} by worker {} on partition {} attempt {} (last fault: {fault})",
                h.start - started,
                h.worker,
                h.partition,
                h.attempt
            )
        }
    };
    let mut out = Vec::new();
    for ((g, k), seqs) in ledger.first_handling_order() {
        if !published.acked.contains_key(&k) {
            continue; // probes
        }
        // Strictly increasing: messages Redis lost leave gaps, not disorder.
        if let Some(i) = seqs.windows(2).position(|w| w[1] <= w[0]).map(|i| i + 1) {
            let early = seqs[i - 1];
            let late = seqs[i];
            out.push(format!(
                "group {g} key k{k}: first handlings {:?}...; {early} {}; {late} {}",
                &seqs[i.saturating_sub(2)..(i + 3).min(seqs.len())],
                describe(first(&g, k, early)),
                describe(first(&g, k, late)),
            ));
        }
    }
    out
}

/// What each kill of redis-server lost: the acknowledged publishes Redis
/// no longer had, each counted against the server that acknowledged it
/// (the first kill whose restart came after the acknowledgement: a reply
/// read just before a kill may be noted a moment after it); `window` runs
/// from the oldest lost acknowledgement to the kill (the traffic the crash
/// took back).
fn crash_losses(
    kills: &[(Instant, Instant)],
    lost: &HashSet<(u32, u32)>,
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

/// For each fault: how long until every partition of every group was
/// handling again (the first handling that started after the fault).
fn recovery_times(
    events: &[(String, Instant)],
    handlings: &[Handling],
) -> Vec<(String, Option<Duration>)> {
    events
        .iter()
        .map(|(what, at)| {
            let mut first: BTreeMap<(&str, u32), Instant> = BTreeMap::new();
            for h in handlings.iter().filter(|h| h.start >= *at) {
                let e = first
                    .entry((h.group.as_str(), h.partition))
                    .or_insert(h.start);
                if h.start < *e {
                    *e = h.start;
                }
            }
            (what.clone(), first.values().max().map(|t| *t - *at))
        })
        .collect()
}

pub struct GroupFigures {
    pub group: String,
    pub handled: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub lost: u64,
    pub lost_examples: Vec<(u32, u32)>,
}

pub struct Report {
    pub name: String,
    /// Acknowledged publishes that Redis no longer had after the faults.
    pub lost_by_redis: u64,
    /// Per kill of redis-server, what it lost.
    pub crashes: Vec<CrashLoss>,
    /// What was still pending or unread in Redis 30 s after every message
    /// was handled (`None`: every group settled).
    pub unsettled: Option<String>,
    pub late: Vec<String>,
    pub published: u64,
    pub publish_errors: usize,
    pub publish_error_texts: Vec<String>,
    pub longest_publish_outage: Duration,
    pub groups: Vec<GroupFigures>,
    pub max_owners: usize,
    pub overlaps: Vec<String>,
    /// Handler starts the ledger refused for a lower lease epoch than it had
    /// seen (a member that lost its lease while stopped).
    pub fenced: Vec<String>,
    pub paused_ever: bool,
    pub order_violations: Vec<String>,
    pub recovery: Vec<(String, Option<Duration>)>,
    pub catch_up: Duration,
    pub crashed: Vec<(usize, String)>,
    pub exits: Vec<(usize, Option<i32>)>,
    pub memory: Vec<(Duration, u64, Vec<u64>)>,
    pub groups_info: String,
    pub failed_on_purpose: usize,
    pub handlings: Vec<Handling>,
}

impl Report {
    pub fn print(&self) {
        // A line of its own: the test harness may have printed "test ... " first.
        println!("\n== scenario {}", self.name);
        println!(
            "published (acknowledged): {}  publish errors: {}  longest publish outage: {:?}",
            self.published, self.publish_errors, self.longest_publish_outage
        );
        for t in &self.publish_error_texts {
            println!("  publish error: {t}");
        }
        if !self.crashes.is_empty() {
            let mut lost: Vec<u64> = self.crashes.iter().map(|c| c.lost).collect();
            let mut window: Vec<Duration> = self.crashes.iter().map(|c| c.window).collect();
            lost.sort();
            window.sort();
            println!(
                "lost by redis (acknowledged, gone after the restart): {} over {} crashes; per crash median {} / max {} messages, window median {:?} / max {:?}",
                self.lost_by_redis,
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
        } else if self.lost_by_redis > 0 {
            println!("lost by redis: {}", self.lost_by_redis);
        }
        for g in &self.groups {
            println!(
                "group {}: handled {}  lost {}  duplicates {}  dead-lettered {}{}",
                g.group,
                g.handled,
                g.lost,
                g.duplicates,
                g.dead_lettered,
                if g.lost_examples.is_empty() {
                    String::new()
                } else {
                    format!("  e.g. {:?}", g.lost_examples)
                }
            );
        }
        println!(
            "max simultaneous owners per partition: {}  order violations: {}  handler failures injected: {}  stale starts fenced off by epoch: {}",
            self.max_owners,
            self.order_violations.len(),
            self.failed_on_purpose,
            self.fenced.len()
        );
        for f in self.fenced.iter().take(5) {
            println!("  fenced: {f}");
        }
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
        for o in self.overlaps.iter().take(5) {
            println!("  overlap: {o}");
        }
        for o in self.order_violations.iter().take(5) {
            println!("  order: {o}");
        }
        if !self.groups_info.is_empty() {
            println!("  at the deadline: {}", self.groups_info);
        }
        match &self.unsettled {
            None => println!("settled: every group has lag 0 and nothing pending"),
            Some(left) => println!("  NOT settled: {left}"),
        }
    }

    /// Every promise held, and Redis lost nothing it acknowledged.
    pub fn assert_held(&self) {
        self.assert_held_except_redis_loss();
        assert_eq!(self.lost_by_redis, 0, "Redis lost acknowledged publishes");
    }

    /// Every promise held on what Redis kept: what Redis itself lost (a
    /// rollback of its state) is only reported.
    pub fn assert_held_except_redis_loss(&self) {
        self.print();
        for g in &self.groups {
            assert_eq!(
                g.lost, 0,
                "group {} lost messages: {:?}",
                g.group, g.lost_examples
            );
        }
        assert!(
            self.unsettled.is_none(),
            "groups did not settle in Redis: {:?}",
            self.unsettled
        );
        assert!(self.published > 0, "nothing was published");
        assert!(
            self.crashed.is_empty(),
            "workers exited on their own: {:?}",
            self.crashed
        );
        assert!(
            self.exits.iter().all(|(_, c)| *c == Some(0)),
            "a worker did not exit 0 on SIGTERM: {:?}",
            self.exits
        );
        assert!(
            self.max_owners <= 1,
            "exclusivity broken: {:?}",
            &self.overlaps[..self.overlaps.len().min(5)]
        );
        // Only a process stopped between its last lease check and its
        // handler's request can start late (docs/guarantees.md).
        assert!(
            self.paused_ever || self.fenced.is_empty(),
            "a member started handlers after its lease moved on: {:?}",
            &self.fenced[..self.fenced.len().min(5)]
        );
        assert!(
            self.order_violations.is_empty(),
            "{:?}",
            self.order_violations
        );
    }
}

/// `name=value` for the `wanted` fields of an `XINFO` reply (RESP2 pairs).
fn info_fields(v: &redis::Value, wanted: &[&str]) -> String {
    let redis::Value::Array(items) = v else {
        return String::new();
    };
    let text = |v: &redis::Value| redis::from_redis_value::<String>(v.clone()).unwrap_or_default();
    items
        .chunks(2)
        .filter_map(|c| match c {
            [k, v] if wanted.contains(&text(k).as_str()) => {
                Some(format!("{}={}", text(k), text(v)))
            }
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sums a counter's samples on a worker's `/metrics`.
pub async fn scrape_counter(port: u16, name: &str) -> u64 {
    let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
