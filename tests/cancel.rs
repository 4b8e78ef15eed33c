//! Handler timeouts and cancellation through the library: a timed-out
//! attempt is signalled and retried like a failure (also by a message's own
//! timeout header); a message is cancelled from another process while its
//! handler runs, before it is handled, and while it waits to retry (ordered
//! and shared), and then reads `cancelled`; a request cancelled answers
//! with the error `cancelled`.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use millrace::{
    CancelOutcome, Client, Error, HandlerError, MessageId, MessageState, Mode, Record, RetryPolicy,
    StartAt, TopicSpec, Worker,
};

const BIN: &str = env!("CARGO_BIN_EXE_millrace");

async fn topic(c: &Client, name: &str) {
    c.create_topic(&TopicSpec::new(name, 1).unwrap())
        .await
        .unwrap();
}

async fn state_of(c: &Client, topic: &str, id: &MessageId, group: &str) -> MessageState {
    let s = c.message_status(topic, id).await.unwrap().unwrap();
    s.groups.iter().find(|g| g.group == group).unwrap().state
}

async fn wait_state(c: &Client, topic: &str, id: &MessageId, group: &str, want: MessageState) {
    support::wait_until(Duration::from_secs(15), &format!("{id} {want}"), || {
        let (c, id) = (c.clone(), id.clone());
        let (topic, group) = (topic.to_string(), group.to_string());
        async move { state_of(&c, &topic, &id, &group).await == want }
    })
    .await;
}

