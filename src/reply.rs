//! Handler results and replies: what a handler returned, as the group keeps
//! it beside the message (`mr:{T:p}:g:<G>:r:<lane>:<first id>`, written by
//! `lua/ack.lua` with the ack) and as a reply reaches a requester (a
//! MessagePack message on its Pub/Sub channel, published by the same
//! script). Pure: encoding and decoding only.

use std::any::TypeId;

use serde::{Deserialize, Serialize};

use crate::envelope::Headers;
use crate::error::{Error, Result};
use crate::retry::HandlerError;

/// Header naming the requester waiting for a reply (its id: the channel is
/// `<prefix>:reply:<id>`).
pub const HEADER_REPLY_TO: &str = "millrace-reply-to";
/// Header with the request's correlation number, echoed in the reply.
pub const HEADER_CORRELATION: &str = "millrace-correlation";
/// Header naming the group whose handler answers a request.
pub const HEADER_REPLY_GROUP: &str = "millrace-reply-group";

/// How long a handler's result is kept by default: five minutes.
pub const DEFAULT_RESULT_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// MessagePack `nil`: the value of a handler that returned `()`.
pub(crate) const NIL: &[u8] = &[0xc0];

/// A handler's output as MessagePack, or `None` when it is `nil` (`()`,
/// `None`, a unit struct: nothing to keep). A value that cannot be encoded
/// is the handler's bug: a permanent failure.
pub(crate) fn encode_output<O: Serialize + 'static>(
    output: &O,
) -> std::result::Result<Option<Vec<u8>>, HandlerError> {
    if TypeId::of::<O>() == TypeId::of::<()>() {
        return Ok(None);
    }
    rmp_serde::to_vec_named(output)
        .map(|v| (v != NIL).then_some(v))
        .map_err(|e| {
            HandlerError::permanent(format!("the handler's result cannot be encoded: {e}"))
        })
}

/// Where the reply to a message goes, read from its headers: the requester's
/// id (checked like a name, so a header cannot steer a worker's publish to
/// another channel), the correlation number, and the answering group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReplyTo {
    pub requester: String,
    pub correlation: u64,
    pub group: String,
}

impl ReplyTo {
    /// The reply address of a request, if `headers` carry a valid one.
    pub(crate) fn of(headers: &Headers) -> Option<ReplyTo> {
        let requester = headers.get(HEADER_REPLY_TO)?;
        crate::store::keys::validate_name("requester", requester).ok()?;
        Some(ReplyTo {
            requester: requester.clone(),
            correlation: headers.get(HEADER_CORRELATION)?.parse().ok()?,
            group: headers.get(HEADER_REPLY_GROUP)?.clone(),
        })
    }
}

/// How a request ended, as its reply says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The handler succeeded: its result as MessagePack (`nil` for `()`).
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The handler failed for good (permanently, or out of attempts): the
    /// error and the attempts made.
    Failed(String, u32),
}

impl From<KeptResult> for Outcome {
    /// The reply a kept result stands for.
    fn from(k: KeptResult) -> Self {
        match k.outcome {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Failed(e, k.attempts),
        }
    }
}

/// A reply as published to the requester's channel: MessagePack
/// `[correlation, group, message id, outcome]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReplyWire {
    pub correlation: u64,
    pub group: String,
    pub message_id: String,
    pub outcome: Outcome,
}

impl ReplyWire {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // A struct of plain fields always encodes.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<ReplyWire> {
        rmp_serde::from_slice(bytes).map_err(|e| Error::Decode(format!("a reply: {e}")))
    }
}

/// A result the group keeps for a message, read back from its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeptResult {
    /// The handler's result (MessagePack), or its final error.
    pub outcome: std::result::Result<Vec<u8>, String>,
    /// Attempts made (failures only; 0 when not recorded).
    pub attempts: u32,
    /// The dead-letter entry's id (failures only).
    pub dead_letter_id: Option<String>,
    /// The message was cancelled for the group (the outcome is then the
    /// error `cancelled`).
    pub cancelled: bool,
    /// When it was written (Redis ms).
    pub at_ms: u64,
}

