//! The envelope: how one message is laid out in a stream entry, and the
//! payload codec.
//!
//! Every entry has the same three fields in the same order, so Redis stores
//! the field names once per stream node: `k` (the key, empty when keyless),
//! `h` (headers as a MessagePack map, empty when there are none) and `d` (the
//! payload bytes). Typed payloads are MessagePack with field names
//! (`rmp_serde::to_vec_named`), so adding a field to an event type keeps old
//! messages readable. The stream id is the message id; its milliseconds are the
//! publish time.

use std::collections::BTreeMap;

use bytes::Bytes;
use redis::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::id::MessageId;

/// Field name of the key.
pub const FIELD_KEY: &str = "k";
/// Field name of the headers.
pub const FIELD_HEADERS: &str = "h";
/// Field name of the payload.
pub const FIELD_DATA: &str = "d";

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Message headers: string to string (W3C `traceparent` travels here).
pub type Headers = BTreeMap<String, String>;

/// A typed event: a serde type that knows its topic and, optionally, its key.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct InvoiceCreated { invoice: String, tenant: String, cents: u64 }
///
/// impl millrace::Event for InvoiceCreated {
///     const TOPIC: &'static str = "erp.v1.invoice.created";
///     fn key(&self) -> Option<String> { Some(self.tenant.clone()) }
/// }
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync {
    /// The topic this event is published to.
    const TOPIC: &'static str;
    /// The partition key: events with one key stay in one partition, in order.
    fn key(&self) -> Option<String> {
        None
    }
}

/// Deepest nesting of arrays and maps a payload or headers field may have,
/// as serde_json allows in JSON. rmp_serde's own limit (1024) is too deep:
/// decoding 1000 nested arrays into `serde_json::Value` overflows the 2 MiB
/// stack of a tokio worker and aborts the process, so one small message
/// could take down every worker that reads it.
pub const MAX_NESTING: usize = 128;

/// Encodes a value as MessagePack with field names.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Encode(e.to_string()))
}

/// Decodes a MessagePack payload into `T`. The whole payload must be one
/// value: trailing bytes are an error, so raw bytes that merely start like
/// MessagePack (`hello` starts with the integer 104) are not mistaken for it.
/// Payloads nested deeper than [`MAX_NESTING`] are refused.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    let (value, rest) = decode_prefix(payload).map_err(Error::Decode)?;
    if !rest.is_empty() {
        return Err(Error::Decode(format!(
            "{} trailing bytes after the MessagePack value",
            rest.len()
        )));
    }
    Ok(value)
}

/// Decodes one MessagePack value from the front of `bytes`, at most
/// [`MAX_NESTING`] levels deep; returns it and the bytes after it.
fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<(T, &[u8]), String> {
    let mut de = rmp_serde::Deserializer::new(bytes);
    // rmp_serde counts down on entering each array or map and fails at 0.
    de.set_max_depth(MAX_NESTING + 1);
    match T::deserialize(&mut de) {
        Ok(value) => Ok((value, de.into_inner())),
        Err(rmp_serde::decode::Error::DepthLimitExceeded) => Err(format!(
            "nested deeper than {MAX_NESTING} levels of arrays and maps"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Encodes headers for the `h` field: empty bytes when there are none.
pub fn encode_headers(headers: &Headers) -> Result<Vec<u8>> {
    if headers.is_empty() {
        Ok(Vec::new())
    } else {
        encode(headers)
    }
}

/// Decodes the `h` field.
pub fn decode_headers(bytes: &[u8]) -> Result<Headers> {
    if bytes.is_empty() {
        Ok(Headers::new())
    } else {
        match decode_prefix(bytes) {
            Ok((headers, [])) => Ok(headers),
            Ok((_, rest)) => Err(Error::Decode(format!(
                "headers: {} trailing bytes after the MessagePack map",
                rest.len()
            ))),
            Err(e) => Err(Error::Decode(format!("headers: {e}"))),
        }
    }
}

/// Checks a partition key: 1 to 1024 bytes.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::invalid(
            "key",
            format!("keys must be 1 to {MAX_KEY_LEN} bytes (got {})", key.len()),
        ));
    }
    Ok(())
}

pub use crate::id::StreamId;

/// One message as read from a partition.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// The message's identity within its topic: the same across retries,
    /// dead-lettering and replay (deduplicate on this, not on `id`).
    pub message_id: MessageId,
    /// The stream id of this entry: unique only within its partition lane,
    /// and new when the message is retried in shared mode or replayed.
    pub id: StreamId,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The lane (priority; 0 is most urgent).
    pub lane: u8,
    /// The partition key, if any.
    pub key: Option<String>,
    /// Headers.
    pub headers: Headers,
    /// Payload bytes (MessagePack for typed events); cloning shares them.
    pub payload: Bytes,
}

