//! `millrace serve`'s API for finding things: paging a topic (from the
//! earliest, the latest, a time, an id, after a cursor), search by key and
//! by a payload filter over a stated window, the sampled charts, a dead
//! letter in full, and schedules (list with next fires, add, remove).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use millrace::{Record, TopicSpec, Worker};
use serde_json::{Value, json};
use support::serve::{call, client, http, serve};

/// The message ids of a page.
fn ids(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cover_a_topic_once_in_order_from_either_end() {
    let prefix = support::unique_prefix("serve-pages");
    let c = client(&prefix).await;
    c.create_topic(&TopicSpec::new("orders", 4).unwrap())
        .await
        .unwrap();
    for i in 0..57u32 {
        c.publish_record(
            "orders",
            Record::encode(&json!({"n": i, "cents": i * 100, "customer": {"id": i % 5}}))
                .unwrap()
                .key(format!("k{}", i % 7)),
        )
        .await
        .unwrap();
    }
    // The reader's order (by stream id; ties across partitions in
    // partition order): what pages must follow. `n` of each message.
    let mut order: Vec<(String, u64)> = Vec::new();
    let mut reader = c
        .reader("orders", millrace::StartAt::Earliest)
        .await
        .unwrap();
    while let Some(m) = reader.next().await.unwrap() {
        let v: Value = m.decode().unwrap();
        order.push((m.message_id.to_string(), v["n"].as_u64().unwrap()));
    }
    assert_eq!(order.len(), 57);
    let where_n = |keep: &dyn Fn(u64) -> bool| -> Vec<String> {
        order
            .iter()
            .filter(|(_, n)| keep(*n))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let s = serve(&support::shared_url(), &prefix, &[]).await;
    let http = http();

    // Pages of 10 from the earliest, each continuing after the last: every
    // message once, in publish order (ties across partitions included).
    let (mut seen, mut after) = (Vec::new(), None::<String>);
    for _ in 0..10 {
        let mut url = s.api("/topics/orders/messages?limit=10");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let (status, page) = call(http.get(url)).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        where_n(&|_| true),
        "every message once, in the reader's order"
    );
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 57);

    // From the latest: the last 5, oldest first; a plain page has no next.
    let (_, latest) = call(http.get(s.api("/topics/orders/messages?from=latest&limit=5"))).await;
    assert_eq!(ids(&latest), where_n(&|_| true)[52..].to_vec());
    assert_eq!(latest["next"], Value::Null);
    // From a stream id: what a reader from there reads.
    let id42 = order[42].0.rsplit(':').next().unwrap().to_string();
    let (_, from_id) =
        call(http.get(s.api(&format!("/topics/orders/messages?from={id42}&limit=3")))).await;
    let mut r = c.reader("orders", id42.parse().unwrap()).await.unwrap();
    let mut want = Vec::new();
    for _ in 0..3 {
        want.push(r.next().await.unwrap().unwrap().message_id.to_string());
    }
    assert_eq!(ids(&from_id), want);
    assert!(want.contains(&order[42].0));
    // From a time far ahead: nothing, and the end.
    let (_, future) =
        call(http.get(s.api("/topics/orders/messages?from=2100-01-01T00:00:00Z"))).await;
    assert_eq!(ids(&future), Vec::<String>::new());
    assert_eq!(future["next"], Value::Null);

    // Search by key: only that key's messages.
    let (_, by_key) = call(http.get(s.api("/topics/orders/messages?key=k3&limit=100"))).await;
    let keyed = where_n(&|n| n % 7 == 3);
    assert_eq!(ids(&by_key), keyed);
    assert!(keyed.len() >= 8);
    assert_eq!(by_key["scanned"], 57);
    // By a payload filter: the control without it finds more.
    let q = "/topics/orders/messages?limit=100&filter=cents%20%3E%3D%205000%20and%20customer.id%20%3D%202";
    let (_, filtered) = call(http.get(s.api(q))).await;
    assert_eq!(ids(&filtered), where_n(&|n| n >= 50 && n % 5 == 2));
    assert_eq!(ids(&filtered).len(), 1);
    // A window bounds the search and says where to go on.
    let (_, windowed) = call(
        http.get(s.api("/topics/orders/messages?limit=100&window=20&filter=customer.id%20%3D%202")),
    )
    .await;
    assert_eq!(windowed["scanned"], 20);
    assert_eq!(windowed["window"], 20);
    let first20: Vec<String> = order[..20]
        .iter()
        .filter(|(_, n)| n % 5 == 2)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(ids(&windowed), first20);
    let next = windowed["next"]
        .as_str()
        .expect("more to search")
        .to_string();
    let (_, further) = call(http.get(s.api(&format!(
        "/topics/orders/messages?limit=100&window=20&filter=customer.id%20%3D%202&after={next}"
    ))))
    .await;
    let next20: Vec<String> = order[20..40]
        .iter()
        .filter(|(_, n)| n % 5 == 2)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(ids(&further), next20);
    // From the latest, a search examines at most the window's last
    // messages; a window over the whole topic finds every match.
    let (_, recent) =
        call(http.get(
            s.api("/topics/orders/messages?from=latest&window=8&filter=customer.id%20%3D%201"),
        ))
        .await;
    let scanned = recent["scanned"].as_u64().unwrap();
    assert!((1..=8).contains(&scanned), "{recent}");
    for m in recent["messages"].as_array().unwrap() {
        assert_eq!(m["data"]["customer"]["id"], 1);
    }
    let (_, all_recent) = call(http.get(s.api(
        "/topics/orders/messages?from=latest&window=1000&limit=500&filter=customer.id%20%3D%201",
    )))
    .await;
    assert_eq!(all_recent["scanned"], 57);
    assert_eq!(ids(&all_recent), where_n(&|n| n % 5 == 1));

    // Bad input: a clear 400.
    for (q, says) in [
        ("filter=cents%20%3E", "value is missing"),
        ("after=nonsense", "after"),
        ("from=yesterday", "yesterday"),
    ] {
        let (status, e) = call(http.get(s.api(&format!("/topics/orders/messages?{q}")))).await;
        assert_eq!(status, 400, "{q}: {e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{q}: {e}");
    }
    let (status, _) = call(http.get(s.api("/topics/nope/messages"))).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_sample_rates_and_lag() {
    let prefix = support::unique_prefix("serve-charts");
    let c = client(&prefix).await;
    c.create_topic(&TopicSpec::new("ticks", 2).unwrap())
        .await
        .unwrap();
    c.create_group("ticks", "slow", &millrace::StartAt::Earliest)
        .await
        .unwrap();
    let s = serve(
        &support::shared_url(),
        &prefix,
        &["--sample-every", "300ms"],
    )
    .await;
    let http = http();
    for i in 0..30u32 {
        c.publish_record("ticks", Record::encode(&i).unwrap())
            .await
            .unwrap();
    }
    // The server samples by itself: lag (nobody handles "slow") and a
    // publish rate appear, and the overview carries the latest rate.
    support::wait_until(Duration::from_secs(20), "a sampled lag of 30", || {
        let (http, url) = (http.clone(), s.api("/topics/ticks/history"));
        async move {
            let (_, h) = call(http.get(url)).await;
            h["groups"][0]["group"] == "slow"
                && h["groups"][0]["lag"]
                    .as_array()
                    .is_some_and(|l| l.last().is_some_and(|p| p[1] == 30))
        }
    })
    .await;
    let _w = Worker::builder(&c, "slow")
        .handle_raw("ticks", |_m, _c| async { Ok(()) })
        .start()
        .await
        .unwrap();
    support::wait_until(Duration::from_secs(20), "a handled rate above 0", || {
        let (http, url) = (http.clone(), s.api("/topics/ticks/history"));
        async move {
            let (_, h) = call(http.get(url)).await;
            let handled = h["groups"][0]["handled_per_s"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let published = h["published_per_s"].as_array().cloned().unwrap_or_default();
            handled.iter().any(|p| p[1].as_f64() > Some(0.0))
                && published.iter().all(|p| p[1].as_f64() >= Some(0.0))
        }
    })
    .await;
    let (_, overview) = call(http.get(s.api("/topics"))).await;
    let t = &overview["topics"][0];
    assert!(t["published_per_s"].is_number(), "{t}");
    assert!(t["groups"][0]["handled_per_s"].is_number(), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_in_full_and_schedules_added_and_removed() {
    let prefix = support::unique_prefix("serve-dlq-sched");
    let c = client(&prefix).await;
    c.create_topic(&TopicSpec::new("mail", 1).unwrap())
        .await
        .unwrap();
    let _w = Worker::builder(&c, "send")
        .handle_raw("mail", |_m, _c| async {
            Err::<(), _>(millrace::HandlerError::permanent("smtp said <b>no</b>"))
        })
        .start()
        .await
        .unwrap();
    c.publish_record(
        "mail",
        Record::encode(&json!({"to": "ada@example.com"}))
            .unwrap()
            .key("ada"),
    )
    .await
    .unwrap();
    support::wait_until(Duration::from_secs(20), "a dead letter", || {
        let c = c.clone();
        async move { c.dead_letters("mail", None, 10).await.unwrap().len() == 1 }
    })
    .await;
    let s = serve(&support::shared_url(), &prefix, &[]).await;
    let http = http();
    let (_, list) = call(http.get(s.api("/topics/mail/dlq"))).await;
    let d = &list["dead_letters"][0];
    let id = format!("{}:{}", d["partition"], d["id"].as_str().unwrap());
    let (status, full) = call(http.get(s.api(&format!("/topics/mail/dlq/{id}")))).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["data"], json!({"to": "ada@example.com"}));
    assert_eq!(full["error"], "smtp said <b>no</b>");
    assert_eq!(full["key"], "ada");
    assert_eq!(full["group"], "send");
    let (status, _) = call(http.get(s.api("/topics/mail/dlq/0:1-1"))).await;
    assert_eq!(status, 404);

    // Schedules: added, listed with their next fires, removed.
    let (status, added) = call(
        http.post(s.api("/schedules")).body(
            json!({"name": "nightly", "cron": "0 30 2 * * *", "tz": "Europe/Paris",
               "topic": "mail", "data": {"digest": true}})
            .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["next_fires"].as_array().unwrap().len(), 5);
    let (_, listed) = call(http.get(s.api("/schedules"))).await;
    let nightly = &listed["schedules"][0];
    assert_eq!(nightly["name"], "nightly");
    assert_eq!(nightly["tz"], "Europe/Paris");
    let fires: Vec<&str> = nightly["next_fires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    // 02:30 in Paris is 00:30 or 01:30 UTC, a day apart.
    assert!(fires.iter().all(|f| f.ends_with(":30:00Z")), "{fires:?}");
    assert!(fires.windows(2).all(|w| w[0] < w[1]), "{fires:?}");
    for (bad, says) in [
        (
            json!({"name": "x", "cron": "every day", "topic": "mail", "data": 1}),
            "cron",
        ),
        (
            json!({"name": "bad name!", "cron": "0 * * * * *", "topic": "mail", "data": 1}),
            "name",
        ),
        (
            json!({"name": "x", "cron": "0 * * * * *", "topic": "mail", "data": 1, "tz": "Mars/Base"}),
            "Mars",
        ),
        (json!({"cron": "0 * * * * *"}), "expected"),
    ] {
        let (status, e) = call(http.post(s.api("/schedules")).body(bad.to_string())).await;
        assert_eq!(status, 400, "{bad}: {e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{bad}: {e}");
    }
    assert_eq!(
        c.list_schedules().await.unwrap().len(),
        1,
        "nothing bad was added"
    );
    let (status, _) = call(http.delete(s.api("/schedules/nightly"))).await;
    assert_eq!(status, 200);
    assert!(c.list_schedules().await.unwrap().is_empty());
    let (status, _) = call(http.delete(s.api("/schedules/nightly"))).await;
    assert_eq!(status, 404);
}
