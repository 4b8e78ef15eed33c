//! Failover: Redis Sentinel and a Redis Cluster with replicas, and replica
//! acknowledgements, on real processes. Sentinel: a
//! primary, two replicas and three sentinels on loopback. Clients given a
//! `redis+sentinel://` URL follow a promotion without a restart; with
//! `Acks::replicas(1)` nothing acknowledged is lost when the primary dies.

#[allow(dead_code)]
#[path = "faults/proxy.rs"]
mod proxy;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use millrace::{Acks, Client, Config, Error, ProducerConfig, Record, TopicSpec};
use support::RedisServer;
use support::groups::{Ledger, recording_worker};
use support::sentinel::{MASTER, SentinelSet, role};

fn config(url: &str, test: &str) -> Config {
    Config::new(url)
        .unwrap()
        .prefix(support::unique_prefix(test))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(2))
}

/// What one run of [`failovers_under_load`] saw.
struct Run {
    /// Publishes acknowledged, as (key, seq).
    acked: Vec<(u32, u32)>,
    /// Acknowledged publishes not in the topic after the failovers.
    lost: usize,
    /// Acknowledged publishes still in the topic that the group never handled.
    unhandled: usize,
    /// Per failover: last handled before the kill to first handled after.
    recoveries: Vec<Duration>,
    /// Publish attempts that failed and were tried again.
    failures: u32,
}

/// A primary, two replicas and three sentinels; one publisher (8 keys in
/// turn, each publish tried again with its dedup id until acknowledged as
/// `acks` says) and one ordered worker of group `billing`; `failovers`
/// times: SIGKILL the primary under that load and wait for the promotion.
/// With `stall`, the replicas replicate through proxies that stop
/// forwarding 300 ms before each kill: what the primary acknowledged then
/// reached no replica.
async fn failovers_under_load(test: &str, acks: Acks, failovers: usize, stall: bool) -> Run {
    let proxies = Arc::new(Mutex::new(Vec::<proxy::Proxy>::new()));
    let set = {
        let proxies = proxies.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::block_in_place(move || {
            SentinelSet::start_via(2, |primary| {
                if !stall {
                    return primary;
                }
                let p = runtime.block_on(proxy::Proxy::start(primary));
                let port = p.url().rsplit(':').next().unwrap().parse().unwrap();
                proxies.lock().unwrap().push(p);
                port
            })
        })
    };
    let setup = Setup::Sentinel(Arc::new(Mutex::new(set)), proxies);
    under_load(test, acks, failovers, setup).await
}

/// Where the failovers happen.
enum Setup {
    /// A Sentinel set, and the proxies its replicas replicate through (if
    /// any: they stall before each kill).
    Sentinel(Arc<Mutex<SentinelSet>>, Arc<Mutex<Vec<proxy::Proxy>>>),
    /// A cluster of three primaries with a replica each.
    Cluster(Arc<Mutex<support::RedisCluster>>),
    /// A Sentinel set whose primary is cut off from the sentinels and the
    /// replicas, not from the clients (user `app`), instead of killed.
    Partitioned(Arc<Mutex<SentinelSet>>),
}

/// The password of user `app` on every data server of a partitioned set,
/// and of the default user on the cut-off primary.
const APP_PASSWORD: &str = "app-pw";
const CUT_PASSWORD: &str = "cut-pw";

/// `args` on the server on `port`, logged in as `auth` (user, password)
/// or as the default user.
fn admin(port: u16, auth: Option<(&str, &str)>, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let url = match auth {
        Some((user, pass)) => format!("redis://{user}:{pass}@127.0.0.1:{port}"),
        None => format!("redis://127.0.0.1:{port}"),
    };
    let mut conn = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn)
}