/// `millrace message cancel`, run as another process: its stdout.
fn cancel_from_another_process(prefix: &str, topic: &str, id: &MessageId, group: &str) -> String {
    let out = Command::new(BIN)
        .args(["--redis", &support::shared_url(), "--prefix", prefix])
        .args([
            "message",
            "cancel",
            topic,
            &id.to_string(),
            "--group",
            group,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn retries(n: u32, delay: Duration) -> RetryPolicy {
    RetryPolicy::attempts(n).fixed(delay).jitter(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_is_signalled_and_retried_like_a_failure() {
    let c = support::client("timeouts").await;
    topic(&c, "jobs").await;
    let signalled = Arc::new(AtomicU32::new(0));
    // The handler takes 300 ms unless told to stop.
    let worker = |group: &'static str, timeout: Option<Duration>| {
        let s = signalled.clone();
        let mut b = Worker::builder(&c, group)
            .retry(retries(2, Duration::from_millis(20)))
            .handle_raw("jobs", move |_m, ctx| {
                let s = s.clone();
                async move {
                    tokio::select! {
                        _ = ctx.cancelled() => {
                            s.fetch_add(1, Ordering::SeqCst);
                            Err(HandlerError::retry("stopped"))
                        }
                        _ = tokio::time::sleep(Duration::from_millis(300)) => Ok(()),
                    }
                }
            });
        if let Some(t) = timeout {
            b = b.handler_timeout(t);
        }
        b
    };
    let limited = worker("limited", Some(Duration::from_millis(100)))
        .start()
        .await
        .unwrap();
    // The control: the same handler without a timeout finishes.
    let free = worker("free", None).start().await.unwrap();
    let id = c
        .publish_record("jobs", Record::encode(&1).unwrap())
        .await
        .unwrap()
        .message_id;
    wait_state(&c, "jobs", &id, "limited", MessageState::DeadLettered).await;
    wait_state(&c, "jobs", &id, "free", MessageState::Done).await;
    let dead = c.dead_letters("jobs", Some("limited"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].error, "handler timed out after 100ms");
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(
        signalled.load(Ordering::SeqCst),
        2,
        "each attempt was told to stop"
    );
    // A message's own timeout header applies where the worker has none.
    let id = c
        .publish_record(
            "jobs",
            Record::encode(&2)
                .unwrap()
                .header(millrace::HEADER_TIMEOUT, "50ms"),
        )
        .await
        .unwrap()
        .message_id;
    wait_state(&c, "jobs", &id, "free", MessageState::DeadLettered).await;
    let dead = c.dead_letters("jobs", Some("free"), 10).await.unwrap();
    assert_eq!(dead[0].error, "handler timed out after 50ms");
    limited.shutdown().await.unwrap();
    free.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_ignores_its_signal_is_dropped_after_the_grace() {
    let c = support::client("timeout-ignored").await;
    topic(&c, "jobs").await;
    let w = Worker::builder(&c, "g")
        .retry(retries(1, Duration::from_millis(20)))
        .handler_timeout(Duration::from_millis(100))
        .handle_raw("jobs", |_m, _ctx| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let id = c
        .publish_record("jobs", Record::encode(&1).unwrap())
        .await
        .unwrap()
        .message_id;
    wait_state(&c, "jobs", &id, "g", MessageState::DeadLettered).await;
    let took = started.elapsed();
    assert!(
        took >= millrace::CANCEL_GRACE && took < millrace::CANCEL_GRACE + Duration::from_secs(8),
        "dropped after the timeout and the grace: {took:?}"
    );
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_handler_is_cancelled_from_another_process() {
    let prefix = support::unique_prefix("cancel-running");
    let config = millrace::Config::new(support::shared_url())
        .unwrap()
        .prefix(&prefix)
        .unwrap();
    let c = Client::connect(config).await.unwrap();
    topic(&c, "renders").await;
    let runs = Arc::new(AtomicU32::new(0));
    let running: Arc<std::sync::Mutex<Option<MessageId>>> = Arc::default();
    let (r, m) = (runs.clone(), running.clone());
    let w = Worker::builder(&c, "pdf")
        .retry(retries(5, Duration::from_millis(20)))
        .handle_raw("renders", move |_m, ctx| {
            r.fetch_add(1, Ordering::SeqCst);
            *m.lock().unwrap() = Some(ctx.message_id.clone());
            async move {
                tokio::select! {
                    _ = ctx.cancelled() => Err(HandlerError::retry("stopped")),
                    _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(()),
                }
            }
        })
        .start()
        .await
        .unwrap();
    // A request, so the requester's answer is checked too.
    let asking = tokio::spawn(
        c.request::<_, ()>("renders", &"inv-1")
            .group("pdf")
            .timeout(Duration::from_secs(30))
            .into_future(),
    );
    support::wait_until(Duration::from_secs(10), "the handler running", || {
        let n = runs.load(Ordering::SeqCst);
        async move { n == 1 }
    })
    .await;
    let id = running.lock().unwrap().clone().unwrap();
    assert_eq!(
        state_of(&c, "renders", &id, "pdf").await,
        MessageState::InFlight
    );
    let asked = Instant::now();
    let said = cancel_from_another_process(&prefix, "renders", &id, "pdf");
    assert!(said.starts_with("cancel requested"), "{said}");
    let e = asking.await.unwrap().unwrap_err();
    assert!(
        matches!(&e, Error::RequestFailed { error, .. } if error == "cancelled"),
        "{e}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "stopped within a heartbeat or so"
    );
    wait_state(&c, "renders", &id, "pdf", MessageState::Cancelled).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "not retried");
    assert_eq!(w.stats().cancelled, 1);
    // Cancelling again: nothing to do.
    let said = cancel_from_another_process(&prefix, "renders", &id, "pdf");
    assert_eq!(
        said,
        format!("nothing to cancel: {id} is already cancelled in group pdf")
    );
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_cancelled_before_it_is_handled_is_skipped() {
    let c = support::client("cancel-waiting").await;
    topic(&c, "mail").await;
    c.create_group("mail", "send", &StartAt::Earliest)
        .await
        .unwrap();
    let publish = |n: u32| {
        let c = c.clone();
        async move {
            c.publish_record("mail", Record::encode(&n).unwrap())
                .await
                .unwrap()
                .message_id
        }
    };
    let (first, second) = (publish(1).await, publish(2).await);
    assert_eq!(
        c.cancel("mail", &first, "send").await.unwrap(),
        CancelOutcome::Requested
    );
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let w = Worker::builder(&c, "send")
        .handle_raw("mail", move |m, _ctx| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(m.decode::<u32>().unwrap());
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    // The control: the message after it is handled.
    wait_state(&c, "mail", &second, "send", MessageState::Done).await;
    wait_state(&c, "mail", &first, "send", MessageState::Cancelled).await;
    assert_eq!(*seen.lock().unwrap(), vec![2]);
    w.shutdown().await.unwrap();
    // The request was carried out: nothing is left asking.
    let left: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(c.keys().cancels("mail", "send"))
        .query_async(&mut c.connection())
        .await
        .unwrap();
    assert_eq!(left.keys().collect::<Vec<_>>(), vec!["v"]);
    // Unknown group and message: errors.
    let e = c.cancel("mail", &first, "nobody").await.unwrap_err();
    assert!(matches!(e, Error::GroupNotFound { .. }), "{e}");
    let never = MessageId::parse("0:0:9999999999999-0").unwrap();
    let e = c.cancel("mail", &never, "send").await.unwrap_err();
    assert!(matches!(e, Error::MessageNotFound { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_to_retry_is_cancelled_in_both_modes() {
    for mode in [Mode::Ordered, Mode::Shared] {
        let c = support::client(&format!("cancel-retry-{mode:?}")).await;
        topic(&c, "hooks").await;
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let w = Worker::builder(&c, "g")
            .mode(mode)
            .retry(retries(3, Duration::from_secs(60)))
            .handle_raw("hooks", move |_m, _ctx| {
                r.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(HandlerError::retry("endpoint down")) }
            })
            .start()
            .await
            .unwrap();
        let id = c
            .publish_record("hooks", Record::encode(&1).unwrap())
            .await
            .unwrap()
            .message_id;
        wait_state(&c, "hooks", &id, "g", MessageState::Retrying).await;
        let outcome = c.cancel("hooks", &id, "g").await.unwrap();
        // Shared mode parks retries in Redis: removed at once. Ordered
        // mode waits in the member: it is asked.
        let expected = match mode {
            Mode::Shared => CancelOutcome::Removed,
            _ => CancelOutcome::Requested,
        };
        assert_eq!(outcome, expected, "{mode:?}");
        wait_state(&c, "hooks", &id, "g", MessageState::Cancelled).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "{mode:?}: never tried again"
        );
        w.shutdown().await.unwrap();
    }
}
