//! Proves the test harness in `tests/support` works: private servers start,
//! stop, restart on the same port, and a three-master cluster forms.

mod support;

use std::time::Duration;

use support::{RedisCluster, RedisServer};

async fn ping(url: &str) -> redis::RedisResult<String> {
    let mut con = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("PING").query_async(&mut con).await
}

#[tokio::test]
async fn shared_server_answers_ping() {
    let server = support::shared();
    assert_eq!(ping(&server.url()).await.unwrap(), "PONG");
    // The same server every time.
    assert_eq!(support::shared().port(), server.port());
    assert_eq!(support::shared_url(), server.url());
}

#[tokio::test]
async fn shared_server_survives_the_test_thread_that_started_it() {
    // Started from a short-lived thread: PDEATHSIG is tied to the spawner
    // thread, not this one, so the server must outlive it.
    let url = std::thread::spawn(support::shared_url).join().unwrap();
    assert_eq!(ping(&url).await.unwrap(), "PONG");
}

#[tokio::test]
async fn owned_server_stops_and_restarts_on_the_same_port() {
    let mut server = RedisServer::start();
    let port = server.port();
    let url = server.url();
    assert_eq!(url, format!("redis://127.0.0.1:{port}"));
    assert!(server.is_running());
    assert_eq!(ping(&url).await.unwrap(), "PONG");

    server.stop();
    assert!(!server.is_running());
    assert!(ping(&url).await.is_err(), "a stopped server must refuse");

    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_eq!(ping(&url).await.unwrap(), "PONG");
}

#[tokio::test]
async fn owned_server_with_aof_keeps_data_across_restart() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();

    server.restart();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let v: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v, "v");
}

#[test]
fn unique_prefixes_are_unique_short_and_plain() {
    let a = support::unique_prefix("Some::test name {with} odd: chars and a very long tail");
    let b = support::unique_prefix("Some::test name {with} odd: chars and a very long tail");
    assert_ne!(a, b);
    for p in [&a, &b] {
        assert!(p.len() <= 40, "{p} is too long");
        assert!(
            p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'),
            "{p} has odd characters"
        );
    }
}

#[tokio::test]
async fn wait_until_returns_once_the_condition_holds() {
    let start = std::time::Instant::now();
    support::wait_until(Duration::from_secs(5), "50 ms to pass", || async move {
        start.elapsed() >= Duration::from_millis(50)
    })
    .await;
}

#[tokio::test]
#[should_panic(expected = "waiting for the impossible")]
async fn wait_until_panics_with_what_on_timeout() {
    support::wait_until(Duration::from_millis(50), "the impossible", || async {
        false
    })
    .await;
}

async fn check_cluster(cluster: &RedisCluster) {
    assert_eq!(cluster.urls().len(), 3);
    assert_eq!(cluster.url(), cluster.urls()[0]);
    for (url, port) in cluster.urls().iter().zip(cluster.ports()) {
        assert_eq!(*url, format!("redis://127.0.0.1:{port}"));
        let mut con = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(info.contains("cluster_state:ok"), "{url}: {info}");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut con)
            .await
            .unwrap();
        let masters = nodes.lines().filter(|l| l.contains("master")).count();
        assert_eq!(masters, 3, "{url}: {nodes}");
    }

    // Keys spread over all three masters through a cluster client.
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    let prefix = support::unique_prefix("cluster");
    for i in 0..30 {
        let key = format!("{prefix}:{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(i)
            .query_async(&mut con)
            .await
            .unwrap();
        let v: i64 = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(v, i);
    }
}

#[tokio::test]
async fn cluster_starts_with_three_masters() {
    check_cluster(&RedisCluster::start()).await;
}

#[tokio::test]
async fn shared_cluster_is_usable() {
    check_cluster(support::shared_cluster()).await;
    assert_eq!(
        support::shared_cluster().ports(),
        support::shared_cluster().ports()
    );
}
