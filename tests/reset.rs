//! Group reset: plans change nothing; resets replay from the start, from a
//! time or an id, skip to the end, keep Redis's lag exact, and refuse while
//! the group has live members unless forced.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace::{Client, Error, Record, StartAt, StreamId, TopicSpec, Worker, WorkerHandle};

const TOPIC: &str = "erp.v1.invoice.created";
const GROUP: &str = "pdf-report";

async fn client(test: &str) -> Client {
    support::client(test).await
}

/// Publishes the numbers `range` (keys `k0`..`k9`, so both partitions get
/// some); returns (number, partition, id) of each.
async fn publish(c: &Client, range: std::ops::Range<u32>) -> Vec<(u32, u32, StreamId)> {
    let records: Vec<Record> = range
        .clone()
        .map(|i| Record::encode(&i).unwrap().key(format!("k{}", i % 10)))
        .collect();
    let receipts = c.publish_batch(TOPIC, records).await.unwrap();
    range
        .zip(receipts)
        .map(|(i, r)| {
            let r = r.unwrap();
            (i, r.partition, StreamId::parse(&r.id).unwrap())
        })
        .collect()
}

/// A worker of `GROUP` from the start that records the numbers it handles.
async fn worker(c: &Client, seen: &Arc<Mutex<Vec<u32>>>) -> WorkerHandle {
    let seen = seen.clone();
    Worker::builder(c, GROUP)
        .start_at(StartAt::Earliest)
        .handle_raw(TOPIC, move |msg, _ctx| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(msg.decode::<u32>().unwrap());
                Ok(())
            }
        })
        .start()
        .await
        .unwrap()
}

/// Runs a worker until it handled `n` messages, checks it gets no more
/// for a moment, shuts it down and returns what it handled, sorted.
async fn consume(c: &Client, n: u64) -> Vec<u32> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let w = worker(c, &seen).await;
    support::wait_until(Duration::from_secs(20), &format!("{n} handled"), || {
        let handled = w.stats().handled;
        async move { handled >= n }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.stats().handled, n, "handled more than expected");
    w.shutdown().await.unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    seen
}

/// A 2-partition topic with 100 messages, all handled by `GROUP`.
async fn consumed_topic(c: &Client) -> Vec<(u32, u32, StreamId)> {
    c.create_topic(&TopicSpec::new(TOPIC, 2).unwrap())
        .await
        .unwrap();
    let published = publish(c, 0..100).await;
    let parts: BTreeSet<u32> = published.iter().map(|(_, p, _)| *p).collect();
    assert_eq!(parts.len(), 2, "both partitions get messages");
    assert_eq!(consume(c, 100).await, (0..100).collect::<Vec<u32>>());
    published
}

