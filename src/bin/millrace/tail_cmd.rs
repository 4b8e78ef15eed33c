//! `millrace tail`: read a topic without a consumer group and print each
//! message as a line of text or JSON.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use millrace::{Headers, Message, StartAt};
use serde::Serialize;
use serde_json::Value;

use crate::cli::{Global, TailArgs};
use crate::error::CliError;
use crate::output::{Out, rfc3339_ms};

pub async fn run(global: &Global, args: TailArgs, out: &mut Out) -> Result<(), CliError> {
    // A topic, or its dead-letter view `T.dlq` (every dead letter, with
    // its group, attempts and error as `millrace-*` headers).
    millrace::keys::validate_topic(args.topic.strip_suffix(".dlq").unwrap_or(&args.topic))?;
    let start: StartAt = args
        .from
        .parse()
        .map_err(|e: millrace::Error| CliError::from(e).context("--from"))?;
    let client = crate::connect(global).await?;
    let mut reader = client.reader(&args.topic, start).await?.follow(args.follow);
    // Following, the next message may be minutes away: show each at once.
    out.flush_each_line(args.follow);
    let mut printed = 0u64;
    while args.count.is_none_or(|c| printed < c) {
        let Some(msg) = reader.next().await? else {
            break;
        };
        let line = TailLine::new(&msg);
        if args.json {
            out.json_line(&line)?;
        } else {
            out.line(line.human())?;
        }
        printed += 1;
    }
    Ok(())
}

/// One message as `tail --json` prints it.
#[derive(Debug, Serialize)]
pub struct TailLine<'a> {
    /// The message's identity, `<partition>:<lane>:<first id>`.
    message_id: String,
    /// The stream id of this entry.
    id: String,
    partition: u32,
    lane: u8,
    key: Option<&'a str>,
    /// The payload as JSON; absent when it is not MessagePack.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    headers: &'a Headers,
    published_at: String,
    /// The payload bytes when they are not MessagePack (raw publishes).
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_base64: Option<String>,
}

impl<'a> TailLine<'a> {
    pub fn new(m: &'a Message) -> Self {
        let (data, raw_base64) = payload_fields(&m.payload);
        TailLine {
            message_id: m.message_id.to_string(),
            id: m.id.to_string(),
            partition: m.partition,
            lane: m.lane,
            key: m.key.as_deref(),
            data,
            headers: &m.headers,
            published_at: rfc3339_ms(m.published_at_ms()),
            raw_base64,
        }
    }

    /// `2026-11-27T10:00:00.123Z  3:0:1764237600123-0  key=tenant-1  {"invoice":"inv-1"}`
    pub fn human(&self) -> String {
        let mut s = format!("{}  {}", self.published_at, self.message_id);
        if let Some(k) = self.key {
            // Escaped, so a key with a newline cannot break the one-line shape.
            s.push_str(&format!("  key={}", k.escape_debug()));
        }
        if !self.headers.is_empty() {
            let h = serde_json::to_string(self.headers).unwrap_or_default();
            s.push_str(&format!("  headers={h}"));
        }
        match (&self.data, &self.raw_base64) {
            (_, Some(raw)) => s.push_str(&format!("  raw:{raw}")),
            (Some(data), None) => s.push_str(&format!("  {data}")),
            (None, None) => {}
        }
        s
    }
}

/// `data` and `raw_base64` of a JSON line, exactly one of them set: the
/// payload as JSON, or (when it is not MessagePack) its bytes in base64.
pub fn payload_fields(payload: &[u8]) -> (Option<Value>, Option<String>) {
    match payload_json(payload) {
        Some(v) => (Some(v), None),
        None => (None, Some(BASE64.encode(payload))),
    }
}

/// The payload decoded from MessagePack to JSON, if it is exactly one
/// MessagePack value that JSON can show (the library's decode refuses
/// trailing bytes, so raw text like `hello` goes to `raw_base64` rather than
/// showing as the integer 104).
fn payload_json(payload: &[u8]) -> Option<Value> {
    millrace::envelope::decode(payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace::{MessageId, StreamId};

    #[test]
    fn only_whole_messagepack_payloads_decode() {
        let v = serde_json::json!({"invoice": "inv-1", "cents": 420, "tags": [1, null]});
        let bytes = millrace::envelope::encode(&v).unwrap();
        assert_eq!(payload_json(&bytes), Some(v));
        assert_eq!(payload_json(b"hello"), None);
        assert_eq!(payload_json(b""), None);
        let mut trailing = millrace::envelope::encode(&1).unwrap();
        trailing.push(0);
        assert_eq!(payload_json(&trailing), None);
    }

    fn message(payload: &[u8], key: Option<&str>) -> Message {
        let mut headers = Headers::new();
        headers.insert("trace".into(), "abc".into());
        let mut v = Message::default();
        v.id = StreamId {
            ms: 1_764_237_600_123,
            seq: 0,
        };
        v.message_id = MessageId::parse("3:0:1764237600123-0").unwrap();
        v.topic = "t".into();
        v.partition = 3;
        v.lane = 0;
        v.key = key.map(String::from);
        v.headers = headers;
        v.payload = payload.to_vec().into();
        v
    }

    #[test]
    fn lines_show_payload_or_raw_bytes() {
        let payload = millrace::envelope::encode(&serde_json::json!({"invoice": "inv-1"})).unwrap();
        let m = message(&payload, Some("tenant-1"));
        assert_eq!(
            TailLine::new(&m).human(),
            r#"2025-11-27T10:00:00.123Z  3:0:1764237600123-0  key=tenant-1  headers={"trace":"abc"}  {"invoice":"inv-1"}"#
        );
        let raw = message(b"hello", None);
        let line = TailLine::new(&raw);
        assert_eq!(
            serde_json::to_value(&line).unwrap(),
            serde_json::json!({
                "message_id": "3:0:1764237600123-0", "id": "1764237600123-0", "partition": 3, "lane": 0, "key": null,
                "headers": {"trace": "abc"},
                "published_at": "2025-11-27T10:00:00.123Z", "raw_base64": "aGVsbG8="
            })
        );
        assert!(line.human().ends_with("  raw:aGVsbG8="));
        // A JSON null payload is data, not raw bytes.
        let null = millrace::envelope::encode(&()).unwrap();
        let v = serde_json::to_value(TailLine::new(&message(&null, None))).unwrap();
        assert_eq!(
            (v.get("data"), v.get("raw_base64")),
            (Some(&Value::Null), None)
        );
    }
}
