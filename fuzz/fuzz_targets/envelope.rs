//! Fuzzes the stream-entry decoder and everything else that reads bytes
//! Redis hands back: whole XRANGE / XREAD / XREADGROUP replies (RESP2
//! arrays and RESP3 maps, right and wrong shapes), dead-letter entries, the
//! `h` headers field, delayed-set members and payloads decoded as JSON.
//!
//! Every decoder must return `Ok` or a typed input error (`Decode`,
//! `InvalidArgument`...), never panic; entries built the way the producer
//! writes them must decode to what was written.

#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use millrace::envelope::{self, Headers, Message};
use millrace::fuzz_api::{self, Value};

/// Deepest nesting the generator builds. The decoders do not recurse into
/// replies beyond entry level, so deeper values add nothing but the risk
/// that the harness itself runs out of stack.
const MAX_DEPTH: u32 = 6;

/// Field names the decoders know, and a few they do not.
const FIELDS: &[&[u8]] = &[
    b"k", b"h", b"d", b"g", b"p", b"l", b"o", b"a", b"e", b"t", b"x", b"", b"kk", b"D",
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured) -> Result<()> {
    match u.choose_index(6)? {
        0 => {
            let v = entry(u, 0)?;
            check(fuzz_api::parse_entry("t", 0, 0, v));
        }
        1 => {
            let v = reply(u)?;
            check(fuzz_api::parse_entries("t", 1, 2, v.clone()));
            check(fuzz_api::parse_dead_letters("t", 3, v));
        }
        2 => {
            // An XREAD / XREADGROUP reply: streams, then their entries.
            let v = xread_reply(u)?;
            if let Some(streams) = check(fuzz_api::xread_streams(v)) {
                for (_, entries) in streams {
                    check(fuzz_api::parse_entries("t", 0, 0, entries));
                }
            }
        }
        3 => {
            // Raw bytes through every byte decoder.
            let bytes = blob(u)?;
            bytes_decoders(&bytes);
        }
        4 => {
            // Plausible MessagePack (with lying lengths and truncations).
            let mut bytes = Vec::new();
            msgpack(u, 0, &mut bytes)?;
            bytes_decoders(&bytes);
        }
        _ => round_trip(u)?,
    }
    Ok(())
}

/// Panics unless `r` is `Ok` or a typed input error.
fn check<T>(r: millrace::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(fuzz_api::is_input_error(&e), "untyped error: {e:?}");
            // Error messages embed the input; rendering them must not panic.
            let _ = e.to_string();
            None
        }
    }
}

fn bytes_decoders(bytes: &[u8]) {
    check(envelope::decode_headers(bytes));
    check(envelope::decode_delayed(bytes));
    check(envelope::decode::<serde_json::Value>(bytes));
    check(envelope::decode::<Headers>(bytes));
    let msg = {
        let mut v = Message::default();
        v.id = millrace::StreamId { ms: 1, seq: 0 };
        v.topic = "t".into();
        v.partition = 0;
        v.lane = 0;
        v.key = None;
        v.headers = Headers::new();
        v.payload = bytes.to_vec().into();
        v
    };
    if let Some(json) = check(msg.decode::<serde_json::Value>()) {
        // What decoded re-encodes (the worker's exec handler does this).
        let _ = serde_json::to_vec(&json);
    }
}

/// Entries written the way the producer writes them decode to what was
/// written; so do delayed members.
fn round_trip(u: &mut Unstructured) -> Result<()> {
    let key: Option<String> = u.arbitrary()?;
    let key = key.filter(|k| !k.is_empty());
    let headers: Headers = u.arbitrary()?;
    let payload = blob(u)?;
    let lane: u8 = u.arbitrary()?;
    let ms: u64 = u.arbitrary()?;
    let seq: u64 = u.arbitrary()?;
    let hb = envelope::encode_headers(&headers).expect("headers always encode");
    let fields = fuzz_api::entry_fields(key.as_deref(), &hb, &payload);
    let v = Value::Array(vec![
        Value::BulkString(format!("{ms}-{seq}").into_bytes()),
        Value::Array(
            fields
                .iter()
                .map(|f| Value::BulkString(f.to_vec()))
                .collect(),
        ),
    ]);
    let m = fuzz_api::parse_entry("t", 0, lane, v).expect("a written entry decodes");
    assert_eq!(m.id, millrace::StreamId { ms, seq });
    assert_eq!(m.key, key);
    assert_eq!(m.headers, headers);
    assert_eq!(&m.payload[..], &payload[..]);

    let nonce: u64 = u.arbitrary()?;
    let member = fuzz_api::encode_delayed(nonce, lane, key.as_deref(), &hb, &payload);
    let d = envelope::decode_delayed(&member).expect("a written delayed member decodes");
    assert_eq!(d.lane, lane);
    assert_eq!(d.key, key);
    assert_eq!(d.headers, headers);
    assert_eq!(d.payload, payload);

    // Any prefix of a member is refused, not misread.
    let cut = u.choose_index(member.len())?;
    check(envelope::decode_delayed(&member[..cut]));
    Ok(())
}

