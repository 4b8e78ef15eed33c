//! Spans named and attributed by the OpenTelemetry messaging semantic
//! conventions, made through `tracing` so the application chooses its
//! exporter (with `tracing-opentelemetry`, or none at all), and the W3C
//! trace context a message carries in its `traceparent` header.
//!
//! Every span is at level `INFO` under the target `millrace::telemetry`:
//!
//! | span (`otel.name`) | kind | when |
//! |---|---|---|
//! | `create {topic}` | producer | a record is prepared for publishing (its partition chosen) |
//! | `receive {topic}` | consumer | a worker hands a batch it read to its handlers |
//! | `process {topic}` | consumer | one attempt of a handler |
//! | `settle {topic}` | consumer | the attempt's outcome is applied (`ack`, `retry`, `dead_letter`, `cancelled`): a child of the process span |
//!
//! Attributes: `messaging.system` (`millrace`), `messaging.operation.type`
//! and `.name`, `messaging.destination.name` (the topic),
//! `messaging.destination.partition.id`, `messaging.consumer.group.name`,
//! `messaging.message.id`, `messaging.batch.message_count` (receive), and
//! millrace's own `messaging.millrace.message.key`,
//! `messaging.millrace.attempt`, `messaging.millrace.member` and
//! `messaging.millrace.outcome`.
//!
//! With the feature `otel`, the creation span's context is written into
//! the message's `traceparent` (and `tracestate`) header unless the record
//! carries one already, and a handler's process span **links** to the
//! context it finds there (the conventions' advice for messaging: the
//! handler's work is its own trace) or, with
//! [`TraceRelation::Parent`], is its child. Retries, dead letters and
//! replays keep the message's headers, so every attempt, before and after a
//! replay, links to the same creation. Without the feature the spans are
//! still made (for `tracing` subscribers) and a `traceparent` header set by
//! the caller travels unchanged.

use tracing::Span;

/// The target of every span made here.
pub const TARGET: &str = "millrace::telemetry";
/// `messaging.system`.
pub const SYSTEM: &str = "millrace";
/// The W3C trace context header.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// The W3C trace state header, carried beside `traceparent`.
pub const HEADER_TRACESTATE: &str = "tracestate";

/// How a handler's process span relates to the context the message was
/// created in (see [`WorkerBuilder::trace_relation`](crate::WorkerBuilder::trace_relation)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceRelation {
    /// The process span starts its own trace and links to the creation
    /// (the default; what the conventions recommend for messaging).
    #[default]
    Link,
    /// The process span is a child of the creation: one trace from the
    /// publisher through the handler (for single messages, request-reply).
    Parent,
}

/// The span of a record's creation.
pub(crate) fn create_span(topic: &str, partition: u32, key: Option<&str>) -> Span {
    tracing::info_span!(target: TARGET, "create",
        otel.name = %format_args!("create {topic}"),
        otel.kind = "producer",
        messaging.system = SYSTEM,
        messaging.operation.type = "create",
        messaging.operation.name = "create",
        messaging.destination.name = topic,
        messaging.destination.partition.id = %partition,
        messaging.millrace.message.key = key,
    )
}

/// The span of one batch a group's member read (from one or more of its
/// partitions) and handed to its handlers.
pub(crate) fn receive_span(topic: &str, group: &str, member: &str, count: usize) -> Span {
    tracing::info_span!(target: TARGET, "receive",
        otel.name = %format_args!("receive {topic}"),
        otel.kind = "consumer",
        messaging.system = SYSTEM,
        messaging.operation.type = "receive",
        messaging.operation.name = "receive",
        messaging.destination.name = topic,
        messaging.consumer.group.name = group,
        messaging.millrace.member = member,
        messaging.batch.message_count = count,
    )
}

/// What a process span names.
pub(crate) struct Processing<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub member: &'a str,
    pub partition: u32,
    pub message_id: &'a dyn std::fmt::Display,
    pub key: Option<&'a str>,
    pub attempt: u32,
}

/// The span of one attempt of a handler.
pub(crate) fn process_span(p: &Processing<'_>) -> Span {
    tracing::info_span!(target: TARGET, "process",
        otel.name = %format_args!("process {}", p.topic),
        otel.kind = "consumer",
        messaging.system = SYSTEM,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = p.topic,
        messaging.destination.partition.id = %p.partition,
        messaging.consumer.group.name = p.group,
        messaging.message.id = %p.message_id,
        messaging.millrace.message.key = p.key,
        messaging.millrace.attempt = p.attempt,
        messaging.millrace.member = p.member,
    )
}