impl Message {
    /// Decodes the payload into a typed event.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        decode(&self.payload)
    }

    /// Publish time in milliseconds since the Unix epoch (Redis's clock).
    pub fn published_at_ms(&self) -> u64 {
        self.id.ms
    }
}

/// The three stream fields of a message, ready for `XADD`.
pub(crate) fn entry_fields<'a>(
    key: Option<&'a str>,
    headers: &'a [u8],
    payload: &'a [u8],
) -> [&'a [u8]; 6] {
    [
        FIELD_KEY.as_bytes(),
        key.unwrap_or("").as_bytes(),
        FIELD_HEADERS.as_bytes(),
        headers,
        FIELD_DATA.as_bytes(),
        payload,
    ]
}

/// Encodes a delayed message as the member of its partition's delayed set:
/// the MessagePack array `[nonce, lane, key, headers, payload]`, byte
/// strings written as MessagePack str (Redis's Lua `cmsgpack` cannot read
/// bin), the key empty when keyless. The promotion script unpacks it; the
/// nonce keeps equal messages apart.
pub(crate) fn encode_delayed(
    nonce: u64,
    lane: u8,
    key: Option<&str>,
    headers: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + headers.len() + 32);
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut out, 5);
    let _ = rmp::encode::write_uint(&mut out, nonce);
    let _ = rmp::encode::write_uint(&mut out, u64::from(lane));
    write_raw_str(&mut out, key.unwrap_or("").as_bytes());
    write_raw_str(&mut out, headers);
    write_raw_str(&mut out, payload);
    out
}

/// A delayed message decoded from its delayed-set member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelayedEntry {
    /// Lane it will be published to.
    pub lane: u8,
    /// Partition key.
    pub key: Option<String>,
    /// Headers.
    pub headers: Headers,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Decodes a delayed-set member written by `encode_delayed`.
pub fn decode_delayed(member: &[u8]) -> Result<DelayedEntry> {
    let bad = |what: &str| Error::Decode(format!("delayed entry: {what}"));
    let mut rd = member;
    let n = rmp::decode::read_array_len(&mut rd).map_err(|_| bad("not an array"))?;
    if n != 5 {
        return Err(bad("wrong length"));
    }
    let _nonce: u64 = rmp::decode::read_int(&mut rd).map_err(|_| bad("nonce"))?;
    let lane: u8 = rmp::decode::read_int(&mut rd).map_err(|_| bad("lane"))?;
    let key = read_raw_str(&mut rd).ok_or_else(|| bad("key"))?;
    let headers = read_raw_str(&mut rd).ok_or_else(|| bad("headers"))?;
    let payload = read_raw_str(&mut rd).ok_or_else(|| bad("payload"))?;
    let key = String::from_utf8(key).map_err(|_| bad("key is not UTF-8"))?;
    Ok(DelayedEntry {
        lane,
        key: (!key.is_empty()).then_some(key),
        headers: decode_headers(&headers)?,
        payload,
    })
}

