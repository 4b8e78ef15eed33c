//! Bad input never panics: property tests over the decoders of what Redis
//! hands back (stream entries, headers, delayed members, payloads, dead
//! letters) and the parsers of what a user types (`publish --jsonl` lines,
//! names, durations, rate limits, stream ids, cron expressions). Each
//! returns a typed error for bad input; what is written decodes to itself.
//!
//! No Redis needed. The fuzz targets in `fuzz/` explore the same ground for
//! much longer (see docs/fuzzing.md); the inputs they found are pinned in
//! `regressions` at the end.

use std::str::FromStr;

use millrace::RateLimit;
use millrace::Timetable;
use millrace::duration::{format_duration, parse_duration};
use millrace::envelope::{self, Headers, validate_key};
use millrace::fuzz_api::{self, Value};
use millrace::keys::{validate_dedup_id, validate_name, validate_prefix, validate_topic};
use millrace::{Message, StreamId};
use proptest::prelude::*;

#[path = "../src/bin/millrace/jsonl.rs"]
#[allow(dead_code)]
mod jsonl;

/// Fails unless `r` is `Ok` or one of the library's typed input errors.
fn typed<T>(r: millrace::Result<T>) -> Result<Option<T>, TestCaseError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            prop_assert!(fuzz_api::is_input_error(&e), "untyped error: {e:?}");
            prop_assert!(!e.to_string().is_empty());
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------- strategies

/// Text that looks like a stream id, or almost.
fn id_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("{a}-{b}").into_bytes()),
        any::<u64>().prop_map(|a| a.to_string().into_bytes()),
        (any::<i64>(), any::<i64>()).prop_map(|(a, b)| format!("{a}-{b}").into_bytes()),
        any::<u128>().prop_map(|a| format!("{a}-0").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..24),
    ]
}

/// Bytes a field may hold: random, MessagePack headers, MessagePack of the
/// wrong shape.
fn field_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        headers().prop_map(|h| envelope::encode_headers(&h).unwrap()),
        json().prop_map(|j| envelope::encode(&j).unwrap()),
        Just(Vec::new()),
    ]
}

fn field_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec!["k", "h", "d", "g", "p", "l", "o", "a", "e", "t", "x"])
            .prop_map(|f| f.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..4),
    ]
}

/// Any RESP value of the kinds redis-rs produces, biased towards the
/// shapes of stream replies (`[id, [field, value, ...]]`).
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        Just(Value::Okay),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        ".{0,8}".prop_map(Value::SimpleString),
        id_text().prop_map(Value::BulkString),
        field_name().prop_map(Value::BulkString),
        field_bytes().prop_map(Value::BulkString),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Set),
            prop::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Value::Map),
            (
                id_text(),
                prop::collection::vec((field_name(), inner), 0..6)
            )
                .prop_map(|(id, fields)| {
                    Value::Array(vec![
                        Value::BulkString(id),
                        Value::Array(
                            fields
                                .into_iter()
                                .flat_map(|(f, v)| [Value::BulkString(f), v])
                                .collect(),
                        ),
                    ])
                }),
        ]
    })
}

/// One stream entry, well formed or nearly.
fn entry() -> impl Strategy<Value = Value> {
    let fields = prop::collection::vec((field_name(), field_bytes()), 0..6);
    prop_oneof![
        (id_text(), fields, any::<bool>()).prop_map(|(id, fields, resp3)| {
            let fields = if resp3 {
                Value::Map(
                    fields
                        .into_iter()
                        .map(|(f, v)| (Value::BulkString(f), Value::BulkString(v)))
                        .collect(),
                )
            } else {
                Value::Array(
                    fields
                        .into_iter()
                        .flat_map(|(f, v)| [Value::BulkString(f), Value::BulkString(v)])
                        .collect(),
                )
            };
            Value::Array(vec![Value::BulkString(id), fields])
        }),
        value(),
    ]
}

