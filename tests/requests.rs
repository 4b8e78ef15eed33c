//! Request-reply and handler results through the library: a request
//! resolves with the named group's result, its permanent failure, or a
//! timeout; "no responders" fails at once; a retried handler answers once;
//! results are kept with the ack (and not without `result_ttl`); a reply
//! lost with the requester's connection is read back from the kept result;
//! a thousand requests in flight share two connections.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use millrace::{
    Client, Config, Error, HandlerError, MessageState, Mode, Reply, RetryPolicy, TopicSpec, Worker,
    WorkerHandle,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Quote {
    sku: String,
    qty: u32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Price {
    cents: u64,
}

fn fast_retries(n: u32) -> RetryPolicy {
    RetryPolicy::attempts(n)
        .fixed(Duration::from_millis(20))
        .jitter(0.0)
}

/// A pricing worker: 100 cents per unit; SKU "bad" fails permanently,
/// SKU "slow" takes 600 ms.
async fn pricing(c: &Client, topic: &str, group: &str, mode: Mode) -> WorkerHandle {
    Worker::builder(c, group)
        .mode(mode)
        .retry(fast_retries(3))
        .handle_raw(topic, |msg, _ctx| async move {
            let q: Quote = msg.decode().map_err(HandlerError::permanent)?;
            match q.sku.as_str() {
                "bad" => {
                    return Err(HandlerError::permanent(format!(
                        "no price for SKU {}",
                        q.sku
                    )));
                }
                "slow" => tokio::time::sleep(Duration::from_millis(600)).await,
                _ => {}
            }
            Ok(Price {
                cents: 100 * u64::from(q.qty),
            })
        })
        .start()
        .await
        .unwrap()
}

async fn topic(c: &Client, name: &str, partitions: u32) {
    c.create_topic(&TopicSpec::new(name, partitions).unwrap())
        .await
        .unwrap();
}

fn quote(sku: &str, qty: u32) -> Quote {
    Quote {
        sku: sku.into(),
        qty,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_resolves_with_the_groups_result_which_is_kept_with_the_ack() {
    for mode in [Mode::Ordered, Mode::Shared] {
        let c = support::client(&format!("req-result-{mode:?}")).await;
        topic(&c, "prices", 4).await;
        let w = pricing(&c, "prices", "pricing", mode).await;
        // A second group reacts to the same requests and returns nothing.
        let audit = Worker::builder(&c, "audit")
            .handle_raw("prices", |_m, _c| async { Ok(()) })
            .start()
            .await
            .unwrap();
        let reply: Reply<Price> = c
            .request("prices", &quote("A-1", 12))
            .group("pricing")
            .key("A-1")
            .timeout(Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(reply.value, Price { cents: 1200 }, "{mode:?}");
        assert_eq!(reply.group, "pricing");
        // Kept for the group that returned it, beside the message...
        let kept = c
            .message_result("prices", &reply.message_id, "pricing")
            .await
            .unwrap()
            .expect("the result is kept");
        assert_eq!(kept.json(), Some(serde_json::json!({"cents": 1200})));
        // ...and `message show` has it; the audit group returned nothing.
        let status = c
            .message_status("prices", &reply.message_id)
            .await
            .unwrap()
            .unwrap();
        let pricing_state = status.groups.iter().find(|g| g.group == "pricing").unwrap();
        assert_eq!(pricing_state.state, MessageState::Done);
        assert_eq!(
            pricing_state.result,
            Some(serde_json::json!({"cents": 1200}))
        );
        assert!(pricing_state.done_at_ms.is_some());
        support::wait_until(Duration::from_secs(10), "the audit group done", || {
            let c = c.clone();
            let id = reply.message_id.clone();
            async move {
                let s = c.message_status("prices", &id).await.unwrap().unwrap();
                s.groups
                    .iter()
                    .any(|g| g.group == "audit" && g.state == MessageState::Done)
            }
        })
        .await;
        assert_eq!(
            c.message_result("prices", &reply.message_id, "audit")
                .await
                .unwrap(),
            None,
            "a handler returning () keeps nothing"
        );
        assert_eq!(c.requests_in_flight(), 0);
        w.shutdown().await.unwrap();
        audit.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_plain_messages_are_kept_for_the_ttl_and_not_at_zero() {
    let c = support::client("results-ttl").await;
    topic(&c, "renders", 1).await;
    for (group, ttl) in [("kept", Duration::from_secs(60)), ("off", Duration::ZERO)] {
        Worker::builder(&c, group)
            .result_ttl(ttl)
            .handle_raw("renders", |msg, _ctx| async move {
                let n: u32 = msg.decode().map_err(HandlerError::permanent)?;
                Ok(format!("page-{n}.pdf"))
            })
            .start()
            .await
            .unwrap();
    }
    let receipt = c
        .publish_record("renders", millrace::Record::encode(&7u32).unwrap())
        .await
        .unwrap();
    let id = receipt.message_id;
    support::wait_until(Duration::from_secs(10), "both groups done", || {
        let (c, id) = (c.clone(), id.clone());
        async move {
            let s = c.message_status("renders", &id).await.unwrap().unwrap();
            s.groups.iter().all(|g| g.state == MessageState::Done)
        }
    })
    .await;
    let kept = c
        .message_result("renders", &id, "kept")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.json(), Some(serde_json::json!("page-7.pdf")));
    let key = c.keys().result("renders", 0, "kept", 0, id.first());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut c.connection())
        .await
        .unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "kept for the ttl: {ttl} ms");
    // The control: the same handler in a group keeping nothing.
    assert_eq!(c.message_result("renders", &id, "off").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_answers_with_the_handlers_error() {
    let c = support::client("req-failed").await;
    topic(&c, "prices", 2).await;
    let _w = pricing(&c, "prices", "pricing", Mode::Ordered).await;
    let e = c
        .request::<_, Price>("prices", &quote("bad", 1))
        .group("pricing")
        .timeout(Duration::from_secs(10))
        .await
        .unwrap_err();
    let Error::RequestFailed {
        error,
        attempts,
        message_id,
        ..
    } = &e
    else {
        panic!("expected RequestFailed, got {e}");
    };
    assert_eq!(error, "no price for SKU bad");
    assert_eq!(*attempts, 1, "a permanent failure is not retried");
    let id: millrace::MessageId = message_id.parse().unwrap();
    let kept = c
        .message_result("prices", &id, "pricing")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.outcome, Err("no price for SKU bad".to_string()));
    let again = c
        .reply::<Price>("prices", &id, "pricing")
        .await
        .unwrap_err();
    assert!(
        matches!(again, Error::RequestFailed { attempts: 1, .. }),
        "{again}"
    );
    let s = c.message_status("prices", &id).await.unwrap().unwrap();
    assert_eq!(s.groups[0].state, MessageState::DeadLettered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_handler_answers_once_with_the_final_outcome() {
    for mode in [Mode::Ordered, Mode::Shared] {
        let c = support::client(&format!("req-retried-{mode:?}")).await;
        topic(&c, "flaky", 1).await;
        let tries = Arc::new(AtomicU32::new(0));
        let t = tries.clone();
        let _w = Worker::builder(&c, "g")
            .mode(mode)
            .retry(fast_retries(5))
            .handle_raw("flaky", move |_msg, ctx| {
                t.fetch_add(1, Ordering::SeqCst);
                async move {
                    if ctx.attempt < 3 {
                        Err(HandlerError::retry(format!(
                            "attempt {} fails",
                            ctx.attempt
                        )))
                    } else {
                        Ok(ctx.attempt)
                    }
                }
            })
            .start()
            .await
            .unwrap();
        let reply: Reply<u32> = c
            .request("flaky", &1)
            .group("g")
            .timeout(Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            reply.value, 3,
            "{mode:?}: the answer is the third attempt's"
        );
        assert_eq!(tries.load(Ordering::SeqCst), 3);

        // Out of attempts: the last error answers, once.
        let tries = Arc::new(AtomicU32::new(0));
        let t = tries.clone();
        let _w2 = Worker::builder(&c, "h")
            .mode(mode)
            .retry(fast_retries(2))
            .handle_raw("flaky", move |_msg, ctx| {
                t.fetch_add(1, Ordering::SeqCst);
                async move { Err::<(), _>(HandlerError::retry(format!("attempt {}", ctx.attempt))) }
            })
            .start()
            .await
            .unwrap();
        let e = c
            .request::<_, ()>("flaky", &2)
            .group("h")
            .timeout(Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::RequestFailed { error, attempts: 2, .. } if error == "attempt 2"),
            "{mode:?}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_cannot_answer_fails_at_once_and_publishes_nothing() {
    let c = support::client("req-noresp").await;
    topic(&c, "prices", 1).await;
    let started = Instant::now();
    let e = c
        .request::<_, Price>("prices", &quote("A-1", 1))
        .group("pricing")
        .timeout(Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::NoResponders { reason, .. } if reason == "group pricing does not exist"),
        "{e}"
    );
    // A group whose members all left.
    let w = pricing(&c, "prices", "pricing", Mode::Ordered).await;
    w.shutdown().await.unwrap();
    let e = c
        .request::<_, Price>("prices", &quote("A-1", 1))
        .group("pricing")
        .timeout(Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::NoResponders { reason, .. } if reason == "group pricing has no live member"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not after the timeout"
    );
    let len: u64 = redis::cmd("XLEN")
        .arg(c.keys().stream("prices", 0, 0))
        .query_async(&mut c.connection())
        .await
        .unwrap();
    assert_eq!(len, 0, "nothing was published");
    // The control: with a live member the same request is published and answered.
    let _w = pricing(&c, "prices", "pricing", Mode::Ordered).await;
    let reply: Reply<Price> = c
        .request("prices", &quote("A-1", 1))
        .group("pricing")
        .await
        .unwrap();
    assert_eq!(reply.value.cents, 100);
    // A missing topic is its own error.
    let e = c
        .request::<_, Price>("nope", &1)
        .group("pricing")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TopicNotFound(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_times_out_and_leaves_nothing_waiting() {
    let c = support::client("req-timeout").await;
    topic(&c, "prices", 1).await;
    let _w = pricing(&c, "prices", "pricing", Mode::Ordered).await;
    let started = Instant::now();
    let e = c
        .request::<_, Price>("prices", &quote("slow", 2))
        .group("pricing")
        .timeout(Duration::from_millis(150))
        .await
        .unwrap_err();
    let Error::RequestTimeout {
        message_id: Some(id),
        timeout,
        ..
    } = &e
    else {
        panic!("expected RequestTimeout, got {e}");
    };
    assert_eq!(*timeout, Duration::from_millis(150));
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "it did not wait for the handler"
    );
    assert_eq!(
        c.requests_in_flight(),
        0,
        "a request given up leaves nothing waiting"
    );
    // The handler still finishes; its result is kept for a late look.
    let id: millrace::MessageId = id.parse().unwrap();
    support::wait_until(Duration::from_secs(10), "the late result", || {
        let (c, id) = (c.clone(), id.clone());
        async move {
            c.message_result("prices", &id, "pricing")
                .await
                .unwrap()
                .is_some()
        }
    })
    .await;
    // A dropped request future leaves nothing waiting either.
    let req = c
        .request::<_, Price>("prices", &quote("slow", 1))
        .group("pricing")
        .timeout(Duration::from_secs(30))
        .into_future();
    let dropped = tokio::time::timeout(Duration::from_millis(100), req).await;
    assert!(dropped.is_err());
    assert_eq!(c.requests_in_flight(), 0);
}

/// Client connections of the server on `port` of `user`, by kind
/// (commands, subscribers).
fn connections(port: u16, user: &str) -> (usize, usize) {
    let list = support::resp_command(port, &["CLIENT", "LIST"]).unwrap();
    let user = format!(" user={user} ");
    let mine: Vec<&str> = list.lines().filter(|l| l.contains(&user)).collect();
    let pubsub = mine.iter().filter(|l| l.contains(" sub=1 ")).count();
    (mine.len() - pubsub, pubsub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_share_two_connections() {
    let server = support::RedisServer::start();
    let port = server.port();
    // The requester logs in as its own user, so its connections are told
    // apart from the worker's.
    support::resp_command(
        port,
        &["ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all"],
    )
    .unwrap();
    let worker_client = Client::connect(Config::new(server.url()).unwrap())
        .await
        .unwrap();
    topic(&worker_client, "prices", 4).await;
    let _w = pricing(&worker_client, "prices", "pricing", Mode::Shared).await;
    let c = Client::connect(Config::new(format!("redis://app:pw@127.0.0.1:{port}")).unwrap())
        .await
        .unwrap();
    let requests = (0..1000u32).map(|i| {
        c.request::<_, Price>("prices", &quote(&format!("sku-{i}"), i))
            .group("pricing")
            .timeout(Duration::from_secs(60))
            .into_future()
    });
    let all = tokio::spawn(futures_util::future::join_all(requests));
    support::wait_until(Duration::from_secs(10), "requests in flight", || {
        let n = c.requests_in_flight();
        async move { n > 0 }
    })
    .await;
    let (normal, pubsub) = connections(port, "app");
    let replies = all.await.unwrap();
    for (i, r) in replies.into_iter().enumerate() {
        assert_eq!(r.unwrap().value.cents, 100 * i as u64);
    }
    // One multiplexed connection for publishing and one subscriber,
    // whatever the number of requests.
    eprintln!("1000 requests in flight: {normal} command connection(s), {pubsub} subscriber(s)");
    assert_eq!((normal, pubsub), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_with_the_requesters_connection_is_read_from_the_kept_result() {
    for (ttl, answered) in [(Duration::from_secs(60), true), (Duration::ZERO, false)] {
        let server = support::RedisServer::start();
        let port = server.port();
        support::resp_command(
            port,
            &["ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all"],
        )
        .unwrap();
        let worker_client = Client::connect(Config::new(server.url()).unwrap())
            .await
            .unwrap();
        let c = Client::connect(Config::new(format!("redis://app:pw@127.0.0.1:{port}")).unwrap())
            .await
            .unwrap();
        topic(&c, "prices", 1).await;
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let w = Worker::builder(&worker_client, "pricing")
            .result_ttl(ttl)
            .handle_raw("prices", move |_msg, _ctx| {
                let g = g.clone();
                async move {
                    g.notified().await;
                    Ok(42u32)
                }
            })
            .start()
            .await
            .unwrap();
        let req = tokio::spawn(
            c.request::<_, u32>("prices", &1)
                .group("pricing")
                .timeout(Duration::from_secs(5))
                .into_future(),
        );
        support::wait_until(Duration::from_secs(10), "the request in flight", || {
            let n = c.requests_in_flight();
            async move { n == 1 }
        })
        .await;
        // The requester may no longer subscribe: Redis drops its
        // subscription, and it cannot subscribe again for now.
        support::resp_command(port, &["ACL", "SETUSER", "app", "resetchannels"]).unwrap();
        support::wait_until(
            Duration::from_secs(5),
            "the subscriber gone",
            || async move { connections(port, "app").1 == 0 },
        )
        .await;
        // The handler answers while nobody listens: the reply is published
        // to no one.
        gate.notify_one();
        support::wait_until(Duration::from_secs(5), "the ack", || {
            let acked = w.stats().acked;
            async move { acked == 1 }
        })
        .await;
        support::resp_command(port, &["ACL", "SETUSER", "app", "&*"]).unwrap();
        let r = req.await.unwrap();
        if answered {
            assert_eq!(r.unwrap().value, 42);
        } else {
            // The control: with nothing kept, the lost reply stays lost.
            let e = r.unwrap_err();
            assert!(matches!(e, Error::RequestTimeout { .. }), "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_lease_cannot_write_a_result_progress_or_answer() {
    for (steal, kept) in [(true, false), (false, true)] {
        let c = support::client(&format!("req-fenced-{steal}")).await;
        topic(&c, "prices", 1).await;
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let reported: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let r = reported.clone();
        let w = Worker::builder(&c, "pricing")
            .handle_raw("prices", move |_msg, ctx| {
                let (g, r) = (g.clone(), r.clone());
                async move {
                    g.notified().await;
                    let said = ctx.progress(&"almost").await;
                    *r.lock().unwrap() = Some(format!("{said:?}"));
                    Ok(42u32)
                }
            })
            .start()
            .await
            .unwrap();
        let receipt = c
            .publish_record("prices", millrace::Record::encode(&1u32).unwrap())
            .await
            .unwrap();
        let id = receipt.message_id;
        support::wait_until(Duration::from_secs(10), "the handler running", || {
            let (c, id) = (c.clone(), id.clone());
            async move {
                let s = c.message_status("prices", &id).await.unwrap().unwrap();
                s.groups[0].state == MessageState::InFlight
            }
        })
        .await;
        if steal {
            // Another member takes the lease at a higher epoch while the
            // handler runs (as after a pause past the session timeout).
            let lease = c.keys().lease("prices", 0, "pricing");
            let _: () = redis::cmd("HSET")
                .arg(&lease)
                .arg("owner")
                .arg("intruder")
                .arg("expires")
                .arg(u64::MAX / 4)
                .query_async(&mut c.connection())
                .await
                .unwrap();
            let _: i64 = redis::cmd("HINCRBY")
                .arg(&lease)
                .arg("epoch")
                .arg(1)
                .query_async(&mut c.connection())
                .await
                .unwrap();
        }
        gate.notify_one();
        support::wait_until(Duration::from_secs(10), "the ack sent", || {
            let s = w.stats();
            async move { s.acked + s.stale_acks == 1 }
        })
        .await;
        assert_eq!(w.stats().stale_acks, u64::from(steal));
        let said = reported.lock().unwrap().clone().unwrap();
        if steal {
            assert!(said.contains("NotOwner"), "progress refused too: {said}");
        } else {
            assert_eq!(said, "Ok(())");
        }
        let result = c.message_result("prices", &id, "pricing").await.unwrap();
        assert_eq!(result.is_some(), kept, "steal={steal}: {result:?}");
        w.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_rate_limited_shown_while_running_and_kept_with_the_result() {
    let c = support::client("progress").await;
    topic(&c, "renders", 1).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let _w = Worker::builder(&c, "pdf")
        .handle_raw("renders", move |_msg, ctx| {
            let g = g.clone();
            async move {
                // A chatty handler: a thousand reports at once.
                for step in 0..1000u32 {
                    ctx.progress(&serde_json::json!({ "step": step }))
                        .await
                        .unwrap();
                }
                g.notified().await;
                Ok("rendered")
            }
        })
        .start()
        .await
        .unwrap();
    let id = c
        .publish_record("renders", millrace::Record::encode(&1u32).unwrap())
        .await
        .unwrap()
        .message_id;
    let progress = |c: Client, id: millrace::MessageId| async move {
        let s = c.message_status("renders", &id).await.unwrap().unwrap();
        (s.groups[0].state, s.groups[0].progress.clone())
    };
    support::wait_until(Duration::from_secs(10), "progress shown", || {
        let (c, id) = (c.clone(), id.clone());
        async move { progress(c, id).await.1.is_some() }
    })
    .await;
    // Only the first report reached Redis; the rest wait (the latest wins).
    assert_eq!(
        progress(c.clone(), id.clone()).await,
        (MessageState::InFlight, Some(serde_json::json!({"step": 0})))
    );
    gate.notify_one();
    support::wait_until(Duration::from_secs(10), "done", || {
        let (c, id) = (c.clone(), id.clone());
        async move { progress(c, id).await.0 == MessageState::Done }
    })
    .await;
    let s = c.message_status("renders", &id).await.unwrap().unwrap();
    assert_eq!(s.groups[0].progress, Some(serde_json::json!({"step": 999})));
    assert_eq!(s.groups[0].result, Some(serde_json::json!("rendered")));
}