impl KeptResult {
    /// Reads the fields of a result hash (`s`, `v`, `e`, `a`, `d`, `t`);
    /// `None` for an empty hash (expired or never written).
    pub(crate) fn from_fields(fields: &std::collections::HashMap<String, Vec<u8>>) -> Option<Self> {
        let text = |f: &str| {
            fields
                .get(f)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let status = text("s")?;
        let outcome = match status.as_str() {
            "ok" => Ok(fields.get("v").cloned().unwrap_or_else(|| NIL.to_vec())),
            "cancelled" => Err("cancelled".to_string()),
            _ => Err(text("e").unwrap_or_default()),
        };
        Some(KeptResult {
            outcome,
            attempts: text("a").and_then(|a| a.parse().ok()).unwrap_or(0),
            dead_letter_id: text("d"),
            cancelled: status == "cancelled",
            at_ms: text("t").and_then(|t| t.parse().ok()).unwrap_or(0),
        })
    }

    /// The result as JSON (for display), or `None` for a failure.
    pub fn json(&self) -> Option<serde_json::Value> {
        let v = self.outcome.as_ref().ok()?;
        Some(rmp_serde::from_slice(v).unwrap_or_else(|_| {
            serde_json::Value::String(format!("<{} bytes, not MessagePack>", v.len()))
        }))
    }
}

/// The progress kept in a result hash (`p`, JSON; `pt`, when), if any.
pub(crate) fn progress_of(
    fields: &std::collections::HashMap<String, Vec<u8>>,
) -> (Option<serde_json::Value>, Option<u64>) {
    let progress = fields.get("p").map(|p| {
        serde_json::from_slice(p)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(p).into_owned()))
    });
    let at = fields
        .get("pt")
        .and_then(|t| std::str::from_utf8(t).ok()?.parse().ok());
    (progress, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_outputs_are_not_kept_and_values_are_messagepack() {
        assert_eq!(encode_output(&()).unwrap(), None);
        let v = encode_output(&serde_json::json!({"cents": 1200}))
            .unwrap()
            .unwrap();
        let back: serde_json::Value = rmp_serde::from_slice(&v).unwrap();
        assert_eq!(back, serde_json::json!({"cents": 1200}));
        // Whatever encodes as nil is no result either.
        assert_eq!(encode_output(&None::<u32>).unwrap(), None);
        assert_eq!(encode_output(&Some(0u32)).unwrap(), Some(vec![0]));
    }

    #[test]
    fn a_reply_address_needs_all_three_headers_and_a_valid_requester() {
        let mut h = Headers::new();
        h.insert(HEADER_REPLY_TO.into(), "req-1".into());
        h.insert(HEADER_CORRELATION.into(), "42".into());
        assert_eq!(ReplyTo::of(&h), None);
        h.insert(HEADER_REPLY_GROUP.into(), "pricing".into());
        assert_eq!(
            ReplyTo::of(&h),
            Some(ReplyTo {
                requester: "req-1".into(),
                correlation: 42,
                group: "pricing".into()
            })
        );
        h.insert(HEADER_REPLY_TO.into(), "other:channel".into());
        assert_eq!(
            ReplyTo::of(&h),
            None,
            "a requester id cannot name another channel"
        );
        h.insert(HEADER_REPLY_TO.into(), "req-1".into());
        h.insert(HEADER_CORRELATION.into(), "x".into());
        assert_eq!(ReplyTo::of(&h), None);
    }

    #[test]
    fn the_reply_wire_format() {
        let ok = ReplyWire {
            correlation: 7,
            group: "pricing".into(),
            message_id: "3:0:1733310000000-0".into(),
            outcome: Outcome::Ok(encode_output(&1200u32).unwrap().unwrap()),
        };
        let failed = ReplyWire {
            outcome: Outcome::Failed("no price for SKU 9".into(), 3),
            ..ok.clone()
        };
        // [correlation, group, message id, {"Ok": bin} | {"Failed": [error, attempts]}]
        insta::assert_snapshot!(
            format!("{:02x?}\n{:02x?}", ok.encode(), failed.encode()),
            @r"
        [94, 07, a7, 70, 72, 69, 63, 69, 6e, 67, b3, 33, 3a, 30, 3a, 31, 37, 33, 33, 33, 31, 30, 30, 30, 30, 30, 30, 30, 2d, 30, 81, a2, 4f, 6b, c4, 03, cd, 04, b0]
        [94, 07, a7, 70, 72, 69, 63, 69, 6e, 67, b3, 33, 3a, 30, 3a, 31, 37, 33, 33, 33, 31, 30, 30, 30, 30, 30, 30, 30, 2d, 30, 81, a6, 46, 61, 69, 6c, 65, 64, 92, b2, 6e, 6f, 20, 70, 72, 69, 63, 65, 20, 66, 6f, 72, 20, 53, 4b, 55, 20, 39, 03]
        "
        );
        assert_eq!(ReplyWire::decode(&ok.encode()).unwrap(), ok);
        assert_eq!(ReplyWire::decode(&failed.encode()).unwrap(), failed);
        assert!(ReplyWire::decode(b"\x01").is_err());
    }

    #[test]
    fn kept_results_read_back_from_their_fields() {
        let f = |pairs: &[(&str, &[u8])]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect::<std::collections::HashMap<_, _>>()
        };
        assert_eq!(KeptResult::from_fields(&f(&[])), None);
        let ok = KeptResult::from_fields(&f(&[("s", b"ok"), ("v", &[0x2a]), ("t", b"5")])).unwrap();
        assert_eq!(ok.json(), Some(serde_json::json!(42)));
        assert_eq!(ok.at_ms, 5);
        let failed = KeptResult::from_fields(&f(&[
            ("s", b"failed"),
            ("e", b"boom"),
            ("a", b"3"),
            ("d", b"1-0"),
        ]))
        .unwrap();
        assert_eq!(failed.outcome, Err("boom".to_string()));
        assert_eq!(
            (failed.attempts, failed.dead_letter_id.as_deref()),
            (3, Some("1-0"))
        );
        assert_eq!(failed.json(), None);
        assert!(!failed.cancelled);
        let cancelled = KeptResult::from_fields(&f(&[("s", b"cancelled")])).unwrap();
        assert!(cancelled.cancelled);
        assert_eq!(cancelled.outcome, Err("cancelled".to_string()));
    }
}
