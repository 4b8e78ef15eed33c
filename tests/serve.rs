//! `millrace serve`'s HTTP API, without a browser: the overview, publishing
//! (one record and batches, with the CLI's checks and errors as statuses),
//! browsing and showing messages, groups, dead letters; read-only mode, the
//! token, the refusal to serve beyond loopback without one, and 503 when
//! Redis is down.

mod support;

use std::process::Command;
use std::time::Duration;

use millrace::{Client, Config, Record, TopicSpec, Worker};
use serde_json::json;

use support::serve::{call, client, http, serve};

const BIN: &str = env!("CARGO_BIN_EXE_millrace");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_publishes_browses_and_shows() {
    let prefix = support::unique_prefix("serve-api");
    let c = client(&prefix).await;
    c.create_topic(&TopicSpec::new("orders", 2).unwrap())
        .await
        .unwrap();
    let _w = Worker::builder(&c, "billing")
        .handle_raw("orders", |_m, _c| async { Ok(()) })
        .start()
        .await
        .unwrap();
    let s = serve(&support::shared_url(), &prefix, &[]).await;
    let http = http();
    let url = |p: &str| format!("{}/api/v1{p}", s.base);

    // Publish one record, then a batch.
    let xss = "<img src=x onerror=alert(1)>";
    let (status, receipt) = call(
        http.post(url("/topics/orders/messages"))
            .body(json!({"data": {"sku": xss}, "key": "acme", "headers": {"h": xss}}).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{receipt}");
    let first = receipt["message_id"].as_str().unwrap().to_string();
    let (status, batch) = call(
        http.post(url("/topics/orders/messages"))
            .body(json!([{"data": 1, "key": "k1"}, {"data": 2, "priority": 0}]).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{batch}");
    assert_eq!(batch["receipts"].as_array().unwrap().len(), 2);

    // The overview: the topic, its length and the live group.
    support::wait_until(Duration::from_secs(20), "the group caught up", || {
        let (http, u) = (http.clone(), url("/topics"));
        async move {
            let (_, v) = call(http.get(u)).await;
            let t = &v["topics"][0];
            t["name"] == "orders"
                && t["length"] == 3
                && t["groups"][0]["lag"] == 0
                && t["groups"][0]["pending"] == 0
        }
    })
    .await;
    let (_, v) = call(http.get(url("/topics"))).await;
    let g = &v["topics"][0]["groups"][0];
    assert_eq!(
        (g["group"].as_str(), g["members"].as_u64()),
        (Some("billing"), Some(1))
    );
    // Counters for rates, and the round trips the overview took.
    assert_eq!(
        (
            v["topics"][0]["published"].as_u64(),
            g["handled"].as_u64(),
            v["round_trips"].as_u64()
        ),
        (Some(3), Some(3), Some(3)),
        "{v}"
    );
    let (status, one) = call(http.get(url("/topics/orders"))).await;
    assert_eq!((status, &one), (200, &v["topics"][0]));

    // Browse, then one message with where it stands.
    let (status, page) = call(http.get(url("/topics/orders/messages?from=earliest&limit=2"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        2,
        "bounded by limit"
    );
    let (status, m) = call(http.get(url(&format!("/topics/orders/messages/{first}")))).await;
    assert_eq!(status, 200, "{m}");
    // The payload comes back as data, a string like any other.
    assert_eq!(m["data"]["sku"], xss);
    assert_eq!(m["headers"]["h"], xss);
    assert_eq!(m["groups"][0]["state"], "done");
    let (status, group) = call(http.get(url("/topics/orders/groups/billing"))).await;
    assert_eq!((status, group["group"].as_str()), (200, Some("billing")));

    // Errors, each with its status; nothing of a bad batch is published.
    let (status, e) = call(http.post(url("/topics/orders/messages")).body("{nope")).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid")));
    let (status, e) = call(
        http.post(url("/topics/orders/messages"))
            .body(json!([{"data": 3}, {"data": 4, "priority": 7}]).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["message"].as_str().unwrap().starts_with("record 1: "),
        "{e}"
    );
    let (status, e) = call(
        http.post(url("/topics/orders/messages"))
            .body(json!([{"data": 3}, {"nodata": 4}]).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(
        c.describe_topic("orders").await.unwrap().length,
        3,
        "nothing more published"
    );
    let big = "x".repeat(2 << 20);
    let (status, e) = call(
        http.post(url("/topics/orders/messages"))
            .body(json!({"data": big}).to_string()),
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (413, Some("too_large")));
    let (status, e) = call(
        http.post(url("/topics/nope/messages"))
            .body(json!({"data": 1}).to_string()),
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (404, Some("not_found")));
    let (status, _) = call(http.get(url("/topics/orders/messages/0:0:9999999999999-0"))).await;
    assert_eq!(status, 404);
    let (status, _) = call(http.get(url("/topics/orders/messages/nonsense"))).await;
    assert_eq!(status, 400);

    // Pause and resume.
    let (status, v) = call(http.post(url("/topics/orders/groups/billing/pause"))).await;
    assert_eq!((status, v["paused"].as_bool()), (200, Some(true)));
    assert!(c.is_group_paused("orders", "billing").await.unwrap());
    call(http.post(url("/topics/orders/groups/billing/resume"))).await;
    assert!(!c.is_group_paused("orders", "billing").await.unwrap());

    // The page: one embedded document, its script served beside it, and
    // a policy that runs no inline script.
    let r = http.get(format!("{}/", s.base)).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"));
    assert_eq!(script_src, Some("script-src 'self'"), "{csp}");
    assert!(r.text().await.unwrap().contains("<script src=\"app.js\">"));
    let js = http
        .get(format!("{}/app.js", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(js.contains("textContent") && !js.contains("innerHTML"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_the_token_guard_changes() {
    let prefix = support::unique_prefix("serve-guard");
    let c = client(&prefix).await;
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    let http = http();
    let publish = |base: &str| {
        http.post(format!("{base}/api/v1/topics/orders/messages"))
            .body(json!({"data": 1}).to_string())
    };

    let ro = serve(&support::shared_url(), &prefix, &["--read-only"]).await;
    let (status, e) = call(publish(&ro.base)).await;
    assert_eq!((status, e["error"].as_str()), (403, Some("read_only")));
    let (status, _) = call(http.get(format!("{}/api/v1/topics", ro.base))).await;
    assert_eq!(status, 200, "reading is allowed");

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    let guarded = serve(
        &support::shared_url(),
        &prefix,
        &["--token-file", token_file.to_str().unwrap()],
    )
    .await;
    let (status, e) = call(publish(&guarded.base)).await;
    assert_eq!((status, e["error"].as_str()), (401, Some("unauthorized")));
    let (status, _) = call(publish(&guarded.base).bearer_auth("wrong-token-0123456789")).await;
    assert_eq!(status, 401);
    let (status, _) = call(publish(&guarded.base).bearer_auth("s3cret-token-0123456789")).await;
    assert_eq!(status, 201);
    let (status, _) = call(http.get(format!("{}/api/v1/topics", guarded.base))).await;
    assert_eq!(status, 200, "on loopback, reading needs no token");
    assert_eq!(c.describe_topic("orders").await.unwrap().length, 1);
}

#[test]
fn beyond_loopback_without_a_token_it_refuses_to_start() {
    let out = Command::new(BIN)
        .args([
            "--redis",
            "redis://127.0.0.1:1",
            "serve",
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve on 0.0.0.0:0 without a token"),
        "{err}"
    );
    // The control: on loopback it gets as far as connecting to Redis.
    let out = Command::new(BIN)
        .args([
            "--redis",
            "redis://127.0.0.1:1",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_503() {
    let mut server = support::RedisServer::start();
    let c = Client::connect(Config::new(server.url()).unwrap())
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    c.publish_record("orders", Record::encode(&1).unwrap())
        .await
        .unwrap();
    let s = serve(&server.url(), "mr", &[]).await;
    let http = http();
    let (status, _) = call(http.get(format!("{}/api/v1/topics", s.base))).await;
    assert_eq!(status, 200);
    server.stop();
    let (status, e) = call(http.get(format!("{}/api/v1/topics", s.base))).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (503, Some("unreachable")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_and_purge_and_a_reset_previews_before_it_acts() {
    let prefix = support::unique_prefix("serve-dlq");
    let c = client(&prefix).await;
    c.create_topic(&TopicSpec::new("jobs", 1).unwrap())
        .await
        .unwrap();
    let w = Worker::builder(&c, "g")
        .handle_raw("jobs", |_m, _c| async {
            Err::<(), _>(millrace::HandlerError::permanent("bad job"))
        })
        .start()
        .await
        .unwrap();
    for i in 0..3 {
        c.publish_record("jobs", Record::encode(&i).unwrap())
            .await
            .unwrap();
    }
    let cc = c.clone();
    support::wait_until(Duration::from_secs(20), "three dead letters", || {
        let c = cc.clone();
        async move { c.dead_letters("jobs", None, 10).await.unwrap().len() == 3 }
    })
    .await;
    let s = serve(&support::shared_url(), &prefix, &[]).await;
    let http = http();
    let url = |p: &str| format!("{}/api/v1{p}", s.base);

    // A reset while the group has a live member: refused, 409.
    let (status, e) = call(
        http.post(url("/topics/jobs/groups/g/reset"))
            .body(json!({"to": "earliest"}).to_string()),
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (409, Some("conflict")),
        "{e}"
    );
    w.shutdown().await.unwrap();

    let (status, v) = call(http.get(url("/topics/jobs/dlq?limit=10"))).await;
    assert_eq!(status, 200);
    let dead = v["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 3);
    let one = dead[0]["id"].as_str().unwrap().to_string();
    let (status, v) = call(
        http.post(url("/topics/jobs/dlq/replay"))
            .body(json!({"ids": [one]}).to_string()),
    )
    .await;
    assert_eq!((status, v["replayed"].as_u64()), (200, Some(1)), "{v}");
    let (status, v) = call(
        http.post(url("/topics/jobs/dlq/purge"))
            .body(json!({"all": true}).to_string()),
    )
    .await;
    assert_eq!((status, v["purged"].as_u64()), (200, Some(2)), "{v}");
    assert!(c.dead_letters("jobs", None, 10).await.unwrap().is_empty());
    let (status, _) = call(
        http.post(url("/topics/jobs/dlq/purge"))
            .body(json!({"ids": []}).to_string()),
    )
    .await;
    assert_eq!(status, 400, "neither ids nor all");

    // The preview changes nothing; the reset does.
    let lag = |c: Client| async move { c.describe_group("jobs", "g").await.unwrap().lag };
    assert_eq!(lag(c.clone()).await, 0);
    let (status, plan) = call(http.get(url("/topics/jobs/groups/g/reset?to=earliest"))).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(lag(c.clone()).await, 0, "a preview changes nothing");
    let (status, _) = call(
        http.post(url("/topics/jobs/groups/g/reset"))
            .body(json!({"to": "earliest"}).to_string()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        lag(c.clone()).await,
        3,
        "the group will read all three again"
    );
}
