//! A Redis that goes away and comes back: publishing fails clearly while it
//! is down and works again after, without a new client.

mod support;

use std::time::{Duration, Instant};

use millrace::{Client, Config, Record, TopicSpec};
use support::RedisServer;

#[tokio::test]
async fn publish_recovers_after_the_server_restarts() {
    let mut server = RedisServer::start();
    let config = Config::new(server.url())
        .unwrap()
        .response_timeout(Duration::from_secs(2));
    let c = Client::connect(config).await.unwrap();
    c.create_topic(&TopicSpec::new("orders", 2).unwrap())
        .await
        .unwrap();
    c.publish_record("orders", Record::encode(&1).unwrap())
        .await
        .unwrap();

    server.stop();
    let started = Instant::now();
    let err = c
        .publish_record("orders", Record::encode(&2).unwrap())
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a publish to a dead server must fail, not hang"
    );
    assert!(err.to_string().starts_with("redis: "), "{err}");

    // The restarted server kept nothing (no persistence), not even our
    // scripts: the dedup publish meets NOSCRIPT and must reload them.
    server.restart();
    let c2 = c.clone();
    support::wait_until(Duration::from_secs(15), "publishing works again", || {
        let c = c2.clone();
        async move {
            c.publish_record("orders", Record::encode(&3).unwrap())
                .await
                .is_ok()
        }
    })
    .await;
    let r = c
        .publish_record(
            "orders",
            Record::encode(&4).unwrap().dedup_id("after-restart"),
        )
        .await
        .unwrap();
    assert!(!r.duplicate);
    let again = c
        .publish_record(
            "orders",
            Record::encode(&5).unwrap().dedup_id("after-restart"),
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, r.id);
    // Scripts called one by one reload too.
    c.create_topic(&TopicSpec::new("orders", 2).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn connecting_to_nothing_is_a_clear_unreachable_error() {
    let port = support::free_port();
    let config = Config::new(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1));
    let err = Client::connect(config).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(!err.is_invalid_input());
}

#[tokio::test]
async fn a_wrong_password_never_shows_the_password() {
    let server = RedisServer::start_with(&["--requirepass", "right-one"]);
    let url = server.url().replace("redis://", "redis://:wrong-one@");
    let config = Config::new(&url).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("wrong-one"), "{shown}");
    let err = Client::connect(config).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-one"), "{text}");

    let ok_url = server.url().replace("redis://", "redis://:right-one@");
    let c = Client::connect(Config::new(ok_url).unwrap()).await.unwrap();
    assert!(!format!("{c:?}").contains("right-one"));
}
