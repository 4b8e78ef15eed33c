//! The same API on a three-master Redis Cluster: a topic's partitions spread
//! over the masters, and no script or pipeline crosses a slot; and the same
//! over TLS, with a private CA and client certificates.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use millrace::partitioner::partition_for_key;
use millrace::{Client, Config, Error, Mode, Record, SchemaPolicy, StartAt, TopicSpec};
use support::RedisCluster;
use support::tls::Pki;

async fn client(test: &str) -> Client {
    let cluster = support::shared_cluster();
    let config = Config::cluster(cluster.urls())
        .unwrap()
        .prefix(support::unique_prefix(test))
        .unwrap();
    let c = Client::connect(config).await.unwrap();
    assert!(c.server_info().cluster, "the cluster is detected");
    c
}

/// Which node (by port) serves each key, from CLUSTER SLOTS and CLUSTER KEYSLOT.
async fn node_of(c: &Client, key: &str) -> u16 {
    let mut conn = c.connection();
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let slots: Vec<(u16, u16, Vec<redis::Value>)> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async::<Vec<redis::Value>>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|v| {
            let redis::Value::Array(mut parts) = v else {
                panic!("bad CLUSTER SLOTS reply")
            };
            let master = parts.remove(2);
            let start: u16 = redis::from_redis_value(parts[0].clone()).unwrap();
            let end: u16 = redis::from_redis_value(parts[1].clone()).unwrap();
            let redis::Value::Array(m) = master else {
                panic!("bad master entry")
            };
            (start, end, m)
        })
        .collect();
    for (start, end, master) in slots {
        if (start..=end).contains(&slot) {
            return redis::from_redis_value(master[1].clone()).unwrap();
        }
    }
    panic!("slot {slot} is not served");
}

#[tokio::test]
async fn a_twelve_partition_topic_spreads_over_all_masters() {
    let c = client("spread").await;
    let spec = TopicSpec::new("erp.v1.invoice.created", 12).unwrap();
    c.create_topic(&spec).await.unwrap();

    let records: Vec<Record> = (0..1_200u32)
        .map(|i| {
            Record::encode(&i)
                .unwrap()
                .key(format!("tenant-{}", i % 60))
        })
        .collect();
    let results = c.publish_batch(&spec.name, records).await.unwrap();
    assert!(results.iter().all(Result::is_ok));
    // Single publishes, dedup scripts and delays work per slot too.
    c.publish_record(&spec.name, Record::encode(&5000u32).unwrap().key("solo"))
        .await
        .unwrap();
    let d1 = c
        .publish_record(
            &spec.name,
            Record::encode(&5001u32).unwrap().dedup_id("once"),
        )
        .await
        .unwrap();
    let d2 = c
        .publish_record(
            &spec.name,
            Record::encode(&5001u32).unwrap().dedup_id("once"),
        )
        .await
        .unwrap();
    assert!(d2.duplicate && d2.id == d1.id);
    c.publish_record(
        &spec.name,
        Record::encode(&1u8).unwrap().delay(Duration::from_secs(60)),
    )
    .await
    .unwrap();

    let info = c.describe_topic(&spec.name).await.unwrap();
    assert_eq!(info.length, 1_202);
    assert_eq!(info.delayed, 1);

    // Read everything back, merged across nodes.
    let mut r = c.reader(&spec.name, StartAt::Earliest).await.unwrap();
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut n = 0;
    while let Some(m) = r.next().await.unwrap() {
        n += 1;
        if let Some(k) = &m.key {
            assert_eq!(m.partition, partition_for_key(k, 12));
            per_key
                .entry(k.clone())
                .or_default()
                .push(m.decode().unwrap());
        }
    }
    assert_eq!(n, 1_202);
    for (k, v) in &per_key {
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{k} out of order");
    }

    // The partitions live on all three masters.
    let mut nodes = BTreeSet::new();
    for p in 0..12 {
        nodes.insert(node_of(&c, &c.keys().stream(&spec.name, p, 0)).await);
    }
    assert_eq!(nodes.len(), 3, "partitions on nodes {nodes:?}");
}

