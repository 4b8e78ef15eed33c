//! Topics: create, describe, list, delete; names; the key layout.

mod support;

use std::time::Duration;

use millrace::keys::KeySpace;
use millrace::{Client, Created, Error, TopicSpec};

async fn client(test: &str) -> Client {
    support::client(test).await
}

#[test]
fn key_layout_of_an_example_topic() {
    let keys = KeySpace::new("mr");
    let layout = keys.layout("erp.v1.invoice.created", 2, 2, "pdf-report", "inv-42");
    let text: String = layout
        .iter()
        .map(|(key, kind, what)| format!("{key:<50} {kind:<10} {what}\n"))
        .collect();
    insta::assert_snapshot!(text);
}

/// A topic created with balanced placement on a cluster: the same keys,
/// each partition's tag carrying the suffix its metadata names.
#[test]
fn key_layout_of_a_balanced_topic() {
    let keys = KeySpace::new("mr");
    keys.remember(
        "erp.v1.invoice.created",
        millrace::placement::Tags::Balanced(vec![4, 11].into()),
    );
    let layout = keys.layout("erp.v1.invoice.created", 2, 1, "pdf-report", "inv-42");
    let text: String = layout
        .iter()
        .map(|(key, kind, what)| format!("{key:<50} {kind:<10} {what}\n"))
        .collect();
    insta::assert_snapshot!(text);
}