fn headers() -> impl Strategy<Value = Headers> {
    prop::collection::btree_map(".{0,12}", ".{0,24}", 0..4)
}

/// Any JSON value (finite numbers, as JSON has).
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as J;
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::from),
        any::<u64>().prop_map(J::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(J::from),
        ".{0,16}".prop_map(J::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(J::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| J::Object(m.into_iter().collect())),
        ]
    })
}

/// A value RESP2 can carry (what the blocking-read connection decodes).
fn resp2_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        Just(Value::Okay),
        any::<i64>().prop_map(Value::Int),
        "[a-zA-Z0-9 ]{0,8}"
            .prop_filter("+OK is Value::Okay", |s| s != "OK")
            .prop_map(Value::SimpleString),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::BulkString),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop::collection::vec(inner, 0..8).prop_map(Value::Array)
    })
}

/// RESP2 bytes of `v`, as Redis writes them.
fn resp2(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Okay => out.extend_from_slice(b"+OK\r\n"),
        Value::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        Value::SimpleString(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Value::BulkString(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for i in items {
                resp2(i, out);
            }
        }
        other => unreachable!("not generated: {other:?}"),
    }
}

// ------------------------------------------------------------------ decoders

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_give_typed_errors_from_the_byte_decoders(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        typed(envelope::decode_headers(&bytes))?;
        typed(envelope::decode_delayed(&bytes))?;
        typed(envelope::decode::<serde_json::Value>(&bytes))?;
        typed(envelope::decode::<Headers>(&bytes))?;
    }

    #[test]
    fn arbitrary_messagepack_gives_typed_errors_from_the_byte_decoders(
        j in json(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = envelope::encode(&j).unwrap();
        typed(envelope::decode_headers(&bytes))?;
        typed(envelope::decode_delayed(&bytes))?;
        // Any strict prefix is refused: MessagePack values are self-delimiting.
        let short = &bytes[..cut.index(bytes.len())];
        prop_assert!(envelope::decode::<serde_json::Value>(short).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_resp_decoder(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        if let Ok(Some((v, used))) = fuzz_api::decode_resp(&bytes) {
            prop_assert!(used <= bytes.len());
            if let Ok(theirs) = redis::parse_redis_value(&bytes[..used]) {
                prop_assert_eq!(v, theirs);
            }
        }
    }

    #[test]
    fn resp_replies_decode_like_redis_rs_and_not_before_their_last_byte(
        v in resp2_value(),
        next in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = Vec::new();
        resp2(&v, &mut bytes);
        let whole = bytes.len();
        for cut in 0..whole {
            prop_assert_eq!(fuzz_api::decode_resp(&bytes[..cut]), Ok(None));
        }
        // What follows the reply (the next one, part of it) is left alone.
        bytes.extend_from_slice(&next);
        let (ours, used) = fuzz_api::decode_resp(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, whole);
        prop_assert_eq!(&ours, &redis::parse_redis_value(&bytes[..whole]).unwrap());
        prop_assert_eq!(ours, v);
    }

    #[test]
    fn arbitrary_replies_give_typed_errors_from_the_entry_decoders(v in value()) {
        typed(fuzz_api::parse_entry("t", 0, 0, v.clone()))?;
        typed(fuzz_api::parse_entries("t", 0, 0, v.clone()))?;
        typed(fuzz_api::parse_dead_letters("t", 0, v.clone()))?;
        if let Some(streams) = typed(fuzz_api::xread_streams(v))? {
            for (_, entries) in streams {
                typed(fuzz_api::parse_entries("t", 0, 0, entries))?;
            }
        }
    }

    #[test]
    fn arbitrary_entries_give_typed_errors(entries in prop::collection::vec(entry(), 0..6)) {
        for e in &entries {
            if let Some(m) = typed(fuzz_api::parse_entry("t", 1, 2, e.clone()))? {
                prop_assert!(m.key.as_ref().is_none_or(|k| !k.is_empty()));
            }
        }
        typed(fuzz_api::parse_entries("t", 1, 2, Value::Array(entries.clone())))?;
        typed(fuzz_api::parse_dead_letters("t", 1, Value::Array(entries)))?;
    }

    #[test]
    fn written_entries_decode_to_what_was_written(
        key in prop::option::of(".{1,40}"),
        headers in headers(),
        payload in prop::collection::vec(any::<u8>(), 0..128),
        (ms, seq, lane, nonce) in (any::<u64>(), any::<u64>(), any::<u8>(), any::<u64>()),
        resp3 in any::<bool>(),
    ) {
        let hb = envelope::encode_headers(&headers).unwrap();
        let fields = fuzz_api::entry_fields(key.as_deref(), &hb, &payload);
        let fields = if resp3 {
            Value::Map(
                fields
                    .chunks(2)
                    .map(|p| (Value::BulkString(p[0].to_vec()), Value::BulkString(p[1].to_vec())))
                    .collect(),
            )
        } else {
            Value::Array(fields.iter().map(|f| Value::BulkString(f.to_vec())).collect())
        };
        let v = Value::Array(vec![Value::BulkString(format!("{ms}-{seq}").into_bytes()), fields]);
        let m = fuzz_api::parse_entry("t", 3, lane, v).unwrap();
        prop_assert_eq!(
            m,
            {
let mut v = Message::default();
v.message_id = millrace::MessageId::new(3, lane, &format!("{ms}-{seq}")).unwrap();
v.id = StreamId { ms, seq };
v.topic = "t".into();
v.partition = 3;
v.lane = lane;
v.key = key.clone();
v.headers = headers.clone();
v.payload = payload.clone().into();
v
}
        );

        let member = fuzz_api::encode_delayed(nonce, lane, key.as_deref(), &hb, &payload);
        let d = envelope::decode_delayed(&member).unwrap();
        prop_assert_eq!(d.lane, lane);
        prop_assert_eq!(&d.key, &key);
        prop_assert_eq!(&d.headers, &headers);
        prop_assert_eq!(&d.payload, &payload);
        // Every strict prefix of a member is refused, not misread.
        for cut in 0..member.len() {
            prop_assert!(envelope::decode_delayed(&member[..cut]).is_err());
        }
    }

    #[test]
    fn payloads_and_headers_round_trip(j in json(), headers in headers()) {
        let back: serde_json::Value = envelope::decode(&envelope::encode(&j).unwrap()).unwrap();
        prop_assert_eq!(back, j);
        let hb = envelope::encode_headers(&headers).unwrap();
        prop_assert_eq!(envelope::decode_headers(&hb).unwrap(), headers);
    }
}

// --------------------------------------------------------------- CLI input

/// A `--jsonl` line with exactly one bad part, and words the error must
/// contain to name it.
fn bad_line() -> impl Strategy<Value = (String, String)> {
    let quote = |s: &str| serde_json::to_string(s).unwrap();
    prop_oneof![
        "[a-z]{1,8}"
            .prop_filter("unknown", |f| {
                !["data", "key", "headers", "delay", "priority", "dedup_id"].contains(&f.as_str())
            })
            .prop_map(move |f| (
                format!(r#"{{"data": 1, {}: 2}}"#, quote(&f)),
                format!("unknown field {f:?}")
            )),
        prop::sample::select(vec!["key", "delay", "dedup_id"])
            .prop_flat_map(|f| {
                (
                    Just(f),
                    json().prop_filter("not a string", |j| !j.is_string() && !j.is_null()),
                )
            })
            .prop_map(|(f, j)| (
                format!(r#"{{"data": 1, "{f}": {j}}}"#),
                format!("\"{f}\" must be a string")
            )),
        json()
            .prop_filter("not an object", |j| !j.is_object() && !j.is_null())
            .prop_map(|j| (
                format!(r#"{{"data": 1, "headers": {j}}}"#),
                "\"headers\" must be an object of strings".to_string()
            )),
        (
            ".{0,6}",
            json().prop_filter("not a string", |j| !j.is_string())
        )
            .prop_map(move |(name, j)| (
                format!(r#"{{"data": 1, "headers": {{{}: {j}}}}}"#, quote(&name)),
                format!("header {name:?} must be a string")
            )),
        (256i64..).prop_map(|p| (
            format!(r#"{{"data": 1, "priority": {p}}}"#),
            format!("priority {p} is out of range")
        )),
        (i64::MIN..0).prop_map(|p| (
            format!(r#"{{"data": 1, "priority": {p}}}"#),
            format!("priority {p} is out of range")
        )),
        "[a-z ]{1,8}".prop_map(move |d| (
            format!(r#"{{"data": 1, "delay": {}}}"#, quote(&d)),
            "invalid duration".to_string()
        )),
        (1025usize..1500).prop_map(|n| (
            format!(r#"{{"data": 1, "key": "{}"}}"#, "k".repeat(n)),
            format!("keys must be 1 to 1024 bytes (got {n})")
        )),
        json()
            .prop_filter("not an object", |j| !j.is_object())
            .prop_map(|j| (j.to_string(), "expected a JSON object".to_string())),
        headers().prop_map(|h| (
            serde_json::json!({ "key": "k", "headers": h }).to_string(),
            "missing field \"data\"".to_string()
        )),
        ".{0,40}"
            .prop_filter("not JSON", |s| serde_json::from_str::<serde_json::Value>(s)
                .is_err())
            .prop_map(|s| (s, "invalid JSON".to_string())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics_the_cli_parsers(s in "\\PC{0,80}") {
        if let Err(e) = jsonl::parse_line(&s) {
            prop_assert!(!e.is_empty());
        }
        if let Ok(v) = jsonl::parse_data(&s) {
            let back: serde_json::Value =
                envelope::decode(&envelope::encode(&v).unwrap()).unwrap();
            prop_assert_eq!(back, v);
        }
        if let Ok((name, value)) = jsonl::parse_header(&s) {
            prop_assert_eq!(format!("{name}={value}"), s.clone());
        }
        let _ = jsonl::parse_at(&s);
    }

    #[test]
    fn good_lines_carry_their_data_as_the_payload(
        data in json(),
        key in prop::option::of("[a-z0-9-]{1,20}"),
        headers in headers(),
        priority in prop::option::of(0u8..16),
    ) {
        let mut line = serde_json::json!({ "data": data, "headers": headers });
        if let Some(k) = &key {
            line["key"] = k.clone().into();
        }
        if let Some(p) = priority {
            line["priority"] = p.into();
        }
        let record = jsonl::parse_line(&line.to_string()).unwrap();
        let back: serde_json::Value = envelope::decode(record.payload()).unwrap();
        prop_assert_eq!(back, data);
    }

    #[test]
    fn bad_lines_name_the_problem((line, expected) in bad_line()) {
        let e = jsonl::parse_line(&line).err();
        prop_assert!(
            e.as_deref().is_some_and(|e| e.contains(&expected)),
            "line {line:?}: expected an error containing {expected:?}, got {e:?}"
        );
    }

    #[test]
    fn arbitrary_text_gives_typed_errors_from_the_name_parsers(s in "\\PC{0,40}|[0-9a-z./*, |-]{0,30}") {
        typed(validate_name("group", &s))?;
        typed(validate_topic(&s))?;
        typed(validate_prefix(&s))?;
        typed(validate_key(&s))?;
        typed(validate_dedup_id(&s))?;
        if let Some(d) = typed(parse_duration(&s))? {
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        typed(RateLimit::from_str(&s))?;
        if let Some(id) = typed(StreamId::parse(&s))? {
            prop_assert_eq!(StreamId::parse(&id.to_string()).unwrap(), id);
        }
        typed(fuzz_api::parse_dead_letter_id(&s))?;
        let (expr, tz) = match s.split_once('|') {
            Some((e, z)) => (e, Some(z)),
            None => (s.as_str(), None),
        };
        if let Some(t) = typed(Timetable::parse(expr, tz))? {
            let _ = t.next_after(0);
        }
        typed(fuzz_api::decode_schedule_spec("s", &s))?;
    }

    #[test]
    fn durations_and_stream_ids_print_back_to_themselves(ms in any::<u64>(), seq in any::<u64>()) {
        let d = std::time::Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        let id = StreamId { ms, seq };
        prop_assert_eq!(StreamId::parse(&id.to_string()).unwrap(), id);
    }
}

// --------------------------------------------------------------- regressions

/// Inputs the property tests and fuzz targets found, pinned.
mod regressions {
    use super::*;

    /// serde_json's default float parser can be one ulp off; millrace turns
    /// on `float_roundtrip` so a published number is stored exactly.
    #[test]
    fn a_float_in_a_jsonl_line_is_published_exactly() {
        let x = -2.2345374451967186e134_f64;
        let record = jsonl::parse_line(r#"{"data": [-2.2345374451967186e+134]}"#).unwrap();
        let back: serde_json::Value = envelope::decode(record.payload()).unwrap();
        assert_eq!(back[0].as_f64().map(f64::to_bits), Some(x.to_bits()));
        let data = jsonl::parse_data("-2.2345374451967186e+134").unwrap();
        assert_eq!(data.as_f64().map(f64::to_bits), Some(x.to_bits()));
    }

    /// Runs `f` on a thread with the stack of a tokio worker (2 MiB), where
    /// handlers decode payloads.
    fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    /// 1000 nested arrays (1 KB) overflowed a worker's stack while decoding
    /// to JSON, aborting the process; now anything deeper than JSON allows
    /// is a decode error.
    #[test]
    fn deeply_nested_payloads_are_a_decode_error_not_a_stack_overflow() {
        for depth in [envelope::MAX_NESTING + 1, 1000, 100_000] {
            let mut payload = vec![0x91u8; depth];
            payload.push(0xc0);
            let e = on_worker_stack(move || {
                envelope::decode::<serde_json::Value>(&payload)
                    .unwrap_err()
                    .to_string()
            });
            assert_eq!(
                e,
                "cannot decode message: nested deeper than 128 levels of arrays and maps"
            );
        }
        let mut headers = vec![0x81, 0xa1, b'a'];
        headers.extend([0x91u8; 1000]);
        assert!(envelope::decode_headers(&headers).is_err());
    }

    /// Whatever the CLI accepts as JSON still decodes: the limits match.
    #[test]
    fn the_deepest_json_the_cli_accepts_round_trips() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let deepest = (1..)
            .take_while(|&n| jsonl::parse_data(&nested(n)).is_ok())
            .last()
            .unwrap();
        assert!(deepest <= envelope::MAX_NESTING, "{deepest}");
        let line = format!(r#"{{"data": {}}}"#, nested(deepest - 1));
        let record = jsonl::parse_line(&line).unwrap();
        let payload = record.payload().to_vec();
        let back = on_worker_stack(move || envelope::decode::<serde_json::Value>(&payload));
        assert!(back.is_ok());
        let data = jsonl::parse_data(&nested(deepest)).unwrap();
        let payload = envelope::encode(&data).unwrap();
        assert_eq!(
            envelope::decode::<serde_json::Value>(&payload).unwrap(),
            data
        );
        // And the limit itself is reachable.
        let mut payload = vec![0x91u8; envelope::MAX_NESTING];
        payload.push(0xc0);
        assert!(on_worker_stack(move || envelope::decode::<serde_json::Value>(&payload)).is_ok());
    }
}