#[tokio::test]
async fn follow_reads_new_messages_on_a_cluster() {
    let c = client("follow").await;
    c.create_topic(&TopicSpec::new("live", 6).unwrap())
        .await
        .unwrap();
    let mut r = c
        .reader("live", StartAt::Latest)
        .await
        .unwrap()
        .follow(true);
    let c2 = c.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..20u32 {
            c2.publish_record("live", Record::encode(&i).unwrap().key(format!("k{i}")))
                .await
                .unwrap();
        }
    });
    let mut got = BTreeSet::new();
    while got.len() < 20 {
        let m = tokio::time::timeout(Duration::from_secs(10), r.next())
            .await
            .expect("follow delivers within 10 s")
            .unwrap()
            .unwrap();
        got.insert(m.decode::<u32>().unwrap());
    }
    publisher.await.unwrap();
    assert_eq!(got, (0..20).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_sees_every_message_once_on_a_cluster() {
    support::groups::fan_out(&client("fanout").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_keep_their_order_on_a_cluster() {
    support::groups::key_order(&client("order").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_and_delays_on_a_cluster() {
    use millrace::RetryPolicy;
    use millrace::{HandlerError, Worker};

    use std::sync::atomic::{AtomicU32, Ordering};
    let c = client("failures").await;
    c.create_topic(&TopicSpec::new("jobs", 6).unwrap())
        .await
        .unwrap();
    let ok = Arc::new(AtomicU32::new(0));
    let ok2 = ok.clone();
    let w = Worker::builder(&c, "g")
        .retry(
            RetryPolicy::attempts(2)
                .fixed(Duration::from_millis(20))
                .jitter(0.0),
        )
        .handle_raw("jobs", move |m, _c| {
            let ok = ok2.clone();
            async move {
                let n: u32 = m.decode().map_err(HandlerError::permanent)?;
                if n.is_multiple_of(5) {
                    return Err(HandlerError::retry("multiple of five"));
                }
                ok.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let recs: Vec<Record> = (1..=50u32)
        .map(|i| {
            Record::encode(&i)
                .unwrap()
                .key(format!("k{i}"))
                .delay(Duration::from_millis(50))
        })
        .collect();
    let receipts: Vec<millrace::Receipt> = c
        .publish_batch("jobs", recs)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    support::wait_until(Duration::from_secs(20), "all settled", || {
        let s = w.stats();
        async move { s.acked == 40 && s.dead_lettered == 10 }
    })
    .await;
    w.shutdown().await.unwrap();
    assert_eq!(ok.load(Ordering::SeqCst), 40);
    let dead = c.dead_letters("jobs", Some("g"), 100).await.unwrap();
    assert_eq!(dead.len(), 10);
    assert!(dead.iter().all(|d| d.attempts == 2));
    // Where each stands, read from every shard: named by the delayed
    // token its publish returned, followed into its lane after promotion.
    for (i, r) in receipts.iter().enumerate() {
        let n = i as u32 + 1;
        let s = c
            .message_status("jobs", &r.message_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.message.as_ref().unwrap().decode::<u32>().unwrap(), n);
        let want = if n.is_multiple_of(5) {
            millrace::MessageState::DeadLettered
        } else {
            millrace::MessageState::Done
        };
        assert_eq!(s.groups.len(), 1);
        assert_eq!(s.groups[0].state, want, "message {n}: {s:?}");
    }
    let n = c
        .replay_dead_letters(
            "jobs",
            &millrace::Selection::All,
            None,
            millrace::ReplayTo::Topic,
        )
        .await
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(c.describe_topic("jobs").await.unwrap().dlq_length, 0);
}

/// A cluster that speaks only TLS and requires client certificates, on the
/// bus between nodes too: millrace trusts the private CA and presents its
/// certificate to every node (the probe, the cluster connection, the
/// blocking pool's connections), detects the cluster, and an ordered group
/// handles keyed messages from partitions on all three masters, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_client_certificates_carries_an_ordered_group() {
    if support::skip_without_tls() {
        return;
    }
    support::init_tracing();
    let pki = Pki::generate();
    let cluster = tokio::task::block_in_place(|| RedisCluster::start_tls(&pki, true));
    assert!(cluster.urls().iter().all(|u| u.starts_with("rediss://")));
    let with_ca = || {
        Config::cluster(cluster.urls())
            .unwrap()
            .tls_ca_file(&pki.ca)
            .unwrap()
    };

    // Without the CA, or without a client certificate: typed TLS errors.
    let e = Client::connect(Config::cluster(cluster.urls()).unwrap())
        .await
        .unwrap_err();
    match &e {
        Error::TlsHandshake { addr, reason } => {
            assert_eq!(addr, &format!("127.0.0.1:{}", cluster.ports()[0]));
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("expected a TLS handshake error, got {other:?}"),
    }
    let e = Client::connect(with_ca()).await.unwrap_err();
    assert!(
        matches!(&e, Error::TlsHandshake { reason, .. } if reason.contains("CertificateRequired")),
        "{e:?}"
    );

    let config = with_ca()
        .tls_client_cert_files(&pki.client.cert, &pki.client.key)
        .unwrap()
        .prefix(support::unique_prefix("tls-cluster"))
        .unwrap();
    let c = Client::connect(config).await.unwrap();
    assert!(c.server_info().cluster, "the cluster is detected over TLS");

    // 24 partitions: all three masters hold some (a miss has odds of 2e-4).
    let topic = "erp.v1.invoice.created";
    c.create_topic(&TopicSpec::new(topic, 24).unwrap())
        .await
        .unwrap();
    let mut nodes = BTreeSet::new();
    for p in 0..24 {
        nodes.insert(node_of(&c, &c.keys().stream(topic, p, 0)).await);
    }
    assert_eq!(nodes.len(), 3, "partitions on nodes {nodes:?}");

    let ledger = Arc::new(support::groups::Ledger::default());
    let mut workers = Vec::new();
    for _ in 0..2 {
        let w =
            support::groups::recording_worker(&c, topic, "billing", ledger.clone(), Duration::ZERO)
                .mode(Mode::Ordered)
                .concurrency(8)
                .build()
                .unwrap();
        workers.push(w.start().await.unwrap());
    }
    let (keys, per_key) = (48, 50);
    support::groups::publish_sequenced(&c, topic, keys, per_key).await;
    let partitions: BTreeSet<u32> = (0..keys)
        .map(|k| partition_for_key(&format!("k{k}"), 24))
        .collect();
    assert!(partitions.len() > 12, "keys on partitions {partitions:?}");
    support::groups::wait_for(&ledger, (keys * per_key) as usize, Duration::from_secs(60)).await;

    // Caught up, the members wait in blocking reads on pooled connections:
    // one more message must still arrive.
    c.publish_record(
        topic,
        Record::encode(&(keys, 0u32))
            .unwrap()
            .key(format!("k{keys}")),
    )
    .await
    .unwrap();
    support::groups::wait_for(
        &ledger,
        (keys * per_key) as usize + 1,
        Duration::from_secs(20),
    )
    .await;
    for w in workers {
        w.shutdown().await.unwrap();
    }
    let order = ledger.first_handling_order();
    for k in 0..keys {
        assert_eq!(
            order[&k],
            (0..per_key).collect::<Vec<_>>(),
            "key k{k} out of order"
        );
    }
    assert!(ledger.violations.lock().unwrap().is_empty());
    let info = c.describe_group(topic, "billing").await.unwrap();
    assert_eq!((info.lag, info.pending), (0, 0));

    let mut blocking = c.blocking_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut blocking).await.unwrap();
    assert_eq!(pong, "PONG");
}

/// A node announces an address its certificate does not cover (here
/// 127.0.0.2, the certificate names 127.0.0.1): the handshake with it fails
/// after the first node's succeeded, and that is a typed TLS error naming
/// the node, not redis-rs's "no connections found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_whose_certificate_does_not_cover_its_address_is_a_tls_error() {
    if support::skip_without_tls() {
        return;
    }
    let pki = Pki::generate();
    let cluster = tokio::task::block_in_place(|| {
        RedisCluster::start_tls_with(
            &pki,
            false,
            &[
                "--bind",
                "127.0.0.1 127.0.0.2",
                "--cluster-announce-ip",
                "127.0.0.2",
            ],
        )
    });
    let config = Config::cluster(cluster.urls())
        .unwrap()
        .tls_ca_file(&pki.ca)
        .unwrap();
    let e = Client::connect(config).await.unwrap_err();
    match &e {
        Error::TlsHandshake { addr, reason } => {
            assert!(addr.starts_with("127.0.0.2:"), "{addr}");
            assert!(reason.contains("not valid for name"), "{reason}");
        }
        other => panic!("expected a TLS handshake error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_registered_and_enforced_on_a_cluster() {
    let c = client("schemas").await;
    let spec = TopicSpec::new("erp.v1.invoice.created", 12)
        .unwrap()
        .schema(SchemaPolicy::Required);
    c.create_topic(&spec).await.unwrap();
    let topic = spec.name.as_str();
    let closed = |extra: serde_json::Value| {
        let mut properties = serde_json::json!({
            "invoice": {"type": "string"},
            "cents": {"type": "integer", "minimum": 0},
        });
        if let serde_json::Value::Object(m) = extra {
            properties.as_object_mut().unwrap().extend(m);
        }
        serde_json::json!({"type": "object", "properties": properties,
            "required": ["invoice", "cents"], "additionalProperties": false})
    };
    // Registrations racing from several tasks: consecutive versions.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let c = c.clone();
        let doc = closed(serde_json::json!({format!("f{i}"): {"type": "string"}}));
        tasks.push(tokio::spawn(async move {
            c.register_schema("erp.v1.invoice.created", &doc).await
        }));
    }
    let mut versions = BTreeSet::new();
    for t in tasks {
        // Each adds an optional field to a closed model: the registrations
        // are compatible with the one before them whatever the order, except
        // that a later one lacks an earlier one's field, which a closed
        // model's reader refuses: those fail as incompatible, none doubles.
        match t.await.unwrap() {
            Ok(v) => assert!(versions.insert(v.version), "version {} twice", v.version),
            Err(Error::SchemaIncompatible { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let all: Vec<u32> = c
        .schemas(topic)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(all, (1..=all.len() as u32).collect::<Vec<_>>(), "no gap");
    assert_eq!(versions.into_iter().collect::<Vec<_>>(), all);

    let latest = c.schema(topic, None).await.unwrap().unwrap();
    let field = latest.schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.starts_with('f'))
        .cloned();
    let mut good = serde_json::json!({"invoice": "inv-1", "cents": 1});
    if let Some(f) = field {
        good[f] = "x".into();
    }
    let bad = serde_json::json!({"invoice": 7, "cents": -1});
    // Valid: lands in every partition's slot, stamped.
    let records: Vec<Record> = (0..48)
        .map(|i| Record::encode(&good).unwrap().key(format!("k{i}")))
        .collect();
    let results = c.publish_batch(topic, records).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let before = c.describe_topic(topic).await.unwrap();
    // Invalid, every way: refused, and nothing written in any slot.
    for (i, r) in [
        Record::encode(&bad).unwrap().key("a"),
        Record::encode(&bad)
            .unwrap()
            .key("b")
            .delay(Duration::from_secs(60)),
        Record::encode(&bad).unwrap().key("c").dedup_id("dup-c"),
    ]
    .into_iter()
    .enumerate()
    {
        let e = c.publish_record(topic, r).await.unwrap_err();
        let Error::SchemaViolation { errors, .. } = &e else {
            panic!("{i}: {e}")
        };
        assert!(
            errors.iter().any(|m| m.starts_with("/invoice: ")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|m| m.starts_with("/cents: ")),
            "{errors:?}"
        );
    }
    let after = c.describe_topic(topic).await.unwrap();
    assert_eq!(
        (after.length, after.delayed),
        (before.length, before.delayed)
    );
    let marker = c.keys().dedup(topic, partition_for_key("c", 12), "dup-c");
    let mut conn = c.connection();
    let exists: bool = redis::cmd("EXISTS")
        .arg(&marker)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "no dedup marker for a refused publish");
    // What landed carries its version.
    let mut r = c.reader(topic, StartAt::Earliest).await.unwrap();
    let mut n = 0;
    while let Some(m) = r.next().await.unwrap() {
        assert_eq!(
            m.headers[millrace::HEADER_SCHEMA_VERSION],
            latest.version.to_string()
        );
        n += 1;
    }
    assert_eq!(n, 48);
}