/// Arbitrary bytes, sometimes long.
fn blob(u: &mut Unstructured) -> Result<Vec<u8>> {
    let v: Vec<u8> = u.arbitrary()?;
    Ok(v)
}

/// A stream id as text: mostly well formed, often not.
fn id_text(u: &mut Unstructured) -> Result<Vec<u8>> {
    Ok(match u.choose_index(8)? {
        0 => format!("{}-{}", u.arbitrary::<u64>()?, u.arbitrary::<u64>()?).into_bytes(),
        1 => u.arbitrary::<u64>()?.to_string().into_bytes(),
        2 => format!("{}-{}", u.arbitrary::<i64>()?, u.arbitrary::<i64>()?).into_bytes(),
        3 => format!("{}-{}", u.arbitrary::<u128>()?, u.arbitrary::<u8>()?).into_bytes(),
        4 => b"18446744073709551616-0".to_vec(),
        5 => b"-".to_vec(),
        6 => format!("{}--{}", u.arbitrary::<u8>()?, u.arbitrary::<u8>()?).into_bytes(),
        _ => blob(u)?,
    })
}

/// A field value: bytes of every kind the fields can hold.
fn field_value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    Ok(match u.choose_index(8)? {
        0 => Value::BulkString(blob(u)?),
        1 => {
            let mut b = Vec::new();
            msgpack(u, 0, &mut b)?;
            Value::BulkString(b)
        }
        2 => {
            let h: Headers = u.arbitrary()?;
            Value::BulkString(envelope::encode_headers(&h).unwrap_or_default())
        }
        3 => Value::SimpleString(u.arbitrary()?),
        4 => Value::BulkString(Vec::new()),
        5 => Value::BulkString(u.arbitrary::<i64>()?.to_string().into_bytes()),
        _ => value(u, depth + 1)?,
    })
}

/// One `[id, fields]` entry, usually close to what Redis sends.
fn entry(u: &mut Unstructured, depth: u32) -> Result<Value> {
    if depth >= MAX_DEPTH || u.ratio(1, 8)? {
        return value(u, depth + 1);
    }
    let id = if u.ratio(7, 8)? {
        Value::BulkString(id_text(u)?)
    } else {
        value(u, depth + 1)?
    };
    let n = u.int_in_range(0..=8)?;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let name = if u.ratio(7, 8)? {
            Value::BulkString(u.choose(FIELDS)?.to_vec())
        } else {
            value(u, depth + 1)?
        };
        pairs.push((name, field_value(u, depth)?));
    }
    let fields = match u.choose_index(4)? {
        // RESP3 map of fields.
        0 => Value::Map(pairs),
        // An odd number of items.
        1 => {
            let mut flat: Vec<Value> = pairs.into_iter().flat_map(|(f, v)| [f, v]).collect();
            flat.push(value(u, depth + 1)?);
            Value::Array(flat)
        }
        // Nil fields: what XAUTOCLAIM returns for a deleted entry.
        2 if u.ratio(1, 4)? => Value::Nil,
        _ => Value::Array(pairs.into_iter().flat_map(|(f, v)| [f, v]).collect()),
    };
    let mut parts = vec![id, fields];
    if u.ratio(1, 16)? {
        parts.push(value(u, depth + 1)?);
    }
    if u.ratio(1, 16)? {
        parts.truncate(u.choose_index(2)?);
    }
    Ok(Value::Array(parts))
}

/// An XRANGE reply: an array of entries, nil, or something else.
fn reply(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.choose_index(8)? {
        0 => Value::Nil,
        1 => value(u, 0)?,
        _ => {
            let n = u.int_in_range(0..=6)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(entry(u, 1)?);
            }
            Value::Array(entries)
        }
    })
}