/// The span of applying an attempt's outcome, a child of its process span.
pub(crate) fn settle_span(process: &Span, topic: &str, outcome: &'static str) -> Span {
    tracing::info_span!(target: TARGET, parent: process, "settle",
        otel.name = %format_args!("settle {topic}"),
        otel.kind = "consumer",
        messaging.system = SYSTEM,
        messaging.operation.type = "settle",
        messaging.operation.name = outcome,
        messaging.destination.name = topic,
        messaging.millrace.outcome = outcome,
    )
}

/// A W3C `traceparent`: version 00, trace id, parent span id, flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    pub trace_id: u128,
    /// 8 bytes, not all zero.
    pub span_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Reads a `traceparent` header value; `None` unless it is a valid
    /// version-00 value (lower-case hex, ids not all zero).
    pub fn parse(s: &str) -> Option<TraceParent> {
        let mut parts = s.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |p: &str, n: usize| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if parts.next().is_some()
            || version != "00"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        let tp = TraceParent {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(span, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (tp.trace_id != 0 && tp.span_id != 0).then_some(tp)
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{HEADER_TRACEPARENT, HEADER_TRACESTATE, TraceParent, TraceRelation};
    use crate::envelope::Headers;

    /// The span's context as a `traceparent` and its trace state, if it
    /// has a valid one (an OpenTelemetry layer is installed and the span
    /// is enabled).
    pub(crate) fn context_of(span: &Span) -> Option<(TraceParent, String)> {
        if span.is_disabled() {
            return None;
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| {
            (
                TraceParent {
                    trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
                    span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
                    flags: sc.trace_flags().to_u8(),
                },
                sc.trace_state().header(),
            )
        })
    }

    /// Writes the creation span's context into the headers, unless the
    /// caller set a `traceparent` of its own.
    pub(crate) fn inject(span: &Span, headers: &mut Headers) {
        // Disabled (no layer wants it): the common case, one check.
        if span.is_disabled() || headers.contains_key(HEADER_TRACEPARENT) {
            return;
        }
        if let Some((tp, state)) = context_of(span) {
            headers.insert(HEADER_TRACEPARENT.into(), tp.to_string());
            if !state.is_empty() {
                headers.insert(HEADER_TRACESTATE.into(), state);
            }
        }
    }

    /// Links the process span to (or makes it a child of) the context in
    /// the message's headers; nothing when there is none or it is invalid.
    pub(crate) fn relate(span: &Span, headers: &Headers, relation: TraceRelation) {
        if span.is_disabled() {
            return;
        }
        let Some(tp) = headers
            .get(HEADER_TRACEPARENT)
            .and_then(|v| TraceParent::parse(v))
        else {
            return;
        };
        let state = headers
            .get(HEADER_TRACESTATE)
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let sc = SpanContext::new(
            TraceId::from_bytes(tp.trace_id.to_be_bytes()),
            SpanId::from_bytes(tp.span_id.to_be_bytes()),
            TraceFlags::new(tp.flags),
            true,
            state,
        );
        match relation {
            TraceRelation::Link => span.add_link(sc),
            TraceRelation::Parent => {
                let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
            }
        }
    }
}

#[cfg(feature = "otel")]
pub(crate) use otel::{inject, relate};

/// Without the feature `otel`: the caller's headers travel unchanged.
#[cfg(not(feature = "otel"))]
pub(crate) fn inject(_span: &Span, _headers: &mut crate::envelope::Headers) {}

/// Without the feature `otel`: nothing to relate to.
#[cfg(not(feature = "otel"))]
pub(crate) fn relate(_span: &Span, _headers: &crate::envelope::Headers, _relation: TraceRelation) {}

/// The `traceparent` of the current span (inside a handler: its process
/// span), to hand to work the handler starts (an exec handler's
/// `TRACEPARENT`, an http handler's `traceparent` header). `None` without
/// the feature `otel` or without an OpenTelemetry layer.
pub fn current_traceparent() -> Option<String> {
    #[cfg(feature = "otel")]
    {
        otel::context_of(&Span::current()).map(|(tp, _)| tp.to_string())
    }
    #[cfg(not(feature = "otel"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_refuses_what_is_not_one() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(s).unwrap();
        assert_eq!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tp.span_id, 0x00f067aa0ba902b7);
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_string(), s);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "abc",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
