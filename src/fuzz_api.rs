//! Internal decoders exposed for the fuzz targets in `fuzz/` and the
//! bad-input tests (feature `fuzzing`). Not part of the public API: names
//! and signatures follow the internals and may change at any time.
//!
//! Everything here takes input that Redis or a user controls, so each
//! function must return a typed [`Error`] for bad input, never panic.

use crate::dlq::DeadLetter;
use crate::envelope::{Message, StreamId};
use crate::error::{Error, Result};
use crate::schedule::ScheduleSpec;

pub use redis::Value;

/// Parses one `[id, [field, value, ...]]` stream entry (XRANGE, XREAD,
/// XREADGROUP, XAUTOCLAIM).
pub fn parse_entry(topic: &str, partition: u32, lane: u8, v: Value) -> Result<Message> {
    crate::envelope::parse_entry(topic, partition, lane, v)
}

/// Parses a whole XRANGE reply, or the entries of one stream of an XREAD.
pub fn parse_entries(topic: &str, partition: u32, lane: u8, v: Value) -> Result<Vec<Message>> {
    crate::envelope::parse_entries(topic, partition, lane, v)
}

/// Splits an XREAD / XREADGROUP reply into (stream key, entries) pairs.
pub fn xread_streams(v: Value) -> Result<Vec<(String, Value)>> {
    crate::store::lane_reads::xread_streams(v)
}

/// Parses an XRANGE reply of a dead-letter stream.
pub fn parse_dead_letters(topic: &str, partition: u32, v: Value) -> Result<Vec<DeadLetter>> {
    crate::dlq::parse_dead_letters(topic, partition, v)
}

/// Parses a dead-letter id as given on the command line (`ms-seq` or
/// `P:ms-seq`).
pub fn parse_dead_letter_id(id: &str) -> Result<(Option<u32>, StreamId)> {
    crate::dlq::parse_id(id)
}

/// Decodes a schedule spec as stored in the schedules hash (JSON).
pub fn decode_schedule_spec(name: &str, json: &str) -> Result<ScheduleSpec> {
    crate::schedule::decode_spec(name, json)
}

/// The three stream fields of a message, as `XADD` writes them.
pub fn entry_fields<'a>(
    key: Option<&'a str>,
    headers: &'a [u8],
    payload: &'a [u8],
) -> [&'a [u8]; 6] {
    crate::envelope::entry_fields(key, headers, payload)
}

/// Encodes a delayed-set member (`[nonce, lane, key, headers, payload]`).
pub fn encode_delayed(
    nonce: u64,
    lane: u8,
    key: Option<&str>,
    headers: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    crate::envelope::encode_delayed(nonce, lane, key, headers, payload)
}

/// Encodes a shared-mode retry-set member
/// (`[nonce, lane, key, headers, payload, next attempt, origin id]`).
pub fn encode_retry(
    nonce: u64,
    msg: &Message,
    headers: &[u8],
    next_attempt: u32,
    origin: &str,
) -> Vec<u8> {
    crate::envelope::encode_retry(nonce, msg, headers, next_attempt, origin)
}

/// Whether an error is one of the library's typed input or decode errors
/// (what bad input must produce), as opposed to a Redis or I/O failure.
pub fn is_input_error(e: &Error) -> bool {
    e.is_invalid_input() || matches!(e, Error::Decode(_) | Error::Encode(_))
}

/// Decodes the first RESP2 reply in `bytes` as the blocking-read connection
/// does: `Ok(None)` until all of it is there, then the value and the bytes
/// it took; a protocol violation is an error.
pub fn decode_resp(bytes: &[u8]) -> std::result::Result<Option<(Value, usize)>, String> {
    crate::store::resp::decode(bytes).map_err(|e| e.0)
}

/// The source of script `name` (`lua/<name>.lua`) as millrace sends it to
/// Redis, shared pieces included: for tests that call a script directly.
pub fn script_source(name: &str) -> Option<&'static str> {
    crate::store::scripts::Scripts::new()
        .all()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.source())
}
