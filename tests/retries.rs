//! Failures and time: retries with backoff, dead letters and their replay,
//! per-group isolation, ordered retries, a crash mid-retry, delayed
//! promotion.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace::RetryPolicy;
use millrace::{Client, HandlerError, Mode, Record, TopicSpec, Worker};
use millrace::{ReplayTo, Selection};

async fn client(test: &str) -> Client {
    support::client(test).await
}

fn fixed(attempts: u32, delay_ms: u64) -> RetryPolicy {
    RetryPolicy::attempts(attempts)
        .fixed(Duration::from_millis(delay_ms))
        .jitter(0.0)
}

async fn until(what: &str, secs: u64, f: impl Fn() -> bool) {
    support::wait_until(Duration::from_secs(secs), what, || {
        let ok = f();
        async move { ok }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_fails_twice_is_called_three_times_with_backoff() {
    for mode in [Mode::Ordered, Mode::Shared] {
        let c = client("retry3").await;
        c.create_topic(&TopicSpec::new("flaky", 2).unwrap())
            .await
            .unwrap();
        // When each attempt started, on Redis's clock (the clock retry due
        // times are kept in).
        let calls: Arc<Mutex<Vec<u64>>> = Arc::default();
        let seen = calls.clone();
        let c2 = c.clone();
        let w = Worker::builder(&c, "g")
            .mode(mode)
            .retry(fixed(5, 200))
            .handle_raw("flaky", move |_msg, ctx| {
                let (seen, c) = (seen.clone(), c2.clone());
                async move {
                    let now = c.redis_time_ms().await.unwrap();
                    seen.lock().unwrap().push(now);
                    if ctx.attempt < 3 {
                        Err(HandlerError::retry(format!("try {}", ctx.attempt)))
                    } else {
                        Ok(())
                    }
                }
            })
            .start()
            .await
            .unwrap();
        c.publish_record("flaky", Record::encode(&1u8).unwrap())
            .await
            .unwrap();
        until("acked", 10, || w.stats().acked == 1).await;
        let stats = w.shutdown().await.unwrap();
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 3, "{mode:?}");
        assert_eq!(
            (stats.failed, stats.retried, stats.dead_lettered),
            (2, 2, 0)
        );
        // The backoff is waited out before each retry.
        for gap in calls.windows(2).map(|w| w[1] - w[0]) {
            assert!(
                gap >= 200,
                "{mode:?}: retried {gap} ms after a failure with a fixed 200 ms backoff"
            );
        }
        assert_eq!(c.describe_group("flaky", "g").await.unwrap().pending, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_end_in_the_dead_letter_queue() {
    for mode in [Mode::Ordered, Mode::Shared] {
        let c = client("dlq").await;
        c.create_topic(&TopicSpec::new("invoices", 4).unwrap())
            .await
            .unwrap();
        let calls: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
        let seen = calls.clone();
        let w = Worker::builder(&c, "pdf")
            .mode(mode)
            .retry(fixed(3, 20))
            .handle_raw("invoices", move |msg, _ctx| {
                let seen = seen.clone();
                async move {
                    let n: u32 = msg.decode().map_err(HandlerError::permanent)?;
                    *seen.lock().unwrap().entry(n).or_default() += 1;
                    match n {
                        n if n % 10 == 7 => {
                            Err(HandlerError::retry(format!("invoice {n} will not render")))
                        }
                        1000 => Err(HandlerError::permanent("invoice 1000 is malformed")),
                        _ => Ok(()),
                    }
                }
            })
            .start()
            .await
            .unwrap();
        let mut recs: Vec<Record> = (0..100u32)
            .map(|i| Record::encode(&i).unwrap().key(format!("k{}", i % 13)))
            .collect();
        recs.push(Record::encode(&1000u32).unwrap());
        recs.push(Record::raw(b"\xc1 not msgpack".to_vec()).key("bad"));
        c.publish_batch("invoices", recs).await.unwrap();
        until("all settled", 20, || {
            let s = w.stats();
            s.acked + s.dead_lettered == 102
        })
        .await;
        let stats = w.shutdown().await.unwrap();
        assert_eq!((stats.acked, stats.dead_lettered), (90, 12), "{mode:?}");
        let dead = c.dead_letters("invoices", Some("pdf"), 1000).await.unwrap();
        assert_eq!(dead.len(), 12);
        let retried: Vec<_> = dead
            .iter()
            .filter(|d| d.error.contains("will not render"))
            .collect();
        assert_eq!(retried.len(), 10);
        assert!(retried.iter().all(|d| d.attempts == 3), "{mode:?}");
        let permanent = dead.iter().find(|d| d.error.contains("malformed")).unwrap();
        assert_eq!(permanent.attempts, 1);
        let undecodable = dead
            .iter()
            .find(|d| d.key.as_deref() == Some("bad"))
            .unwrap();
        assert_eq!(undecodable.attempts, 1);
        assert!(
            undecodable.error.contains("decode"),
            "{}",
            undecodable.error
        );
        assert_eq!(undecodable.payload, b"\xc1 not msgpack");
        let calls = calls.lock().unwrap().clone();
        assert!((0..100).filter(|n| n % 10 == 7).all(|n| calls[&n] == 3));
        assert_eq!(calls[&1000], 1);
        assert_eq!(c.describe_topic("invoices").await.unwrap().dlq_length, 12);
        assert_eq!(
            c.describe_group("invoices", "pdf").await.unwrap().pending,
            0
        );
        // The same entries read as the topic `invoices.dlq`.
        let mut r = c
            .reader("invoices.dlq", millrace::StartAt::Earliest)
            .await
            .unwrap();
        let mut n = 0;
        while let Some(m) = r.next().await.unwrap() {
            assert_eq!(
                m.headers.get("millrace-group").map(String::as_str),
                Some("pdf")
            );
            n += 1;
        }
        assert_eq!(n, 12);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_one_group_leaves_the_other_alone() {
    let c = client("isolation").await;
    c.create_topic(&TopicSpec::new("orders", 2).unwrap())
        .await
        .unwrap();
    let a_calls = Arc::new(AtomicU32::new(0));
    let b_calls = Arc::new(AtomicU32::new(0));
    let (ac, bc) = (a_calls.clone(), b_calls.clone());
    let a = Worker::builder(&c, "audit")
        .handle_raw("orders", move |_m, _c| {
            ac.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .start()
        .await
        .unwrap();
    let b = Worker::builder(&c, "mailer")
        .retry(fixed(3, 20))
        .handle_raw("orders", move |_m, _c| {
            bc.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(HandlerError::retry("smtp down")) }
        })
        .start()
        .await
        .unwrap();
    c.publish_record("orders", Record::encode(&1u8).unwrap())
        .await
        .unwrap();
    until("B gives up", 10, || b.stats().dead_lettered == 1).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    assert_eq!(a_calls.load(Ordering::SeqCst), 1, "group A saw it once");
    assert_eq!(b_calls.load(Ordering::SeqCst), 3);
    assert!(
        c.dead_letters("orders", Some("audit"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        c.dead_letters("orders", Some("mailer"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_key_holds_back_only_itself() {
    let c = client("ordered-retry").await;
    c.create_topic(&TopicSpec::new("ledger", 1).unwrap())
        .await
        .unwrap();
    // (key, seq, attempt) of each success.
    let log: Arc<Mutex<Vec<(String, u32, u32)>>> = Arc::default();
    let l = log.clone();
    let w = Worker::builder(&c, "g")
        .concurrency(8)
        .retry(fixed(200, 50))
        .handle_raw("ledger", move |msg, ctx| {
            let l = l.clone();
            async move {
                let (key, seq): (String, u32) = msg.decode().map_err(HandlerError::permanent)?;
                // `slow` 0 fails until every `fast` message is done: only
                // if `fast` goes on while `slow` waits for its retries.
                let fast_done = l.lock().unwrap().iter().filter(|e| e.0 == "fast").count();
                if key == "slow" && seq == 0 && (ctx.attempt < 2 || fast_done < 5) {
                    return Err(HandlerError::retry("not yet"));
                }
                l.lock().unwrap().push((key, seq, ctx.attempt));
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let recs: Vec<Record> = (0..5u32)
        .flat_map(|seq| {
            ["slow", "fast"].map(|k| Record::encode(&(k.to_string(), seq)).unwrap().key(k))
        })
        .collect();
    c.publish_batch("ledger", recs).await.unwrap();
    until("all handled", 30, || log.lock().unwrap().len() == 10).await;
    let stats = w.shutdown().await.unwrap();
    assert_eq!(stats.dead_lettered, 0);
    let log = log.lock().unwrap();
    let seqs = |k: &str| {
        log.iter()
            .filter(|e| e.0 == k)
            .map(|e| e.1)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seqs("slow"),
        vec![0, 1, 2, 3, 4],
        "the failing key kept its order"
    );
    assert_eq!(seqs("fast"), vec![0, 1, 2, 3, 4]);
    // Every `fast` message succeeded while `slow` 0 was failing.
    let first_slow = log.iter().position(|e| e.0 == "slow").unwrap();
    assert!(
        log[..first_slow].iter().filter(|e| e.0 == "fast").count() == 5,
        "other keys finished while the failing key waited: {log:?}"
    );
    assert!(log[first_slow].2 >= 2, "slow 0 was retried: {log:?}");
}

/// A group reading a dead-letter view that gives up on an entry acks it:
/// it is not dead-lettered into the stream the group reads (which would
/// loop without end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_up_on_a_dead_letter_view_entry_does_not_loop() {
    let c = client("dlq-view-give-up").await;
    c.create_topic(&TopicSpec::new("jobs", 2).unwrap())
        .await
        .unwrap();
    let failing = Worker::builder(&c, "g")
        .handle_raw("jobs", |_m, _c| async {
            Err::<(), _>(HandlerError::permanent("bad job"))
        })
        .start()
        .await
        .unwrap();
    c.publish_record("jobs", Record::encode(&1u32).unwrap())
        .await
        .unwrap();
    until("dead-lettered", 10, || failing.stats().dead_lettered == 1).await;
    failing.shutdown().await.unwrap();
    let alerts = Worker::builder(&c, "alerts")
        .retry(fixed(2, 10))
        .handle_raw("jobs.dlq", |_m, _c| async {
            Err::<(), _>(HandlerError::retry("alerting is down"))
        })
        .start()
        .await
        .unwrap();
    until("alerts gave up", 10, || alerts.stats().dead_lettered == 1).await;
    until("acked", 10, || alerts.stats().acked == 1).await;
    alerts.shutdown().await.unwrap();
    let dead = c.dead_letters("jobs", None, 100).await.unwrap();
    assert_eq!(dead.len(), 1, "one dead letter, not a loop: {dead:#?}");
    assert_eq!(dead[0].group, "g");
    let info = c.describe_group("jobs.dlq", "alerts").await.unwrap();
    assert_eq!((info.lag, info.pending), (0, 0));
}

/// A producer caps one message's attempts below the group's maximum; a cap
/// above it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_can_cap_its_own_attempts() {
    for mode in [Mode::Ordered, Mode::Shared] {
        let c = client("attempts-cap").await;
        c.create_topic(&TopicSpec::new("capped", 2).unwrap())
            .await
            .unwrap();
        let attempts: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
        let seen = attempts.clone();
        let w = Worker::builder(&c, "g")
            .mode(mode)
            .retry(fixed(4, 10))
            .handle_raw("capped", move |msg, ctx| {
                let seen = seen.clone();
                async move {
                    let n: u32 = msg.decode().map_err(HandlerError::permanent)?;
                    let mut seen = seen.lock().unwrap();
                    let max = seen.entry(n).or_default();
                    *max = (*max).max(ctx.attempt);
                    Err::<(), _>(HandlerError::retry("always"))
                }
            })
            .start()
            .await
            .unwrap();
        let records = [
            Record::encode(&1u32).unwrap().max_attempts(2),
            Record::encode(&2u32).unwrap(),
            Record::encode(&3u32).unwrap().max_attempts(9),
            Record::encode(&4u32).unwrap().max_attempts(1),
        ];
        for r in records {
            c.publish_record("capped", r).await.unwrap();
        }
        until("all dead-lettered", 20, || w.stats().dead_lettered == 4).await;
        w.shutdown().await.unwrap();
        let attempts = attempts.lock().unwrap().clone();
        assert_eq!(
            attempts,
            HashMap::from([(1, 2), (2, 4), (3, 4), (4, 1)]),
            "{mode:?}"
        );
        let mut dead: Vec<(String, u32)> = c
            .dead_letters("capped", None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| {
                (
                    d.headers
                        .get(millrace::HEADER_MAX_ATTEMPTS)
                        .cloned()
                        .unwrap_or_default(),
                    d.attempts,
                )
            })
            .collect();
        dead.sort();
        assert_eq!(
            dead,
            [
                ("".into(), 4),
                ("1".into(), 1),
                ("2".into(), 2),
                ("9".into(), 4)
            ],
            "the cap travels with the dead letter ({mode:?})"
        );
    }
    // Publishing refuses a cap of 0.
    let c = client("attempts-cap-zero").await;
    c.create_topic(&TopicSpec::new("capped", 1).unwrap())
        .await
        .unwrap();
    let e = c
        .publish_record("capped", Record::encode(&1u32).unwrap().max_attempts(0))
        .await
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    assert!(e.to_string().contains("millrace-max-attempts"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_continues_the_attempt_count_after_a_crash() {
    let c = client("crash-retry").await;
    c.create_topic(&TopicSpec::new("payments", 1).unwrap())
        .await
        .unwrap();
    let attempts: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let build = |name: &'static str| {
        let attempts = attempts.clone();
        Worker::builder(&c, "g")
            .session_timeout(Duration::from_secs(1))
            .heartbeat_interval(Duration::from_millis(100))
            .retry(fixed(4, 600))
            .handle_raw("payments", move |_m, ctx| {
                attempts
                    .lock()
                    .unwrap()
                    .push((name.to_string(), ctx.attempt));
                async { Err::<(), _>(HandlerError::retry("bank offline")) }
            })
    };
    let first = build("first").start().await.unwrap();
    c.publish_record("payments", Record::encode(&1u8).unwrap())
        .await
        .unwrap();
    until("two attempts", 10, || attempts.lock().unwrap().len() == 2).await;
    // Crash while the message waits for its third attempt.
    first.abort();
    let second = build("second").start().await.unwrap();
    until("dead-lettered", 15, || second.stats().dead_lettered == 1).await;
    second.shutdown().await.unwrap();
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(
        attempts,
        vec![
            ("first".to_string(), 1),
            ("first".to_string(), 2),
            ("second".to_string(), 3),
            ("second".to_string(), 4)
        ]
    );
    let dead = c.dead_letters("payments", None, 10).await.unwrap();
    assert_eq!(dead[0].attempts, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_dead_letters_to_the_group_or_the_topic() {
    let c = client("replay").await;
    c.create_topic(&TopicSpec::new("reports", 3).unwrap())
        .await
        .unwrap();
    let fixed_now = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pdf_handled: Arc<Mutex<Vec<u32>>> = Arc::default();
    let audit_handled: Arc<Mutex<Vec<u32>>> = Arc::default();
    let (f, ph) = (fixed_now.clone(), pdf_handled.clone());
    let pdf = Worker::builder(&c, "pdf")
        .retry(fixed(1, 10))
        .handle_raw("reports", move |m, _c| {
            let (f, ph) = (f.clone(), ph.clone());
            async move {
                let n: u32 = m.decode().map_err(HandlerError::permanent)?;
                if !f.load(Ordering::SeqCst) && n.is_multiple_of(2) {
                    return Err(HandlerError::retry(format!("bug for {n}")));
                }
                ph.lock().unwrap().push(n);
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let ah = audit_handled.clone();
    let audit = Worker::builder(&c, "audit")
        .handle_raw("reports", move |m, _c| {
            let ah = ah.clone();
            async move {
                ah.lock()
                    .unwrap()
                    .push(m.decode().map_err(HandlerError::permanent)?);
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let recs: Vec<Record> = (0..20u32).map(|i| Record::encode(&i).unwrap()).collect();
    c.publish_batch("reports", recs).await.unwrap();
    until("10 dead letters", 10, || pdf.stats().dead_lettered == 10).await;
    until("audit saw 20", 10, || {
        audit_handled.lock().unwrap().len() == 20
    })
    .await;

    // The fix is deployed: replay to the failing group only.
    fixed_now.store(true, Ordering::SeqCst);
    let n = c
        .replay_dead_letters("reports", &Selection::All, Some("pdf"), ReplayTo::Group)
        .await
        .unwrap();
    assert_eq!(n, 10);
    until("pdf handled all 20", 10, || {
        pdf_handled.lock().unwrap().len() == 20
    })
    .await;
    assert!(
        c.dead_letters("reports", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        audit_handled.lock().unwrap().len(),
        20,
        "audit did not see the replay"
    );

    // Replay to the whole topic reaches every group.
    fixed_now.store(false, Ordering::SeqCst);
    let r = c
        .publish_record("reports", Record::encode(&100u32).unwrap())
        .await
        .unwrap();
    until("100 dead-lettered", 10, || pdf.stats().dead_lettered == 11).await;
    let dead = c.dead_letters("reports", None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].origin_id, r.id);
    fixed_now.store(true, Ordering::SeqCst);
    let id = format!("{}:{}", dead[0].partition, dead[0].id);
    let n = c
        .replay_dead_letters("reports", &Selection::Ids(vec![id]), None, ReplayTo::Topic)
        .await
        .unwrap();
    assert_eq!(n, 1);
    until("both groups saw 100 again", 10, || {
        pdf_handled.lock().unwrap().contains(&100)
            && audit_handled
                .lock()
                .unwrap()
                .iter()
                .filter(|n| **n == 100)
                .count()
                == 2
    })
    .await;
    assert_eq!(c.describe_topic("reports").await.unwrap().dlq_length, 0);

    // Purge: two new dead letters of pdf, deleted one by id, then the rest.
    fixed_now.store(false, Ordering::SeqCst);
    let recs = vec![
        Record::encode(&102u32).unwrap(),
        Record::encode(&104u32).unwrap(),
    ];
    c.publish_batch("reports", recs).await.unwrap();
    until("two more dead letters", 10, || {
        pdf.stats().dead_lettered == 13
    })
    .await;
    pdf.shutdown().await.unwrap();
    audit.shutdown().await.unwrap();
    let dead = c.dead_letters("reports", None, 10).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(
        c.purge_dead_letters("reports", &Selection::All, Some("audit"))
            .await
            .unwrap(),
        0,
        "audit has no dead letters"
    );
    let first = format!("{}:{}", dead[0].partition, dead[0].id);
    assert_eq!(
        c.purge_dead_letters("reports", &Selection::Ids(vec![first]), None)
            .await
            .unwrap(),
        1
    );
    let left = c.dead_letters("reports", None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].partition, left[0].id.clone()),
        (dead[1].partition, dead[1].id.clone()),
        "the other one is left"
    );
    assert_eq!(
        c.purge_dead_letters("reports", &Selection::All, Some("pdf"))
            .await
            .unwrap(),
        1
    );
    assert!(
        c.dead_letters("reports", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(c.describe_topic("reports").await.unwrap().dlq_length, 0);
}

/// How late they are is a benchmark figure (`delayed.lateness` in
/// `millrace bench`); here: each is handled once, and none before it is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_are_handled_when_due() {
    let c = client("delays").await;
    c.create_topic(&TopicSpec::new("reminders", 4).unwrap())
        .await
        .unwrap();
    // key -> (due, the stream id's time) per handling.
    type Handlings = HashMap<String, Vec<(u64, u64)>>;
    let seen: Arc<Mutex<Handlings>> = Arc::default();
    let s2 = seen.clone();
    let w = Worker::builder(&c, "g")
        .concurrency(64)
        .handle_raw("reminders", move |m, _c| {
            let s2 = s2.clone();
            async move {
                let due: u64 = m.decode().map_err(HandlerError::permanent)?;
                let key = m.key.clone().unwrap_or_default();
                s2.lock()
                    .unwrap()
                    .entry(key)
                    .or_default()
                    .push((due, m.published_at_ms()));
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let base = c.redis_time_ms().await.unwrap();
    let mut recs = Vec::new();
    for i in 0..1_000u64 {
        let delay = 200 + (i * 797) % 800;
        recs.push(
            Record::encode(&(base + delay))
                .unwrap()
                .key(format!("k{i}"))
                .options(
                    millrace::PublishOptions::new()
                        .at(std::time::UNIX_EPOCH + Duration::from_millis(base + delay)),
                ),
        );
    }
    c.publish_batch("reminders", recs).await.unwrap();
    until("all 1 000 handled", 30, || {
        seen.lock().unwrap().len() == 1_000
    })
    .await;
    w.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    for (key, handlings) in seen.iter() {
        assert_eq!(handlings.len(), 1, "{key} handled {handlings:?}");
        // A delayed message enters its stream when promoted: its id is
        // Redis's clock at that moment, the clock its due time is kept in.
        let (due, entered) = handlings[0];
        assert!(
            entered >= due,
            "{key} was promoted at {entered}, {} ms before it was due",
            due - entered
        );
    }
}

/// The limit is a fixed window on Redis's clock shared by every member: no
/// window sees more handler starts than it allows, however many members
/// take from it. (How close to the limit a group gets is not asserted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_for_the_whole_group() {
    let c = client("rate").await;
    c.create_topic(&TopicSpec::new("emails", 6).unwrap())
        .await
        .unwrap();
    // Redis's clock at each handler start: after its permit was granted.
    let starts: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut members = Vec::new();
    for _ in 0..3 {
        let (s, c2) = (starts.clone(), c.clone());
        members.push(
            Worker::builder(&c, "mailer")
                .concurrency(16)
                .heartbeat_interval(Duration::from_millis(200))
                .rate_limit("50/1s".parse().unwrap())
                .handle_raw("emails", move |_m, _c| {
                    let (s, c) = (s.clone(), c2.clone());
                    async move {
                        let now = c.redis_time_ms().await.unwrap();
                        s.lock().unwrap().push(now);
                        Ok(())
                    }
                })
                .start()
                .await
                .unwrap(),
        );
    }
    // Each member owns its share of the partitions before anything is
    // published, so all three take permits from the start.
    support::wait_until(Duration::from_secs(20), "two partitions each", || {
        let ok = members.iter().all(|m| m.owned()[0].1.len() == 2);
        async move { ok }
    })
    .await;
    let recs: Vec<Record> = (0..1_000u32)
        .map(|i| Record::encode(&i).unwrap().key(format!("k{i}")))
        .collect();
    c.publish_batch("emails", recs).await.unwrap();
    // Enough to fill a few windows (the limit lets 50 a second through),
    // with at least two members taking permits: were the limit a member's
    // own, two of them would pass 50 in a window. (Which member gets a
    // window's permits is a race: one can go without for a while.)
    until("three windows' worth handled by two members", 30, || {
        let busy = members.iter().filter(|m| m.stats().handled > 0).count();
        starts.lock().unwrap().len() >= 150 && busy >= 2
    })
    .await;
    for m in members {
        m.abort();
    }
    let mut per_window: std::collections::BTreeMap<u64, usize> = Default::default();
    for t in starts.lock().unwrap().iter() {
        *per_window.entry(t / 1_000).or_default() += 1;
    }
    assert!(
        per_window.values().all(|n| *n <= 50),
        "more than 50 starts in a one-second window: {per_window:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_new_handling_and_resume_restarts_it() {
    let c = client("pause").await;
    c.create_topic(&TopicSpec::new("jobs", 2).unwrap())
        .await
        .unwrap();
    let starts = Arc::new(AtomicU32::new(0));
    let s = starts.clone();
    let w = Worker::builder(&c, "g")
        .heartbeat_interval(Duration::from_millis(200))
        .handle_raw("jobs", move |_m, _c| {
            s.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .start()
        .await
        .unwrap();
    let publisher = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..400u32 {
                c.publish_record("jobs", Record::encode(&i).unwrap())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    until("handling", 10, || starts.load(Ordering::SeqCst) > 20).await;
    c.pause_group("jobs", "g").await.unwrap();
    let paused_at = c.redis_time_ms().await.unwrap();
    assert!(c.is_group_paused("jobs", "g").await.unwrap());
    // Members learn of the pause from their heartbeats (the member's last
    // one is in Redis, on Redis's clock): the first after the pause sees
    // it, and by the next one the member has acted on it.
    let member = w.member_id().to_string();
    let seen_at = heartbeat_after(&c, "jobs", "g", &member, paused_at).await;
    let acted_by = heartbeat_after(&c, "jobs", "g", &member, seen_at).await;
    let n_paused = starts.load(Ordering::SeqCst);
    // Two more heartbeats while paused, with messages waiting: none starts.
    let later = heartbeat_after(&c, "jobs", "g", &member, acted_by).await;
    heartbeat_after(&c, "jobs", "g", &member, later).await;
    assert!(
        c.describe_group("jobs", "g").await.unwrap().lag > 0,
        "messages were waiting while paused"
    );
    assert_eq!(
        starts.load(Ordering::SeqCst),
        n_paused,
        "a handler started while the group was paused"
    );
    c.resume_group("jobs", "g").await.unwrap();
    until("handling again", 10, || {
        starts.load(Ordering::SeqCst) > n_paused
    })
    .await;
    publisher.await.unwrap();
    until("all handled", 20, || w.stats().handled == 400).await;
    w.shutdown().await.unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), 400);
    assert!(!c.describe_group("jobs", "g").await.unwrap().paused);
}

/// Waits for `member`'s first heartbeat after `after_ms` (Redis's clock, as
/// the group's member info records it) and returns its time.
async fn heartbeat_after(c: &Client, topic: &str, group: &str, member: &str, after_ms: u64) -> u64 {
    let key = c.keys().member_info(topic, group);
    let last = Arc::new(AtomicU64::new(0));
    support::wait_until(Duration::from_secs(10), "a heartbeat", || {
        let (c, key, last) = (c.clone(), key.clone(), last.clone());
        async move {
            // "static|joined ms|last heartbeat ms"
            let info: Option<String> = redis::cmd("HGET")
                .arg(&key)
                .arg(member)
                .query_async(&mut c.connection())
                .await
                .unwrap();
            let at = info
                .and_then(|i| i.rsplit('|').next()?.parse().ok())
                .unwrap_or(0);
            last.store(at, Ordering::SeqCst);
            at > after_ms
        }
    })
    .await;
    last.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_crashing_its_worker_is_dead_lettered() {
    let c = client("poison").await;
    c.create_topic(&TopicSpec::new("poison", 1).unwrap())
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let build = || {
        let calls = calls.clone();
        Worker::builder(&c, "g")
            .session_timeout(Duration::from_secs(1))
            .heartbeat_interval(Duration::from_millis(100))
            .retry(fixed(2, 10))
            .handle_raw("poison", move |_m, _c| {
                calls.fetch_add(1, Ordering::SeqCst);
                // Never returns: as if it took the process down each time.
                std::future::pending::<Result<(), HandlerError>>()
            })
    };
    c.publish_record("poison", Record::encode(&1u8).unwrap())
        .await
        .unwrap();
    for crash in 1..=2 {
        let w = build().start().await.unwrap();
        until("the handler runs", 10, || {
            calls.load(Ordering::SeqCst) == crash
        })
        .await;
        w.abort();
    }
    let w = build().start().await.unwrap();
    until("dead-lettered", 10, || w.stats().dead_lettered == 1).await;
    w.shutdown().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "not run a third time");
    let dead = c.dead_letters("poison", None, 10).await.unwrap();
    assert!(
        dead[0].error.contains("delivered 3 times"),
        "{}",
        dead[0].error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoter_runs_on_its_own() {
    let c = client("promoter").await;
    c.create_topic(&TopicSpec::new("later", 3).unwrap())
        .await
        .unwrap();
    for i in 0..30u32 {
        c.publish_record(
            "later",
            Record::encode(&i)
                .unwrap()
                .delay(Duration::from_millis(100 + u64::from(i) * 10)),
        )
        .await
        .unwrap();
    }
    assert_eq!(c.describe_topic("later").await.unwrap().delayed, 30);
    let stop = tokio_util::sync::CancellationToken::new();
    let promoter =
        tokio::spawn(millrace::Promoter::new(&c, "later").run(stop.clone().cancelled_owned()));
    let c2 = c.clone();
    support::wait_until(Duration::from_secs(10), "all promoted", || {
        let c = c2.clone();
        async move { c.describe_topic("later").await.unwrap().length == 30 }
    })
    .await;
    stop.cancel();
    promoter.await.unwrap().unwrap();
    assert_eq!(c.describe_topic("later").await.unwrap().delayed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_can_consume_the_dead_letter_view_to_alert() {
    let c = client("dlq-view").await;
    c.create_topic(&TopicSpec::new("orders", 2).unwrap())
        .await
        .unwrap();
    let alerts: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let a = alerts.clone();
    let alerter = Worker::builder(&c, "pager")
        .handle_raw("orders.dlq", move |m, _c| {
            let a = a.clone();
            async move {
                a.lock().unwrap().push((
                    m.headers.get("millrace-group").cloned().unwrap_or_default(),
                    m.headers.get("millrace-error").cloned().unwrap_or_default(),
                ));
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let failing = Worker::builder(&c, "billing")
        .handle_raw("orders", |_m, _c| async {
            Err::<(), _>(HandlerError::permanent("card declined"))
        })
        .start()
        .await
        .unwrap();
    for i in 0..3u32 {
        c.publish_record("orders", Record::encode(&i).unwrap().key(format!("o{i}")))
            .await
            .unwrap();
    }
    until("three alerts", 10, || alerts.lock().unwrap().len() == 3).await;
    failing.shutdown().await.unwrap();
    alerter.shutdown().await.unwrap();
    assert!(
        alerts
            .lock()
            .unwrap()
            .iter()
            .all(|(g, e)| g == "billing" && e == "card declined")
    );
    // Publishing into the view is refused.
    let err = c
        .publish_record("orders.dlq", Record::encode(&1u8).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
}

/// Shared-mode retries pass through the group's retry stream; once acked
/// they are trimmed away (the next time retries move), so the stream does
/// not grow with every retry ever made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_retries_are_trimmed_from_the_retry_stream() {
    let c = client("retry-trim").await;
    c.create_topic(&TopicSpec::new("bumpy", 1).unwrap())
        .await
        .unwrap();
    let w = Worker::builder(&c, "g")
        .mode(Mode::Shared)
        .retry(fixed(3, 20))
        .handle_raw("bumpy", move |msg, ctx| {
            let n: u32 = msg.decode().unwrap_or(0);
            async move {
                if ctx.attempt == 1 && (n < 300 || n == 1_000) {
                    Err(HandlerError::retry("first try fails"))
                } else {
                    Ok(())
                }
            }
        })
        .start()
        .await
        .unwrap();
    let recs: Vec<Record> = (0..300u32).map(|i| Record::encode(&i).unwrap()).collect();
    c.publish_batch("bumpy", recs).await.unwrap();
    until("300 handled", 30, || w.stats().acked == 300).await;
    // One more retry: moving it trims what the group acked before.
    c.publish_record("bumpy", Record::encode(&1_000u32).unwrap())
        .await
        .unwrap();
    until("the last one handled", 10, || w.stats().acked == 301).await;
    w.shutdown().await.unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg(c.keys().retry_stream("bumpy", 0, "g"))
        .query_async(&mut c.connection())
        .await
        .unwrap();
    // `MINID ~` removes whole stream nodes (100 entries here): at most the
    // last node before the new retry stays, against 301 retries made.
    assert!(len <= 101, "{len} entries left in the retry stream");
    assert_eq!(c.describe_group("bumpy", "g").await.unwrap().pending, 0);
}
