//! Message identity: `<partition>:<lane>:<first id>` names one message of a
//! topic, where a stream id names it only within one partition lane. Two
//! messages with one stream id are told apart; one message keeps its id
//! through retries, dead-lettering and replay; a delayed message is named by
//! its publish receipt; dead letters are found by the message id.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace::{
    Client, Error, HandlerError, MessageId, Mode, Record, ReplayTo, RetryPolicy, Selection,
    StartAt, StreamId, TopicSpec, Worker, WorkerHandle,
};

/// What a handler saw of each delivery: the message id, the stream id and
/// the attempt.
type Seen = Arc<Mutex<Vec<(MessageId, StreamId, u32)>>>;

async fn until(what: &str, secs: u64, f: impl Fn() -> bool) {
    support::wait_until(Duration::from_secs(secs), what, || {
        let ok = f();
        async move { ok }
    })
    .await;
}

/// A worker recording what it sees; it fails every attempt while `fail`
/// is set.
async fn recording(
    c: &Client,
    group: &str,
    topic: &str,
    mode: Mode,
    fail: Arc<AtomicBool>,
) -> (WorkerHandle, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let w = Worker::builder(c, group)
        .mode(mode)
        .retry(
            RetryPolicy::attempts(2)
                .fixed(Duration::from_millis(20))
                .jitter(0.0),
        )
        .handle_raw(topic, move |_msg, ctx| {
            let (log, fail) = (log.clone(), fail.clone());
            async move {
                log.lock()
                    .unwrap()
                    .push((ctx.message_id.clone(), ctx.id, ctx.attempt));
                if fail.load(Ordering::SeqCst) {
                    Err(HandlerError::retry("not yet"))
                } else {
                    Ok(())
                }
            }
        })
        .start()
        .await
        .unwrap();
    (w, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_with_one_stream_id_in_other_lanes_and_partitions_are_told_apart() {
    let c = support::client("same_stream_id").await;
    c.create_topic(&TopicSpec::new("twins", 2).unwrap().lanes(2))
        .await
        .unwrap();
    // The same stream id written into three lane streams, as three
    // publishes landing in one millisecond would get.
    let now = c.redis_time_ms().await.unwrap();
    let id = format!("{now}-7");
    for (p, lane, n) in [(0u32, 0u8, 1u32), (0, 1, 2), (1, 0, 3)] {
        let payload = millrace::envelope::encode(&n).unwrap();
        let added: String = redis::cmd("XADD")
            .arg(c.keys().stream("twins", p, lane))
            .arg(&id)
            .arg("k")
            .arg("")
            .arg("h")
            .arg("")
            .arg("d")
            .arg(payload)
            .query_async(&mut c.connection())
            .await
            .unwrap();
        assert_eq!(added, id);
    }
    for mode in [Mode::Ordered, Mode::Shared] {
        let group = format!("{mode:?}").to_lowercase();
        let (w, seen) = recording(&c, &group, "twins", mode, Arc::default()).await;
        until("three handled", 10, || w.stats().acked == 3).await;
        w.shutdown().await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{mode:?}: {seen:?}");
        // Deduplicating on the stream id would drop two of the three ...
        let stream_ids: BTreeSet<StreamId> = seen.iter().map(|(_, s, _)| *s).collect();
        assert_eq!(
            stream_ids.len(),
            1,
            "{mode:?}: one stream id, three messages"
        );
        // ... the message ids are three.
        let ids: BTreeSet<String> = seen.iter().map(|(m, _, _)| m.to_string()).collect();
        let want: BTreeSet<String> = ["0:0", "0:1", "1:0"]
            .iter()
            .map(|pl| format!("{pl}:{id}"))
            .collect();
        assert_eq!(ids, want, "{mode:?}");
    }
    // Readers name them the same way.
    let mut reader = c.reader("twins", StartAt::Earliest).await.unwrap();
    let mut read = BTreeSet::new();
    while let Some(m) = reader.next().await.unwrap() {
        read.insert(m.message_id.to_string());
    }
    assert_eq!(read.len(), 3, "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_keeps_its_id_through_retries_dead_lettering_and_replay() {
    for (mode, to) in [
        (Mode::Shared, ReplayTo::Topic),
        (Mode::Shared, ReplayTo::Group),
        (Mode::Ordered, ReplayTo::Topic),
    ] {
        let c = support::client("identity_kept").await;
        c.create_topic(&TopicSpec::new("kept", 2).unwrap().lanes(2))
            .await
            .unwrap();
        let fail = Arc::new(AtomicBool::new(true));
        let (w, seen) = recording(&c, "g", "kept", mode, fail.clone()).await;
        let receipt = c
            .publish_record("kept", Record::encode(&1u8).unwrap().key("k").priority(1))
            .await
            .unwrap();
        let id = receipt.message_id.clone();
        assert_eq!(
            id.to_string(),
            format!("{}:1:{}", receipt.partition, receipt.id)
        );
        until("dead-lettered", 10, || w.stats().dead_lettered == 1).await;
        let dead = c.dead_letters("kept", None, 10).await.unwrap();
        assert_eq!(dead.len(), 1, "{mode:?}");
        assert_eq!(dead[0].message_id, id, "{mode:?}: the dead letter names it");

        fail.store(false, Ordering::SeqCst);
        let n = c
            .replay_dead_letters("kept", &Selection::Ids(vec![id.to_string()]), None, to)
            .await
            .unwrap();
        assert_eq!(n, 1, "{mode:?} {to:?}: replayed by its message id");
        until("replay handled", 10, || w.stats().acked == 1).await;
        w.shutdown().await.unwrap();

        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.len(),
            3,
            "{mode:?} {to:?}: two failures, one success: {seen:?}"
        );
        for (m, _, _) in &seen {
            assert_eq!(m, &id, "{mode:?} {to:?}: {seen:?}");
        }
        let attempts: Vec<u32> = seen.iter().map(|(_, _, a)| *a).collect();
        assert_eq!(attempts, [1, 2, 1], "{mode:?} {to:?}");
        // The replay is a new stream entry (and so is a shared-mode retry):
        // the stream id alone would not have named the message.
        assert_ne!(seen[2].1, seen[0].1, "{mode:?} {to:?}");
        if mode == Mode::Shared {
            assert_ne!(seen[1].1, seen[0].1, "a shared-mode retry is a new entry");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_is_named_by_its_publish_receipt() {
    let c = support::client("identity_delayed").await;
    c.create_topic(&TopicSpec::new("later", 2).unwrap())
        .await
        .unwrap();
    let receipt = c
        .publish_record(
            "later",
            Record::encode(&1u8)
                .unwrap()
                .key("k")
                .delay(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    let id = receipt.message_id.clone();
    assert_eq!(id.first(), receipt.id);
    assert_eq!(id.due_ms(), receipt.due_ms);
    assert_eq!(id.stream_id(), None, "a token, not a stream id");
    let (w, seen) = recording(&c, "g", "later", Mode::Shared, Arc::default()).await;
    until("handled", 10, || w.stats().acked == 1).await;
    w.shutdown().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, id);
    assert!(
        seen[0].1.ms >= receipt.due_ms.unwrap(),
        "its stream id is from when it came due"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_dedup_id_names_the_first_message_whatever_its_lane() {
    let c = support::client("identity_dedup").await;
    c.create_topic(&TopicSpec::new("once", 2).unwrap().lanes(3))
        .await
        .unwrap();
    for delay in [None, Some(Duration::from_secs(60))] {
        let record = |lane: u8| {
            let r = Record::encode(&1u8)
                .unwrap()
                .key("k")
                .priority(lane)
                .dedup_id(format!("inv-{delay:?}"));
            match delay {
                Some(d) => r.delay(d),
                None => r,
            }
        };
        let first = c.publish_record("once", record(2)).await.unwrap();
        let again = c.publish_record("once", record(0)).await.unwrap();
        assert!(again.duplicate && !first.duplicate);
        assert_eq!(again.message_id, first.message_id, "{delay:?}");
        assert_eq!((again.lane, &again.id), (2, &first.id), "{delay:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_two_groups_gave_up_on_has_two_dead_letters() {
    let c = support::client("identity_two_groups").await;
    c.create_topic(&TopicSpec::new("both", 1).unwrap())
        .await
        .unwrap();
    let fail = Arc::new(AtomicBool::new(true));
    let (a, _) = recording(&c, "a", "both", Mode::Shared, fail.clone()).await;
    let (b, _) = recording(&c, "b", "both", Mode::Ordered, fail.clone()).await;
    let receipt = c
        .publish_record("both", Record::encode(&1u8).unwrap())
        .await
        .unwrap();
    until("both gave up", 10, || {
        a.stats().dead_lettered == 1 && b.stats().dead_lettered == 1
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let id = receipt.message_id.to_string();
    let dead = c.dead_letters("both", None, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d.message_id == receipt.message_id));
    // One message, two dead letters: `dead_letter` by the message id asks
    // which one, naming both addresses.
    let e = c.dead_letter("both", &id).await.unwrap_err();
    let Error::InvalidArgument { reason, .. } = &e else {
        panic!("{e}")
    };
    for d in &dead {
        assert!(reason.contains(&format!("0:{}", d.id)), "{reason}");
    }
    // A group narrows it to one.
    let n = c
        .replay_dead_letters(
            "both",
            &Selection::Ids(vec![id.clone()]),
            Some("a"),
            ReplayTo::Group,
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let left = c.dead_letters("both", None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].group, "b");
    assert_eq!(
        c.dead_letter("both", &id).await.unwrap().map(|d| d.group),
        Some("b".to_string())
    );
    // A malformed message id, or one of a partition the topic lacks, is refused.
    assert!(matches!(
        c.dead_letter("both", "0:x:1-0").await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c.dead_letter("both", "5:0:1-0").await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// A worker of `group` on `topic` whose handler does what `act` says for
/// each payload: "ok", "retry", "fail" (permanently) or "hold" (waits until
/// `release` is notified).
async fn acting(
    c: &Client,
    group: &str,
    topic: &str,
    mode: Mode,
    act: fn(&str) -> &'static str,
    release: Arc<tokio::sync::Notify>,
) -> WorkerHandle {
    Worker::builder(c, group)
        .mode(mode)
        .retry(
            RetryPolicy::attempts(5)
                .fixed(Duration::from_secs(600))
                .jitter(0.0),
        )
        .handle_raw(topic, move |msg, _ctx| {
            let release = release.clone();
            async move {
                let body: String = msg.decode().unwrap();
                match act(&body) {
                    "retry" => Err(HandlerError::retry("upstream down")),
                    "fail" => Err(HandlerError::permanent("bad invoice")),
                    "hold" => {
                        release.notified().await;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        })
        .start()
        .await
        .unwrap()
}

fn states(s: &millrace::MessageStatus) -> Vec<(String, String)> {
    s.groups
        .iter()
        .map(|g| (g.group.clone(), g.state.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_a_message_stands_in_every_group() {
    let c = support::client("identity_status").await;
    c.create_topic(&TopicSpec::new("st", 1).unwrap())
        .await
        .unwrap();
    let good = c
        .publish_record("st", Record::encode("good").unwrap())
        .await
        .unwrap()
        .message_id;
    let bad = c
        .publish_record("st", Record::encode("bad").unwrap())
        .await
        .unwrap()
        .message_id;
    // Nobody has read them: a group made without a worker.
    c.create_group("st", "idle", &StartAt::Earliest)
        .await
        .unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let workers = vec![
        acting(&c, "all-ok", "st", Mode::Ordered, |_| "ok", release.clone()).await,
        acting(
            &c,
            "gives-up",
            "st",
            Mode::Ordered,
            |b| if b == "bad" { "fail" } else { "ok" },
            release.clone(),
        )
        .await,
        acting(
            &c,
            "ordered-retry",
            "st",
            Mode::Ordered,
            |b| if b == "bad" { "retry" } else { "ok" },
            release.clone(),
        )
        .await,
        acting(
            &c,
            "shared-retry",
            "st",
            Mode::Shared,
            |b| if b == "bad" { "retry" } else { "ok" },
            release.clone(),
        )
        .await,
        acting(
            &c,
            "busy",
            "st",
            Mode::Shared,
            |b| if b == "good" { "hold" } else { "ok" },
            release.clone(),
        )
        .await,
    ];
    let want_good = [
        ("all-ok", "done"),
        ("busy", "in_flight"),
        ("gives-up", "done"),
        ("idle", "unread"),
        ("ordered-retry", "done"),
        ("shared-retry", "done"),
    ];
    let want_bad = [
        ("all-ok", "done"),
        ("busy", "done"),
        ("gives-up", "dead_lettered"),
        ("idle", "unread"),
        ("ordered-retry", "retrying"),
        ("shared-retry", "retrying"),
    ];
    let as_strings = |w: &[(&str, &str)]| -> Vec<(String, String)> {
        w.iter()
            .map(|(g, s)| (g.to_string(), s.to_string()))
            .collect()
    };
    let found = Arc::new(Mutex::new(None));
    support::wait_until(Duration::from_secs(20), "every group settles", || {
        let c = c.clone();
        let (good, bad) = (good.clone(), bad.clone());
        let (wg, wb) = (as_strings(&want_good), as_strings(&want_bad));
        let found = found.clone();
        async move {
            let g = c.message_status("st", &good).await.unwrap();
            let b = c.message_status("st", &bad).await.unwrap();
            let settled = g.as_ref().map(states) == Some(wg) && b.as_ref().map(states) == Some(wb);
            *found.lock().unwrap() = Some((g, b));
            settled
        }
    })
    .await;
    let (g, b) = found.lock().unwrap().take().unwrap();
    let (g, b) = (g.unwrap(), b.unwrap());
    let m = g.message.as_ref().unwrap();
    assert_eq!(m.decode::<String>().unwrap(), "good");
    let of = |s: &millrace::MessageStatus, group: &str| {
        s.groups.iter().find(|x| x.group == group).unwrap().clone()
    };
    let busy = of(&g, "busy");
    assert_eq!(busy.attempt, Some(1));
    assert!(busy.member.is_some() && busy.since_ms.is_some(), "{busy:?}");
    let dead = of(&b, "gives-up");
    assert_eq!(dead.error.as_deref(), Some("bad invoice"));
    assert_eq!(dead.attempt, Some(1));
    let letter = c
        .dead_letter("st", dead.dead_letter.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(letter.message_id, bad);
    for group in ["ordered-retry", "shared-retry"] {
        let r = of(&b, group);
        assert_eq!(r.attempt, Some(2), "{r:?}");
        let due = r.due_ms.unwrap();
        let now = c.redis_time_ms().await.unwrap();
        assert!(
            due > now + 500_000,
            "{group}: due in about ten minutes: {r:?}"
        );
        if group == "ordered-retry" {
            assert_eq!(r.error.as_deref(), Some("upstream down"));
        }
    }

    // A delayed message: waiting, unread everywhere, its due time shown.
    let later = c
        .publish_record(
            "st",
            Record::encode("later")
                .unwrap()
                .delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let d = c
        .message_status("st", &later.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.due_ms, later.due_ms);
    assert_eq!(
        d.message.as_ref().unwrap().decode::<String>().unwrap(),
        "later"
    );
    assert!(
        d.groups
            .iter()
            .all(|g| g.state == millrace::MessageState::Unread && g.due_ms == later.due_ms),
        "{d:?}"
    );

    // An id that never was: not found. A bad partition: invalid.
    let next = StreamId {
        ms: bad.stream_id().unwrap().ms + 1,
        seq: 0,
    };
    let never = MessageId::new(0, 0, &next.to_string()).unwrap();
    assert_eq!(c.message_status("st", &never).await.unwrap(), None);
    let elsewhere = MessageId::new(3, 0, &next.to_string()).unwrap();
    assert!(
        c.message_status("st", &elsewhere)
            .await
            .unwrap_err()
            .is_invalid_input()
    );

    release.notify_waiters();
    for w in workers {
        w.abort();
    }

    // Trimmed: gone for a group that had not read it, done for one that had.
    let mut conn = c.connection();
    let _: i64 = redis::cmd("XTRIM")
        .arg(c.keys().stream("st", 0, 0))
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let t = c.message_status("st", &good).await.unwrap().unwrap();
    assert!(t.message.is_none());
    let s = states(&t);
    assert!(s.contains(&("idle".into(), "gone".into())), "{s:?}");
    assert!(s.contains(&("all-ok".into(), "done".into())), "{s:?}");
}
