//! Balanced partition placement on a Redis Cluster: a topic's partitions
//! spread evenly over the primaries at creation, topics created before it
//! keep their `T:p` tags, `topic placement` reports where everything lives
//! and what to move after a reshard, and a topic keeps working, in order,
//! while one of its partitions' slots migrates under load.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use millrace::partitioner::partition_for_key;
use millrace::{Client, Config, Created, Mode, Placement, Record, StartAt, TopicSpec};
use support::RedisCluster;

const TOPIC: &str = "erp.v1.invoice.created";

async fn cluster_client(cluster: &RedisCluster, prefix: &str) -> Client {
    let config = Config::cluster(cluster.urls())
        .unwrap()
        .prefix(prefix)
        .unwrap();
    let c = Client::connect(config).await.unwrap();
    assert!(c.server_info().cluster, "the cluster is detected");
    c
}

/// `CLUSTER KEYSLOT` of `key`, as Redis computes it.
async fn keyslot(c: &Client, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut c.connection())
        .await
        .unwrap()
}

/// Partitions of `topic` per primary address, from the report.
fn per_primary(r: &millrace::TopicPlacement) -> BTreeMap<String, u64> {
    r.primaries
        .iter()
        .map(|p| (p.node.clone(), p.partitions))
        .collect()
}

#[tokio::test]
async fn twelve_partitions_land_four_per_primary_and_the_next_topic_keeps_the_totals_even() {
    let cluster = support::shared_cluster();
    let prefix = support::unique_prefix("balanced");
    let c = cluster_client(cluster, &prefix).await;
    assert_eq!(
        c.create_topic(&TopicSpec::new(TOPIC, 12).unwrap())
            .await
            .unwrap(),
        Created::New
    );
    let r = c.topic_placement(TOPIC).await.unwrap();
    assert_eq!(r.placement, Placement::Balanced);
    assert_eq!(r.primaries.len(), 3);
    let counts: Vec<u64> = r.primaries.iter().map(|p| p.partitions).collect();
    assert_eq!(counts, vec![4, 4, 4], "{r:#?}");
    assert!(r.even && r.moves.is_empty());
    // The report's slots are Redis's: every key of the partition is there.
    for p in &r.partitions {
        let key = c.keys().stream(TOPIC, p.partition, 0);
        assert!(key.contains(&format!("{{{}}}", p.tag)), "{key}");
        assert_eq!(Some(keyslot(&c, &key).await), p.slot, "{key}");
        let lease = c.keys().lease(TOPIC, p.partition, "g");
        assert_eq!(Some(keyslot(&c, &lease).await), p.slot, "{lease}");
    }

    // A second topic of 8: at most 3 per primary, all topics within one.
    c.create_topic(&TopicSpec::new("erp.v1.order.placed", 8).unwrap())
        .await
        .unwrap();
    let r8 = c.topic_placement("erp.v1.order.placed").await.unwrap();
    assert!(r8.busiest <= 3, "{r8:#?}");
    let totals: Vec<u64> = r8.primaries.iter().map(|p| p.all_partitions).collect();
    assert_eq!(totals.iter().sum::<u64>(), 20);
    let (lo, hi) = (totals.iter().min().unwrap(), totals.iter().max().unwrap());
    assert!(hi - lo <= 1, "totals {totals:?}");
    println!("placement of {TOPIC}: {counts:?}; after 8 more, totals {totals:?}");

    // Creating again, from another client and asking for the hash scheme,
    // changes nothing: the first creator's tags stand, with no conflict.
    let again = cluster_client(cluster, &prefix).await;
    let spec = TopicSpec::new(TOPIC, 12)
        .unwrap()
        .placement(Placement::Hash);
    assert_eq!(again.create_topic(&spec).await.unwrap(), Created::Existing);
    let seen = again.topic_placement(TOPIC).await.unwrap();
    assert_eq!(seen.partitions, r.partitions);

    // Messages go where the report says, and come back in key order.
    let records: Vec<Record> = (0..600u32)
        .map(|i| Record::encode(&i).unwrap().key(format!("k{}", i % 30)))
        .collect();
    assert!(
        again
            .publish_batch(TOPIC, records)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    let after = c.topic_placement(TOPIC).await.unwrap();
    assert_eq!(
        after.partitions.iter().map(|p| p.messages).sum::<u64>(),
        600
    );
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut rd = c.reader(TOPIC, StartAt::Earliest).await.unwrap();
    while let Some(m) = rd.next().await.unwrap() {
        let k = m.key.clone().unwrap();
        assert_eq!(m.partition, partition_for_key(&k, 12));
        per_key.entry(k).or_default().push(m.decode().unwrap());
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), 600);
    assert!(per_key.values().all(|v| v.windows(2).all(|w| w[0] < w[1])));

    // The negative control: the same topic with the hash scheme (under
    // another prefix) lands 2 / 6 / 4, uneven, with moves to even it.
    let h = cluster_client(cluster, &support::unique_prefix("hashed")).await;
    h.create_topic(
        &TopicSpec::new(TOPIC, 12)
            .unwrap()
            .placement(Placement::Hash),
    )
    .await
    .unwrap();
    let rh = h.topic_placement(TOPIC).await.unwrap();
    assert_eq!(rh.placement, Placement::Hash);
    let hashed: Vec<u64> = rh.primaries.iter().map(|p| p.partitions).collect();
    assert_eq!(hashed, vec![2, 6, 4], "{rh:#?}");
    assert!(!rh.even && rh.busiest == 6 && rh.ideal_max == 4);
    let mut evened = per_primary(&rh);
    for m in &rh.moves {
        *evened.get_mut(&m.from).unwrap() -= m.partitions.len() as u64;
        *evened.get_mut(&m.to).unwrap() += m.partitions.len() as u64;
    }
    assert!(
        evened.values().all(|&n| n == 4),
        "after the moves: {evened:?}"
    );
}