/// Writes bytes as a MessagePack str. Redis's Lua `cmsgpack` cannot read the
/// bin types, and a Lua string holds any bytes, so scripts that unpack these
/// members get the bytes unchanged.
fn write_raw_str(out: &mut Vec<u8>, bytes: &[u8]) {
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_str_len(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// Reads a MessagePack str (or bin) as raw bytes.
fn read_raw_str(rd: &mut &[u8]) -> Option<Vec<u8>> {
    let marker = rmp::decode::read_marker(rd).ok()?;
    let len = match marker {
        rmp::Marker::FixStr(n) => n as usize,
        rmp::Marker::Str8 | rmp::Marker::Bin8 => usize::from(*rd.first()?),
        rmp::Marker::Str16 | rmp::Marker::Bin16 => {
            u16::from_be_bytes([*rd.first()?, *rd.get(1)?]) as usize
        }
        rmp::Marker::Str32 | rmp::Marker::Bin32 => {
            u32::from_be_bytes([*rd.first()?, *rd.get(1)?, *rd.get(2)?, *rd.get(3)?]) as usize
        }
        _ => return None,
    };
    let skip = match marker {
        rmp::Marker::Str8 | rmp::Marker::Bin8 => 1,
        rmp::Marker::Str16 | rmp::Marker::Bin16 => 2,
        rmp::Marker::Str32 | rmp::Marker::Bin32 => 4,
        _ => 0,
    };
    let body = rd.get(skip..skip + len)?.to_vec();
    *rd = &rd[skip + len..];
    Some(body)
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Takes the bytes out of a bulk or simple string reply.
fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// Parses one `[id, [field, value, ...]]` entry of an XRANGE/XREAD reply,
/// moving the payload out of the reply rather than copying it.
pub(crate) fn parse_entry(topic: &str, partition: u32, lane: u8, v: Value) -> Result<Message> {
    let Value::Array(parts) = v else {
        return Err(Error::Decode(format!(
            "stream entry is not an array: {v:?}"
        )));
    };
    let mut parts = parts.into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::Decode("stream entry is not [id, fields]".into()));
    };
    let id = bytes_of(&id)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| Error::Decode("stream id is not text".into()))?;
    let id = StreamId::parse(id).map_err(|e| Error::Decode(e.to_string()))?;
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(items) => {
            let mut items = items.into_iter();
            let mut out = Vec::with_capacity(3);
            while let (Some(f), Some(v)) = (items.next(), items.next()) {
                out.push((f, v));
            }
            out
        }
        Value::Map(items) => items,
        other => return Err(Error::Decode(format!("entry {id}: fields are {other:?}"))),
    };
    let mut key = None;
    let mut headers = Headers::new();
    let mut payload = None;
    let mut meta = Vec::new();
    for (f, v) in pairs {
        let Some(f) = bytes_of(&f) else { continue };
        let Some(v) = into_bytes(v) else { continue };
        match f {
            b"k" if !v.is_empty() => {
                key = Some(
                    String::from_utf8(v)
                        .map_err(|_| Error::Decode(format!("entry {id}: key is not UTF-8")))?,
                );
            }
            b"k" => {}
            b"h" => headers = decode_headers(&v)?,
            b"d" => payload = Some(Bytes::from(v)),
            other => {
                if let Some(name) = meta_header(other) {
                    meta.push((name, String::from_utf8_lossy(&v).into_owned()));
                }
            }
        }
    }
    let payload = payload.ok_or_else(|| Error::Decode(format!("entry {id}: no payload field")))?;
    // A dead letter (it names the group that gave up) is a message of its
    // own: its extra fields are shown as `millrace-*` headers. In any other
    // entry (a promoted delayed message, a replay, a group's retry), `o` is
    // the message's first id and `l` its lane: its identity, not headers.
    let dead_letter = meta.iter().any(|(name, _)| *name == meta::GROUP);
    let mut lane = lane;
    let mut first = None;
    if !dead_letter {
        meta.retain(|(name, v)| match *name {
            meta::ORIGIN_ID => {
                if !v.is_empty() {
                    first = Some(v.clone());
                }
                false
            }
            meta::LANE => {
                if let Ok(l) = v.parse() {
                    lane = l;
                }
                false
            }
            _ => true,
        });
    }
    headers.extend(meta.into_iter().map(|(k, v)| (k.to_string(), v)));
    let message_id = match first {
        Some(first) => MessageId::read(partition, lane, first),
        None => MessageId::of_stream(partition, lane, id),
    };
    Ok(Message {
        message_id,
        id,
        topic: topic.to_string(),
        partition,
        lane,
        key,
        headers,
        payload,
    })
}

/// The header names under which readers show the extra fields of
/// dead-letter and retry entries: written once, here.
pub mod meta {
    /// The group that failed the message.
    pub const GROUP: &str = "millrace-group";
    /// The partition it was read from.
    pub const PARTITION: &str = "millrace-partition";
    /// Its lane.
    pub const LANE: &str = "millrace-lane";
    /// The stream id it was first published with.
    pub const ORIGIN_ID: &str = "millrace-origin-id";
    /// Attempts made.
    pub const ATTEMPTS: &str = "millrace-attempts";
    /// The last error.
    pub const ERROR: &str = "millrace-error";
    /// When it was dead-lettered (ms, Redis clock).
    pub const FAILED_AT_MS: &str = "millrace-failed-at-ms";
}

/// Extra fields of dead-letter and retry entries, and the header names they
/// are shown under.
pub const META_HEADERS: [(&str, &str); 7] = [
    ("g", meta::GROUP),
    ("p", meta::PARTITION),
    ("l", meta::LANE),
    ("o", meta::ORIGIN_ID),
    ("a", meta::ATTEMPTS),
    ("e", meta::ERROR),
    ("t", meta::FAILED_AT_MS),
];

fn meta_header(field: &[u8]) -> Option<&'static str> {
    META_HEADERS
        .iter()
        .find(|(f, _)| f.as_bytes() == field)
        .map(|(_, h)| *h)
}

