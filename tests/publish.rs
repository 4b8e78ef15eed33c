//! Publishing: partitioning, batching, delays, dedup, lanes, limits,
//! retention, typed events.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use millrace::ProducerConfig;
use millrace::partitioner::partition_for_key;
use millrace::{Client, Config, Error, Event, PublishOptions, Record, StartAt, TopicSpec};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

async fn client(test: &str) -> Client {
    client_with(test, |c| c).await
}

async fn client_with(test: &str, f: impl FnOnce(Config) -> Config) -> Client {
    Client::connect(f(support::config(test))).await.unwrap()
}

async fn topic(c: &Client, name: &str, partitions: u32) -> TopicSpec {
    let spec = TopicSpec::new(name, partitions).unwrap();
    c.create_topic(&spec).await.unwrap();
    spec
}

async fn read_all(c: &Client, topic: &str) -> Vec<millrace::Message> {
    let mut r = c.reader(topic, StartAt::Earliest).await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = r.next().await.unwrap() {
        out.push(m);
    }
    out
}

#[test]
fn key_to_partition_table_is_stable() {
    // Other producers (Kafka's default partitioner) agree on these; a change
    // here moves every keyed message of every user.
    let mut table = String::new();
    for key in [
        "tenant-1",
        "tenant-2",
        "tenant-3",
        "inv-1001",
        "inv-1002",
        "customer:42",
        "a",
        "ü-unicode",
        "0",
    ] {
        table.push_str(&format!(
            "{key:>12}  p8={}  p12={}\n",
            partition_for_key(key, 8),
            partition_for_key(key, 12)
        ));
    }
    insta::assert_snapshot!(table);
}

#[tokio::test]
async fn keyed_messages_land_in_their_partition_in_order() {
    let c = client("keyed").await;
    topic(&c, "erp.v1.invoice.created", 8).await;
    for i in 0..50u32 {
        let key = format!("tenant-{}", i % 5);
        let r = c
            .publish_record(
                "erp.v1.invoice.created",
                Record::encode(&i).unwrap().key(&key),
            )
            .await
            .unwrap();
        assert_eq!(r.partition, partition_for_key(&key, 8));
        assert!(!r.duplicate);
    }
    let msgs = read_all(&c, "erp.v1.invoice.created").await;
    assert_eq!(msgs.len(), 50);
    // Per key, the order of publishing is kept.
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for m in &msgs {
        assert_eq!(m.partition, partition_for_key(m.key.as_deref().unwrap(), 8));
        per_key
            .entry(m.key.clone().unwrap())
            .or_default()
            .push(m.decode().unwrap());
    }
    for (k, seq) in per_key {
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "{k}: {seq:?}");
    }
}

#[tokio::test]
async fn keyless_messages_spread_evenly() {
    let c = client("spread").await;
    let spec = topic(&c, "spread", 8).await;
    let records = (0..80_000u32).map(|i| Record::raw(i.to_le_bytes().to_vec()));
    let results = c.publish_batch("spread", records).await.unwrap();
    assert_eq!(results.len(), 80_000);
    assert!(results.iter().all(Result::is_ok));
    let info = c.describe_topic(&spec.name).await.unwrap();
    assert_eq!(info.length, 80_000);
    for (p, n) in info.partition_lengths.iter().enumerate() {
        assert!(
            (9_000..=11_000).contains(n),
            "partition {p} has {n} of 80 000 (±10 % of 10 000 allowed)"
        );
    }
}

#[tokio::test]
async fn batch_publish_returns_one_result_per_record_in_order() {
    let c = client("batch").await;
    topic(&c, "batch", 3).await;
    let mut records: Vec<Record> = (0..2_500u32)
        .map(|i| Record::encode(&i).unwrap().key(format!("k{}", i % 7)))
        .collect();
    // One bad record fails alone.
    records.insert(10, Record::raw(vec![]).priority(5));
    // So does the last one.
    records.push(Record::raw(vec![]).priority(5));
    let results = c.publish_batch("batch", records).await.unwrap();
    assert_eq!(results.len(), 2_502);
    assert!(matches!(results[10], Err(Error::LaneOutOfRange { .. })));
    assert!(matches!(results[2_501], Err(Error::LaneOutOfRange { .. })));
    // A batch of nothing but bad records sends nothing and says so.
    let alone = c
        .publish_batch("batch", vec![Record::raw(vec![]).priority(5)])
        .await
        .unwrap();
    assert!(matches!(alone[..], [Err(Error::LaneOutOfRange { .. })]));
    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 2_500);
    let msgs = read_all(&c, "batch").await;
    assert_eq!(msgs.len(), 2_500);
    let mut seen: Vec<u32> = msgs.iter().map(|m| m.decode().unwrap()).collect();
    seen.sort();
    assert_eq!(seen, (0..2_500).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_the_order_of_each_key_across_pipelines() {
    let c = client("batch-order").await;
    topic(&c, "ordered", 2).await;
    let producer = c.producer_with(ProducerConfig::default().max_batch(50));
    let records: Vec<Record> = (0..3_000u32)
        .map(|i| Record::encode(&i).unwrap().key(format!("k{}", i % 3)))
        .collect();
    producer.publish_batch("ordered", records).await.unwrap();
    let msgs = read_all(&c, "ordered").await;
    let mut per_partition: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for m in &msgs {
        per_partition
            .entry(m.partition)
            .or_default()
            .push(m.decode().unwrap());
    }
    for (p, values) in per_partition {
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of publish order"
        );
    }
}

