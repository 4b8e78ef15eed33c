//! Consumer groups: fan-out, key order, exclusive partitions through
//! rebalances and crashes, static membership, graceful handover, shared
//! mode, fencing, and what `describe_group` reports.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace::{Client, HandlerError, Mode, Record, StartAt, TopicSpec, Worker};

async fn client(test: &str) -> Client {
    support::client(test).await
}

use support::groups::*;

/// A worker of group `g` on `topic` (1 partition, sessions of 30 s, no
/// renewal for 10 s) whose handler reports each message's `u8` on the
/// channel and, for those `hold` picks, waits for the `Notify` first.
async fn held_worker(
    c: &Client,
    topic: &str,
    hold: fn(u8) -> bool,
) -> (
    millrace::WorkerHandle,
    tokio::sync::mpsc::UnboundedReceiver<u8>,
    Arc<tokio::sync::Notify>,
) {
    let (entered_tx, entered_rx) = tokio::sync::mpsc::unbounded_channel::<u8>();
    let release = Arc::new(tokio::sync::Notify::new());
    let r2 = release.clone();
    let w = Worker::builder(c, "g")
        .start_at(StartAt::Earliest)
        .session_timeout(Duration::from_secs(30))
        .heartbeat_interval(Duration::from_secs(10))
        .handle_raw(topic, move |msg, _ctx| {
            let entered = entered_tx.clone();
            let release = r2.clone();
            let n: u8 = msg.decode().unwrap_or(0);
            async move {
                let _ = entered.send(n);
                if hold(n) {
                    release.notified().await;
                }
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    (w, entered_rx, release)
}

/// Moves partition 0's lease of group `g` on to the next epoch (as a new
/// owner would), leaving the owner; returns the new epoch.
async fn bump_epoch(c: &Client, topic: &str) -> u64 {
    redis::cmd("HINCRBY")
        .arg(c.keys().lease(topic, 0, "g"))
        .arg("epoch")
        .arg(1)
        .query_async(&mut c.connection())
        .await
        .unwrap()
}

/// A partition's lease as Redis holds it: (owner, epoch, expires ms).
async fn lease(c: &Client, topic: &str, p: u32, group: &str) -> (String, u64, u64) {
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(c.keys().lease(topic, p, group))
        .query_async(&mut c.connection())
        .await
        .unwrap();
    let num = |f: &str| fields.get(f).map_or(0, |v| v.parse().unwrap());
    (
        fields.get("owner").cloned().unwrap_or_default(),
        num("epoch"),
        num("expires"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_sees_every_message_once() {
    fan_out(&client("fanout").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_keep_their_order_while_keys_run_concurrently() {
    key_order(&client("order").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_stay_exclusive_while_members_come_and_go() {
    let c = client("churn").await;
    c.create_topic(&TopicSpec::new("churn", 6).unwrap())
        .await
        .unwrap();
    let ledger = Arc::new(Ledger::default());
    let build = || {
        recording_worker(&c, "churn", "g", ledger.clone(), Duration::from_millis(2))
            .concurrency(8)
            .build()
            .unwrap()
    };
    let mut members = vec![build().start().await.unwrap()];
    let publisher = {
        let c = c.clone();
        tokio::spawn(async move {
            for round in 0..20u32 {
                let records: Vec<Record> = (0..20u32)
                    .flat_map(|k| (0..10u32).map(move |i| (k, round * 10 + i)))
                    .map(|(k, seq)| Record::encode(&(k, seq)).unwrap().key(format!("k{k}")))
                    .collect();
                c.publish_batch("churn", records).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // Join and leave every 300 ms for about 3 seconds.
    for step in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if step % 3 == 2 && members.len() > 1 {
            members.remove(0).shutdown().await.unwrap();
        } else {
            members.push(build().start().await.unwrap());
        }
    }
    publisher.await.unwrap();
    wait_for(&ledger, 20 * 200, Duration::from_secs(60)).await;
    for m in members {
        m.shutdown().await.unwrap();
    }
    let violations = ledger.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:#?}");
    assert_in_order(&ledger, 20, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_members_partitions_move_after_the_session_timeout() {
    let c = client("crash").await;
    c.create_topic(&TopicSpec::new("crash", 4).unwrap())
        .await
        .unwrap();
    let ledger = Arc::new(Ledger::default());
    let a = recording_worker(&c, "crash", "g", ledger.clone(), Duration::from_millis(2))
        .session_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let b = recording_worker(&c, "crash", "g", ledger.clone(), Duration::from_millis(2))
        .session_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    publish_sequenced(&c, "crash", 20, 50).await;
    // Let both work a little, then crash A mid-flight.
    wait_for(&ledger, 200, Duration::from_secs(30)).await;
    let a_id = a.member_id().to_string();
    let a_parts = a.owned()[0].1.clone();
    assert!(!a_parts.is_empty(), "A owned partitions before the crash");
    a.abort();
    // When A's leases run out on Redis's clock (a renewal still in flight
    // can only move that later).
    let mut expiries = Vec::new();
    for &p in &a_parts {
        let (owner, _, expires) = lease(&c, "crash", p, "g").await;
        assert_eq!(owner, a_id, "partition {p}");
        expiries.push((p, expires));
    }
    let b_owned = |b: &millrace::WorkerHandle| b.owned()[0].1.len();
    support::wait_until(Duration::from_secs(30), "B owns all partitions", || {
        let n = b_owned(&b);
        async move { n == 4 }
    })
    .await;
    // B took each of A's partitions only once A's lease had expired: a new
    // epoch is at least Redis's clock at the takeover.
    for (p, expires) in expiries {
        let (owner, epoch, _) = lease(&c, "crash", p, "g").await;
        assert_eq!(owner, b.member_id(), "partition {p}");
        assert!(
            epoch >= expires,
            "partition {p} taken at {epoch}, before A's lease ran out at {expires}"
        );
    }
    wait_for(&ledger, 1_000, Duration::from_secs(30)).await;
    b.shutdown().await.unwrap();
    assert_in_order(&ledger, 20, 50);
    let info = c.describe_group("crash", "g").await.unwrap();
    assert!(info.members.iter().all(|m| m.id != a_id));
    assert_eq!(info.pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_that_restarts_keeps_its_partitions() {
    let c = client("static").await;
    c.create_topic(&TopicSpec::new("static", 6).unwrap())
        .await
        .unwrap();
    let ledger = Arc::new(Ledger::default());
    let member = |id: &str| {
        recording_worker(&c, "static", "g", ledger.clone(), Duration::ZERO)
            .instance_id(id)
            .session_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let a = member("worker-a").start().await.unwrap();
    let b = member("worker-b").start().await.unwrap();
    let balanced = |a: &millrace::WorkerHandle, b: &millrace::WorkerHandle| {
        a.owned()[0].1.len() == 3 && b.owned()[0].1.len() == 3
    };
    support::wait_until(Duration::from_secs(20), "a balanced group", || {
        let ok = balanced(&a, &b);
        async move { ok }
    })
    .await;
    let a_parts = a.owned()[0].1.clone();
    let b_parts = b.owned()[0].1.clone();
    let b_rebalances = b.stats().rebalances;

    // A "restarts": gone without a goodbye, back at once with its id.
    let a_id = a.member_id().to_string();
    a.abort();
    // A's leases as it left them: they would run out at `expires` (Redis's
    // clock; a renewal still in flight can only move that later).
    let mut before = Vec::new();
    for &p in &a_parts {
        let (owner, epoch, expires) = lease(&c, "static", p, "g").await;
        assert_eq!(owner, a_id, "partition {p}");
        before.push((p, epoch, expires));
    }
    let a2 = member("worker-a").start().await.unwrap();
    assert_eq!(a2.member_id(), a_id, "a static member keeps its id");
    support::wait_until(Duration::from_secs(20), "A has its partitions back", || {
        let n = a2.owned()[0].1.clone();
        let want = a_parts.clone();
        async move { n == want }
    })
    .await;
    // Taken back without waiting for the old leases to run out (a new epoch
    // is Redis's clock at the takeover), and with a new epoch, which fences
    // off anything the old incarnation still had in flight.
    for (p, old_epoch, expires) in before {
        let (owner, epoch, _) = lease(&c, "static", p, "g").await;
        assert_eq!(owner, a2.member_id(), "partition {p}");
        assert!(
            epoch > old_epoch,
            "partition {p}: epoch {epoch} after {old_epoch}"
        );
        assert!(
            epoch < expires,
            "partition {p} taken back at {epoch}, only after the old lease ran out at {expires}"
        );
    }
    assert_eq!(b.owned()[0].1, b_parts, "B's partitions did not change");
    assert_eq!(b.stats().rebalances, b_rebalances, "B noticed nothing");
    publish_sequenced(&c, "static", 10, 10).await;
    wait_for(&ledger, 100, Duration::from_secs(20)).await;
    let info = c.describe_group("static", "g").await.unwrap();
    assert!(info.members.iter().all(|m| m.is_static));
    assert_eq!(info.members.len(), 2);
    a2.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_partitions_over_before_the_leases_run_out() {
    let c = client("handover").await;
    c.create_topic(&TopicSpec::new("handover", 6).unwrap())
        .await
        .unwrap();
    let ledger = Arc::new(Ledger::default());
    let build = || {
        recording_worker(
            &c,
            "handover",
            "g",
            ledger.clone(),
            Duration::from_millis(1),
        )
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_millis(200))
        .build()
        .unwrap()
    };
    let a = build().start().await.unwrap();
    let b = build().start().await.unwrap();
    support::wait_until(Duration::from_secs(10), "both own partitions", || {
        let ok = a.owned()[0].1.len() == 3 && b.owned()[0].1.len() == 3;
        async move { ok }
    })
    .await;
    publish_sequenced(&c, "handover", 10, 100).await;
    let a_id = a.member_id().to_string();
    let a_parts = a.owned()[0].1.clone();
    // Where A's leases stand before it goes: expiring 10 s on, unless given
    // back.
    let mut expiries = Vec::new();
    for &p in &a_parts {
        let (owner, _, expires) = lease(&c, "handover", p, "g").await;
        assert_eq!(owner, a_id, "partition {p}");
        expiries.push((p, expires));
    }
    a.shutdown().await.unwrap();
    // Once shutdown returns, A holds nothing and is no member.
    for &p in &a_parts {
        let (owner, _, _) = lease(&c, "handover", p, "g").await;
        assert_ne!(
            owner, a_id,
            "partition {p} still leased to A after its shutdown"
        );
    }
    let info = c.describe_group("handover", "g").await.unwrap();
    assert!(info.members.iter().all(|m| m.id != a_id), "{info:?}");
    support::wait_until(Duration::from_secs(30), "B owns everything", || {
        let ok = b.owned()[0].1.len() == 6;
        async move { ok }
    })
    .await;
    // B took them before A's leases would have run out (a new epoch is
    // Redis's clock at the takeover): handed over, not expired.
    for (p, expires) in expiries {
        let (owner, epoch, _) = lease(&c, "handover", p, "g").await;
        assert_eq!(owner, b.member_id(), "partition {p}");
        assert!(
            epoch < expires,
            "partition {p} taken at {epoch}, not before A's lease ran out at {expires}"
        );
    }
    wait_for(&ledger, 1_000, Duration::from_secs(30)).await;
    b.shutdown().await.unwrap();
    assert_in_order(&ledger, 10, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_members_compete_and_reclaim_a_dead_members_messages() {
    let c = client("shared").await;
    c.create_topic(&TopicSpec::new("jobs", 4).unwrap())
        .await
        .unwrap();
    let handled: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let shared_worker = |stall: bool| {
        let handled = handled.clone();
        Worker::builder(&c, "pool")
            .mode(Mode::Shared)
            .start_at(StartAt::Earliest)
            .session_timeout(Duration::from_secs(2))
            .heartbeat_interval(Duration::from_millis(100))
            .visibility_timeout(Duration::from_secs(1))
            .block(Duration::from_millis(100))
            .concurrency(8)
            .handle_raw("jobs", move |msg, _ctx| {
                let handled = handled.clone();
                async move {
                    if stall {
                        // A member that takes messages and never finishes.
                        std::future::pending::<()>().await;
                    }
                    let n: u32 = msg.decode().map_err(HandlerError::permanent)?;
                    *handled.lock().unwrap().entry(n).or_default() += 1;
                    Ok(())
                }
            })
            .build()
            .unwrap()
    };
    // A member that grabs messages and dies with them.
    let stuck = shared_worker(true).start().await.unwrap();
    let recs: Vec<Record> = (0..20_000u32)
        .map(|i| Record::encode(&i).unwrap())
        .collect();
    c.publish_batch("jobs", recs).await.unwrap();
    let c2 = c.clone();
    support::wait_until(
        Duration::from_secs(10),
        "the stuck member holds messages",
        || {
            let c = c2.clone();
            async move { c.describe_group("jobs", "pool").await.unwrap().pending > 0 }
        },
    )
    .await;
    stuck.abort();
    let mut members = Vec::new();
    for _ in 0..4 {
        members.push(shared_worker(false).start().await.unwrap());
    }
    let h = handled.clone();
    support::wait_until(Duration::from_secs(60), "all 20 000 handled", || {
        let n = h.lock().unwrap().len();
        async move { n == 20_000 }
    })
    .await;
    let per_member: Vec<u64> = members.iter().map(|m| m.stats().handled).collect();
    for m in members {
        m.shutdown().await.unwrap();
    }
    assert!(
        handled.lock().unwrap().values().all(|n| *n == 1),
        "nothing fails, so nothing is handled twice"
    );
    assert!(
        per_member.iter().filter(|n| **n > 0).count() >= 2,
        "{per_member:?}"
    );
    assert_eq!(c.describe_group("jobs", "pool").await.unwrap().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_after_the_lease_moved_is_refused() {
    let c = client("fencing").await;
    c.create_topic(&TopicSpec::new("fenced", 1).unwrap())
        .await
        .unwrap();
    let (w, mut entered_rx, release) = held_worker(&c, "fenced", |_| true).await;
    c.publish_record("fenced", Record::encode(&1u8).unwrap())
        .await
        .unwrap();
    assert_eq!(entered_rx.recv().await, Some(1));
    // The lease moves on while the handler runs (as after a long pause).
    bump_epoch(&c, "fenced").await;
    release.notify_one();
    support::wait_until(Duration::from_secs(5), "the ack is refused", || {
        let n = w.stats().stale_acks;
        async move { n == 1 }
    })
    .await;
    let info = c.describe_group("fenced", "g").await.unwrap();
    assert_eq!(
        info.pending, 1,
        "the message stays pending for the new owner"
    );
    assert_eq!(w.stats().acked, 0);
    w.abort();
}

/// The acker keeps the leases it checked under a `WATCH` between flushes
/// (no script per ack): a lease that moves on after that must still refuse
/// the next ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_after_the_lease_moved_is_refused_by_an_acker_already_watching_it() {
    let c = client("fencing-watched").await;
    c.create_topic(&TopicSpec::new("fenced", 1).unwrap())
        .await
        .unwrap();
    let (w, mut entered_rx, release) = held_worker(&c, "fenced", |n| n == 2).await;
    // The first is acked: the acker now watches the lease.
    c.publish_record("fenced", Record::encode(&1u8).unwrap())
        .await
        .unwrap();
    assert_eq!(entered_rx.recv().await, Some(1));
    support::wait_until(Duration::from_secs(5), "the first ack", || {
        let n = w.stats().acked;
        async move { n == 1 }
    })
    .await;
    c.publish_record("fenced", Record::encode(&2u8).unwrap())
        .await
        .unwrap();
    assert_eq!(entered_rx.recv().await, Some(2));
    bump_epoch(&c, "fenced").await;
    release.notify_one();
    support::wait_until(Duration::from_secs(5), "the second ack is refused", || {
        let n = w.stats().stale_acks;
        async move { n == 1 }
    })
    .await;
    assert_eq!(w.stats().acked, 1, "only the first was acked");
    assert_eq!(c.describe_group("fenced", "g").await.unwrap().pending, 1);
    w.abort();
}

/// An idle member's wait and the read after it go out as one request; the
/// read is still fenced: a message that ends the wait after the lease moved
/// on is not read under the old epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_ends_a_wait_after_the_lease_moved_is_read_only_at_a_new_epoch() {
    let server = support::RedisServer::start();
    let c = Client::connect(
        millrace::Config::new(server.url())
            .unwrap()
            .prefix(support::unique_prefix("wait-fenced"))
            .unwrap(),
    )
    .await
    .unwrap();
    c.create_topic(&TopicSpec::new("waits", 1).unwrap())
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<(u8, u64)>>> = Arc::default();
    let s2 = seen.clone();
    let w = Worker::builder(&c, "g")
        .start_at(StartAt::Earliest)
        .session_timeout(Duration::from_secs(30))
        .heartbeat_interval(Duration::from_secs(2))
        .handle_raw("waits", move |msg, ctx| {
            let n: u8 = msg.decode().unwrap_or(0);
            s2.lock().unwrap().push((n, ctx.epoch));
            async { Ok(()) }
        })
        .start()
        .await
        .unwrap();
    c.publish_record("waits", Record::encode(&1u8).unwrap())
        .await
        .unwrap();
    support::wait_until(Duration::from_secs(5), "the first message", || {
        let n = seen.lock().unwrap().len();
        async move { n == 1 }
    })
    .await;
    // The member now waits on the stream (its own server: the one client
    // blocked in XREAD) with its read queued behind.
    support::wait_until(Duration::from_secs(5), "the member to wait", || {
        let blocked = support::blocked_in_xread(server.port());
        async move { blocked }
    })
    .await;
    let bumped = bump_epoch(&c, "waits").await;
    c.publish_record("waits", Record::encode(&2u8).unwrap())
        .await
        .unwrap();
    support::wait_until(Duration::from_secs(10), "the second message", || {
        let n = seen.lock().unwrap().len();
        async move { n == 2 }
    })
    .await;
    w.shutdown().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].1, bumped - 1, "the first at the first epoch");
    assert!(
        seen[1].1 > bumped,
        "the second read only under a new lease: {seen:?} (bumped to {bumped})"
    );
}

/// A message whose task waited (here for the rate limit) while the lease
/// changed hands must not start at the old epoch: it is handled once, by the
/// new lease, and the handler sees the new epoch (its fencing token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_waited_past_a_lease_change_starts_only_at_the_new_epoch() {
    let c = client("late-start").await;
    c.create_topic(&TopicSpec::new("late", 1).unwrap())
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let s2 = seen.clone();
    let w = Worker::builder(&c, "g")
        .start_at(StartAt::Earliest)
        .session_timeout(Duration::from_secs(30))
        .heartbeat_interval(Duration::from_millis(100))
        .rate_limit("1/2s".parse().unwrap())
        .handle_raw("late", move |msg, ctx| {
            let n: u32 = msg.decode().unwrap_or(0);
            s2.lock().unwrap().push((n, ctx.epoch));
            async { Ok(()) }
        })
        .start()
        .await
        .unwrap();
    // Two keys: both are dispatched at once, one waits for the next permit.
    // Published just after a rate window (fixed, 2 s) begins, so the second
    // waits most of a window: time for the lease to move meanwhile.
    support::wait_until(Duration::from_secs(5), "a rate window to begin", || {
        let c = c.clone();
        async move { c.redis_time_ms().await.unwrap() % 2_000 < 150 }
    })
    .await;
    let recs = vec![
        Record::encode(&1u32).unwrap().key("a"),
        Record::encode(&2u32).unwrap().key("b"),
    ];
    c.publish_batch("late", recs).await.unwrap();
    support::wait_until(Duration::from_secs(10), "the first message", || {
        let n = seen.lock().unwrap().len();
        async move { n >= 1 }
    })
    .await;
    let first = seen.lock().unwrap()[0];
    // The lease moves on while the second waits for its permit; the next
    // renewal is refused and the member takes the partition again, later.
    let bumped = bump_epoch(&c, "late").await;
    support::wait_until(
        Duration::from_secs(20),
        "both handled, nothing pending",
        || {
            let n = seen.lock().unwrap().len();
            let c = c.clone();
            async move { n >= 2 && c.describe_group("late", "g").await.unwrap().pending == 0 }
        },
    )
    .await;
    w.shutdown().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(first.1, bumped - 1, "first handled at the first epoch");
    assert_eq!(seen.len(), 2, "each handled once: {seen:?}");
    assert!(
        seen[1].1 > bumped,
        "the second started only under the new lease: {seen:?} (bumped to {bumped})"
    );
}

#[tokio::test]
async fn describe_group_reports_lag_and_pending() {
    let c = client("describe").await;
    c.create_topic(&TopicSpec::new("ledger", 2).unwrap())
        .await
        .unwrap();
    c.create_group("ledger", "audit", &StartAt::Earliest)
        .await
        .unwrap();
    let recs: Vec<Record> = (0..10u32)
        .map(|i| Record::encode(&i).unwrap().key("same"))
        .collect();
    let r = c.publish_batch("ledger", recs).await.unwrap();
    let p = r[0].as_ref().unwrap().partition;
    // Someone reads 4 and does not ack.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("audit")
        .arg("reader-1")
        .arg("COUNT")
        .arg(4)
        .arg("STREAMS")
        .arg(c.keys().stream("ledger", p, 0))
        .arg(">")
        .query_async(&mut c.connection())
        .await
        .unwrap();
    let info = c.describe_group("ledger", "audit").await.unwrap();
    let part = &info.partitions[p as usize];
    assert_eq!((part.lag, part.pending), (6, 4));
    assert_eq!((info.lag, info.pending), (6, 4));
    assert!(info.members.is_empty());
    assert!(matches!(
        c.describe_group("ledger", "nobody").await,
        Err(millrace::Error::GroupNotFound { .. })
    ));
}

/// A one-partition topic with 300 ms retention and a group on it, and a
/// producer that trims on every publish.
async fn short_retention_topic(c: &Client, topic: &str, group: &str) -> millrace::Producer {
    use millrace::ProducerConfig;
    let retention = Duration::from_millis(300);
    c.create_topic(&TopicSpec::new(topic, 1).unwrap().retention(retention))
        .await
        .unwrap();
    c.create_group(topic, group, &StartAt::Earliest)
        .await
        .unwrap();
    c.producer_with(ProducerConfig::default().trim_interval(Duration::ZERO))
}

/// Until Redis's clock is past that retention.
async fn wait_past_retention(c: &Client) {
    let t0 = c.redis_time_ms().await.unwrap();
    support::wait_until(Duration::from_secs(5), "retention passes", || {
        let c = c.clone();
        async move { c.redis_time_ms().await.unwrap() > t0 + 400 }
    })
    .await;
}

#[tokio::test]
async fn retention_keeps_what_a_live_group_has_not_handled() {
    let c = client("retention-groups").await;
    let producer = short_retention_topic(&c, "kept", "slow").await;
    let publish = |from: u32, n: u32| {
        let producer = producer.clone();
        async move {
            let recs: Vec<Record> = (from..from + n)
                .map(|i| Record::encode(&i).unwrap())
                .collect();
            producer.publish_batch("kept", recs).await.unwrap();
        }
    };
    let stream = c.keys().stream("kept", 0, 0);
    let mut conn = c.connection();
    let values = |c: Client| async move {
        let mut r = c.reader("kept", StartAt::Earliest).await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = r.next().await.unwrap() {
            out.push(m.decode::<u32>().unwrap());
        }
        out
    };
    publish(0, 500).await;
    // The group handles the first 100 (read and ack).
    let v: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("slow")
        .arg("reader")
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let handled = stream_ids(&v);
    assert_eq!(handled.len(), 100);
    let _: i64 = redis::cmd("XACK")
        .arg(&stream)
        .arg("slow")
        .arg(&handled)
        .query_async(&mut conn)
        .await
        .unwrap();

    // Past retention, the member still alive (it touches the stream).
    wait_past_retention(&c).await;
    // (Reading its own history counts as activity without taking more.)
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("slow")
        .arg("reader")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    publish(500, 100).await;
    let left = values(c.clone()).await;
    assert!(
        (100..500).all(|v| left.contains(&v)),
        "a message the live group has not handled was trimmed"
    );

    // A group whose members are all gone for longer than the retention
    // stops holding trimming back.
    wait_past_retention(&c).await;
    publish(600, 100).await;
    let left = values(c.clone()).await;
    let old = left.iter().filter(|v| **v < 600).count();
    assert!(old <= 100, "{old} old messages kept for a dead group");
}

/// Member ids are per process, so every restart leaves a Redis consumer
/// behind; the retention's trim forgets those idle past the retention with
/// nothing pending, and keeps the rest.
#[tokio::test]
async fn departed_members_consumers_are_forgotten_after_the_retention() {
    let c = client("forget-consumers").await;
    let producer = short_retention_topic(&c, "tidy", "g").await;
    let recs: Vec<Record> = (0..3u32).map(|i| Record::encode(&i).unwrap()).collect();
    producer.publish_batch("tidy", recs).await.unwrap();
    let stream = c.keys().stream("tidy", 0, 0);
    let mut conn = c.connection();
    let read = |consumer: &'static str| {
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .clone()
    };
    // "gone" handled its message and left; "holder" died holding one.
    let v: redis::Value = read("gone").query_async(&mut conn).await.unwrap();
    let _: i64 = redis::cmd("XACK")
        .arg(&stream)
        .arg("g")
        .arg(stream_ids(&v))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = read("holder").query_async(&mut conn).await.unwrap();
    wait_past_retention(&c).await;
    // "live" reads just now, then a publish trims.
    let _: redis::Value = read("live").query_async(&mut conn).await.unwrap();
    producer
        .publish("tidy", Record::encode(&9u32).unwrap())
        .await
        .unwrap();
    let infos: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&stream)
        .arg("g")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut names: Vec<String> = infos
        .iter()
        .map(|i| redis::from_redis_value(i["name"].clone()).unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["holder", "live", "~created"]);
    let info = c.describe_group("tidy", "g").await.unwrap();
    assert_eq!(
        info.pending, 2,
        "the held message is still pending, and live's"
    );
}

/// The cluster's fenced read (a script) carries the fence its holder last
/// wrote: a read sent before the holder wrote a new one (its reply lost, the
/// request itself late) reads nothing, and a new holder starts unfenced.
#[tokio::test]
async fn a_late_script_read_carrying_an_old_fence_reads_nothing() {
    let c = client("late-fence").await;
    c.create_topic(&TopicSpec::new("lf", 1).unwrap())
        .await
        .unwrap();
    c.create_group("lf", "g", &StartAt::Earliest).await.unwrap();
    c.publish_record("lf", Record::encode(&1u32).unwrap())
        .await
        .unwrap();
    let lease = c.keys().lease("lf", 0, "g");
    let stream = c.keys().stream("lf", 0, 0);
    let script = |name| redis::Script::new(millrace::fuzz_api::script_source(name).unwrap());
    let (acquire, read) = (script("lease_acquire"), script("read_fenced"));
    let mut conn = c.connection();
    let hset_fence = |v: &str| redis::cmd("HSET").arg(&lease).arg("fence").arg(v).clone();
    let _: i64 = hset_fence("a-former-holders")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (held, epoch): (i64, u64) = acquire
        .key(&lease)
        .arg("m1")
        .arg(30_000)
        .arg(0)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(held, 1);
    let fence: Option<String> = redis::cmd("HGET")
        .arg(&lease)
        .arg("fence")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fence, None, "a new holder starts with no fence");
    let pending = || {
        let (stream, mut conn) = (stream.clone(), c.connection());
        async move {
            let v: Vec<redis::Value> = redis::cmd("XPENDING")
                .arg(&stream)
                .arg("g")
                .query_async(&mut conn)
                .await
                .unwrap();
            redis::from_redis_value::<i64>(v[0].clone()).unwrap()
        }
    };
    // The holder re-reads its own pending entries after a lost reply: it
    // writes a fresh fence first.
    let _: i64 = hset_fence("n1").query_async(&mut conn).await.unwrap();
    let read_with = |fence: &'static str| {
        let (read, lease, stream) = (read.clone(), lease.clone(), stream.clone());
        let mut conn = c.connection();
        async move {
            let v: redis::Value = read
                .key(&lease)
                .key(&stream)
                .arg("g")
                .arg("m1")
                .arg(epoch)
                .arg(10)
                .arg(fence)
                .invoke_async(&mut conn)
                .await
                .unwrap();
            v
        }
    };
    let late = read_with("").await;
    assert_eq!(late, redis::Value::Int(-1));
    assert_eq!(pending().await, 0, "the late read took nothing");
    let now = read_with("n1").await;
    assert!(matches!(now, redis::Value::Array(_)), "{now:?}");
    assert_eq!(pending().await, 1, "the current read took the entry");
}

/// The entry ids in an XREADGROUP reply.
fn stream_ids(v: &redis::Value) -> Vec<String> {
    use redis::Value;
    let mut out = Vec::new();
    if let Value::Array(streams) = v {
        for s in streams {
            if let Value::Array(kv) = s
                && let Some(Value::Array(entries)) = kv.get(1)
            {
                for e in entries {
                    if let Value::Array(parts) = e {
                        out.push(redis::from_redis_value(parts[0].clone()).unwrap());
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_counts_as_a_failure_and_the_worker_goes_on() {
    let c = client("panic").await;
    c.create_topic(&TopicSpec::new("fragile", 2).unwrap())
        .await
        .unwrap();
    let calls: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let seen = calls.clone();
    let w = Worker::builder(&c, "g")
        .retry(
            millrace::RetryPolicy::default()
                .exponential(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .handle_raw("fragile", move |msg, ctx| {
            let n: u32 = msg.decode().unwrap_or(0);
            *seen.lock().unwrap().entry(n).or_default() += 1;
            // Panics before and after the handler's first await, once each.
            if n == 3 && ctx.attempt == 1 {
                panic!("synchronous panic for message 3");
            }
            async move {
                tokio::task::yield_now().await;
                if n == 7 && ctx.attempt == 1 {
                    panic!("async panic for message 7");
                }
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let recs: Vec<Record> = (0..10u32).map(|i| Record::encode(&i).unwrap()).collect();
    c.publish_batch("fragile", recs).await.unwrap();
    support::wait_until(Duration::from_secs(10), "all handled", || {
        let n = w.stats().handled;
        async move { n == 10 }
    })
    .await;
    let stats = w.shutdown().await.unwrap();
    assert_eq!(stats.panicked, 2);
    assert_eq!(stats.failed, 2);
    assert_eq!(stats.acked, 10);
    let calls = calls.lock().unwrap();
    assert_eq!((calls[&3], calls[&7], calls[&0]), (2, 2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_zero_is_read_first() {
    let c = client("lanes").await;
    c.create_topic(&TopicSpec::new("jobs", 1).unwrap().lanes(2))
        .await
        .unwrap();
    let low: Vec<Record> = (0..50u32)
        .map(|i| Record::encode(&i).unwrap().priority(1))
        .collect();
    let high: Vec<Record> = (100..150u32)
        .map(|i| Record::encode(&i).unwrap().priority(0))
        .collect();
    c.publish_batch("jobs", low).await.unwrap();
    c.publish_batch("jobs", high).await.unwrap();
    let order: Arc<Mutex<Vec<u8>>> = Arc::default();
    let o = order.clone();
    let w = Worker::builder(&c, "g")
        .concurrency(1)
        .batch(10)
        .handle_raw("jobs", move |_msg, ctx| {
            o.lock().unwrap().push(ctx.lane);
            async { Ok(()) }
        })
        .start()
        .await
        .unwrap();
    support::wait_until(Duration::from_secs(10), "all handled", || {
        let n = w.stats().handled;
        async move { n == 100 }
    })
    .await;
    w.shutdown().await.unwrap();
    let order = order.lock().unwrap();
    assert!(order[..50].iter().all(|l| *l == 0), "{order:?}");
}

/// Readers keep a blocking connection between reads, but never the pool's
/// last one: more consumers than pooled connections all make progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_consumers_than_pooled_connections_all_make_progress() {
    support::init_tracing();
    let c = Client::connect(support::config("pool-starve").blocking_pool_size(2))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 2).unwrap())
        .await
        .unwrap();
    let mut ledgers = Vec::new();
    let mut handles = Vec::new();
    for g in 0..5 {
        let ledger = Arc::new(Ledger::default());
        let w = recording_worker(
            &c,
            "orders",
            &format!("g{g}"),
            ledger.clone(),
            Duration::ZERO,
        )
        .build()
        .unwrap();
        handles.push(w.start().await.unwrap());
        ledgers.push(ledger);
    }
    publish_sequenced(&c, "orders", 10, 20).await;
    for l in &ledgers {
        wait_for(l, 200, Duration::from_secs(30)).await;
    }
    for h in handles {
        h.shutdown().await.unwrap();
    }
}

/// A lag Redis cannot tell (the group's `entries-read` unknown, as on a
/// replica promoted by a failover; here by `XGROUP SETID` without
/// `ENTRIESREAD`) is estimated, never 0 while the group is behind. Control:
/// Redis's own lag is nil there, and a group read to the end has lag 0.
#[tokio::test]
async fn a_lag_redis_cannot_tell_is_estimated_never_zero_while_behind() {
    let c = client("lag-unknown").await;
    c.create_topic(&TopicSpec::new("jobs", 1).unwrap())
        .await
        .unwrap();
    for i in 0..100u32 {
        c.producer()
            .publish("jobs", Record::encode(&i).unwrap())
            .await
            .unwrap();
    }
    c.create_group("jobs", "g", &StartAt::Earliest)
        .await
        .unwrap();
    assert_eq!(c.describe_group("jobs", "g").await.unwrap().lag, 100);
    let stream = c.keys().stream("jobs", 0, 0);
    let mut conn = c.connection();
    let first_half: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(50)
        .query_async(&mut conn)
        .await
        .unwrap();
    let set_to = |id: String| {
        let (stream, mut conn) = (stream.clone(), c.connection());
        async move {
            let _: () = redis::cmd("XGROUP")
                .arg("SETID")
                .arg(&stream)
                .arg("g")
                .arg(id)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    set_to(first_half[49].0.clone()).await;
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        format!("{groups:?}").contains("bulk-string('\"lag\"'), nil"),
        "Redis can tell the lag here: the test proves nothing: {groups:?}"
    );
    let lag = c.describe_group("jobs", "g").await.unwrap().lag;
    assert!((1..=100).contains(&lag), "lag {lag}");
    set_to("$".into()).await;
    assert_eq!(c.describe_group("jobs", "g").await.unwrap().lag, 0);
}