/// An XREAD reply: `[[key, entries], ...]` (RESP2) or `{key: entries}`
/// (RESP3), nil, or something else.
fn xread_reply(u: &mut Unstructured) -> Result<Value> {
    let n = u.int_in_range(0..=4)?;
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let key = if u.ratio(3, 4)? {
            Value::BulkString(b"mr:{t:0}:s:0".to_vec())
        } else {
            value(u, 2)?
        };
        streams.push((key, reply(u)?));
    }
    Ok(match u.choose_index(5)? {
        0 => Value::Map(streams),
        1 => Value::Nil,
        2 => value(u, 0)?,
        _ => Value::Array(
            streams
                .into_iter()
                .map(|(k, e)| {
                    if u.ratio(1, 16).unwrap_or(false) {
                        Value::Array(vec![k])
                    } else {
                        Value::Array(vec![k, e])
                    }
                })
                .collect(),
        ),
    })
}

/// Any RESP value, of every kind redis-rs produces.
fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let leaf = depth >= MAX_DEPTH;
    let kinds = if leaf { 8 } else { 13 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Nil,
        1 => Value::Int(u.arbitrary()?),
        2 => Value::BulkString(blob(u)?),
        3 => Value::SimpleString(u.arbitrary()?),
        4 => Value::Okay,
        5 => Value::Double(u.arbitrary()?),
        6 => Value::Boolean(u.arbitrary()?),
        7 => Value::BulkString(id_text(u)?),
        8 => Value::Array(values(u, depth)?),
        9 => Value::Set(values(u, depth)?),
        10 => {
            let n = u.int_in_range(0..=4)?;
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                pairs.push((value(u, depth + 1)?, value(u, depth + 1)?));
            }
            Value::Map(pairs)
        }
        11 => Value::Attribute {
            data: Box::new(value(u, depth + 1)?),
            attributes: Vec::new(),
        },
        _ => entry(u, depth + 1)?,
    })
}

fn values(u: &mut Unstructured, depth: u32) -> Result<Vec<Value>> {
    let n = u.int_in_range(0..=4)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(value(u, depth + 1)?);
    }
    Ok(out)
}

/// MessagePack-like bytes: real values, with declared lengths that
/// sometimes lie (huge or short), raw markers, and ext types.
fn msgpack(u: &mut Unstructured, depth: u32, out: &mut Vec<u8>) -> Result<()> {
    use rmp::encode as w;
    let kinds = if depth >= MAX_DEPTH { 9 } else { 12 };
    match u.choose_index(kinds)? {
        0 => w::write_nil(out).expect("vec"),
        1 => w::write_bool(out, u.arbitrary()?).expect("vec"),
        2 => {
            w::write_sint(out, u.arbitrary()?).expect("vec");
        }
        3 => {
            w::write_uint(out, u.arbitrary()?).expect("vec");
        }
        4 => w::write_f64(out, u.arbitrary()?).expect("vec"),
        5 => {
            let s: String = u.arbitrary()?;
            w::write_str(out, &s).expect("vec");
        }
        6 => {
            // A str or bin whose declared length need not match.
            let body = blob(u)?;
            let len = if u.ratio(1, 2)? {
                body.len() as u32
            } else {
                u.arbitrary()?
            };
            if u.ratio(1, 2)? {
                w::write_str_len(out, len).expect("vec");
            } else {
                w::write_bin_len(out, len).expect("vec");
            }
            out.extend_from_slice(&body);
        }
        7 => {
            let ty: i8 = u.arbitrary()?;
            let body = blob(u)?;
            w::write_ext_meta(out, body.len() as u32, ty).expect("vec");
            out.extend_from_slice(&body);
        }
        8 => out.extend_from_slice(&blob(u)?),
        9 | 10 => {
            let n = u.int_in_range(0..=5)?;
            let declared = if u.ratio(3, 4)? {
                n as u32
            } else {
                u.arbitrary()?
            };
            let map = u.arbitrary()?;
            if map {
                w::write_map_len(out, declared).expect("vec");
            } else {
                w::write_array_len(out, declared).expect("vec");
            }
            for _ in 0..n * if map { 2 } else { 1 } {
                msgpack(u, depth + 1, out)?;
            }
        }
        _ => {
            // A headers map with one entry of a wrong type.
            w::write_map_len(out, 1).expect("vec");
            w::write_str(out, "traceparent").expect("vec");
            msgpack(u, depth + 1, out)?;
        }
    }
    Ok(())
}
