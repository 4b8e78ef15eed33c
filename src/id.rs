//! Ids: a stream entry's id ([`StreamId`]) and a message's identity
//! within its topic ([`MessageId`]).
//!
//! A stream id is unique only within one partition lane (every lane is a
//! stream of its own), so two different messages of a topic can share one.
//! A [`MessageId`] adds where the message was published:
//! `<partition>:<lane>:<first id>`, e.g. `2:0:1796390340590-0`. The first id
//! is the stream id the message was published with, or for a message
//! published with a delay, the token `<due ms>-<sha1>` its publish returned
//! (it gets a stream id only when it is due). The identity stays the same
//! across retries, dead-lettering and replay: a retried or replayed message
//! is a new stream entry with a new stream id, and carries its first id
//! along.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A stream id (`<ms>-<seq>`), parsed for ordering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Milliseconds part: the time Redis added the entry.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// Parses `ms-seq` (or a bare `ms`, meaning `ms-0`).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::invalid("stream id", format!("{s:?} is not <ms>-<seq>"));
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (s, "0"),
        };
        Ok(StreamId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl StreamId {
    /// The id just before this one, so an exclusive cursor at it includes
    /// this id (`0-0` stays `0-0`).
    pub fn predecessor(self) -> StreamId {
        match self {
            StreamId { ms: 0, seq: 0 } => self,
            StreamId { ms, seq: 0 } => StreamId {
                ms: ms - 1,
                seq: u64::MAX,
            },
            StreamId { ms, seq } => StreamId { ms, seq: seq - 1 },
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mut ms, mut seq) = (itoa::Buffer::new(), itoa::Buffer::new());
        f.write_str(ms.format(self.ms))?;
        f.write_str("-")?;
        f.write_str(seq.format(self.seq))
    }
}

/// Written as `ms-seq` straight into the command: acks send one per message.
impl redis::ToRedisArgs for StreamId {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        let (mut ms, mut seq) = (itoa::Buffer::new(), itoa::Buffer::new());
        let (ms, seq) = (
            ms.format(self.ms).as_bytes(),
            seq.format(self.seq).as_bytes(),
        );
        // Two u64s in decimal (at most 20 digits each) and the dash.
        let mut buf = [0u8; 41];
        buf[..ms.len()].copy_from_slice(ms);
        buf[ms.len()] = b'-';
        buf[ms.len() + 1..ms.len() + 1 + seq.len()].copy_from_slice(seq);
        out.write_arg(&buf[..ms.len() + 1 + seq.len()]);
    }
}

/// Length of the SHA-1 digest (hex) in the token of a delayed message.
const DIGEST_HEX: usize = 40;

/// A message's identity within its topic: `<partition>:<lane>:<first id>`.
///
/// Unique within a topic and stable across retries, dead-lettering and
/// replay: deduplicate on it. Parse one with [`MessageId::parse`] (or
/// `str::parse`); it prints and serializes as the same text.
///
/// ```
/// use millrace::MessageId;
///
/// let id: MessageId = "2:1:1796390340590-0".parse()?;
/// assert_eq!((id.partition(), id.lane()), (2, 1));
/// assert_eq!(id.first(), "1796390340590-0");
/// assert_eq!(id.stream_id().map(|s| s.ms), Some(1796390340590));
/// assert_eq!(id.to_string(), "2:1:1796390340590-0");
/// assert!("1796390340590-0".parse::<MessageId>().is_err());
/// # Ok::<(), millrace::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    partition: u32,
    lane: u8,
    first: String,
}

/// What the first id of a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum First {
    /// A stream id: the message was published into its lane at once.
    Stream(StreamId),
    /// The token of a delayed message: `<due ms>-<sha1 hex>`.
    Delayed { due_ms: u64 },
}

fn classify(first: &str) -> Option<First> {
    let (ms, rest) = first.split_once('-')?;
    if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: u64 = ms.parse().ok()?;
    if rest.len() == DIGEST_HEX
        && rest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Some(First::Delayed { due_ms: ms });
    }
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(First::Stream(StreamId {
        ms,
        seq: rest.parse().ok()?,
    }))
}

