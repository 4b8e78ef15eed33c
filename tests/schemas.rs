//! The schema registry against a real Redis: versions and their identity,
//! the compatibility check at registration, invalid documents, modes, and
//! registrations racing for the next version.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace::{
    Client, CompatMode, Created, Error, GATE_REFRESH, HEADER_SCHEMA_VERSION, Message, Record,
    RetryPolicy, SchemaPolicy, StartAt, TopicSpec, Worker,
};
use serde_json::{Value, json};

async fn topic(test: &str, name: &str) -> Client {
    let c = support::client(test).await;
    c.create_topic(&TopicSpec::new(name, 2).unwrap())
        .await
        .unwrap();
    c
}

/// A closed invoice schema with `extra` optional properties added.
fn invoice(extra: &[(&str, Value)]) -> Value {
    let mut properties = json!({
        "invoice": {"type": "string"},
        "cents": {"type": "integer", "minimum": 0},
    });
    for (name, schema) in extra {
        properties[*name] = schema.clone();
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": ["invoice", "cents"],
        "additionalProperties": false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_count_up_and_an_equal_document_is_the_same_version() {
    let c = topic("schema_versions", "inv").await;
    assert!(c.schemas("inv").await.unwrap().is_empty());
    assert_eq!(c.schema("inv", None).await.unwrap(), None);
    assert_eq!(c.schema_mode("inv").await.unwrap(), CompatMode::Backward);

    let v1 = c.register_schema("inv", &invoice(&[])).await.unwrap();
    assert_eq!(v1.version, 1);
    let currency = invoice(&[("currency", json!({"type": "string"}))]);
    let v2 = c.register_schema("inv", &currency).await.unwrap();
    assert_eq!(v2.version, 2);
    // The same document again, keys in another order: the same version,
    // nothing new.
    let reordered: Value = serde_json::from_str(
        r#"{"additionalProperties": false, "required": ["invoice", "cents"],
            "properties": {"currency": {"type": "string"}, "cents": {"minimum": 0, "type": "integer"},
                           "invoice": {"type": "string"}}, "type": "object"}"#,
    )
    .unwrap();
    assert_eq!(
        c.register_schema("inv", &reordered).await.unwrap().version,
        2
    );
    assert_eq!(
        c.register_schema("inv", &invoice(&[]))
            .await
            .unwrap()
            .version,
        1,
        "an older version's document is that version"
    );
    let all = c.schemas("inv").await.unwrap();
    let numbers: Vec<u32> = all.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(all[1].schema, currency);
    assert_eq!(c.schema("inv", None).await.unwrap().unwrap().version, 2);
    assert_eq!(
        c.schema("inv", Some(1)).await.unwrap().unwrap().schema,
        invoice(&[])
    );
    assert_eq!(c.schema("inv", Some(3)).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_schema_is_refused_with_every_reason_and_nothing_is_stored() {
    let c = topic("schema_incompatible", "inv").await;
    c.register_schema("inv", &invoice(&[])).await.unwrap();
    // Two breaking changes at once: a narrowed type and a new required
    // property without a default.
    let mut broken = invoice(&[("due", json!({"type": "string"}))]);
    broken["properties"]["cents"]["type"] = json!("string");
    broken["required"] = json!(["invoice", "cents", "due"]);
    let reasons = c.check_schema("inv", &broken).await.unwrap();
    let pointers: BTreeSet<&str> = reasons.iter().map(|r| r.pointer.as_str()).collect();
    assert!(
        pointers.iter().any(|p| p.starts_with("/properties/cents")),
        "{reasons:#?}"
    );
    assert!(
        pointers
            .iter()
            .any(|p| p.contains("due") || p.starts_with("/required")),
        "{reasons:#?}"
    );
    let e = c.register_schema("inv", &broken).await.unwrap_err();
    let Error::SchemaIncompatible {
        topic,
        mode,
        reasons: refused,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((topic.as_str(), *mode), ("inv", CompatMode::Backward));
    assert_eq!(refused, &reasons, "the check and the refusal agree");
    assert!(refused.iter().all(|r| r.version == Some(1)));
    assert_eq!(c.schemas("inv").await.unwrap().len(), 1, "nothing stored");

    // NONE registers anything; the mode is the subject's own.
    c.set_schema_mode("inv", CompatMode::None).await.unwrap();
    assert_eq!(c.schema_mode("inv").await.unwrap(), CompatMode::None);
    assert!(c.check_schema("inv", &broken).await.unwrap().is_empty());
    assert_eq!(c.register_schema("inv", &broken).await.unwrap().version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_document_is_refused_naming_each_place() {
    let c = topic("schema_invalid", "inv").await;
    let bad = json!({
        "type": "objekt",
        "properties": {"cents": {"minimum": "zero"}, "tags": {"items": 5}},
    });
    let e = c.register_schema("inv", &bad).await.unwrap_err();
    let Error::SchemaInvalid { errors } = &e else {
        panic!("{e}")
    };
    for place in [
        "/type",
        "/properties/cents/minimum",
        "/properties/tags/items",
    ] {
        assert!(
            errors.iter().any(|m| m.starts_with(&format!("{place}: "))),
            "{place} in {errors:#?}"
        );
    }
    assert!(e.is_invalid_input());
    // A $ref must stay inside the document.
    let outside = json!({"$ref": "https://example.com/invoice.json"});
    assert!(matches!(
        c.register_schema("inv", &outside).await,
        Err(Error::SchemaInvalid { .. })
    ));
    let inside = json!({
        "$defs": {"money": {"type": "integer", "minimum": 0}},
        "type": "object",
        "properties": {"cents": {"$ref": "#/$defs/money"}},
    });
    assert_eq!(c.register_schema("inv", &inside).await.unwrap().version, 1);
    // Nothing else was stored, and a missing topic has no subject.
    assert_eq!(c.schemas("inv").await.unwrap().len(), 1);
    assert!(matches!(
        c.register_schema("nope", &inside).await,
        Err(Error::TopicNotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_registrations_get_consecutive_versions() {
    let c = topic("schema_race", "inv").await;
    // Different documents, each compatible with any other (titles are
    // annotations), registered at once from many tasks.
    const N: usize = 24;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let doc = json!({"type": "object", "title": format!("draft {i}")});
                (i, c.register_schema("inv", &doc).await.unwrap().version)
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    let versions: BTreeSet<u32> = got.iter().map(|(_, v)| *v).collect();
    assert_eq!(
        versions,
        (1..=N as u32).collect(),
        "no gap, no version given twice: {got:?}"
    );
    // Each task's document is stored under the version it was told.
    let stored = c.schemas("inv").await.unwrap();
    assert_eq!(stored.len(), N);
    for (i, v) in got {
        assert_eq!(stored[v as usize - 1].schema["title"], format!("draft {i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_deletes_its_schemas() {
    let c = topic("schema_delete", "inv").await;
    c.register_schema("inv", &invoice(&[])).await.unwrap();
    c.set_schema_mode("inv", CompatMode::Full).await.unwrap();
    c.delete_topic("inv").await.unwrap();
    c.create_topic(&TopicSpec::new("inv", 2).unwrap())
        .await
        .unwrap();
    assert!(c.schemas("inv").await.unwrap().is_empty());
    assert_eq!(c.schema_mode("inv").await.unwrap(), CompatMode::Backward);
}

/// Event types as a Rust service would evolve them, with the JSON Schemas
/// `schemars` derives (feature `schemars`).
mod rust_types {
    use millrace::Event;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    pub const TOPIC: &str = "erp.v1.invoice.created";

    /// Version 1, closed (`deny_unknown_fields`).
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct V1 {
        pub invoice: String,
        pub cents: u64,
    }

    /// Adds an optional field.
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct V2 {
        pub invoice: String,
        pub cents: u64,
        #[serde(default)]
        pub currency: Option<String>,
    }

    /// Renames a field on the wire.
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Renamed {
        pub invoice: String,
        #[serde(rename = "total")]
        pub cents: u64,
    }

    /// Changes a field's type.
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Retyped {
        pub invoice: String,
        pub cents: String,
    }

    /// Version 1 and 2 without `deny_unknown_fields`: an open model.
    #[derive(Serialize, Deserialize, JsonSchema)]
    pub struct OpenV1 {
        pub invoice: String,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    pub struct OpenV2 {
        pub invoice: String,
        pub currency: Option<String>,
    }

    macro_rules! on_topic {
        ($($t:ty => $topic:expr),*) => {
            $(impl Event for $t { const TOPIC: &'static str = $topic; })*
        };
    }
    on_topic!(V1 => TOPIC, V2 => TOPIC, Renamed => TOPIC, Retyped => TOPIC,
        OpenV1 => "open.invoice", OpenV2 => "open.invoice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_types_register_and_their_serde_attributes_are_checked() {
    use rust_types::*;
    let c = topic("schema_rust", TOPIC).await;
    c.create_topic(&TopicSpec::new("open.invoice", 1).unwrap())
        .await
        .unwrap();
    // serde's attributes, as the derived schema says them.
    let v2 = millrace::schema_of::<V2>();
    assert_eq!(v2["additionalProperties"], false, "{v2:#}");
    let required: BTreeSet<&str> = v2["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(required, BTreeSet::from(["invoice", "cents"]), "{v2:#}");
    assert!(
        millrace::schema_of::<Renamed>()["properties"]
            .get("total")
            .is_some()
    );

    assert_eq!(c.register_schema_for::<V1>().await.unwrap().version, 1);
    // An optional field on a closed model: backward compatible.
    assert_eq!(c.check_schema_for::<V2>().await.unwrap(), vec![]);
    assert_eq!(c.register_schema_for::<V2>().await.unwrap().version, 2);
    // A rename drops `cents` and adds a required `total`; a retype
    // narrows `cents`: both refused, each naming its places.
    let renamed = c.check_schema_for::<Renamed>().await.unwrap();
    let places: Vec<&str> = renamed.iter().map(|r| r.pointer.as_str()).collect();
    assert!(
        places.iter().any(|p| p.contains("cents"))
            && places
                .iter()
                .any(|p| p.contains("total") || *p == "/required"),
        "{renamed:#?}"
    );
    let retyped = c.check_schema_for::<Retyped>().await.unwrap();
    assert!(
        retyped
            .iter()
            .any(|r| r.pointer == "/properties/cents/type"),
        "{retyped:#?}"
    );
    assert!(matches!(
        c.register_schema_for::<Retyped>().await,
        Err(Error::SchemaIncompatible { .. })
    ));
    // Without deny_unknown_fields the model is open: adding even an
    // optional field is not backward compatible (old data may carry it).
    assert_eq!(c.register_schema_for::<OpenV1>().await.unwrap().version, 1);
    let open = c.check_schema_for::<OpenV2>().await.unwrap();
    assert!(
        open.iter().any(|r| r.pointer == "/properties/currency"),
        "{open:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_is_checked_against_a_version_naming_every_failing_place() {
    let c = topic("schema_validate", "inv").await;
    let good = json!({"invoice": "inv-1", "cents": 420});
    assert!(matches!(
        c.validate_payload("inv", &good, None).await,
        Err(Error::SchemaNotFound { version: None, .. })
    ));
    c.register_schema("inv", &invoice(&[])).await.unwrap();
    let v2 = invoice(&[(
        "currency",
        json!({"type": "string", "enum": ["EUR", "USD"]}),
    )]);
    c.register_schema("inv", &v2).await.unwrap();
    assert_eq!(c.validate_payload("inv", &good, None).await.unwrap(), 2);
    let with_currency = json!({"invoice": "inv-1", "cents": 420, "currency": "EUR"});
    assert_eq!(
        c.validate_payload("inv", &with_currency, None)
            .await
            .unwrap(),
        2
    );
    // Pinned to version 1, whose model is closed: the currency is refused.
    let e = c
        .validate_payload("inv", &with_currency, Some(1))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::SchemaViolation { version: 1, .. }),
        "{e}"
    );
    // Three faults at once: every one named, with its place.
    let bad = json!({"cents": -5, "currency": "GBP", "note": "x"});
    let e = c.validate_payload("inv", &bad, None).await.unwrap_err();
    let Error::SchemaViolation {
        topic,
        version,
        errors,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((topic.as_str(), *version), ("inv", 2));
    for place in ["/cents: ", "/currency: ", "/: "] {
        assert!(
            errors.iter().any(|m| m.starts_with(place)),
            "{place} in {errors:#?}"
        );
    }
    assert!(
        errors.iter().any(|m| m.contains("invoice")),
        "the missing property is named: {errors:#?}"
    );
    assert!(e.is_invalid_input());
    assert!(matches!(
        c.validate_payload("inv", &good, Some(9)).await,
        Err(Error::SchemaNotFound {
            version: Some(9),
            ..
        })
    ));
}

/// Every key under the client's prefix, with what it holds (a stream's or
/// a sorted set's length, a hash's field count, or that it exists): what a
/// refused publish must leave as it was.
async fn footprint(c: &Client) -> BTreeMap<String, String> {
    let mut conn = c.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", c.keys().prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        let size: u64 = match kind.as_str() {
            "stream" => redis::cmd("XLEN").arg(&k).query_async(&mut conn).await,
            "zset" => redis::cmd("ZCARD").arg(&k).query_async(&mut conn).await,
            "hash" => redis::cmd("HLEN").arg(&k).query_async(&mut conn).await,
            _ => Ok(1),
        }
        .unwrap();
        out.insert(k, format!("{kind} {size}"));
    }
    out
}

async fn read_all(c: &Client, topic: &str) -> Vec<Message> {
    let mut r = c.reader(topic, StartAt::Earliest).await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = r.next().await.unwrap() {
        out.push(m);
    }
    out
}

fn record(v: &Value) -> Record {
    Record::encode(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_requires_schemas_takes_only_matching_payloads() {
    let c = support::client("schema_required").await;
    c.create_topic(
        &TopicSpec::new("inv", 2)
            .unwrap()
            .schema(SchemaPolicy::Required),
    )
    .await
    .unwrap();
    let good = json!({"invoice": "inv-1", "cents": 420});
    // Nothing registered yet: a required topic takes nothing.
    let e = c.publish_record("inv", record(&good)).await.unwrap_err();
    assert!(
        matches!(e, Error::SchemaNotFound { version: None, .. }),
        "{e}"
    );

    c.register_schema("inv", &invoice(&[])).await.unwrap();
    let landed = c
        .publish_record("inv", record(&good).header(HEADER_SCHEMA_VERSION, "99"))
        .await
        .unwrap();
    let before = footprint(&c).await;

    // Three faults: every one named; nothing written, whichever way the
    // publish would have gone (now, delayed, idempotent).
    let bad = json!({"cents": -5, "note": "x"});
    let refusals = [
        record(&bad),
        record(&bad).delay(Duration::from_secs(60)),
        record(&bad).dedup_id("bad-1"),
        record(&bad)
            .key("k")
            .dedup_id("bad-2")
            .delay(Duration::from_secs(1)),
    ];
    for r in refusals {
        let e = c.publish_record("inv", r).await.unwrap_err();
        let Error::SchemaViolation {
            version, errors, ..
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!(*version, 1);
        for place in ["/cents: ", "/: "] {
            assert!(
                errors.iter().any(|m| m.starts_with(place)),
                "{place} in {errors:#?}"
            );
        }
        assert!(errors.iter().any(|m| m.contains("invoice")), "{errors:#?}");
        assert!(errors.iter().any(|m| m.contains("note")), "{errors:#?}");
    }
    // A payload that is not one MessagePack value is refused too.
    let e = c
        .publish_record("inv", Record::raw(b"hello".to_vec()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::SchemaViolation { .. }), "{e}");
    assert_eq!(
        footprint(&c).await,
        before,
        "a refused publish writes nothing"
    );

    // What landed carries the version it matched, not the caller's header.
    let read = read_all(&c, "inv").await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].message_id, landed.message_id);
    assert_eq!(read[0].headers.get(HEADER_SCHEMA_VERSION).unwrap(), "1");

    // A batch: the bad record fails alone, the others land, stamped.
    let results = c
        .publish_batch(
            "inv",
            vec![record(&good), record(&bad), record(&good).key("k")],
        )
        .await
        .unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(Error::SchemaViolation { .. })));
    // The control: the footprint does see a publish that lands.
    assert_ne!(footprint(&c).await, before);
    // Checked without publishing: what a caller runs over a whole batch
    // before sending any of it.
    assert!(c.check_record("inv", &record(&good)).await.is_ok());
    assert!(matches!(
        c.check_record("inv", &record(&bad)).await,
        Err(Error::SchemaViolation { .. })
    ));

    // Version 2 adds an optional currency. The latest takes it; a producer
    // pinned to version 1 (closed model) may not send it.
    let v2 = invoice(&[("currency", json!({"type": "string"}))]);
    c.register_schema("inv", &v2).await.unwrap();
    let with_currency = json!({"invoice": "inv-2", "cents": 1, "currency": "EUR"});
    c.publish_record("inv", record(&with_currency))
        .await
        .unwrap();
    let e = c
        .publish_record("inv", record(&with_currency).schema_version(1))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::SchemaViolation { version: 1, .. }),
        "{e}"
    );
    c.publish_record("inv", record(&good).schema_version(1))
        .await
        .unwrap();
    let e = c
        .publish_record("inv", record(&good).schema_version(9))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::SchemaNotFound {
                version: Some(9),
                ..
            }
        ),
        "{e}"
    );
    let versions: Vec<String> = read_all(&c, "inv")
        .await
        .iter()
        .map(|m| m.headers[HEADER_SCHEMA_VERSION].clone())
        .collect();
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(sorted, ["1", "1", "1", "1", "2"], "{versions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_topic_checks_only_pinned_publishes_until_it_requires_them() {
    let c = topic("schema_optional", "inv").await;
    c.register_schema("inv", &invoice(&[])).await.unwrap();
    let bad = json!({"cents": "many"});
    // Optional (the default): not checked, and no version claimed, on the
    // first publish (which reads the topic's policy) and the next (which
    // goes by what was read).
    for _ in 0..2 {
        c.publish_record("inv", record(&bad).header(HEADER_SCHEMA_VERSION, "1"))
            .await
            .unwrap();
    }
    let read = read_all(&c, "inv").await;
    assert_eq!(read.len(), 2);
    assert!(
        read.iter()
            .all(|m| !m.headers.contains_key(HEADER_SCHEMA_VERSION)),
        "{read:?}"
    );
    // Pinned: checked.
    assert!(matches!(
        c.publish_record("inv", record(&bad).schema_version(1))
            .await,
        Err(Error::SchemaViolation { .. })
    ));

    // Another process's producer has read the topic as optional ...
    let other = Client::connect(c.config().clone()).await.unwrap();
    other.publish_record("inv", record(&bad)).await.unwrap();
    // ... the policy changes: this client follows at once, the other
    // within GATE_REFRESH.
    c.set_schema_policy("inv", SchemaPolicy::Required)
        .await
        .unwrap();
    assert!(matches!(
        c.publish_record("inv", record(&bad)).await,
        Err(Error::SchemaViolation { .. })
    ));
    let started = std::time::Instant::now();
    support::wait_until(GATE_REFRESH * 5, "the other client follows", || {
        let other = other.clone();
        let bad = bad.clone();
        async move {
            matches!(
                other.publish_record("inv", record(&bad)).await,
                Err(Error::SchemaViolation { .. })
            )
        }
    })
    .await;
    assert!(started.elapsed() <= GATE_REFRESH * 3);
    assert_eq!(
        c.describe_topic("inv").await.unwrap().schema,
        SchemaPolicy::Required
    );

    // Creating again says what differs; the same policy is the same topic.
    let spec = TopicSpec::new("inv", 2).unwrap();
    let e = c.create_topic(&spec).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("schema: existing required, requested optional"),
        "{e}"
    );
    assert!(matches!(
        c.create_topic(&spec.schema(SchemaPolicy::Required)).await,
        Ok(Created::Existing)
    ));
    assert!(matches!(
        c.set_schema_policy("nope", SchemaPolicy::Required).await,
        Err(Error::TopicNotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validating_worker_dead_letters_what_does_not_match() {
    let c = topic("schema_worker", "inv").await;
    // No schema: a validating worker does not start.
    let nothing = Worker::builder(&c, "g")
        .validate_schema(true)
        .handle_raw("inv", |_m, _ctx| async { Ok(()) })
        .start()
        .await;
    assert!(
        matches!(nothing, Err(Error::SchemaNotFound { .. })),
        "{:?}",
        nothing.err()
    );

    c.register_schema("inv", &invoice(&[])).await.unwrap();
    let good = json!({"invoice": "inv-1", "cents": 420});
    let bad = json!({"invoice": "inv-2", "cents": -1});
    // On an optional topic, unchecked publishes can carry anything.
    c.publish_record("inv", record(&good).schema_version(1))
        .await
        .unwrap();
    c.publish_record("inv", record(&bad)).await.unwrap();
    c.publish_record("inv", record(&good)).await.unwrap();

    for validate in [true, false] {
        let group = if validate { "checked" } else { "unchecked" };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let w = Worker::builder(&c, group)
            .validate_schema(validate)
            .retry(RetryPolicy::attempts(3).fixed(Duration::from_millis(10)))
            .handle_raw("inv", move |m, ctx| {
                let s = s.clone();
                async move {
                    let v: Value = m.decode().unwrap();
                    s.lock().unwrap().push((v, ctx.schema_version));
                    Ok(())
                }
            })
            .start()
            .await
            .unwrap();
        let want = if validate { 2 } else { 3 };
        support::wait_until(Duration::from_secs(10), "handled", || {
            let w = &w;
            async move { w.stats().acked + w.stats().dead_lettered == 3 }
        })
        .await;
        let stats = w.shutdown().await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), want, "{group}: {seen:?}");
        assert!(seen.contains(&(good.clone(), Some(1))), "{seen:?}");
        assert!(seen.contains(&(good.clone(), None)), "{seen:?}");
        if validate {
            // At once, not after three attempts: a permanent failure.
            assert_eq!(stats.dead_lettered, 1);
            let dead = c.dead_letters("inv", Some(group), 10).await.unwrap();
            assert_eq!(dead.len(), 1);
            assert_eq!(dead[0].attempts, 1);
            assert!(dead[0].error.contains("/cents: "), "{}", dead[0].error);
            assert_eq!(
                millrace::envelope::decode::<Value>(&dead[0].payload).unwrap(),
                bad
            );
        } else {
            assert!(seen.contains(&(bad.clone(), None)), "{seen:?}");
            assert_eq!(stats.dead_lettered, 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_mode_applies_to_subjects_without_their_own() {
    let c = topic("schema_default_mode", "a").await;
    c.create_topic(&TopicSpec::new("b", 1).unwrap())
        .await
        .unwrap();
    assert_eq!(c.default_schema_mode().await.unwrap(), CompatMode::Backward);
    c.set_default_schema_mode(CompatMode::Forward)
        .await
        .unwrap();
    c.set_schema_mode("b", CompatMode::Backward).await.unwrap();
    assert_eq!(c.schema_mode("a").await.unwrap(), CompatMode::Forward);
    assert_eq!(c.schema_mode("b").await.unwrap(), CompatMode::Backward);

    // A new optional property of a closed model: backward compatible, not
    // forward (readers of v1 refuse it).
    let v2 = invoice(&[("note", json!({"type": "string"}))]);
    for t in ["a", "b"] {
        c.register_schema(t, &invoice(&[])).await.unwrap();
    }
    let e = c.register_schema("a", &v2).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::SchemaIncompatible {
                mode: CompatMode::Forward,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(c.register_schema("b", &v2).await.unwrap().version, 2);
    // `b` dropping its own mode follows the default (FORWARD) too.
    c.clear_schema_mode("b").await.unwrap();
    assert_eq!(c.schema_mode("b").await.unwrap(), CompatMode::Forward);
    // The control: under the default set back, `a` takes it too.
    c.set_default_schema_mode(CompatMode::Backward)
        .await
        .unwrap();
    assert_eq!(c.register_schema("a", &v2).await.unwrap().version, 2);
}