#[tokio::test]
async fn concurrent_publishes_share_round_trips() {
    let c = client("concurrent").await;
    topic(&c, "conc", 4).await;
    let producer = c.producer_with(ProducerConfig::default().linger(Duration::from_millis(2)));
    let tasks: Vec<_> = (0..2_000u32)
        .map(|i| {
            let p = producer.clone();
            tokio::spawn(async move { p.publish("conc", Record::encode(&i)?).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert!(ids.insert((r.partition, r.id)));
    }
    assert_eq!(c.describe_topic("conc").await.unwrap().length, 2_000);
}

#[tokio::test]
async fn delay_lands_in_the_delayed_set_with_its_due_time() {
    let c = client("delay").await;
    topic(&c, "reminders", 2).await;
    let before = c.redis_time_ms().await.unwrap();
    let r = c
        .publish_record(
            "reminders",
            Record::encode(&"pay invoice 7")
                .unwrap()
                .key("inv-7")
                .delay(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let after = c.redis_time_ms().await.unwrap();
    let due = r.due_ms.expect("a delayed receipt has a due time");
    assert!(
        due >= before + 60_000 && due <= after + 60_000,
        "{before} {due} {after}"
    );
    let delayed_key = c.keys().delayed("reminders", r.partition);
    let entries: Vec<(Vec<u8>, f64)> = c
        .connection()
        .zrange_withscores(&delayed_key, 0, -1)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1 as u64, due);
    let entry = millrace::envelope::decode_delayed(&entries[0].0).unwrap();
    assert_eq!(entry.key.as_deref(), Some("inv-7"));
    assert_eq!(
        millrace::envelope::decode::<String>(&entry.payload).unwrap(),
        "pay invoice 7"
    );
    // Not visible to readers yet.
    assert!(read_all(&c, "reminders").await.is_empty());
    let info = c.describe_topic("reminders").await.unwrap();
    assert_eq!((info.length, info.delayed), (0, 1));

    // An absolute time is kept as given.
    let at = std::time::UNIX_EPOCH + Duration::from_millis(4_102_444_800_000);
    let r = c
        .publish_record(
            "reminders",
            Record::raw(b"x".to_vec()).options(PublishOptions::new().at(at)),
        )
        .await
        .unwrap();
    assert_eq!(r.due_ms, Some(4_102_444_800_000));
}

#[tokio::test]
async fn dedup_within_and_after_ttl() {
    let c = client("dedup").await;
    topic(&c, "payments", 4).await;
    let opts = || {
        PublishOptions::new()
            .dedup_id("pay-42")
            .dedup_ttl(Duration::from_millis(300))
    };
    let first = c
        .publish_record("payments", Record::encode(&1).unwrap().options(opts()))
        .await
        .unwrap();
    let second = c
        .publish_record("payments", Record::encode(&2).unwrap().options(opts()))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.id, first.id);
    assert_eq!(c.describe_topic("payments").await.unwrap().length, 1);

    // After the TTL the same id publishes again.
    let marker = c.keys().dedup("payments", first.partition, "pay-42");
    let conn = c.connection();
    support::wait_until(Duration::from_secs(5), "dedup marker expires", || {
        let mut conn = conn.clone();
        let marker = marker.clone();
        async move { !conn.exists::<_, bool>(&marker).await.unwrap() }
    })
    .await;
    let third = c
        .publish_record("payments", Record::encode(&3).unwrap().options(opts()))
        .await
        .unwrap();
    assert!(!third.duplicate);
    assert_ne!(third.id, first.id);
    let values: Vec<i32> = read_all(&c, "payments")
        .await
        .iter()
        .map(|m| m.decode().unwrap())
        .collect();
    assert_eq!(values, vec![1, 3]);

    // Delayed publishes dedup too.
    let d = || {
        Record::raw(b"r".to_vec())
            .delay(Duration::from_secs(30))
            .dedup_id("reminder-1")
    };
    let a = c.publish_record("payments", d()).await.unwrap();
    let b = c.publish_record("payments", d()).await.unwrap();
    assert!(!a.duplicate && b.duplicate);
    assert_eq!(a.id, b.id);
    assert_eq!(c.describe_topic("payments").await.unwrap().delayed, 1);
}

/// The documented scope of a dedup id: the partition the record goes to.
#[tokio::test]
async fn a_dedup_id_is_checked_within_the_records_partition() {
    let c = client("dedup-scope").await;
    topic(&c, "orders", 8).await;
    // Two keys that map to different partitions.
    let (a, b) = ("tenant-a", "tenant-b");
    let (pa, pb) = (partition_for_key(a, 8), partition_for_key(b, 8));
    assert_ne!(pa, pb, "the test needs keys in two partitions");
    let publish = |key: Option<&'static str>, n: u32| {
        let mut r = Record::encode(&n).unwrap().dedup_id("order-7");
        if let Some(k) = key {
            r = r.key(k);
        }
        c.publish_record("orders", r)
    };
    // Same key: one message.
    let first = publish(Some(a), 1).await.unwrap();
    let again = publish(Some(a), 2).await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((again.partition, &again.id), (pa, &first.id));
    // Another key, another partition: published again, as documented.
    let other = publish(Some(b), 3).await.unwrap();
    assert!(!other.duplicate);
    assert_eq!(other.partition, pb);
    // Keyless: placed by the dedup id, so a keyless retry is caught.
    let keyless = publish(None, 4).await.unwrap();
    let keyless_again = publish(None, 5).await.unwrap();
    assert!(!keyless.duplicate && keyless_again.duplicate);
    assert_eq!(keyless.partition, partition_for_key("order-7", 8));
    let mut values: Vec<u32> = read_all(&c, "orders")
        .await
        .iter()
        .map(|m| m.decode().unwrap())
        .collect();
    values.sort();
    assert_eq!(values, vec![1, 3, 4]);
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct InvoiceCreatedV1 {
    invoice: String,
    tenant: String,
    cents: u64,
}

impl Event for InvoiceCreatedV1 {
    const TOPIC: &'static str = "erp.v1.invoice.created";
    fn key(&self) -> Option<String> {
        Some(self.tenant.clone())
    }
}

/// The same event after a release added a field.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct InvoiceCreatedV2 {
    invoice: String,
    tenant: String,
    cents: u64,
    #[serde(default)]
    due_date: Option<String>,
}

impl Event for InvoiceCreatedV2 {
    const TOPIC: &'static str = "erp.v1.invoice.created";
    fn key(&self) -> Option<String> {
        Some(self.tenant.clone())
    }
}

#[tokio::test]
async fn typed_events_round_trip_across_a_new_field() {
    let c = client("typed").await;
    topic(&c, InvoiceCreatedV1::TOPIC, 4).await;
    let old = InvoiceCreatedV1 {
        invoice: "inv-1".into(),
        tenant: "acme".into(),
        cents: 12_500,
    };
    let r = c
        .publish_with(
            &old,
            PublishOptions::new().header("traceparent", "00-1-2-01"),
        )
        .await
        .unwrap();
    assert_eq!(r.partition, partition_for_key("acme", 4));
    let new = InvoiceCreatedV2 {
        invoice: "inv-2".into(),
        tenant: "acme".into(),
        cents: 1,
        due_date: Some("2026-12-31".into()),
    };
    c.publish(&new).await.unwrap();

    let msgs = read_all(&c, InvoiceCreatedV1::TOPIC).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        msgs[0].headers.get("traceparent").map(String::as_str),
        Some("00-1-2-01")
    );
    assert_eq!(msgs[0].key.as_deref(), Some("acme"));
    // An old message read with the new type: the new field is absent.
    let as_v2: InvoiceCreatedV2 = msgs[0].decode().unwrap();
    assert_eq!(as_v2.due_date, None);
    assert_eq!(as_v2.cents, 12_500);
    // A new message still reads with the old type.
    let as_v1: InvoiceCreatedV1 = msgs[1].decode().unwrap();
    assert_eq!(as_v1.invoice, "inv-2");
    // A payload of another shape is a typed decode error, not a panic.
    assert!(matches!(
        msgs[0].decode::<Vec<u64>>(),
        Err(Error::Decode(_))
    ));
}

#[tokio::test]
async fn oversize_messages_are_refused_and_nothing_is_written() {
    let c = client_with("oversize", |cfg| cfg.max_message_bytes(1024)).await;
    topic(&c, "big", 1).await;
    let err = c
        .publish_record("big", Record::raw(vec![7u8; 1025]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "message of 1025 bytes exceeds the limit of 1024 bytes"
    );
    assert!(err.is_invalid_input());
    c.publish_record("big", Record::raw(vec![7u8; 1000]))
        .await
        .unwrap();
    assert_eq!(c.describe_topic("big").await.unwrap().length, 1);
}

#[tokio::test]
async fn lanes_are_separate_streams() {
    let c = client("lanes").await;
    c.create_topic(&TopicSpec::new("jobs", 1).unwrap().lanes(3))
        .await
        .unwrap();
    for lane in [2u8, 0, 1, 0] {
        let r = c
            .publish_record("jobs", Record::encode(&lane).unwrap().priority(lane))
            .await
            .unwrap();
        assert_eq!(r.lane, lane);
    }
    let mut conn = c.connection();
    let lens: Vec<u64> = futures_util::future::join_all((0..3).map(|lane| {
        let key = c.keys().stream("jobs", 0, lane);
        let mut conn = conn.clone();
        async move { conn.xlen::<_, u64>(key).await.unwrap() }
    }))
    .await;
    assert_eq!(lens, vec![2, 1, 1]);
    let msgs = read_all(&c, "jobs").await;
    // The reader merges lanes by time (entries of one millisecond in
    // different streams have no order between them).
    let mut lanes: Vec<u8> = msgs.iter().map(|m| m.lane).collect();
    assert!(msgs.windows(2).all(|w| w[0].id.ms <= w[1].id.ms));
    lanes.sort();
    assert_eq!(lanes, vec![0, 0, 1, 2]);
    let err = c
        .publish_record("jobs", Record::raw(vec![]).priority(3))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "topic jobs has 3 lane(s); priority 3 is out of range"
    );
    let _: () = conn.del(c.keys().stream("jobs", 0, 0)).await.unwrap();
}

#[tokio::test]
async fn retention_trims_old_messages_by_minid() {
    let c = client("retention").await;
    c.create_topic(
        &TopicSpec::new("short.lived", 1)
            .unwrap()
            .retention(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let producer = c.producer_with(ProducerConfig::default().trim_interval(Duration::ZERO));
    let old: Vec<Record> = (0..1_000u32).map(|i| Record::encode(&i).unwrap()).collect();
    let old_receipts = producer.publish_batch("short.lived", old).await.unwrap();
    let last_old = old_receipts.last().unwrap().as_ref().unwrap().id.clone();
    let last_old_ms: u64 = last_old.split('-').next().unwrap().parse().unwrap();
    let c2 = c.clone();
    support::wait_until(Duration::from_secs(5), "retention passes", || {
        let c = c2.clone();
        async move { c.redis_time_ms().await.unwrap() > last_old_ms + 250 }
    })
    .await;
    let new: Vec<Record> = (1_000..1_100u32)
        .map(|i| Record::encode(&i).unwrap())
        .collect();
    producer.publish_batch("short.lived", new).await.unwrap();

    let msgs = read_all(&c, "short.lived").await;
    let values: Vec<u32> = msgs.iter().map(|m| m.decode().unwrap()).collect();
    // Approximate trimming removes whole stream nodes (100 entries each):
    // at most one node of old messages may survive, every new one does.
    assert!(
        values.len() <= 1_100 && values.len() >= 100,
        "{}",
        values.len()
    );
    let old_left = values.iter().filter(|v| **v < 1_000).count();
    assert!(old_left <= 100, "{old_left} old messages survived trimming");
    assert!((1_000..1_100).all(|v| values.contains(&v)));
}

#[tokio::test]
async fn max_len_caps_each_partition_lane_approximately() {
    let c = client("maxlen").await;
    c.create_topic(&TopicSpec::new("capped", 1).unwrap().max_len(200))
        .await
        .unwrap();
    let recs: Vec<Record> = (0..2_000u32).map(|i| Record::encode(&i).unwrap()).collect();
    c.publish_batch("capped", recs).await.unwrap();
    let len = c.describe_topic("capped").await.unwrap().length;
    assert!((200..=300).contains(&len), "length {len}");
}

#[tokio::test]
async fn publishing_to_a_missing_topic_is_an_error() {
    let c = client("missing").await;
    let err = c
        .publish_record("nope", Record::raw(vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TopicNotFound(ref t) if t == "nope"));
}
