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

/// A field of the server's own `INFO server` section, e.g. `tcp_port`:
/// what the process says of itself, independent of the harness's records.
async fn info_field(url: &str, field: &str) -> String {
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .unwrap();
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {field} in INFO: {info}"))
        .trim()
        .to_string()
}

async fn reported_port(url: &str) -> u16 {
    info_field(url, "tcp_port").await.parse().unwrap()
}

async fn reported_pid(url: &str) -> u32 {
    info_field(url, "process_id").await.parse().unwrap()
}

#[tokio::test]
async fn shared_server_answers_ping() {
    let server = support::shared();
    assert_eq!(ping(&server.url()).await.unwrap(), "PONG");
    // The server behind the URL is the one on the port the harness names.
    assert_eq!(reported_port(&server.url()).await, server.port());
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    // The same server every time.
    assert!(std::ptr::eq(support::shared(), server));
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
    assert_eq!(reported_port(&url).await, port);
    let first_pid = server.pid().expect("running");

    server.stop();
    assert!(!server.is_running());
    assert!(ping(&url).await.is_err(), "a stopped server must refuse");

    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_eq!(ping(&url).await.unwrap(), "PONG");
    // A new process, listening on the old port.
    assert_eq!(reported_port(&url).await, port);
    assert_ne!(server.pid(), Some(first_pid));
    assert_eq!(
        reported_pid(&url).await,
        server.pid().expect("running"),
        "the server answering is the restarted one"
    );
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

/// One node's view of the cluster (`CLUSTER NODES`): its own port and the
/// ports of every master.
struct NodesView {
    myself: u16,
    masters: Vec<u16>,
}

fn parse_cluster_nodes(nodes: &str) -> NodesView {
    let mut myself = None;
    let mut masters = Vec::new();
    for line in nodes.lines().filter(|l| !l.trim().is_empty()) {
        // <id> <ip:port@cport[,hostname]> <flags> ...
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port: u16 = fields[1]
            .split('@')
            .next()
            .and_then(|addr| addr.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        let flags: Vec<&str> = fields[2].split(',').collect();
        if flags.contains(&"myself") {
            assert!(myself.is_none(), "two myself lines: {nodes}");
            myself = Some(port);
        }
        if flags.contains(&"master") {
            masters.push(port);
        }
    }
    masters.sort_unstable();
    NodesView {
        myself: myself.unwrap_or_else(|| panic!("no myself line: {nodes}")),
        masters,
    }
}

async fn check_cluster(cluster: &RedisCluster) {
    let mut ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert_eq!(cluster.urls().len(), 3);
    assert_eq!(cluster.url(), cluster.urls()[0]);
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(
        ports.len(),
        3,
        "three distinct ports: {:?}",
        cluster.ports()
    );
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
        // What the nodes themselves say, against what the harness says:
        // the node behind this URL is the one on this port, and the
        // cluster's masters are exactly the harness's nodes.
        let view = parse_cluster_nodes(&nodes);
        assert_eq!(view.myself, port, "{url}: {nodes}");
        assert_eq!(view.masters, ports, "{url}: {nodes}");
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
    // ...each of them holding some (a node answers DBSIZE for itself).
    for port in cluster.ports() {
        let n = support::resp_command(port, &["DBSIZE"]).unwrap();
        let n: u64 = n.trim_start_matches(':').parse().unwrap();
        assert!(n > 0, "node {port} holds no key");
    }
}

#[tokio::test]
async fn cluster_starts_with_three_masters() {
    check_cluster(&RedisCluster::start()).await;
}

#[tokio::test]
async fn shared_cluster_is_usable() {
    let cluster = support::shared_cluster();
    check_cluster(cluster).await;
    // The same cluster every time.
    assert!(std::ptr::eq(support::shared_cluster(), cluster));
}
