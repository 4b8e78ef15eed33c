//! The Redis key schema: the only place key strings are built.
//!
//! Every key of one topic-partition carries the hash tag `{T:p}`, so every
//! script that touches a partition (publish with dedup, promote, ack, retry,
//! dead-letter) runs in one Redis Cluster slot, while the partitions of a topic
//! spread over the cluster. Topic-wide keys carry `{T}`; a group's coordination
//! keys carry `{T|G}`. Names are validated before they get here, and the rules
//! forbid `{`, `}`, `:`, `|` and glob characters, so no name can move a key into
//! another tag or match another tenant's keys.
//!
//! A topic created with balanced placement on a cluster tags partition `p`
//! `{T:p.n}` instead, with the suffix `n` its metadata names (see
//! [`crate::placement`]). The key space keeps the tags of every topic whose
//! metadata this client read ([`KeySpace::tags`]); the store refuses, with
//! [`Error::PlacementUnknown`], to build a partition's keys for a topic
//! whose tags it has not read, so no path can silently use `{T:p}` for a
//! balanced topic.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result, shown_name};
use crate::placement::Tags;

/// Longest topic or group name accepted.
pub const MAX_NAME_LEN: usize = 200;
/// Longest dedup id accepted.
pub const MAX_DEDUP_ID_LEN: usize = 256;

/// Checks a topic or group name: 1 to 200 characters from lowercase letters,
/// digits, `.`, `-` and `_`, starting with a letter or digit.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            what,
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 200 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return bad("only lowercase letters, digits, '.', '-' and '_' are allowed");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or a digit");
    }
    Ok(())
}

/// Checks a topic name for creation and publishing: the name rules, and the
/// suffix `.dlq` is reserved for dead-letter views.
pub fn validate_topic(name: &str) -> Result<()> {
    validate_name("topic", name)?;
    if name.ends_with(".dlq") {
        return Err(Error::InvalidName {
            what: "topic",
            name: name.to_string(),
            reason: "the suffix .dlq is reserved for dead-letter views",
        });
    }
    Ok(())
}

/// Checks a key prefix: 1 to 64 characters from ASCII letters, digits, `_`,
/// `-` and `.`.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid key prefix {}: use 1 to 64 letters, digits, '.', '-' or '_'",
            shown_name(prefix)
        )))
    }
}

/// Checks a dedup id: 1 to 256 bytes, no control characters.
pub fn validate_dedup_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_DEDUP_ID_LEN || id.chars().any(char::is_control) {
        return Err(Error::invalid(
            "dedup id",
            format!(
                "{} must be 1 to 256 bytes without control characters",
                shown_name(id)
            ),
        ));
    }
    Ok(())
}

/// Topic name -> its partition tags (looked up on every key built).
type TagMap = HashMap<String, Tags, foldhash::fast::RandomState>;

/// Builds keys under one prefix. Clones share the topics' tags.
#[derive(Clone, Debug)]
pub struct KeySpace {
    prefix: String,
    tags: Arc<RwLock<TagMap>>,
}

impl KeySpace {
    /// A key space for a prefix that [`validate_prefix`] accepted.
    pub fn new(prefix: impl Into<String>) -> Self {
        KeySpace {
            prefix: prefix.into(),
            tags: Arc::default(),
        }
    }

    /// Records `topic`'s partition tags, as its metadata says (the catalog
    /// calls this whenever it reads or creates a topic's settings). Not for
    /// applications: tags other than the metadata's build other keys.
    #[doc(hidden)]
    pub fn remember(&self, topic: &str, tags: Tags) {
        if let Ok(mut known) = self.tags.write() {
            known.insert(topic.to_string(), tags);
        }
    }

    /// The partition tags of `topic` (of `T` for the dead-letter view
    /// `T.dlq`) if this client has read its settings. A topic it has not
    /// read gets `{T:p}` keys from the builders below.
    pub fn tags(&self, topic: &str) -> Option<Tags> {
        let base = topic.strip_suffix(".dlq").unwrap_or(topic);
        self.tags.read().ok()?.get(base).cloned()
    }

