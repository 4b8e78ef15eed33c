//! Redis Sentinel and replica acknowledgements, on real processes: a
//! primary, two replicas and three sentinels on loopback. Clients given a
//! `redis+sentinel://` URL follow a promotion without a restart; with
//! `Acks::replicas(1)` nothing acknowledged is lost when the primary dies.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace::{Acks, Client, Config, Error, ProducerConfig, Record, TopicSpec};
use support::RedisServer;
use support::groups::{Ledger, recording_worker};
use support::sentinel::{MASTER, SentinelSet, role};

fn config(url: &str, test: &str) -> Config {
    Config::new(url)
        .unwrap()
        .prefix(support::unique_prefix(test))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sentinel_url_follows_promotions_and_replica_acks_lose_nothing() {
    let set = Arc::new(Mutex::new(SentinelSet::start(2)));
    let url = set.lock().unwrap().url();
    let c = Client::connect(config(&url, "sentinel-failover"))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 4).unwrap())
        .await
        .unwrap();
    let ledger = Arc::new(Ledger::default());
    let worker = recording_worker(&c, "orders", "billing", ledger.clone(), Duration::ZERO)
        .concurrency(8)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();

    // One publisher, 8 keys in turn; each publish is tried again (same
    // dedup id) until it is acknowledged, so per key the sequence is the
    // order of acknowledgements.
    let producer =
        c.producer_with(ProducerConfig::default().acks(Acks::replicas(1, Duration::from_secs(2))));
    let acked = Arc::new(Mutex::new(Vec::<(u32, u32)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut failures = 0u32;
            for n in 0u32.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (key, seq) = (n % 8, n / 8);
                let record = Record::encode(&(key, seq))
                    .unwrap()
                    .key(format!("k{key}"))
                    .dedup_id(format!("{key}-{seq}"));
                loop {
                    match producer.publish("orders", record.clone()).await {
                        Ok(_) => break,
                        Err(e) if e.is_retryable() => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("publish ({key}, {seq}): {e}"),
                    }
                }
                acked.lock().unwrap().push((key, seq));
            }
            failures
        })
    };

    let acked_now = || acked.lock().unwrap().len();
    let mut failovers = Vec::new();
    for round in 0..2 {
        let before = acked_now();
        support::wait_until(Duration::from_secs(30), "publishing goes on", || {
            let n = acked_now();
            async move { n >= before + 200 }
        })
        .await;
        let s = set.clone();
        let (old, new) = tokio::task::spawn_blocking(move || {
            s.lock().unwrap().fail_over(Duration::from_secs(30))
        })
        .await
        .unwrap();
        eprintln!("failover {round}: primary {old} -> {new}");
        failovers.push((old, new));
    }
    let before = acked_now();
    support::wait_until(Duration::from_secs(30), "publishing goes on after", || {
        let n = acked_now();
        async move { n >= before + 200 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let failures = publisher.await.unwrap();
    let acked: Vec<(u32, u32)> = acked.lock().unwrap().clone();
    eprintln!(
        "{} publishes acknowledged, {failures} attempts failed and were tried again",
        acked.len()
    );

    // Every acknowledged publish is handled (0 lost), by one member at a
    // time per partition, and per key in order.
    let l = ledger.clone();
    let wanted: std::collections::HashSet<(u32, u32)> = acked.iter().copied().collect();
    support::wait_until(
        Duration::from_secs(60),
        "every acknowledged publish handled",
        || {
            let handled: std::collections::HashSet<(u32, u32)> = l
                .handled
                .lock()
                .unwrap()
                .iter()
                .map(|(k, s, _)| (*k, *s))
                .collect();
            let missing = wanted.difference(&handled).count();
            async move { missing == 0 }
        },
    )
    .await;
    worker.shutdown().await.unwrap();
    assert!(
        ledger.violations.lock().unwrap().is_empty(),
        "{:?}",
        ledger.violations.lock().unwrap()
    );
    for (key, seqs) in ledger.first_handling_order() {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "key k{key} out of order");
    }
    // The client followed: the primary it writes to now is the last one
    // promoted, and the servers that were killed are replicas again.
    let (_, last) = *failovers.last().unwrap();
    let info = c.server_info();
    assert_eq!(info.server, support::server_kind_and_version().0);
    let s = set.lock().unwrap();
    assert_eq!(s.agreed_primary(), Some(last));
    for (old, _) in &failovers {
        if *old != last {
            let r = role(*old);
            assert!(
                r.as_deref() == Some("slave") || r.is_none(),
                "{old} is {r:?}"
            );
        }
    }
}

#[tokio::test]
async fn replica_acks_wait_for_a_replica_and_say_when_none_confirmed() {
    let primary = RedisServer::start();
    let c = Client::connect(config(&primary.url(), "acks-alone"))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    let wait = Duration::from_millis(200);
    let acked = c.producer_with(ProducerConfig::default().acks(Acks::replicas(1, wait)));
    // No replica: the write is made on the primary, and the error says the
    // outcome is unknown.
    let e = acked
        .publish("orders", Record::encode(&1).unwrap().dedup_id("one"))
        .await
        .unwrap_err();
    match &e {
        Error::NotReplicated {
            wanted: 1,
            acked: 0,
            timeout,
        } => assert_eq!(*timeout, wait),
        other => panic!("{other:?}"),
    }
    assert!(e.is_retryable());
    assert!(e.to_string().contains("outcome is unknown"), "{e}");
    assert_eq!(c.describe_topic("orders").await.unwrap().length, 1);
    // The control: acks from the primary alone succeed at once.
    c.publish_record("orders", Record::encode(&2).unwrap())
        .await
        .unwrap();
    // With a replica attached, the same producer's publish succeeds, and
    // publishing again with the dedup id adds nothing.
    let port = primary.port().to_string();
    let _replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let r = acked
        .publish("orders", Record::encode(&1).unwrap().dedup_id("one"))
        .await;
    let r = match r {
        // The replica may still be syncing: it confirms once it is up.
        Err(Error::NotReplicated { .. }) => {
            let mut last = None;
            for _ in 0..100 {
                match acked
                    .publish("orders", Record::encode(&1).unwrap().dedup_id("one"))
                    .await
                {
                    Ok(r) => {
                        last = Some(r);
                        break;
                    }
                    Err(Error::NotReplicated { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            last.expect("the replica never confirmed")
        }
        other => other.unwrap(),
    };
    assert!(r.duplicate);
    assert_eq!(c.describe_topic("orders").await.unwrap().length, 2);
    // A batch waits once, at the end of its pipeline (a longer timeout:
    // the machine may be busy).
    let patient =
        c.producer_with(ProducerConfig::default().acks(Acks::replicas(1, Duration::from_secs(5))));
    let batch = patient
        .publish_batch("orders", (0..10).map(|i| Record::encode(&i).unwrap()))
        .await
        .unwrap();
    assert!(batch.iter().all(Result::is_ok), "{batch:?}");
}

#[tokio::test]
async fn a_group_with_replica_acks_counts_what_no_replica_confirmed() {
    let primary = RedisServer::start();
    let c = Client::connect(config(&primary.url(), "acks-group"))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    let run = |acks: Acks, n: u32| {
        let c = c.clone();
        async move {
            let ledger = Arc::new(Ledger::default());
            let w = recording_worker(&c, "orders", "billing", ledger.clone(), Duration::ZERO)
                .acks(acks)
                .build()
                .unwrap();
            let stats = w.stats();
            let h = w.start().await.unwrap();
            support::groups::wait_for(&ledger, n as usize, Duration::from_secs(30)).await;
            h.shutdown().await.unwrap();
            stats.snapshot()
        }
    };
    for seq in 0..3u32 {
        c.publish_record("orders", Record::encode(&(0u32, seq)).unwrap())
            .await
            .unwrap();
    }
    // No replica: the acks stand on the primary (nothing is handed back:
    // the group has no lag), and they are counted as unconfirmed.
    let s = run(Acks::replicas(1, Duration::from_millis(100)), 3).await;
    assert_eq!(s.acked, 3);
    assert_eq!(s.unreplicated, 3);
    assert_eq!(c.describe_group("orders", "billing").await.unwrap().lag, 0);
    // The control: with a replica attached, nothing is unconfirmed.
    let port = primary.port().to_string();
    let _replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    support::wait_until(Duration::from_secs(20), "the replica is synced", || {
        let synced = support::sentinel::synced_replica(_replica.port());
        async move { synced }
    })
    .await;
    for seq in 3..6u32 {
        c.publish_record("orders", Record::encode(&(0u32, seq)).unwrap())
            .await
            .unwrap();
    }
    let s = run(Acks::replicas(1, Duration::from_secs(2)), 3).await;
    assert_eq!((s.acked, s.unreplicated), (3, 0));
}

#[test]
fn the_cli_publishes_with_replica_acks() {
    let primary = RedisServer::start();
    let prefix = support::unique_prefix("acks-cli");
    let millrace = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
            .args(["--redis", &primary.url(), "--prefix", &prefix])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        millrace(&["topic", "create", "t", "--partitions", "1"])
            .status
            .success()
    );
    let out = millrace(&["publish", "t", "{}", "--acks", "replicas:1:100ms"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("0 of 1 replica(s) confirmed it within 100ms"),
        "{stderr}"
    );
    let out = millrace(&["publish", "t", "{}", "--acks", "all"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("replicas:N"), "{stderr}");
    // The control: the primary's acknowledgement is enough by default.
    assert!(millrace(&["publish", "t", "{}"]).status.success());
    assert!(
        millrace(&["publish", "t", "{}", "--acks", "primary"])
            .status
            .success()
    );
}

#[tokio::test]
async fn sentinel_urls_that_lead_nowhere_are_clear_errors() {
    let primary = RedisServer::start();
    let sentinel = RedisServer::start_sentinel(MASTER, primary.port());
    // A master the sentinel does not know.
    let url = format!("redis+sentinel://127.0.0.1:{}/other", sentinel.port());
    let e = Client::connect(config(&url, "sentinel-unknown"))
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    assert!(e.to_string().contains("knows no master \"other\""), "{e}");
    // No sentinel listening.
    let url = format!(
        "redis+sentinel://127.0.0.1:{}/{MASTER}",
        support::free_port()
    );
    let e = Client::connect(config(&url, "sentinel-none"))
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    assert!(e.to_string().contains("no primary for"), "{e}");
    // The control: the right name connects, to the primary.
    let url = format!("redis+sentinel://127.0.0.1:{}/{MASTER}", sentinel.port());
    let c = Client::connect(config(&url, "sentinel-ok")).await.unwrap();
    c.create_topic(&TopicSpec::new("t", 1).unwrap())
        .await
        .unwrap();
    c.publish_record("t", Record::encode(&1).unwrap())
        .await
        .unwrap();
    let mut direct = redis::Client::open(primary.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut direct).unwrap();
    assert!(!keys.is_empty(), "the write went to the primary");
}