async fn lag(c: &Client) -> u64 {
    c.describe_group(TOPIC, GROUP).await.unwrap().lag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_to_earliest_plans_then_replays_everything() {
    let c = client("reset_earliest").await;
    let published = consumed_topic(&c).await;
    assert_eq!(lag(&c).await, 0);

    let plan = c
        .plan_group_reset(TOPIC, GROUP, &StartAt::Earliest)
        .await
        .unwrap();
    assert!(!plan.applied);
    assert_eq!(
        (plan.to.as_str(), plan.lag_after, plan.pending),
        ("earliest", 100, 0)
    );
    assert!(plan.members.is_empty(), "{plan:#?}");
    assert_eq!(plan.partitions.len(), 2);
    for (p, lane) in plan.partitions.iter().enumerate() {
        let last = published
            .iter()
            .filter(|(_, part, _)| *part == p as u32)
            .map(|(_, _, id)| *id)
            .max()
            .unwrap();
        let count = published
            .iter()
            .filter(|(_, part, _)| *part == p as u32)
            .count();
        assert_eq!((lane.partition, lane.lane), (p as u32, 0));
        assert_eq!(lane.from.as_deref(), Some(last.to_string().as_str()));
        assert_eq!(lane.to, "0-0");
        assert_eq!(lane.lag_before, Some(0));
        assert_eq!(lane.lag_after, count as u64);
    }
    // A plan changes nothing.
    assert_eq!(lag(&c).await, 0);

    let done = c
        .reset_group(TOPIC, GROUP, &StartAt::Earliest, false)
        .await
        .unwrap();
    assert!(done.applied);
    assert_eq!(done.partitions, plan.partitions);
    assert_eq!(lag(&c).await, 100);
    let again = c
        .plan_group_reset(TOPIC, GROUP, &StartAt::Earliest)
        .await
        .unwrap();
    assert!(
        again
            .partitions
            .iter()
            .all(|l| l.from.as_deref() == Some("0-0"))
    );

    assert_eq!(consume(&c, 100).await, (0..100).collect::<Vec<u32>>());
    assert_eq!(lag(&c).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_to_a_time_replays_only_what_came_after() {
    let c = client("reset_time").await;
    c.create_topic(&TopicSpec::new(TOPIC, 2).unwrap())
        .await
        .unwrap();
    let first = publish(&c, 0..50).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let between = c.redis_time_ms().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = publish(&c, 50..100).await;
    assert!(first.iter().all(|(_, _, id)| id.ms < between));
    assert!(second.iter().all(|(_, _, id)| id.ms > between));
    assert_eq!(consume(&c, 100).await.len(), 100);

    let to = StartAt::TimeMs(between);
    let plan = c.plan_group_reset(TOPIC, GROUP, &to).await.unwrap();
    assert_eq!(plan.lag_after, 50, "{plan:#?}");
    let expected_to = StreamId {
        ms: between,
        seq: 0,
    }
    .predecessor()
    .to_string();
    assert!(plan.partitions.iter().all(|l| l.to == expected_to));

    let done = c.reset_group(TOPIC, GROUP, &to, false).await.unwrap();
    assert_eq!(done.lag_after, 50);
    // Redis's own lag is exact after a reset into the middle of a stream.
    assert_eq!(lag(&c).await, 50);
    assert_eq!(consume(&c, 50).await, (50..100).collect::<Vec<u32>>());
    assert_eq!(lag(&c).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_to_an_id_counts_what_is_at_or_after_it_in_every_partition() {
    let c = client("reset_id").await;
    // One partition with enough entries to count over several pages, from
    // either side.
    c.create_topic(&TopicSpec::new(TOPIC, 1).unwrap())
        .await
        .unwrap();
    let mut published = Vec::new();
    for batch in 0..5u32 {
        published.extend(publish(&c, batch * 500..(batch + 1) * 500).await);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    c.create_group(TOPIC, GROUP, &StartAt::Latest)
        .await
        .unwrap();
    assert_eq!(lag(&c).await, 0);
    for at in [0usize, 1, 100, 1200, 1201, 2400, 2499] {
        let id = published[at].2;
        let to = StartAt::Id(id);
        let plan = c.plan_group_reset(TOPIC, GROUP, &to).await.unwrap();
        let expected = (2500 - at) as u64;
        assert_eq!(plan.lag_after, expected, "at {at}");
        assert_eq!(plan.partitions[0].to, id.predecessor().to_string());
        c.reset_group(TOPIC, GROUP, &to, false).await.unwrap();
        assert_eq!(lag(&c).await, expected, "at {at}");
    }
    // Past the end: nothing to deliver.
    let last = published[2499].2;
    let after = StartAt::Id(StreamId {
        ms: last.ms,
        seq: last.seq + 1,
    });
    let plan = c.reset_group(TOPIC, GROUP, &after, false).await.unwrap();
    assert_eq!(plan.lag_after, 0);
    assert_eq!(lag(&c).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_to_latest_skips_everything() {
    let c = client("reset_latest").await;
    let published = consumed_topic(&c).await;
    c.reset_group(TOPIC, GROUP, &StartAt::Earliest, false)
        .await
        .unwrap();
    assert_eq!(lag(&c).await, 100);

    let plan = c
        .plan_group_reset(TOPIC, GROUP, &StartAt::Latest)
        .await
        .unwrap();
    assert_eq!((plan.lag_after, plan.to.as_str()), (0, "latest"));
    for lane in &plan.partitions {
        let last = published
            .iter()
            .filter(|(_, p, _)| *p == lane.partition)
            .map(|(_, _, id)| *id)
            .max()
            .unwrap();
        let count = published
            .iter()
            .filter(|(_, p, _)| *p == lane.partition)
            .count();
        assert_eq!(lane.to, last.to_string());
        assert_eq!(lane.lag_before, Some(count as u64));
    }
    c.reset_group(TOPIC, GROUP, &StartAt::Latest, false)
        .await
        .unwrap();
    assert_eq!(lag(&c).await, 0);

    // Only what comes next is handled.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let w = worker(&c, &seen).await;
    publish(&c, 100..101).await;
    support::wait_until(Duration::from_secs(20), "the new message", || {
        let handled = w.stats().handled;
        async move { handled >= 1 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.shutdown().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_is_refused_while_members_are_live_unless_forced() {
    let c = client("reset_members").await;
    consumed_topic(&c).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let w = worker(&c, &seen).await;
    let me = w.member_id().to_string();
    support::wait_until(Duration::from_secs(10), "the member is live", || {
        let c = c.clone();
        async move {
            let info = c.describe_group(TOPIC, GROUP).await.unwrap();
            !info.members.is_empty()
        }
    })
    .await;

    let plan = c
        .plan_group_reset(TOPIC, GROUP, &StartAt::Earliest)
        .await
        .unwrap();
    assert_eq!(plan.members, vec![me.clone()]);
    let e = c
        .reset_group(TOPIC, GROUP, &StartAt::Earliest, false)
        .await
        .unwrap_err();
    match &e {
        Error::GroupHasMembers {
            topic,
            group,
            members,
        } => {
            assert_eq!((topic.as_str(), group.as_str()), (TOPIC, GROUP));
            assert_eq!(members, &vec![me.clone()]);
        }
        other => panic!("expected GroupHasMembers, got {other:?}"),
    }
    assert_eq!(
        e.to_string(),
        format!(
            "group {GROUP} on {TOPIC} has 1 live member(s) ({me}): stop them first or force the reset"
        )
    );
    assert!(!e.is_retryable() && !e.is_invalid_input() && !e.is_unreachable());
    assert_eq!(lag(&c).await, 0, "nothing changed");

    // Forced: the running member carries on from the new position.
    let done = c
        .reset_group(TOPIC, GROUP, &StartAt::Earliest, true)
        .await
        .unwrap();
    assert!(done.applied);
    assert_eq!(done.members, vec![me]);
    support::wait_until(Duration::from_secs(20), "the replay", || {
        let handled = w.stats().handled;
        async move { handled >= 100 }
    })
    .await;
    w.shutdown().await.unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, (0..100).collect::<Vec<u32>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_groups_and_topics_are_reported() {
    let c = client("reset_unknown").await;
    c.create_topic(&TopicSpec::new(TOPIC, 2).unwrap())
        .await
        .unwrap();
    let e = c
        .plan_group_reset(TOPIC, "nobody", &StartAt::Earliest)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::GroupNotFound { .. }), "{e:?}");
    let e = c
        .reset_group(TOPIC, "nobody", &StartAt::Latest, true)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::GroupNotFound { .. }), "{e:?}");
    let e = c
        .reset_group("erp.v1.nothing", GROUP, &StartAt::Latest, true)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TopicNotFound(_)), "{e:?}");
    let e = c
        .plan_group_reset(TOPIC, "Bad Name", &StartAt::Latest)
        .await
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e:?}");
}