impl MessageId {
    /// The identity of the message first published as `first` (a stream id
    /// `<ms>-<seq>`, or a delayed message's token `<due ms>-<sha1 hex>`) in
    /// `partition`, `lane`.
    pub fn new(partition: u32, lane: u8, first: &str) -> Result<Self> {
        match classify(first) {
            Some(_) => Ok(MessageId {
                partition,
                lane,
                first: first.to_string(),
            }),
            None => Err(Error::invalid(
                "message id",
                format!(
                    "{first:?} is neither a stream id <ms>-<seq> nor a delayed message's token <due ms>-<sha1>"
                ),
            )),
        }
    }

    /// The identity of a message whose first id was read from Redis: kept
    /// as it is, so an entry written by another version still has a name.
    pub(crate) fn read(partition: u32, lane: u8, first: String) -> Self {
        MessageId {
            partition,
            lane,
            first,
        }
    }

    /// The identity of a message published into its stream as `id`.
    pub(crate) fn of_stream(partition: u32, lane: u8, id: StreamId) -> Self {
        MessageId {
            partition,
            lane,
            first: id.to_string(),
        }
    }

    /// Parses `<partition>:<lane>:<first id>`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "message id",
                format!("{s:?} is not <partition>:<lane>:<id>, e.g. 2:0:1796390340590-0"),
            )
        };
        let mut parts = s.splitn(3, ':');
        let (Some(p), Some(l), Some(first)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(p) || !digits(l) {
            return Err(bad());
        }
        let partition = p.parse().map_err(|_| bad())?;
        let lane = l.parse().map_err(|_| bad())?;
        MessageId::new(partition, lane, first)
    }

    /// The partition the message was published to.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Its lane (priority; 0 is most urgent).
    pub fn lane(&self) -> u8 {
        self.lane
    }

    /// The id it was first published with: a stream id, or a delayed
    /// message's token.
    pub fn first(&self) -> &str {
        &self.first
    }

    /// The first id as a stream id; `None` for a message published with a
    /// delay (its first id is a token).
    pub fn stream_id(&self) -> Option<StreamId> {
        match classify(&self.first) {
            Some(First::Stream(id)) => Some(id),
            _ => None,
        }
    }

    /// For a message published with a delay, when it was due (ms since the
    /// epoch, Redis clock).
    pub fn due_ms(&self) -> Option<u64> {
        match classify(&self.first) {
            Some(First::Delayed { due_ms }) => Some(due_ms),
            _ => None,
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.partition, self.lane, self.first)
    }
}

impl FromStr for MessageId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        MessageId::parse(s)
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MessageId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_and_delayed_first_ids_parse_and_print_back() {
        let token = format!(
            "1796408640670-{}",
            "76aa4c119ec146ebaaf25abf22403d4c436390fe"
        );
        for s in ["0:0:1-0", "31:2:1796390340590-17", &format!("1:0:{token}")] {
            assert_eq!(MessageId::parse(s).unwrap().to_string(), s);
        }
        let d = MessageId::parse(&format!("1:0:{token}")).unwrap();
        assert_eq!(d.due_ms(), Some(1796408640670));
        assert_eq!(d.stream_id(), None);
        let s = MessageId::parse("3:1:12-4").unwrap();
        assert_eq!(s.stream_id(), Some(StreamId { ms: 12, seq: 4 }));
        assert_eq!(s.due_ms(), None);
    }

    #[test]
    fn malformed_ids_are_refused_with_the_form_named() {
        for s in [
            "",
            "1796390340590-0",
            "2:1796390340590-0",
            "x:0:1-0",
            "0:x:1-0",
            "0:256:1-0",
            "-1:0:1-0",
            "0:0:1",
            "0:0:1-",
            "0:0:1-x",
            "0:0:1-0:extra",
            "0:0:1-76AA4C119EC146EBAAF25ABF22403D4C436390FE",
        ] {
            let e = MessageId::parse(s).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidArgument {
                        what: "message id",
                        ..
                    }
                ),
                "{s:?}: {e}"
            );
        }
        insta::assert_snapshot!(
            MessageId::parse("2:1796390340590-0").unwrap_err().to_string(),
            @r#"invalid message id: "2:1796390340590-0" is not <partition>:<lane>:<id>, e.g. 2:0:1796390340590-0"#
        );
    }

    #[test]
    fn serializes_as_its_text() {
        let id = MessageId::parse("4:0:9-1").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""4:0:9-1""#);
        let back: MessageId = serde_json::from_str(r#""4:0:9-1""#).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<MessageId>(r#""4:0""#).is_err());
    }
}