/// Cuts the primary on `old` off from the sentinels and the replicas, not
/// from the clients: the sentinels and the replicas log in as the default
/// user, the clients as `app`. The default user gets a password and its
/// connections are closed: the sentinels' pings now meet NOAUTH (the
/// primary is down for them) and the replicas cannot sync, while the
/// clients' connections go on (the wrong side). Returns the primary the
/// sentinels promote instead.
fn cut_off(set: &SentinelSet, old: u16) -> u16 {
    let pass = format!(">{CUT_PASSWORD}");
    admin(
        old,
        None,
        &["ACL", "SETUSER", "default", "resetpass", &pass],
    )
    .unwrap();
    admin(
        old,
        Some(("app", APP_PASSWORD)),
        &["CLIENT", "KILL", "USER", "default"],
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(p) = set.agreed_primary()
            && p != old
            && role(p).as_deref() == Some("master")
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no failover from the cut-off {old}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Heals the cut of [`cut_off`]: the sentinels make the old primary a
/// replica of the new one (what it took meanwhile is gone); returns once
/// it is a synced replica.
fn heal(old: u16) {
    admin(
        old,
        Some(("default", CUT_PASSWORD)),
        &["ACL", "SETUSER", "default", "resetpass", "nopass"],
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !support::sentinel::synced_replica(old) {
        assert!(
            Instant::now() < deadline,
            "{old} did not become a replica after the cut healed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Sentinel set whose data servers also have user `app` (the clients'
/// login, which a cut leaves alone).
fn partitionable_set() -> SentinelSet {
    let set = SentinelSet::start(2);
    let pass = format!(">{APP_PASSWORD}");
    for server in &set.servers {
        admin(
            server.port(),
            None,
            &["ACL", "SETUSER", "app", "on", &pass, "~*", "&*", "+@all"],
        )
        .unwrap();
    }
    set
}

impl Setup {
    fn url(&self) -> String {
        match self {
            Setup::Sentinel(set, _) => set.lock().unwrap().url(),
            Setup::Partitioned(set) => set
                .lock()
                .unwrap()
                .url()
                .replace("://", &format!("://app:{APP_PASSWORD}@")),
            Setup::Cluster(c) => c.lock().unwrap().url(),
        }
    }

    /// Kills a primary (on a cluster, a different one each round) and
    /// waits for its replacement; returns when it was killed.
    async fn fail_over(&self, test: &str, round: usize) -> Instant {
        match self {
            Setup::Sentinel(set, proxies) => {
                if !proxies.lock().unwrap().is_empty() {
                    for p in proxies.lock().unwrap().iter() {
                        p.set_stalled(true);
                    }
                    // Load while nothing reaches the replicas (a duration
                    // of the fault, not a wait for an event).
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let s = set.clone();
                let (old, new, killed) = tokio::task::spawn_blocking(move || {
                    s.lock().unwrap().fail_over(Duration::from_secs(30))
                })
                .await
                .unwrap();
                eprintln!("{test}: failover {round}: primary {old} -> {new}");
                killed
            }
            Setup::Partitioned(set) => {
                let s = set.clone();
                let name = test.to_string();
                tokio::task::spawn_blocking(move || {
                    let s = s.lock().unwrap();
                    let old = s
                        .agreed_primary()
                        .expect("the sentinels agree on a primary");
                    let cut = Instant::now();
                    let new = cut_off(&s, old);
                    // Both sides take writes for a while (split brain),
                    // then the cut heals: the sentinels make the old
                    // primary a replica of the new one, and what it took
                    // meanwhile is gone.
                    std::thread::sleep(Duration::from_secs(1));
                    heal(old);
                    eprintln!("{name}: partition {round}: primary {old} cut off, {new} promoted");
                    cut
                })
                .await
                .unwrap()
            }
            Setup::Cluster(c) => {
                let c = c.clone();
                let name = test.to_string();
                tokio::task::spawn_blocking(move || {
                    let mut c = c.lock().unwrap();
                    let primaries = c.primaries();
                    let old = primaries[round % primaries.len()];
                    let (new, killed) = c.fail_over(old, Duration::from_secs(30));
                    eprintln!("{name}: failover {round}: primary {old} -> {new}");
                    killed
                })
                .await
                .unwrap()
            }
        }
    }

    /// Waits until the set-up is whole again: one primary per shard, the
    /// others its synced replicas (reconfigured asynchronously).
    async fn settle(&self) {
        match self {
            Setup::Sentinel(set, _) | Setup::Partitioned(set) => {
                let set = set.clone();
                tokio::task::spawn_blocking(move || {
                    let s = set.lock().unwrap();
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        let roles: Vec<(u16, Option<String>)> = s
                            .servers
                            .iter()
                            .map(|x| (x.port(), role(x.port())))
                            .collect();
                        let last = s.agreed_primary();
                        let settled = last.is_some_and(|last| {
                            roles.iter().all(|(port, role)| {
                                role.as_deref()
                                    == Some(if *port == last { "master" } else { "slave" })
                            })
                        });
                        if settled {
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "the set did not settle: the sentinels name {last:?}; roles {roles:?}"
                        );
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
                .await
                .unwrap();
            }
            Setup::Cluster(c) => {
                let c = c.clone();
                tokio::task::spawn_blocking(move || {
                    c.lock().unwrap().wait_settled(Duration::from_secs(30));
                })
                .await
                .unwrap();
            }
        }
    }
}

/// The publisher and the worker of [`failovers_under_load`], against
/// `setup`.
async fn under_load(test: &str, acks: Acks, failovers: usize, setup: Setup) -> Run {
    support::init_tracing();
    let url = setup.url();
    let c = Client::connect(config(&url, test)).await.unwrap();
    c.create_topic(&TopicSpec::new("orders", 8).unwrap())
        .await
        .unwrap();
    let ledger = Arc::new(Ledger::default());
    let worker = recording_worker(&c, "orders", "billing", ledger.clone(), Duration::ZERO)
        .concurrency(8)
        .acks(acks)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    // When each message was first seen handled, polled every 2 ms.
    let handled_at = Arc::new(Mutex::new(HashMap::<(u32, u32), Instant>::new()));
    let watching = {
        let (ledger, handled_at) = (ledger.clone(), handled_at.clone());
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                let now = Instant::now();
                let new: Vec<(u32, u32)> = ledger.handled.lock().unwrap()[seen..]
                    .iter()
                    .map(|(k, s, _)| (*k, *s))
                    .collect();
                seen += new.len();
                {
                    let mut at = handled_at.lock().unwrap();
                    for m in new {
                        at.entry(m).or_insert(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let producer = c.producer_with(ProducerConfig::default().acks(acks));
    let acked = Arc::new(Mutex::new(Vec::<(u32, u32)>::new()));
    // When each acknowledged publish was first tried.
    let first_tried = Arc::new(Mutex::new(HashMap::<(u32, u32), Instant>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let first_tried = first_tried.clone();
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut failures = 0u32;
            for n in 0u32.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (key, seq) = (n % 8, n / 8);
                let record = Record::encode(&(key, seq))
                    .unwrap()
                    .key(format!("k{key}"))
                    .dedup_id(format!("{key}-{seq}"));
                let tried = Instant::now();
                loop {
                    match producer.publish("orders", record.clone()).await {
                        Ok(_) => break,
                        Err(e) if e.is_retryable() => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("publish ({key}, {seq}): {e}"),
                    }
                }
                first_tried.lock().unwrap().insert((key, seq), tried);
                acked.lock().unwrap().push((key, seq));
                // A steady load, not a flood: at full speed a release
                // build writes hundreds of thousands of messages, and a
                // fresh replica's full sync of them stalls the new primary
                // past the sentinels' 1 s down-after (a second failover).
                if n % 20 == 19 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            failures
        })
    };

    let acked_now = || acked.lock().unwrap().len();
    let mut kills = Vec::new();
    for round in 0..failovers {
        let before = acked_now();
        support::wait_until(Duration::from_secs(30), "publishing goes on", || {
            let n = acked_now();
            async move { n >= before + 200 }
        })
        .await;
        kills.push(setup.fail_over(test, round).await);
    }
    let before = acked_now();
    support::wait_until(Duration::from_secs(30), "publishing goes on after", || {
        let n = acked_now();
        async move { n >= before + 200 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let failures = publisher.await.unwrap();
    let acked: Vec<(u32, u32)> = acked.lock().unwrap().clone();

    // What the topic holds now, on the last primary.
    let mut present = HashSet::new();
    // Where each message is (for the diagnostics of a failure).
    let mut place = HashMap::<(u32, u32), (u32, String)>::new();
    let mut reader = c
        .reader("orders", millrace::StartAt::Earliest)
        .await
        .unwrap()
        .follow(false);
    while let Some(m) = reader.next().await.unwrap() {
        let km = m.decode::<(u32, u32)>().unwrap();
        present.insert(km);
        place.insert(km, (m.partition, m.id.to_string()));
    }
    let lost = acked.iter().filter(|a| !present.contains(a)).count();
    // The group catches up with everything that is still there.
    let wanted: HashSet<(u32, u32)> = acked
        .iter()
        .filter(|a| present.contains(a))
        .copied()
        .collect();
    // Handled: what the watcher saw (copying the ledger's whole list on
    // every check would hold its lock from the handlers for long at a few
    // hundred thousand messages).
    let missing = || -> Vec<(u32, u32)> {
        let at = handled_at.lock().unwrap();
        wanted
            .iter()
            .filter(|m| !at.contains_key(m))
            .copied()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = missing();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let group = c.describe_group("orders", "billing").await;
            eprintln!(
                "{test}: {}",
                unhandled_diagnosis(&c, &setup, &missing, &place, &handled_at)
            );
            panic!(
                "{test}: {} surviving publishes never handled, e.g. {:?}; the group: {group:#?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unhandled = missing().len();
    worker.shutdown().await.unwrap();
    watching.abort();

    // Partitions never had two owners at once, and per key the first
    // handlings are in publish order.
    assert!(
        ledger.violations.lock().unwrap().is_empty(),
        "{:?}",
        ledger.violations.lock().unwrap()
    );
    for (key, seqs) in ledger.first_handling_order() {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "key k{key} out of order");
    }
    // Recovery: from the last handling before the kill to the first
    // handling of a message first tried after it (so never on the killed
    // primary: a message fetched before the kill and handled during the
    // failover does not count, nor one whose publish only its retry after
    // the failover confirmed).
    let handled_at = handled_at.lock().unwrap().clone();
    let first_tried = first_tried.lock().unwrap().clone();
    let recoveries = kills
        .iter()
        .map(|k| {
            let before = handled_at.values().filter(|t| *t < k).max();
            let after = first_tried
                .iter()
                .filter(|(_, tried)| *tried > k)
                .filter_map(|(m, _)| handled_at.get(m))
                .min();
            match (before, after) {
                (Some(b), Some(a)) => *a - *b,
                _ => Duration::MAX,
            }
        })
        .collect();
    // The set-up is whole again: the killed servers are replicas.
    setup.settle().await;
    Run {
        acked,
        lost,
        unhandled,
        recoveries,
        failures,
    }
}

/// What a failure to handle every surviving publish looked like: per key
/// the missing sequence numbers against the handled ones, and for a few
/// missing messages their partition's group state on the current primary.
fn unhandled_diagnosis(
    c: &Client,
    setup: &Setup,
    missing: &[(u32, u32)],
    place: &HashMap<(u32, u32), (u32, String)>,
    handled_at: &Mutex<HashMap<(u32, u32), Instant>>,
) -> String {
    let mut out = String::new();
    let handled = handled_at.lock().unwrap();
    for key in 0..8u32 {
        let mut m: Vec<u32> = missing
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, s)| *s)
            .collect();
        m.sort_unstable();
        let max_handled = handled
            .keys()
            .filter(|(k, _)| *k == key)
            .map(|(_, s)| *s)
            .max();
        if let (Some(first), Some(last)) = (m.first(), m.last()) {
            out += &format!(
                "\nkey {key}: {} missing, seq {first}..={last}; highest handled {max_handled:?}; at {:?} .. {:?}",
                m.len(),
                place.get(&(key, *first)),
                place.get(&(key, *last)),
            );
        }
    }
    let port = match setup {
        Setup::Sentinel(set, _) | Setup::Partitioned(set) => set.lock().unwrap().agreed_primary(),
        Setup::Cluster(_) => None,
    };
    let mut partitions: Vec<u32> = missing
        .iter()
        .filter_map(|m| place.get(m))
        .map(|(p, _)| *p)
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    if let Some(port) = port {
        for p in partitions {
            let stream = c.keys().stream("orders", p, 0);
            for args in [
                vec!["XINFO", "STREAM", stream.as_str()],
                vec!["XINFO", "GROUPS", stream.as_str()],
                vec!["XPENDING", stream.as_str(), "billing"],
            ] {
                let v = support::sentinel::query(port, &args);
                out += &format!("\npartition {p} {}: {v:?}", args[0..2].join(" "));
            }
        }
    }
    out
}

/// How many failovers a scenario runs: `default`, or `MILLRACE_FAILOVERS`
/// (`scripts/chaos` runs longer ones).
fn failovers(default: usize) -> usize {
    std::env::var("MILLRACE_FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(test: &str, r: &Run) {
    let mut ms: Vec<u128> = r.recoveries.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    eprintln!(
        "{test}: {} acknowledged, {} lost, {} unhandled, {} attempts tried again; recovery per failover (ms): {ms:?}, median {}, max {}",
        r.acked.len(),
        r.lost,
        r.unhandled,
        r.failures,
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sentinel_url_follows_promotions_and_replica_acks_lose_nothing() {
    let n = failovers(2);
    let run = failovers_under_load(
        "sentinel-failover",
        Acks::replicas(1, Duration::from_secs(2)),
        n,
        false,
    )
    .await;
    report(&format!("sentinel, replicas(1), {n} failovers"), &run);
    assert_eq!((run.lost, run.unhandled), (0, 0));
    assert!(run.recoveries.iter().all(|r| *r < Duration::from_secs(30)));
}

/// With the primary's acknowledgement alone, the loss per failover is
/// measured (printed, not asserted: it is whatever replication had not
/// passed on at the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loss_of_primary_acks_per_failover_is_measured() {
    let n = failovers(2);
    let run = failovers_under_load("sentinel-primary-acks", Acks::Primary, n, false).await;
    report(&format!("sentinel, primary acks, {n} failovers"), &run);
    eprintln!(
        "sentinel, primary acks: {:.1} acknowledged publishes lost per failover",
        run.lost as f64 / n as f64
    );
    assert_eq!(run.unhandled, 0);
}

/// A primary cut off from the sentinels and its replicas but not from the
/// clients keeps taking writes until the cut heals; then it becomes a
/// replica and loses them. With replica acks none of those was
/// acknowledged (no replica confirmed them: the client asks the sentinels
/// again and moves to the new primary); with the primary's acks alone,
/// what the wrong side acknowledged is lost, and the check sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_primary_loses_only_what_no_replica_confirmed() {
    let partitioned = || async {
        let set = tokio::task::spawn_blocking(partitionable_set)
            .await
            .unwrap();
        Setup::Partitioned(Arc::new(Mutex::new(set)))
    };
    let n = failovers(1);
    let (replica_set, primary_set) = (partitioned().await, partitioned().await);
    // Both set-ups at once (each its own processes and ports).
    let (replicas, primary) = tokio::join!(
        under_load(
            "partition-replica-acks",
            Acks::replicas(1, Duration::from_millis(500)),
            n,
            replica_set,
        ),
        under_load("partition-primary-acks", Acks::Primary, n, primary_set)
    );
    report(
        &format!("sentinel partition, replicas(1), {n} cuts"),
        &replicas,
    );
    assert_eq!((replicas.lost, replicas.unhandled), (0, 0));
    report(
        &format!("sentinel partition, primary acks, {n} cuts"),
        &primary,
    );
    assert!(
        primary.lost > 0,
        "nothing lost: the check cannot see a loss"
    );
    assert_eq!(primary.unhandled, 0);
}

/// A worker whose primary is cut off from the sentinels but not from it
/// follows the promotion while the old primary is still up and still takes
/// its commands: its kept read connection (which checks the leases under
/// `WATCH`) must leave the old primary too, or every read meets the old
/// primary's stale copy of the leases and is refused, for as long as the
/// old primary stays up. Control: the old primary is still a primary when
/// the message published on the new one is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_leaves_a_cut_off_primary_that_still_answers() {
    support::init_tracing();
    let set = Arc::new(Mutex::new(
        tokio::task::spawn_blocking(partitionable_set)
            .await
            .unwrap(),
    ));
    let url = set
        .lock()
        .unwrap()
        .url()
        .replace("://", &format!("://app:{APP_PASSWORD}@"));
    let c = Client::connect(config(&url, "cut-off-worker"))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 2).unwrap())
        .await
        .unwrap();
    let ledger = Arc::new(Ledger::default());
    let worker = recording_worker(&c, "orders", "billing", ledger.clone(), Duration::ZERO)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let publish = |c: Client, seq: u32| async move {
        let record = Record::encode(&(0u32, seq)).unwrap().key("k0");
        c.producer().publish("orders", record).await.unwrap();
    };
    publish(c.clone(), 0).await;
    support::groups::wait_for(&ledger, 1, Duration::from_secs(10)).await;

    let s = set.clone();
    let (old, new) = tokio::task::spawn_blocking(move || {
        let s = s.lock().unwrap();
        let old = s
            .agreed_primary()
            .expect("the sentinels agree on a primary");
        (old, cut_off(&s, old))
    })
    .await
    .unwrap();
    // Published through a client that never knew the old primary: on the
    // new one.
    let fresh = Client::connect(c.config().clone()).await.unwrap();
    publish(fresh, 1).await;
    support::groups::wait_for(&ledger, 2, Duration::from_secs(15)).await;
    let old_role = match admin(old, Some(("app", APP_PASSWORD)), &["ROLE"]) {
        Ok(redis::Value::Array(items)) => redis::from_redis_value_ref::<String>(&items[0]).ok(),
        _ => None,
    };
    assert_eq!(
        old_role.as_deref(),
        Some("master"),
        "the old primary {old} was no longer one: the check proves nothing"
    );
    eprintln!("handled on {new} while the cut-off {old} was still a primary");
    worker.shutdown().await.unwrap();
    tokio::task::spawn_blocking(move || heal(old))
        .await
        .unwrap();
}

/// A cluster of three primaries with a replica each: each primary in turn
/// is killed under load; producers and the worker follow each promotion
/// without a restart, and with replica acks nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_follows_each_primary_s_replica_and_replica_acks_lose_nothing() {
    let cluster = tokio::task::spawn_blocking(support::RedisCluster::start_with_replicas)
        .await
        .unwrap();
    let setup = Setup::Cluster(Arc::new(Mutex::new(cluster)));
    let n = failovers(3);
    let run = under_load(
        "cluster-failover",
        Acks::replicas(1, Duration::from_secs(2)),
        n,
        setup,
    )
    .await;
    report(&format!("cluster, replicas(1), {n} failovers"), &run);
    assert_eq!((run.lost, run.unhandled), (0, 0));
    assert!(run.recoveries.iter().all(|r| *r < Duration::from_secs(30)));
}

/// The negative control of "nothing lost": replication stalls before the
/// kill. Acknowledged by the primary alone, what it took then is gone
/// after the promotion, and the check sees it; acknowledged by a replica,
/// nothing is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_loses_what_only_the_primary_acknowledged() {
    // Two sets at once (each its own processes and ports).
    let (primary, replicas) = tokio::join!(
        failovers_under_load("failover-primary-acks", Acks::Primary, 1, true),
        failovers_under_load(
            "failover-replica-acks",
            Acks::replicas(1, Duration::from_millis(500)),
            1,
            true,
        )
    );
    report("sentinel, primary acks, replication stalled", &primary);
    assert!(
        primary.lost > 0,
        "nothing lost: the check cannot see a loss"
    );
    assert_eq!(primary.unhandled, 0);
    report("sentinel, replicas(1), replication stalled", &replicas);
    assert_eq!((replicas.lost, replicas.unhandled), (0, 0));
    assert!(replicas.failures > 0, "the stalled publishes were refused");
}

/// A promotion that lost the last write of a lease: the lease in Redis goes
/// back to an older epoch while its member still handles under the newer
/// one. The member must find out at its next renewal and stop, and the
/// epoch it gets next must be above the lost one (epochs start from
/// Redis's clock), so no epoch is handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_write_stops_its_member_and_epochs_keep_growing() {
    let server = RedisServer::start();
    let c = Client::connect(config(&server.url(), "lost-lease"))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    let epochs = Arc::new(Mutex::new(Vec::<(u32, u64)>::new()));
    let seen = epochs.clone();
    let worker = millrace::Worker::builder(&c, "billing")
        .session_timeout(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(100))
        .block(Duration::from_millis(100))
        .handle_raw("orders", move |msg, ctx| {
            let seen = seen.clone();
            async move {
                let n: u32 = msg.decode().map_err(millrace::HandlerError::permanent)?;
                seen.lock().unwrap().push((n, ctx.epoch));
                Ok(())
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    c.publish_record("orders", Record::encode(&0u32).unwrap())
        .await
        .unwrap();
    let e = epochs.clone();
    support::wait_until(Duration::from_secs(20), "the first message handled", || {
        let n = e.lock().unwrap().len();
        async move { n == 1 }
    })
    .await;
    let held = epochs.lock().unwrap()[0].1;
    // The control: without a loss, the member keeps its epoch.
    c.publish_record("orders", Record::encode(&100u32).unwrap())
        .await
        .unwrap();
    support::wait_until(
        Duration::from_secs(20),
        "the second message handled",
        || {
            let n = e.lock().unwrap().len();
            async move { n == 2 }
        },
    )
    .await;
    assert_eq!(epochs.lock().unwrap()[1], (100, held));
    // The "lost write": the lease as an older state had it (the same
    // member, an older epoch, not expired).
    let lease = c.keys().lease("orders", 0, "billing");
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&lease)
        .arg("epoch")
        .arg(held - 5_000)
        .query(&mut direct)
        .unwrap();
    // The member finds out (its renewal fails), takes the lease again, and
    // handles on under a new epoch above the lost one.
    support::wait_until(Duration::from_secs(20), "a new epoch", || {
        let epoch: Option<u64> = redis::cmd("HGET")
            .arg(&lease)
            .arg("epoch")
            .query(&mut direct)
            .ok();
        async move { epoch.is_some_and(|e| e > held) }
    })
    .await;
    for n in 1..=5u32 {
        c.publish_record("orders", Record::encode(&n).unwrap())
            .await
            .unwrap();
    }
    support::wait_until(Duration::from_secs(20), "five more handled", || {
        let n = e.lock().unwrap().len();
        async move { n >= 7 }
    })
    .await;
    worker.shutdown().await.unwrap();
    let after: Vec<(u32, u64)> = epochs.lock().unwrap()[2..].to_vec();
    assert!(
        after.iter().all(|(_, epoch)| *epoch > held),
        "handled under the lost epoch {held} or lower: {after:?}"
    );
}

#[tokio::test]
async fn replica_acks_wait_for_a_replica_and_say_when_none_confirmed() {
    let primary = RedisServer::start();
    let c = Client::connect(config(&primary.url(), "acks-alone"))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    let wait = Duration::from_millis(200);
    let acked = c.producer_with(ProducerConfig::default().acks(Acks::replicas(1, wait)));
    // No replica: the write is made on the primary, and the error says the
    // outcome is unknown.
    let e = acked
        .publish("orders", Record::encode(&1).unwrap().dedup_id("one"))
        .await
        .unwrap_err();
    match &e {
        Error::NotReplicated {
            wanted: 1,
            acked: 0,
            timeout,
            primary_fsynced: None,
        } => assert_eq!(*timeout, wait),
        other => panic!("{other:?}"),
    }
    assert!(e.is_retryable());
    assert!(e.to_string().contains("outcome is unknown"), "{e}");
    assert_eq!(c.describe_topic("orders").await.unwrap().length, 1);
    // The control: acks from the primary alone succeed at once.
    c.publish_record("orders", Record::encode(&2).unwrap())
        .await
        .unwrap();
    // With a replica attached, the same producer's publish succeeds, and
    // publishing again with the dedup id adds nothing.
    let port = primary.port().to_string();
    let _replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let r = acked
        .publish("orders", Record::encode(&1).unwrap().dedup_id("one"))
        .await;
    let r = match r {
        // The replica may still be syncing: it confirms once it is up.
        Err(Error::NotReplicated { .. }) => {
            let mut last = None;
            for _ in 0..100 {
                match acked
                    .publish("orders", Record::encode(&1).unwrap().dedup_id("one"))
                    .await
                {
                    Ok(r) => {
                        last = Some(r);
                        break;
                    }
                    Err(Error::NotReplicated { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            last.expect("the replica never confirmed")
        }
        other => other.unwrap(),
    };
    assert!(r.duplicate);
    assert_eq!(c.describe_topic("orders").await.unwrap().length, 2);
    // A batch waits once, at the end of its pipeline (a longer timeout:
    // the machine may be busy).
    let patient =
        c.producer_with(ProducerConfig::default().acks(Acks::replicas(1, Duration::from_secs(5))));
    let batch = patient
        .publish_batch("orders", (0..10).map(|i| Record::encode(&i).unwrap()))
        .await
        .unwrap();
    assert!(batch.iter().all(Result::is_ok), "{batch:?}");
}

/// `Acks::Fsynced` waits with `WAITAOF` (Redis 7.2 and later, Valkey 8):
/// on an older server, and on one without an append-only file, it says so.
#[tokio::test]
async fn fsynced_acks_need_waitaof_and_an_append_only_file() {
    let aof = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let c = Client::connect(config(&aof.url(), "acks-fsync"))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    let info = c.server_info().clone();
    let (major, minor) = {
        let mut v = info
            .version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (v.next().unwrap_or(0), v.next().unwrap_or(0))
    };
    let has_waitaof = info.server == "valkey" || (major, minor) >= (7, 2);
    let fsynced =
        c.producer_with(ProducerConfig::default().acks(Acks::fsynced(0, Duration::from_secs(2))));
    let r = fsynced.publish("orders", Record::encode(&1).unwrap()).await;
    if !has_waitaof {
        match r {
            Err(Error::UnsupportedServer { reason, .. }) => {
                assert!(reason.contains("WAITAOF"), "{reason}")
            }
            other => panic!("{} {}: {other:?}", info.server, info.version),
        }
        eprintln!(
            "{} {} has no WAITAOF: only the refusal is checked",
            info.server, info.version
        );
        return;
    }
    r.unwrap();
    // One replica asked for and none there: not confirmed, though the
    // primary fsynced it.
    let one = c.producer_with(
        ProducerConfig::default().acks(Acks::fsynced(1, Duration::from_millis(200))),
    );
    match one.publish("orders", Record::encode(&2).unwrap()).await {
        Err(Error::NotReplicated {
            wanted: 1,
            acked: 0,
            primary_fsynced: Some(true),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // Without an append-only file there is nothing to fsync.
    let plain = RedisServer::start();
    let c = Client::connect(config(&plain.url(), "acks-fsync-off"))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    let fsynced =
        c.producer_with(ProducerConfig::default().acks(Acks::fsynced(0, Duration::from_secs(2))));
    match fsynced.publish("orders", Record::encode(&1).unwrap()).await {
        Err(Error::UnsupportedServer { reason, .. }) => {
            assert!(reason.contains("appendonly"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_group_with_replica_acks_counts_what_no_replica_confirmed() {
    let primary = RedisServer::start();
    let c = Client::connect(config(&primary.url(), "acks-group"))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    let run = |acks: Acks, n: u32| {
        let c = c.clone();
        async move {
            let ledger = Arc::new(Ledger::default());
            let w = recording_worker(&c, "orders", "billing", ledger.clone(), Duration::ZERO)
                .acks(acks)
                .build()
                .unwrap();
            let stats = w.stats();
            let h = w.start().await.unwrap();
            support::groups::wait_for(&ledger, n as usize, Duration::from_secs(30)).await;
            h.shutdown().await.unwrap();
            stats.snapshot()
        }
    };
    for seq in 0..3u32 {
        c.publish_record("orders", Record::encode(&(0u32, seq)).unwrap())
            .await
            .unwrap();
    }
    // No replica: the acks stand on the primary (nothing is handed back:
    // the group has no lag), and they are counted as unconfirmed.
    let s = run(Acks::replicas(1, Duration::from_millis(100)), 3).await;
    assert_eq!(s.acked, 3);
    assert_eq!(s.unreplicated, 3);
    assert_eq!(c.describe_group("orders", "billing").await.unwrap().lag, 0);
    // The control: with a replica attached, nothing is unconfirmed.
    let port = primary.port().to_string();
    let _replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    support::wait_until(Duration::from_secs(20), "the replica is synced", || {
        let synced = support::sentinel::synced_replica(_replica.port());
        async move { synced }
    })
    .await;
    for seq in 3..6u32 {
        c.publish_record("orders", Record::encode(&(0u32, seq)).unwrap())
            .await
            .unwrap();
    }
    let s = run(Acks::replicas(1, Duration::from_secs(2)), 3).await;
    assert_eq!((s.acked, s.unreplicated), (3, 0));
}

#[test]
fn the_cli_publishes_with_replica_acks() {
    let primary = RedisServer::start();
    let prefix = support::unique_prefix("acks-cli");
    let millrace = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
            .args(["--redis", &primary.url(), "--prefix", &prefix])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        millrace(&["topic", "create", "t", "--partitions", "1"])
            .status
            .success()
    );
    let out = millrace(&["publish", "t", "{}", "--acks", "replicas:1:100ms"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("0 of 1 replica(s) confirmed it within 100ms"),
        "{stderr}"
    );
    let out = millrace(&["publish", "t", "{}", "--acks", "all"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("replicas:N"), "{stderr}");
    // The control: the primary's acknowledgement is enough by default.
    assert!(millrace(&["publish", "t", "{}"]).status.success());
    assert!(
        millrace(&["publish", "t", "{}", "--acks", "primary"])
            .status
            .success()
    );
}

#[tokio::test]
async fn sentinel_urls_that_lead_nowhere_are_clear_errors() {
    let primary = RedisServer::start();
    let sentinel = RedisServer::start_sentinel(MASTER, primary.port());
    // A master the sentinel does not know.
    let url = format!("redis+sentinel://127.0.0.1:{}/other", sentinel.port());
    let e = Client::connect(config(&url, "sentinel-unknown"))
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    assert!(e.to_string().contains("knows no master \"other\""), "{e}");
    // No sentinel listening.
    let url = format!(
        "redis+sentinel://127.0.0.1:{}/{MASTER}",
        support::free_port()
    );
    let e = Client::connect(config(&url, "sentinel-none"))
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    assert!(e.to_string().contains("no primary for"), "{e}");
    // The control: the right name connects, to the primary.
    let url = format!("redis+sentinel://127.0.0.1:{}/{MASTER}", sentinel.port());
    let c = Client::connect(config(&url, "sentinel-ok")).await.unwrap();
    c.create_topic(&TopicSpec::new("t", 1).unwrap())
        .await
        .unwrap();
    c.publish_record("t", Record::encode(&1).unwrap())
        .await
        .unwrap();
    let mut direct = redis::Client::open(primary.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut direct).unwrap();
    assert!(!keys.is_empty(), "the write went to the primary");

    // A user with exactly the documented ACL rule connects through the
    // sentinel too (the primary is checked with HELLO, which every user
    // may send), and nothing it did was denied.
    let prefix = support::unique_prefix("sentinel-acl");
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg("app")
        .arg("reset")
        .arg("on")
        .arg(">pw");
    for part in millrace::acl::rule(&prefix, false).split(' ') {
        setuser.arg(part);
    }
    let _: () = setuser.query(&mut direct).unwrap();
    let url = format!(
        "redis+sentinel://app:pw@127.0.0.1:{}/{MASTER}",
        sentinel.port()
    );
    let app = Client::connect(Config::new(&url).unwrap().prefix(prefix.clone()).unwrap())
        .await
        .unwrap();
    app.create_topic(&TopicSpec::new("t", 1).unwrap())
        .await
        .unwrap();
    app.publish_record("t", Record::encode(&1).unwrap())
        .await
        .unwrap();
    // Only the probe's INFO, which falls back to HELLO (as on one server),
    // and on Redis 7.2+ and Valkey redis-rs's CLIENT SETINFO, whose refusal
    // it ignores (docs/security.md).
    let denials: Vec<redis::Value> = redis::cmd("ACL").arg("LOG").query(&mut direct).unwrap();
    let shown: Vec<String> = denials.iter().map(|d| format!("{d:?}")).collect();
    let (kind, version) = support::server_kind_and_version();
    let setinfo_known = !(kind == "redis" && version.starts_with("7.0."));
    assert!(
        shown
            .iter()
            .all(|d| d.contains("\"info\"") || (setinfo_known && d.contains("\"client|setinfo\""))),
        "{shown:?}"
    );
}
