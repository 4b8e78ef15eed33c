//! Traces through an in-process OpenTelemetry exporter (feature `otel`):
//! a message published inside a span, handled, retried, dead-lettered,
//! replayed and handled again. Every process span links to the message's
//! creation (or, for a group that asks, is its child); every settle span
//! is a child of its attempt's process span; the attributes follow the
//! messaging conventions. Controls: a message whose `traceparent` is not
//! one links to nothing, and another message's spans do not link to this
//! one's creation.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use millrace::{HandlerError, Record, RetryPolicy, Selection, TopicSpec, TraceRelation, Worker};
use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// The exporter every span of this test binary goes to (one global
/// subscriber: workers run on the runtime's threads).
fn exporter() -> InMemorySpanExporter {
    static SET: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    SET.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("millrace-test"))
            .with_filter(
                Targets::new()
                    .with_target("millrace", tracing::Level::INFO)
                    .with_target("otel_test", tracing::Level::INFO),
            );
        tracing_subscriber::registry().with(layer).init();
        (exporter, provider)
    })
    .0
    .clone()
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Spans named `name` whose `messaging.message.id` (or, for create spans,
/// none) matches.
fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_followed_from_publish_through_retry_dead_letter_and_replay() {
    let spans = exporter();
    let prefix = support::unique_prefix("otel");
    let c = support::serve::client(&prefix).await;
    c.create_topic(&TopicSpec::new("invoices", 1).unwrap())
        .await
        .unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let retry = RetryPolicy::attempts(2)
        .fixed(Duration::from_millis(20))
        .jitter(0.0);
    let pdf = Worker::builder(&c, "pdf")
        .retry(retry)
        .handle_raw("invoices", move |_m, ctx| {
            let ok = f.load(Ordering::SeqCst);
            async move {
                // The handler runs inside its process span.
                assert!(millrace::current_traceparent().is_some());
                match (ok, ctx.attempt) {
                    (true, _) => Ok(()),
                    (false, 1) => Err(HandlerError::retry("renderer busy")),
                    (false, _) => Err(HandlerError::permanent("template missing")),
                }
            }
        })
        .start()
        .await
        .unwrap();
    let audit = Worker::builder(&c, "audit")
        .trace_relation(TraceRelation::Parent)
        .handle_raw("invoices", |_m, _c| async { Ok(()) })
        .start()
        .await
        .unwrap();

    // Published inside the caller's span: the creation is its child.
    let root = tracing::info_span!(target: "otel_test", "create invoice request");
    let receipt = c
        .publish_record(
            "invoices",
            Record::encode(&serde_json::json!({"invoice": "inv-1"}))
                .unwrap()
                .key("acme"),
        )
        .instrument(root)
        .await
        .unwrap();
    // The control: a message whose traceparent is not one.
    let stray = c
        .publish_record(
            "invoices",
            Record::encode(&2u32)
                .unwrap()
                .header("traceparent", "not-a-traceparent"),
        )
        .await
        .unwrap();
    support::wait_until(Duration::from_secs(20), "both dead-lettered by pdf", || {
        let c = c.clone();
        async move {
            c.dead_letters("invoices", Some("pdf"), 10)
                .await
                .unwrap()
                .len()
                == 2
        }
    })
    .await;
    fixed.store(true, Ordering::SeqCst);
    let replayed = c
        .replay_dead_letters(
            "invoices",
            &Selection::All,
            Some("pdf"),
            millrace::ReplayTo::Group,
        )
        .await
        .unwrap();
    assert_eq!(replayed, 2);
    support::wait_until(Duration::from_secs(20), "the replays handled", || {
        let c = c.clone();
        async move {
            let g = c.describe_group("invoices", "pdf").await.unwrap();
            g.lag == 0 && g.pending == 0
        }
    })
    .await;
    // The lag above counts the lanes, not the group's retry stream the
    // replays went to: wait for the replayed message's process span too.
    let replayed_id = receipt.message_id.to_string();
    support::wait_until(Duration::from_secs(20), "the replay's process span", || {
        let ended = spans
            .get_finished_spans()
            .unwrap_or_default()
            .iter()
            .filter(|s| {
                s.name == "process invoices"
                    && attr(s, "messaging.message.id").as_deref() == Some(replayed_id.as_str())
                    && attr(s, "messaging.consumer.group.name").as_deref() == Some("pdf")
            })
            .count();
        async move { ended >= 3 }
    })
    .await;
    pdf.shutdown().await.unwrap();
    audit.shutdown().await.unwrap();

    let all = spans.get_finished_spans().unwrap();
    let id = receipt.message_id.to_string();
    let of = |name: &str, message: &str| -> Vec<SpanData> {
        named(&all, name)
            .into_iter()
            .filter(|s| attr(s, "messaging.message.id").as_deref() == Some(message))
            .cloned()
            .collect()
    };

    // The creation: a producer span, child of the caller's, whose context
    // the message carries.
    let root = named(&all, "create invoice request")[0];
    let creates: Vec<&SpanData> = named(&all, "create invoices")
        .into_iter()
        .filter(|s| s.parent_span_id == root.span_context.span_id())
        .collect();
    assert_eq!(creates.len(), 1, "one creation under the caller's span");
    let create = creates[0];
    assert_eq!(create.span_kind, SpanKind::Producer);
    assert_eq!(create.span_context.trace_id(), root.span_context.trace_id());
    assert_eq!(
        attr(create, "messaging.system").as_deref(),
        Some("millrace")
    );
    assert_eq!(
        attr(create, "messaging.operation.type").as_deref(),
        Some("create")
    );
    assert_eq!(
        attr(create, "messaging.destination.name").as_deref(),
        Some("invoices")
    );
    assert_eq!(
        attr(create, "messaging.destination.partition.id").as_deref(),
        Some("0")
    );
    assert_eq!(
        attr(create, "messaging.millrace.message.key").as_deref(),
        Some("acme")
    );
    let status = c
        .message_status("invoices", &receipt.message_id)
        .await
        .unwrap()
        .unwrap();
    let carried = status.message.unwrap().headers["traceparent"].clone();
    assert_eq!(
        carried,
        format!(
            "00-{}-{}-01",
            create.span_context.trace_id(),
            create.span_context.span_id()
        )
    );

    // pdf: attempt 1 (retry), attempt 2 (dead letter), then after the
    // replay attempt 1 again (ack). Each process span starts its own trace
    // and links to the creation; each settle span is its child.
    let mut process = of("process invoices", &id);
    process.retain(|s| attr(s, "messaging.consumer.group.name").as_deref() == Some("pdf"));
    process.sort_by_key(|s| s.start_time);
    let attempts: Vec<String> = process
        .iter()
        .map(|s| attr(s, "messaging.millrace.attempt").unwrap())
        .collect();
    assert_eq!(attempts, ["1", "2", "1"], "retry, dead letter, replay");
    let settles = named(&all, "settle invoices");
    let mut outcomes = Vec::new();
    for p in &process {
        assert_eq!(p.span_kind, SpanKind::Consumer);
        assert_eq!(p.parent_span_id, SpanId::INVALID, "a trace of its own");
        assert_ne!(p.span_context.trace_id(), create.span_context.trace_id());
        let links: Vec<_> = p
            .links
            .iter()
            .map(|l| (l.span_context.trace_id(), l.span_context.span_id()))
            .collect();
        let creation = (
            create.span_context.trace_id(),
            create.span_context.span_id(),
        );
        assert_eq!(links, vec![creation], "linked to the creation");
        for (k, v) in [
            ("messaging.system", "millrace"),
            ("messaging.operation.type", "process"),
            ("messaging.destination.name", "invoices"),
            ("messaging.destination.partition.id", "0"),
            ("messaging.consumer.group.name", "pdf"),
            ("messaging.millrace.message.key", "acme"),
        ] {
            assert_eq!(attr(p, k).as_deref(), Some(v), "{k}");
        }
        let settle: Vec<&&SpanData> = settles
            .iter()
            .filter(|s| s.parent_span_id == p.span_context.span_id())
            .collect();
        assert_eq!(settle.len(), 1, "one settle per attempt");
        assert_eq!(settle[0].span_context.trace_id(), p.span_context.trace_id());
        outcomes.push(attr(settle[0], "messaging.millrace.outcome").unwrap());
    }
    assert_eq!(outcomes, ["retry", "dead_letter", "ack"]);

    // audit asked for parent-child: its process span is in the creation's
    // trace, under it, and links to nothing.
    let audit_process: Vec<SpanData> = of("process invoices", &id)
        .into_iter()
        .filter(|s| attr(s, "messaging.consumer.group.name").as_deref() == Some("audit"))
        .collect();
    assert_eq!(audit_process.len(), 1);
    let a = &audit_process[0];
    assert_eq!(a.span_context.trace_id(), create.span_context.trace_id());
    assert_eq!(a.parent_span_id, create.span_context.span_id());
    assert!(a.links.is_empty());

    // The controls: the stray message's process spans link to nothing, so
    // a missing link would have been seen above.
    let stray_process = of("process invoices", &stray.message_id.to_string());
    assert_eq!(stray_process.len(), 4, "pdf 1, 2, replay; audit");
    for s in &stray_process {
        assert!(s.links.is_empty(), "{s:?}");
        assert_ne!(s.span_context.trace_id(), create.span_context.trace_id());
    }
    // Receives were traced with their batch sizes.
    let receive = named(&all, "receive invoices");
    assert!(!receive.is_empty());
    assert!(
        receive
            .iter()
            .all(|s| attr(s, "messaging.batch.message_count").is_some())
    );
}