#[tokio::test]
async fn create_describe_list_delete() {
    let c = client("cdld").await;
    let spec = TopicSpec::new("erp.v1.invoice.created", 4)
        .unwrap()
        .lanes(2)
        .retention(Duration::from_secs(3600));
    assert_eq!(c.create_topic(&spec).await.unwrap(), Created::New);
    assert_eq!(c.create_topic(&spec).await.unwrap(), Created::Existing);
    c.create_topic(&TopicSpec::new("erp.v1.order.placed", 1).unwrap())
        .await
        .unwrap();

    assert_eq!(
        c.list_topics().await.unwrap(),
        vec!["erp.v1.invoice.created", "erp.v1.order.placed"]
    );
    // Read back, the placement is the scheme the topic has: on a single
    // server, balanced asks for nothing, and the partitions keep `T:p`.
    assert_eq!(
        c.topic("erp.v1.invoice.created").await.unwrap(),
        spec.clone().placement(millrace::Placement::Hash)
    );

    for i in 0..10 {
        c.publish_record(
            "erp.v1.invoice.created",
            millrace::Record::encode(&i).unwrap().key(format!("k{i}")),
        )
        .await
        .unwrap();
    }
    let info = c.describe_topic("erp.v1.invoice.created").await.unwrap();
    insta::assert_json_snapshot!(info, @r#"
    {
      "name": "erp.v1.invoice.created",
      "partitions": 4,
      "lanes": 2,
      "retention_ms": 3600000,
      "max_len": null,
      "schema": "optional",
      "length": 10,
      "partition_lengths": [
        5,
        4,
        1,
        0
      ],
      "delayed": 0,
      "groups": [],
      "dlq_length": 0
    }
    "#);

    assert!(c.delete_topic("erp.v1.invoice.created").await.unwrap());
    assert!(!c.delete_topic("erp.v1.invoice.created").await.unwrap());
    assert_eq!(c.list_topics().await.unwrap(), vec!["erp.v1.order.placed"]);
    assert!(matches!(
        c.describe_topic("erp.v1.invoice.created").await,
        Err(Error::TopicNotFound(_))
    ));
    // Nothing of the deleted topic is left behind.
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{erp.v1.invoice.created*", c.keys().prefix()))
        .query_async(&mut c.connection())
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn creating_with_other_settings_says_what_differs() {
    let c = client("conflict").await;
    c.create_topic(&TopicSpec::new("t.conflict", 4).unwrap())
        .await
        .unwrap();
    let other = TopicSpec::new("t.conflict", 8).unwrap().max_len(1000);
    let err = c.create_topic(&other).await.unwrap_err();
    assert!(matches!(err, Error::TopicConflict { .. }));
    insta::assert_snapshot!(err.to_string(), @"topic t.conflict exists with other settings: partitions: existing 4, requested 8; max_len: existing none, requested 1000");
    // The existing topic is unchanged.
    assert_eq!(c.topic("t.conflict").await.unwrap().partitions, 4);
}

/// Names are checked before anything is sent: against a Redis that is gone,
/// a bad name still gets its own error, not a connection error (which a
/// good name gets, so the server really is unreachable).
#[tokio::test]
async fn invalid_names_are_refused_before_touching_redis() {
    support::init_tracing();
    let mut server = support::RedisServer::start();
    let c = Client::connect(
        millrace::Config::new(server.url())
            .unwrap()
            .prefix(support::unique_prefix("names"))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    server.stop();
    let unreachable = c.topic("no.such.topic").await.unwrap_err();
    assert!(unreachable.is_unreachable(), "{unreachable:?}");

    #[track_caller]
    fn assert_refused(e: Error, name: &str, call: &str) {
        assert!(
            matches!(&e, Error::InvalidName { what: "topic", name: n, .. } if n == name),
            "{call}({name:?}): {e:?}"
        );
    }
    let mut errors = String::new();
    for name in ["", "Invoices", "a{b}", "a:b", "a*", "orders.dlq", "ünï"] {
        let e = TopicSpec::new(name, 1).unwrap_err();
        errors.push_str(&format!("{e}\n"));
        assert_refused(e, name, "TopicSpec::new");
        assert_refused(
            c.delete_topic(name).await.unwrap_err(),
            name,
            "delete_topic",
        );
        if name.ends_with(".dlq") {
            // Reading `orders.dlq` is reading the dead letters of `orders`:
            // a valid name for a reader, so this one goes to Redis.
            let e = c.topic(name).await.unwrap_err();
            assert!(e.is_unreachable(), "topic({name:?}): {e:?}");
            continue;
        }
        assert_refused(c.topic(name).await.unwrap_err(), name, "topic");
        assert_refused(
            c.describe_topic(name).await.unwrap_err(),
            name,
            "describe_topic",
        );
    }
    // A dead-letter view has no view of its own.
    assert_refused(
        c.topic("orders.dlq.dlq").await.unwrap_err(),
        "orders.dlq.dlq",
        "topic",
    );
    insta::assert_snapshot!(errors, @r#"
    invalid topic name "": it is empty
    invalid topic name "Invoices": only lowercase letters, digits, '.', '-' and '_' are allowed
    invalid topic name "a{b}": only lowercase letters, digits, '.', '-' and '_' are allowed
    invalid topic name "a:b": only lowercase letters, digits, '.', '-' and '_' are allowed
    invalid topic name "a*": only lowercase letters, digits, '.', '-' and '_' are allowed
    invalid topic name "orders.dlq": the suffix .dlq is reserved for dead-letter views
    invalid topic name "ünï": only lowercase letters, digits, '.', '-' and '_' are allowed
    "#);
}

#[tokio::test]
async fn an_unknown_topic_is_not_found() {
    let c = client("unknown").await;
    assert!(matches!(
        c.topic("no.such.topic").await,
        Err(Error::TopicNotFound(t)) if t == "no.such.topic"
    ));
}

/// `delete_topic("orders.dlq")` is not a way to empty the dead-letter queue
/// of `orders` (that is `purge_dead_letters`): it is refused, and the dead
/// letters stay.
#[tokio::test]
async fn deleting_a_dead_letter_view_is_refused_and_keeps_the_dead_letters() {
    let c = client("delete-view").await;
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    let w = millrace::Worker::builder(&c, "billing")
        .handle_raw("orders", |_m, _c| async {
            Err::<(), _>(millrace::HandlerError::permanent("card declined"))
        })
        .start()
        .await
        .unwrap();
    c.publish_record("orders", millrace::Record::encode(&1u8).unwrap())
        .await
        .unwrap();
    support::wait_until(Duration::from_secs(10), "a dead letter", || {
        let n = w.stats().dead_lettered;
        async move { n == 1 }
    })
    .await;
    w.shutdown().await.unwrap();
    let e = c.delete_topic("orders.dlq").await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidName { what: "topic", name, .. } if name == "orders.dlq"),
        "{e:?}"
    );
    assert_eq!(c.describe_topic("orders").await.unwrap().dlq_length, 1);
    assert_eq!(c.dead_letters("orders", None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn prefixes_keep_tenants_apart() {
    let a = client("tenant-a").await;
    let b = client("tenant-b").await;
    a.create_topic(&TopicSpec::new("shared.name", 2).unwrap())
        .await
        .unwrap();
    assert!(b.list_topics().await.unwrap().is_empty());
    assert!(matches!(
        b.topic("shared.name").await,
        Err(Error::TopicNotFound(_))
    ));
}