#[tokio::test]
async fn a_topic_created_before_balanced_placement_keeps_its_keys() {
    let cluster = support::shared_cluster();
    let c = cluster_client(cluster, &support::unique_prefix("old-topic")).await;
    // The settings hash as earlier versions wrote it: no placement field.
    let meta = format!("{}:{{old.topic}}:meta", c.keys().prefix());
    let _: () = redis::cmd("HSET")
        .arg(&meta)
        .arg(&[
            ("partitions", "4"),
            ("lanes", "1"),
            ("retention_ms", "3600000"),
            ("max_len", ""),
            ("schema", ""),
            ("created_ms", "1"),
        ])
        .query_async(&mut c.connection())
        .await
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg(c.keys().topics())
        .arg("old.topic")
        .query_async(&mut c.connection())
        .await
        .unwrap();
    for i in 0..20u32 {
        c.publish_record(
            "old.topic",
            Record::encode(&i).unwrap().key(format!("k{i}")),
        )
        .await
        .unwrap();
    }
    // Written to the `{T:p}` keys, as before.
    let mut total = 0;
    for p in 0..4 {
        let key = format!("{}:{{old.topic:{p}}}:s:0", c.keys().prefix());
        assert_eq!(c.keys().stream("old.topic", p, 0), key);
        let n: u64 = redis::cmd("XLEN")
            .arg(&key)
            .query_async(&mut c.connection())
            .await
            .unwrap();
        total += n;
    }
    assert_eq!(total, 20);
    let r = c.topic_placement("old.topic").await.unwrap();
    assert_eq!(r.placement, Placement::Hash);
    assert_eq!(r.partitions[1].tag, "old.topic:1");
    // Creating it again with today's defaults is a no-op, not a conflict.
    assert_eq!(
        c.create_topic(
            &TopicSpec::new("old.topic", 4)
                .unwrap()
                .retention(Duration::from_secs(3600))
        )
        .await
        .unwrap(),
        Created::Existing
    );
}