/// Encodes a shared-mode retry as the member of a group's retry set:
/// `[nonce, lane, key, headers, payload, next attempt, origin id]`.
pub(crate) fn encode_retry(
    nonce: u64,
    msg: &Message,
    headers: &[u8],
    next_attempt: u32,
    origin: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.payload.len() + headers.len() + 48);
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut out, 7);
    let _ = rmp::encode::write_uint(&mut out, nonce);
    let _ = rmp::encode::write_uint(&mut out, u64::from(msg.lane));
    write_raw_str(&mut out, msg.key.as_deref().unwrap_or("").as_bytes());
    write_raw_str(&mut out, headers);
    write_raw_str(&mut out, &msg.payload);
    let _ = rmp::encode::write_uint(&mut out, u64::from(next_attempt));
    write_raw_str(&mut out, origin.as_bytes());
    out
}

/// What a parked retry (see [`encode_retry`]) says of its message: its
/// lane, the attempt it will be, and the message's first id.
pub(crate) fn retry_origin(member: &[u8]) -> Option<(u8, u32, String)> {
    let mut rd = member;
    if rmp::decode::read_array_len(&mut rd).ok()? != 7 {
        return None;
    }
    let _nonce: u64 = rmp::decode::read_int(&mut rd).ok()?;
    let lane: u8 = rmp::decode::read_int(&mut rd).ok()?;
    for _ in 0..3 {
        read_raw_str(&mut rd)?;
    }
    let attempt: u32 = rmp::decode::read_int(&mut rd).ok()?;
    let origin = String::from_utf8(read_raw_str(&mut rd)?).ok()?;
    Some((lane, attempt, origin))
}

/// The token of a delayed message: `<due ms>-<sha1 of its member>`, as
/// `lua/delay.lua` and `lua/promote.lua` compute it.
pub(crate) fn delayed_token(due_ms: u64, member: &[u8]) -> String {
    format!("{due_ms}-{}", sha1_smol::Sha1::from(member).digest())
}

/// Parses a whole XRANGE reply (an array of entries).
pub(crate) fn parse_entries(
    topic: &str,
    partition: u32,
    lane: u8,
    v: Value,
) -> Result<Vec<Message>> {
    match v {
        Value::Array(entries) => entries
            .into_iter()
            .map(|e| parse_entry(topic, partition, lane, e))
            .collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(Error::Decode(format!("unexpected stream reply {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V1 {
        invoice: String,
        cents: u64,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        invoice: String,
        cents: u64,
        #[serde(default)]
        currency: Option<String>,
    }

    #[test]
    fn adding_a_field_keeps_old_payloads_readable() {
        let old = encode(&V1 {
            invoice: "inv-1".into(),
            cents: 420,
        })
        .unwrap();
        let v2: V2 = decode(&old).unwrap();
        assert_eq!(v2.currency, None);
        assert_eq!(v2.cents, 420);
        // And a new payload still reads as the old type (extra field ignored).
        let new = encode(&V2 {
            invoice: "inv-2".into(),
            cents: 1,
            currency: Some("EUR".into()),
        })
        .unwrap();
        let v1: V1 = decode(&new).unwrap();
        assert_eq!(v1.invoice, "inv-2");
    }

    #[test]
    fn raw_bytes_are_not_mistaken_for_messagepack() {
        assert!(decode::<serde_json::Value>(b"hello").is_err());
        assert_eq!(decode::<u32>(&encode(&104u32).unwrap()).unwrap(), 104);
    }

    #[test]
    fn stream_ids_order_numerically() {
        let a = StreamId::parse("999-5").unwrap();
        let b = StreamId::parse("1000-0").unwrap();
        assert!(a < b);
        assert_eq!(StreamId::parse("7").unwrap().to_string(), "7-0");
        assert!(StreamId::parse("x-1").is_err());
    }

    #[test]
    fn entry_round_trip() {
        let mut h = Headers::new();
        h.insert("traceparent".into(), "00-abc-def-01".into());
        let hb = encode_headers(&h).unwrap();
        let f = entry_fields(Some("tenant-7"), &hb, b"\x81\xa1a\x01");
        let v = Value::Array(vec![
            Value::BulkString(b"12-3".to_vec()),
            Value::Array(f.iter().map(|b| Value::BulkString(b.to_vec())).collect()),
        ]);
        let m = parse_entry("t", 2, 1, v).unwrap();
        assert_eq!(m.key.as_deref(), Some("tenant-7"));
        assert_eq!(m.headers, h);
        assert_eq!(m.id, StreamId { ms: 12, seq: 3 });
        assert_eq!(&m.payload[..], b"\x81\xa1a\x01");
        let bad = Value::Array(vec![
            Value::BulkString(b"1-1".to_vec()),
            Value::Array(vec![]),
        ]);
        assert!(matches!(parse_entry("t", 0, 0, bad), Err(Error::Decode(_))));
    }
}
