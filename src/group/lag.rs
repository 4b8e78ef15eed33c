//! A group's lag and pending count on one lane stream, from what `XINFO`
//! replies (pure: no I/O).

use redis::Value;

use crate::envelope::StreamId;

/// What the lag rule needs of one lane stream's `XINFO STREAM` reply (the
/// reply read once, however many groups are counted on it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StreamFacts {
    /// Entries it holds now (`length`).
    pub length: Option<u64>,
    /// Its last generated id.
    pub last_generated: Option<StreamId>,
    /// Entries ever added (`entries-added`; 0 where missing).
    pub entries_added: u64,
    /// The id of its first entry now (`first-entry`).
    pub first: Option<StreamId>,
}

/// What the lag rule needs of one group's entry in a lane stream's `XINFO
/// GROUPS` reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupFacts {
    /// The group.
    pub name: String,
    /// Delivered but not acknowledged (0 where missing).
    pub pending: u64,
    /// Redis's own `lag` (`None`: nil, Redis cannot tell).
    pub lag: Option<u64>,
    /// The last id delivered to the group.
    pub last_delivered: Option<StreamId>,
    /// Entries the group has read (`None`: nil or missing).
    pub entries_read: Option<u64>,
}

/// The key of a field/value pair as bytes, without allocating.
fn key_bytes(k: &Value) -> Option<&[u8]> {
    match k {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The field/value pairs of an `XINFO` reply by reference (an array of
/// pairs in RESP2, a map in RESP3).
fn pairs_of(v: &Value) -> Vec<(&[u8], &Value)> {
    match v {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| match c {
                [k, v] => Some((key_bytes(k)?, v)),
                _ => None,
            })
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((key_bytes(k)?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

fn id_of(v: &Value) -> Option<StreamId> {
    let text: String = redis::from_redis_value_ref(v).ok()?;
    StreamId::parse(&text).ok()
}

fn num_of(v: &Value) -> Option<u64> {
    redis::from_redis_value_ref(v).ok()
}

/// Reads a lane stream's `XINFO STREAM` reply.
pub(crate) fn stream_facts(stream: &Value) -> StreamFacts {
    let mut f = StreamFacts::default();
    for (k, v) in pairs_of(stream) {
        match k {
            b"length" => f.length = num_of(v),
            b"last-generated-id" => f.last_generated = id_of(v),
            b"entries-added" => f.entries_added = num_of(v).unwrap_or(0),
            b"first-entry" => {
                f.first = match v {
                    Value::Array(entry) => entry.first().and_then(id_of),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    f
}

/// Reads every group's entry of a lane stream's `XINFO GROUPS` reply, in
/// order (entries without a readable name are left out).
pub(crate) fn group_facts(groups: &Value) -> Vec<GroupFacts> {
    let Value::Array(list) = groups else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|entry| {
            let mut f = GroupFacts::default();
            let mut named = false;
            for (k, v) in pairs_of(entry) {
                match k {
                    b"name" => {
                        f.name = redis::from_redis_value_ref(v).ok()?;
                        named = true;
                    }
                    b"pending" => f.pending = num_of(v).unwrap_or(0),
                    b"lag" => f.lag = num_of(v),
                    b"last-delivered-id" => f.last_delivered = id_of(v),
                    b"entries-read" => f.entries_read = num_of(v),
                    _ => {}
                }
            }
            named.then_some(f)
        })
        .collect()
}

impl GroupFacts {
    /// `lag` and `pending` of this group on its lane stream.
    ///
    /// Redis's `lag` is `entries-added - entries-read`, and Redis 7.0's
    /// `entries-read` counter drifts when a stream is trimmed across
    /// restarts (seen in the soak: groups read to the last entry, nothing
    /// pending, "lag" in the thousands). So a group whose last delivered id
    /// is the stream's last generated id has lag 0, and no lag exceeds what
    /// the stream holds.
    ///
    /// A lag Redis cannot tell (nil: after a failover, the promoted replica
    /// knows no `entries-read` until the group reads to the end) is
    /// estimated from the entry ids' times: the share of the stream's time
    /// span after the last delivered id, times its length (all of it when
    /// the group is before the first entry, at least 1 while it is behind).
    /// Counting exactly would mean reading the entries; 0 would hide a
    /// backlog exactly when a group catches up after a failover.
    pub(crate) fn counts(&self, stream: &StreamFacts) -> (u64, u64) {
        let behind = match (self.last_delivered, stream.last_generated) {
            (Some(read_to), Some(last)) => read_to < last,
            _ => false,
        };
        let mut lag = match self.lag {
            Some(l) => l,
            None if behind => estimate(self.last_delivered, stream),
            None => 0,
        };
        if !behind && self.last_delivered.is_some() && stream.last_generated.is_some() {
            lag = 0;
        }
        if let Some(length) = stream.length {
            lag = lag.min(length);
        }
        (lag, self.pending)
    }
}

/// The entries after `read_to` in `stream`, estimated from the ids' times
/// (see [`GroupFacts::counts`]).
fn estimate(read_to: Option<StreamId>, stream: &StreamFacts) -> u64 {
    let length = stream.length.unwrap_or(0);
    let (Some(read_to), Some(first), Some(last)) = (read_to, stream.first, stream.last_generated)
    else {
        return length.max(1);
    };
    if read_to < first {
        return length.max(1);
    }
    let span = last.ms.saturating_sub(first.ms);
    if span == 0 {
        return 1;
    }
    let after = last.ms.saturating_sub(read_to.ms);
    let share = (u128::from(length) * u128::from(after) / u128::from(span)) as u64;
    share.clamp(1, length.max(1))
}

/// `lag` and `pending` of `group` on one lane stream, from its `XINFO
/// GROUPS` and `XINFO STREAM` replies ([`GroupFacts::counts`]); `None` when
/// the group has no position there.
pub(crate) fn lane_counts(groups: &Value, stream: &Value, group: &str) -> Option<(u64, u64)> {
    let g = group_facts(groups).into_iter().find(|g| g.name == group)?;
    Some(g.counts(&stream_facts(stream)))
}

/// The last id `group` was delivered on one lane stream, from its `XINFO
/// GROUPS` reply (`None` when the group has no position there).
pub(crate) fn last_delivered(groups: &Value, group: &str) -> Option<StreamId> {
    group_facts(groups)
        .into_iter()
        .find(|g| g.name == group)?
        .last_delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn pairs(kv: &[(&str, Value)]) -> Value {
        Value::Array(kv.iter().flat_map(|(k, v)| [bulk(k), v.clone()]).collect())
    }

    fn group_info(name: &str, last: &str, lag: Value, pending: i64) -> Value {
        pairs(&[
            ("name", bulk(name)),
            ("pending", Value::Int(pending)),
            ("last-delivered-id", bulk(last)),
            ("lag", lag),
        ])
    }

    fn stream_info(length: i64, last: &str) -> Value {
        pairs(&[
            ("length", Value::Int(length)),
            ("last-generated-id", bulk(last)),
        ])
    }

    #[test]
    fn a_group_read_to_the_end_has_no_lag_whatever_redis_counts() {
        let groups = Value::Array(vec![
            group_info("other", "5-0", Value::Int(7), 0),
            group_info("audit", "9-3", Value::Int(5174), 2),
        ]);
        let stream = stream_info(3742, "9-3");
        assert_eq!(lane_counts(&groups, &stream, "audit"), Some((0, 2)));
    }

    #[test]
    fn lag_is_never_more_than_the_stream_holds() {
        let groups = Value::Array(vec![group_info("g", "1-0", Value::Int(900), 0)]);
        assert_eq!(
            lane_counts(&groups, &stream_info(40, "9-0"), "g"),
            Some((40, 0))
        );
        let groups = Value::Array(vec![group_info("g", "1-0", Value::Int(12), 0)]);
        assert_eq!(
            lane_counts(&groups, &stream_info(40, "9-0"), "g"),
            Some((12, 0))
        );
    }

    fn with_first(mut stream: Value, first: &str) -> Value {
        if let Value::Array(f) = &mut stream {
            f.extend([
                bulk("first-entry"),
                Value::Array(vec![bulk(first), Value::Array(vec![])]),
            ]);
        }
        stream
    }

    #[test]
    fn a_lag_redis_cannot_tell_is_estimated_from_the_ids_times() {
        // 1000 entries from 1000 ms to 2000 ms; read to 1750: a quarter left.
        let stream = with_first(stream_info(1000, "2000-0"), "1000-0");
        let groups = Value::Array(vec![group_info("g", "1750-0", Value::Nil, 1)]);
        assert_eq!(lane_counts(&groups, &stream, "g"), Some((250, 1)));
        // Before the first entry: all of it.
        let groups = Value::Array(vec![group_info("g", "5-0", Value::Nil, 0)]);
        assert_eq!(lane_counts(&groups, &stream, "g"), Some((1000, 0)));
        // Behind within the last millisecond: at least 1, never 0.
        let groups = Value::Array(vec![group_info("g", "2000-0", Value::Nil, 0)]);
        assert_eq!(
            lane_counts(
                &groups,
                &with_first(stream_info(3, "2000-2"), "2000-0"),
                "g"
            ),
            Some((1, 0))
        );
        // Read to the end: 0, whatever Redis cannot tell.
        let groups = Value::Array(vec![group_info("g", "2000-0", Value::Nil, 0)]);
        assert_eq!(lane_counts(&groups, &stream, "g"), Some((0, 0)));
    }

    #[test]
    fn a_missing_group_has_no_counts() {
        let groups = Value::Array(vec![group_info("g", "1-0", Value::Nil, 1)]);
        assert_eq!(
            lane_counts(&groups, &stream_info(40, "9-0"), "nobody"),
            None
        );
    }

    #[test]
    fn facts_read_every_group_once_with_entries_read_and_entries_added() {
        let mut g = group_info("g", "1-0", Value::Int(3), 1);
        if let Value::Array(f) = &mut g {
            f.extend([bulk("entries-read"), Value::Int(7)]);
        }
        let groups = Value::Array(vec![g, group_info("h", "2-0", Value::Nil, 0)]);
        let facts = group_facts(&groups);
        assert_eq!(facts.len(), 2);
        assert_eq!(
            (facts[0].name.as_str(), facts[0].entries_read, facts[0].lag),
            ("g", Some(7), Some(3))
        );
        assert_eq!((facts[1].entries_read, facts[1].lag), (None, None));
        let mut stream = stream_info(40, "9-0");
        if let Value::Array(f) = &mut stream {
            f.extend([bulk("entries-added"), Value::Int(52)]);
        }
        let s = stream_facts(&stream);
        assert_eq!((s.length, s.entries_added), (Some(40), 52));
        assert_eq!(facts[0].counts(&s), (3, 1));
        assert_eq!(stream_facts(&Value::Nil), StreamFacts::default());
        assert!(group_facts(&Value::Nil).is_empty());
    }

    #[test]
    fn resp3_maps_read_like_arrays() {
        let map = |kv: Vec<(&str, Value)>| {
            Value::Map(kv.into_iter().map(|(k, v)| (bulk(k), v)).collect())
        };
        let groups = Value::Array(vec![map(vec![
            ("name", bulk("g")),
            ("pending", Value::Int(0)),
            ("last-delivered-id", bulk("9-0")),
            ("lag", Value::Int(33)),
        ])]);
        let stream = map(vec![
            ("length", Value::Int(50)),
            ("last-generated-id", bulk("9-0")),
        ]);
        assert_eq!(lane_counts(&groups, &stream, "g"), Some((0, 0)));
    }
}