#[tokio::test]
async fn placement_json_on_a_cluster_names_slots_primaries_and_shares() {
    let cluster = support::shared_cluster();
    let prefix = support::unique_prefix("placement-json");
    let c = cluster_client(cluster, &prefix).await;
    c.create_topic(&TopicSpec::new("shop.v1.cart", 6).unwrap())
        .await
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
        .env_remove("MILLRACE_REDIS_URL")
        .env_remove("REDIS_URL")
        .env_remove("MILLRACE_PREFIX")
        .args(["--redis", &cluster.url(), "--prefix", &prefix])
        .args(["topic", "placement", "shop.v1.cart", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cluster"], true);
    assert_eq!(v["placement"], "balanced");
    assert_eq!(v["even"], true);
    assert_eq!(v["busiest"], 2);
    assert_eq!(v["moves"], serde_json::json!([]));
    let primaries: BTreeSet<u16> = cluster.primaries().into_iter().collect();
    let parts = v["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 6);
    for p in parts {
        let port: u16 = p["primary"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(primaries.contains(&port), "{p}");
        assert!(p["slot"].as_u64().unwrap() < 16384);
        assert!(p["tag"].as_str().unwrap().starts_with("shop.v1.cart:"));
    }
    for n in v["primaries"].as_array().unwrap() {
        assert_eq!(n["partitions"], 2, "{n}");
        assert!((n["share"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert!(n["id"].as_str().is_some_and(|id| id.len() == 40), "{n}");
    }
    // The human form says it is even.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["--redis", &cluster.url(), "--prefix", &prefix])
        .args(["topic", "placement", "shop.v1.cart"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("(balanced placement) is even"), "{text}");
    println!("{text}");
}

/// On a cluster with a replica per primary, the report names each
/// partition's replica too (and never a primary as one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_names_each_partitions_replicas() {
    let cluster = tokio::task::block_in_place(RedisCluster::start_with_replicas);
    let c = cluster_client(&cluster, "replicas").await;
    c.create_topic(&TopicSpec::new(TOPIC, 12).unwrap())
        .await
        .unwrap();
    // CLUSTER SLOTS lists a replica once the node answering has seen a
    // replication offset for it (Redis leaves out replicas at offset 0,
    // and the offset travels by gossip): poll for a report that has them.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let r = loop {
        c.publish_record(TOPIC, Record::encode(&1u8).unwrap())
            .await
            .unwrap();
        let r = c.topic_placement(TOPIC).await.unwrap();
        if r.partitions.iter().all(|p| !p.replicas.is_empty()) {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no replicas within 30 s: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let counts: Vec<u64> = r.primaries.iter().map(|p| p.partitions).collect();
    assert_eq!(counts, vec![4, 4, 4], "{r:#?}");
    let primaries: BTreeSet<String> = r.primaries.iter().map(|p| p.node.clone()).collect();
    let mut replicas = BTreeSet::new();
    for p in &r.partitions {
        assert_eq!(p.replicas.len(), 1, "{p:?}");
        assert!(!primaries.contains(&p.replicas[0]), "{p:?}");
        replicas.insert(p.replicas[0].clone());
    }
    assert_eq!(replicas.len(), 3);
}

/// A primary added with no slots makes a 4 / 4 / 4 topic uneven over four:
/// the report says so and advises three slot moves to it; doing them
/// (slot by slot, keys moving with their slots) evens the topic, with no
/// key renamed and every message still there, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_advice_after_a_primary_is_added_evens_the_topic() {
    let mut cluster = tokio::task::block_in_place(RedisCluster::start);
    let c = cluster_client(&cluster, "grow").await;
    c.create_topic(&TopicSpec::new(TOPIC, 12).unwrap())
        .await
        .unwrap();
    let records: Vec<Record> = (0..240u32)
        .map(|i| Record::encode(&i).unwrap().key(format!("k{}", i % 24)))
        .collect();
    assert!(
        c.publish_batch(TOPIC, records)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    let before = c.topic_placement(TOPIC).await.unwrap();
    assert!(before.even);

    let added = tokio::task::block_in_place(|| cluster.add_empty_primary(Duration::from_secs(30)));
    let uneven = c.topic_placement(TOPIC).await.unwrap();
    assert_eq!(uneven.primaries.len(), 4, "{uneven:#?}");
    let new = uneven
        .primaries
        .iter()
        .find(|p| p.node.ends_with(&format!(":{added}")))
        .expect("the new primary is listed");
    assert_eq!((new.slots, new.partitions), (0, 0));
    assert!(!uneven.even && uneven.busiest == 4 && uneven.ideal_max == 3);
    assert_eq!(uneven.moves.len(), 3, "{uneven:#?}");
    let port = |addr: &str| -> u16 { addr.rsplit(':').next().unwrap().parse().unwrap() };
    let ports = cluster.ports();
    for m in &uneven.moves {
        assert_eq!(port(&m.to), added);
        migrate_slot(&ports, m.slot, port(&m.from), added, || async {}).await;
    }

    let after = c.topic_placement(TOPIC).await.unwrap();
    let counts: Vec<u64> = after.primaries.iter().map(|p| p.partitions).collect();
    assert_eq!(counts, vec![3, 3, 3, 3], "{after:#?}");
    assert!(after.even && after.moves.is_empty());
    // No key renamed: the same tags, the same slots; the data moved along.
    for (b, a) in before.partitions.iter().zip(&after.partitions) {
        assert_eq!((&b.tag, b.slot, b.messages), (&a.tag, a.slot, a.messages));
    }
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut rd = c.reader(TOPIC, StartAt::Earliest).await.unwrap();
    while let Some(m) = rd.next().await.unwrap() {
        per_key
            .entry(m.key.clone().unwrap())
            .or_default()
            .push(m.decode().unwrap());
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), 240);
    assert!(per_key.values().all(|v| v.windows(2).all(|w| w[0] < w[1])));
}

/// Moves `slot` from the primary on `from` to the one on `to` the way
/// `redis-cli --cluster reshard` does, in steps: IMPORTING/MIGRATING, then
/// `MIGRATE` of the keys a few at a time, calling `between` after each
/// batch, then `SETSLOT NODE` on every primary.
async fn migrate_slot<F, Fut>(ports: &[u16], slot: u16, from: u16, to: u16, mut between: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let node = |port: u16| async move {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    };
    let mut src = node(from).await;
    let mut dst = node(to).await;
    let id = |mut c: redis::aio::MultiplexedConnection| async move {
        let id: String = redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut c)
            .await
            .unwrap();
        id
    };
    let (src_id, dst_id) = (id(src.clone()).await, id(dst.clone()).await);
    let setslot = |mut c: redis::aio::MultiplexedConnection, how: &'static str, id: String| async move {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(how)
            .arg(id)
            .query_async(&mut c)
            .await
            .unwrap();
    };
    setslot(dst.clone(), "IMPORTING", src_id.clone()).await;
    setslot(src.clone(), "MIGRATING", dst_id.clone()).await;
    between().await;
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(2)
            .query_async(&mut src)
            .await
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut src)
            .await
            .unwrap();
        between().await;
    }
    setslot(dst.clone(), "NODE", dst_id.clone()).await;
    setslot(src.clone(), "NODE", dst_id.clone()).await;
    for &p in ports {
        if p != from && p != to {
            setslot(node(p).await, "NODE", dst_id.clone()).await;
        }
    }
    let _ = &mut dst;
}

/// One partition's slot migrates to another primary while a producer
/// publishes keyed, deduplicated messages and an ordered group consumes:
/// nothing acknowledged is lost, every key's order holds, and the
/// producer, the worker and the placement report follow the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_keeps_working_in_order_while_its_slot_migrates() {
    support::init_tracing();
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let c = cluster_client(&cluster, "mig").await;
    let topic = "orders";
    c.create_topic(&TopicSpec::new(topic, 3).unwrap())
        .await
        .unwrap();
    let before = c.topic_placement(topic).await.unwrap();
    assert!(before.even, "{before:#?}");
    let moving = &before.partitions[0];
    let slot = moving.slot.unwrap();
    let port = |addr: &str| -> u16 { addr.rsplit(':').next().unwrap().parse().unwrap() };
    let from = port(&moving.primary);
    let to = port(&before.partitions[1].primary);
    assert_ne!(from, to);

    let ledger = Arc::new(support::groups::Ledger::default());
    let worker =
        support::groups::recording_worker(&c, topic, "billing", ledger.clone(), Duration::ZERO)
            .mode(Mode::Ordered)
            .concurrency(4)
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();

    // The producer: keys k0..k11, each key's messages (key, seq) one after
    // another (a plain XADD: one key, which follows ASK redirections while
    // the slot migrates); a retryable failure is tried again. Counts
    // publishes into the moving partition. (A deduplicated publish is a
    // script on two keys, its marker always new: Redis answers TRYAGAIN
    // for it until the slot is stable, a retryable error.)
    let stop = Arc::new(AtomicBool::new(false));
    let into_moving = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let keys: Vec<(u32, String)> = (0..12).map(|k| (k, format!("k{k}"))).collect();
    let producer = spawn_producer(&c, topic, keys, false, &stop, &into_moving, &retried);
    // And deduplicated publishes into the moving partition (key 100).
    let dedup_key = (0..)
        .map(|j| format!("d{j}"))
        .find(|k| partition_for_key(k, 3) == 0)
        .unwrap();
    let (dedup_moving, dedup_retried) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let dedup_producer = spawn_producer(
        &c,
        topic,
        vec![(100, dedup_key)],
        true,
        &stop,
        &dedup_moving,
        &dedup_retried,
    );

    // Let traffic flow, then migrate, waiting for fresh publishes into the
    // moving partition at every step of the window.
    let wait_for_traffic = || {
        let into_moving = into_moving.clone();
        async move {
            let at = into_moving.load(Ordering::SeqCst);
            support::wait_until(
                Duration::from_secs(20),
                "publishes into the moving partition",
                || {
                    let into_moving = into_moving.clone();
                    async move { into_moving.load(Ordering::SeqCst) >= at + 20 }
                },
            )
            .await;
        }
    };
    wait_for_traffic().await;
    let before_window = into_moving.load(Ordering::SeqCst);
    migrate_slot(&cluster.ports(), slot, from, to, wait_for_traffic).await;
    let during_window = into_moving.load(Ordering::SeqCst) - before_window;
    wait_for_traffic().await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = producer.await.unwrap();
    acked.extend(dedup_producer.await.unwrap());
    assert!(acked[&100] > 0, "deduplicated publishes went through");

    // The slot moved: the cluster and the report say so.
    let after = c.topic_placement(topic).await.unwrap();
    assert_eq!(after.partitions[0].slot, Some(slot));
    assert_eq!(port(&after.partitions[0].primary), to, "{after:#?}");
    assert_ne!(port(&after.partitions[0].primary), from);
    assert!(!after.even && after.busiest == 2, "{after:#?}");
    assert_eq!(after.moves.len(), 1, "{after:#?}");
    assert!(
        during_window >= 20,
        "{during_window} publishes during the window"
    );
    // The CLI says so, and names the move back.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["--redis", &cluster.url(), "--prefix", "mig"])
        .args(["topic", "placement", topic])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    println!("{text}");
    assert!(text.contains("(balanced placement) is uneven"), "{text}");
    assert!(
        text.contains(&format!("  slot {} (partition ", after.moves[0].slot)),
        "{text}"
    );

    // Everything acknowledged is handled, each key in order.
    let total: u32 = acked.values().sum();
    support::groups::wait_for(&ledger, total as usize, Duration::from_secs(60)).await;
    worker.shutdown().await.unwrap();
    let order = ledger.first_handling_order();
    for (k, n) in &acked {
        let seen = order.get(k).cloned().unwrap_or_default();
        assert_eq!(seen, (0..*n).collect::<Vec<_>>(), "key k{k}");
    }
    assert!(ledger.violations.lock().unwrap().is_empty());
    // A fresh client finds the partition on its new primary.
    let fresh = cluster_client(&cluster, "mig").await;
    let seen = fresh.topic_placement(topic).await.unwrap();
    assert_eq!(seen.partitions[0].primary, after.partitions[0].primary);
    assert_eq!(seen.partitions[0].messages, after.partitions[0].messages);
    println!(
        "slot {slot} moved {from} -> {to}: {total} messages, {during_window} into the moving \
         partition during the window; plain publishes retried {} times, deduplicated ones {} \
         times ({} of them went through)",
        retried.load(Ordering::SeqCst),
        dedup_retried.load(Ordering::SeqCst),
        acked[&100]
    );
}

/// Publishes `(key index, seq)` to `topic` for each of `keys` in turn,
/// each key's messages one after another, until `stop`; a retryable error
/// is tried again (counted in `retried`), deduplicated by `(key, seq)`
/// when `dedup`. Counts publishes into partition 0 in `into_moving`.
/// Returns, per key index, how many were acknowledged.
fn spawn_producer(
    c: &Client,
    topic: &'static str,
    keys: Vec<(u32, String)>,
    dedup: bool,
    stop: &Arc<AtomicBool>,
    into_moving: &Arc<AtomicU64>,
    retried: &Arc<AtomicU64>,
) -> tokio::task::JoinHandle<BTreeMap<u32, u32>> {
    let (c, stop, into_moving, retried) = (
        c.clone(),
        stop.clone(),
        into_moving.clone(),
        retried.clone(),
    );
    tokio::spawn(async move {
        let mut acked: BTreeMap<u32, u32> = BTreeMap::new();
        let mut i = 0usize;
        while !stop.load(Ordering::SeqCst) {
            let (k, key) = &keys[i % keys.len()];
            let seq = (i / keys.len()) as u32;
            let rec = || {
                let r = Record::encode(&(*k, seq)).unwrap().key(key.clone());
                if dedup {
                    r.dedup_id(format!("{k}-{seq}"))
                } else {
                    r
                }
            };
            let receipt = loop {
                match c.publish_record(topic, rec()).await {
                    Ok(r) => break r,
                    Err(e) if e.is_retryable() => {
                        retried.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => panic!("publish ({k}, {seq}) failed: {e}"),
                }
            };
            assert!(
                !receipt.duplicate || dedup,
                "a plain publish is never a duplicate"
            );
            if receipt.partition == 0 {
                into_moving.fetch_add(1, Ordering::SeqCst);
            }
            acked.insert(*k, seq + 1);
            i += 1;
        }
        acked
    })
}