    /// Succeeds when the tags of `topic` are known; otherwise
    /// [`Error::PlacementUnknown`]. Every store step that builds partition
    /// keys checks this first.
    pub(crate) fn require(&self, topic: &str) -> Result<()> {
        let base = topic.strip_suffix(".dlq").unwrap_or(topic);
        let known = self
            .tags
            .read()
            .map(|k| k.contains_key(base))
            .unwrap_or(false);
        if known {
            Ok(())
        } else {
            Err(Error::PlacementUnknown(base.to_string()))
        }
    }

    /// The balanced suffix of partition `p` of `topic`, if it has one.
    fn suffix(&self, topic: &str, p: u32) -> Option<u32> {
        self.tags.read().ok()?.get(topic)?.suffix(p)
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Set of all topic names (the registry `topic list` reads).
    pub fn topics(&self) -> String {
        format!("{}:topics", self.prefix)
    }

    /// Hash of all schedules: name -> the spec as JSON.
    pub fn schedules(&self) -> String {
        format!("{}:schedules", self.prefix)
    }

    /// Hash of each schedule's last published fire: name -> ms since the epoch.
    pub fn schedules_last(&self) -> String {
        format!("{}:schedules:last", self.prefix)
    }

    /// String: the compatibility mode of every schema subject that has no
    /// mode of its own (BACKWARD when unset).
    pub fn schema_default_mode(&self) -> String {
        format!("{}:schema-mode", self.prefix)
    }

    /// Hash with a topic's settings.
    pub fn meta(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:meta", self.prefix)
    }

    /// Hash of a topic's schema subject: `latest`, `mode`, `v:<N>` (the
    /// document of version N), `h:<sha1>` (the version of a document).
    pub fn schemas(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:schemas", self.prefix)
    }

    /// Set of a topic's consumer group names.
    pub fn groups(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:groups", self.prefix)
    }

    /// The hash-tagged base of partition `p`, `mr:{T:p}`, followed by
    /// `tail`. For the dead-letter view `T.dlq`, keys live beside the DLQ
    /// stream of `T` (`mr:{T:p}:dlq...`), in the same slot.
    fn part(&self, topic: &str, p: u32, tail: &[&str]) -> String {
        match topic.strip_suffix(".dlq") {
            Some(base) => self.tagged(base, p, ":dlq", tail),
            None => self.tagged(topic, p, "", tail),
        }
    }

    /// `mr:{T:p}` (`mr:{T:p.n}` for a balanced topic) + `first` + `tail`,
    /// built without the formatting machinery: publishes and reads build
    /// these on every call.
    fn tagged(&self, topic: &str, p: u32, first: &str, tail: &[&str]) -> String {
        let mut digits = itoa::Buffer::new();
        let p_text = digits.format(p);
        let mut suffix_digits = itoa::Buffer::new();
        let suffix = self.suffix(topic, p).map(|n| suffix_digits.format(n));
        let len = self.prefix.len()
            + topic.len()
            + p_text.len()
            + suffix.map_or(0, |s| s.len() + 1)
            + 4
            + first.len()
            + tail.iter().map(|t| t.len()).sum::<usize>();
        let mut key = String::with_capacity(len);
        key.push_str(&self.prefix);
        key.push_str(":{");
        key.push_str(topic);
        key.push(':');
        key.push_str(p_text);
        if let Some(n) = suffix {
            key.push('.');
            key.push_str(n);
        }
        key.push('}');
        key.push_str(first);
        for t in tail {
            key.push_str(t);
        }
        key
    }

    /// Stream of partition `p`, lane `lane`.
    /// For the dead-letter view `T.dlq` this is the DLQ stream of `T`.
    pub fn stream(&self, topic: &str, p: u32, lane: u8) -> String {
        if topic.ends_with(".dlq") {
            return self.part(topic, p, &[]);
        }
        let mut digits = itoa::Buffer::new();
        self.part(topic, p, &[":s:", digits.format(lane)])
    }

    /// Sorted set of partition `p`'s delayed messages, score = due time (ms).
    pub fn delayed(&self, topic: &str, p: u32) -> String {
        self.part(topic, p, &[":delayed"])
    }

    /// Dead-letter stream of partition `p` (all groups).
    pub fn dlq(&self, topic: &str, p: u32) -> String {
        self.tagged(topic, p, ":dlq", &[])
    }

    /// Dedup marker of an idempotent publish into partition `p`.
    pub fn dedup(&self, topic: &str, p: u32, dedup_id: &str) -> String {
        self.part(topic, p, &[":dedup:", dedup_id])
    }

    /// Group `group`'s retry set in partition `p`.
    pub fn retry(&self, topic: &str, p: u32, group: &str) -> String {
        self.part(topic, p, &[":g:", group, ":retry"])
    }

    /// Group `group`'s failed attempts in partition `p` (ordered mode):
    /// message id -> JSON `{"n": failures, "due": ms, "err": last error}`.
    pub fn attempts(&self, topic: &str, p: u32, group: &str) -> String {
        self.part(topic, p, &[":g:", group, ":attempts"])
    }

    /// Group `group`'s retry stream in partition `p`: messages due again
    /// (shared-mode retries) or replayed from the dead-letter queue to this
    /// group only. Read by the group alone.
    pub fn retry_stream(&self, topic: &str, p: u32, group: &str) -> String {
        self.part(topic, p, &[":g:", group, ":rs"])
    }

    /// Group `group`'s kept result of the message `<lane>:<first id>` of
    /// partition `p` (hash with a TTL: `s` ok|failed, `v` the value as
    /// MessagePack, `e` the error, `a` attempts, `d` the dead-letter id,
    /// `t` when, Redis ms).
    pub fn result(&self, topic: &str, p: u32, group: &str, lane: u8, first: &str) -> String {
        let mut digits = itoa::Buffer::new();
        self.part(
            topic,
            p,
            &[":g:", group, ":r:", digits.format(lane), ":", first],
        )
    }

    /// The Pub/Sub channel a requester's replies arrive on. Not a key:
    /// classic Pub/Sub reaches every node of a cluster, so a script in any
    /// slot may publish to it.
    pub fn reply_channel(&self, requester: &str) -> String {
        format!("{}:reply:{requester}", self.prefix)
    }

    /// Wakes promoters of partition `p` when something was scheduled there.
    pub fn wake(&self, topic: &str, p: u32) -> String {
        self.part(topic, p, &[":wake"])
    }

    /// Group `group`'s lease (owner, epoch) of partition `p`.
    pub fn lease(&self, topic: &str, p: u32, group: &str) -> String {
        self.part(topic, p, &[":g:", group, ":lease"])
    }

    /// Group membership (sorted set, score = session deadline).
    pub fn members(&self, topic: &str, group: &str) -> String {
        format!("{}:{{{topic}|{group}}}:members", self.prefix)
    }

    /// Group member details (hash member -> `static|joined_ms|heartbeat_ms`).
    pub fn member_info(&self, topic: &str, group: &str) -> String {
        format!("{}:{{{topic}|{group}}}:info", self.prefix)
    }

    /// Present while the group is paused.
    pub fn paused(&self, topic: &str, group: &str) -> String {
        format!("{}:{{{topic}|{group}}}:paused", self.prefix)
    }

    /// The group's rate-limit window (hash: window, used).
    pub fn rate(&self, topic: &str, group: &str) -> String {
        format!("{}:{{{topic}|{group}}}:rate", self.prefix)
    }

    /// The group's cancel requests (hash message id -> requested at, ms;
    /// field `v` counts the requests, so a member's heartbeat sees a new one).
    pub fn cancels(&self, topic: &str, group: &str) -> String {
        format!("{}:{{{topic}|{group}}}:cancel", self.prefix)
    }

    /// Group's target assignment (hash partition -> member).
    pub fn assign(&self, topic: &str, group: &str) -> String {
        format!("{}:{{{topic}|{group}}}:assign", self.prefix)
    }

    /// Every key of a topic with `partitions` partitions and `lanes` lanes,
    /// with its type and purpose, as documentation and for the key-layout
    /// snapshot. `group` and `dedup_id` stand in for their families.
    pub fn layout(
        &self,
        topic: &str,
        partitions: u32,
        lanes: u8,
        group: &str,
        dedup_id: &str,
    ) -> Vec<(String, &'static str, &'static str)> {
        let mut out = vec![
            (self.topics(), "set", "names of all topics"),
            (self.schedules(), "hash", "schedule specs by name (JSON)"),
            (self.schedules_last(), "hash", "last fire ms by schedule"),
            (self.meta(topic), "hash", "topic settings"),
            (self.groups(topic), "set", "names of the topic's groups"),
        ];
        for p in 0..partitions {
            for lane in 0..lanes {
                out.push((self.stream(topic, p, lane), "stream", "partition lane"));
            }
            out.push((self.delayed(topic, p), "zset", "delayed messages by due ms"));
            out.push((self.dlq(topic, p), "stream", "dead letters"));
            out.push((
                self.dedup(topic, p, dedup_id),
                "string+ttl",
                "id of a deduplicated publish",
            ));
            out.push((
                self.wake(topic, p),
                "list",
                "wakes promoters (at most 1 item)",
            ));
            out.push((
                self.retry(topic, p, group),
                "zset",
                "group retries by due ms",
            ));
            out.push((
                self.retry_stream(topic, p, group),
                "stream",
                "group retries and replays due now",
            ));
            out.push((
                self.attempts(topic, p, group),
                "hash",
                "group failed attempts per id",
            ));
            out.push((
                self.result(topic, p, group, 0, "1733310000000-0"),
                "hash+ttl",
                "group result of a message (kept result_ttl)",
            ));
            out.push((
                self.lease(topic, p, group),
                "hash",
                "group lease: owner, epoch",
            ));
        }
        out.push((
            self.members(topic, group),
            "zset",
            "group members by deadline",
        ));
        out.push((
            self.member_info(topic, group),
            "hash",
            "group member details",
        ));
        out.push((self.assign(topic, group), "hash", "group target assignment"));
        out.push((
            self.paused(topic, group),
            "string",
            "present while the group is paused",
        ));
        out.push((self.rate(topic, group), "hash", "group rate-limit window"));
        out.push((
            self.cancels(topic, group),
            "hash",
            "group cancel requests by message id",
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        for ok in ["erp.v1.invoice.created", "a", "0-x_y", &"a".repeat(200)] {
            validate_topic(ok).unwrap();
        }
        for bad in [
            "",
            "Upper",
            "has space",
            "brace{x}",
            "colon:x",
            "star*",
            "q?",
            "[set]",
            "pipe|x",
            ".leading",
            "-leading",
            "ünïcode",
            &"a".repeat(201),
        ] {
            let e = validate_topic(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidName { .. }), "{bad:?} gave {e}");
        }
        let e = validate_topic("orders.dlq").unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        validate_name("group", "orders.dlq").unwrap();
    }

    #[test]
    fn the_dead_letter_view_maps_to_dlq_streams_in_the_same_slot() {
        let k = KeySpace::new("mr");
        assert_eq!(k.stream("orders.dlq", 3, 0), k.dlq("orders", 3));
        assert_eq!(
            k.lease("orders.dlq", 3, "alerts"),
            "mr:{orders:3}:dlq:g:alerts:lease"
        );
    }

    #[test]
    fn partition_keys_share_one_hash_tag() {
        let k = KeySpace::new("mr");
        let tag = |key: &str| {
            let open = key.find('{').unwrap();
            let close = key[open..].find('}').unwrap() + open;
            key[open + 1..close].to_string()
        };
        let keys = [
            k.stream("t", 3, 0),
            k.stream("t", 3, 2),
            k.delayed("t", 3),
            k.dlq("t", 3),
            k.dedup("t", 3, "x{y}"),
            k.retry("t", 3, "g"),
            k.lease("t", 3, "g"),
        ];
        for key in &keys {
            assert_eq!(tag(key), "t:3", "{key}");
        }
        // A balanced topic's keys carry its chosen tag, the view's too.
        assert!(k.require("t").is_err());
        k.remember("t", Tags::Balanced(vec![0, 0, 0, 41].into()));
        k.require("t.dlq").unwrap();
        for key in [
            k.stream("t", 3, 1),
            k.dlq("t", 3),
            k.lease("t.dlq", 3, "g"),
            k.result("t", 3, "g", 0, "1-0"),
        ] {
            assert_eq!(tag(&key), "t:3.41", "{key}");
        }
        assert_eq!(k.stream("t", 3, 1), "mr:{t:3.41}:s:1");
    }
}
