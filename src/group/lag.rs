//! A group's lag and pending count on one lane stream, from what `XINFO`
//! replies (pure: no I/O).

use redis::Value;

use crate::envelope::StreamId;

/// The field/value pairs of an `XINFO` reply (an array of pairs in RESP2,
/// a map in RESP3).
fn info_fields(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| match c {
                [k, v] => Some((redis::from_redis_value_ref(k).ok()?, v)),
                _ => None,
            })
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((redis::from_redis_value_ref(k).ok()?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The fields of `group`'s entry in an `XINFO GROUPS` reply.
fn group_fields<'a>(groups: &'a Value, group: &str) -> Option<Vec<(String, &'a Value)>> {
    let Value::Array(list) = groups else {
        return None;
    };
    list.iter().map(info_fields).find(|f| {
        f.iter().any(|(k, v)| {
            k == "name" && redis::from_redis_value_ref::<String>(v).ok().as_deref() == Some(group)
        })
    })
}

/// The last id `group` was delivered on one lane stream, from its `XINFO
/// GROUPS` reply (`None` when the group has no position there).
pub(crate) fn last_delivered(groups: &Value, group: &str) -> Option<StreamId> {
    let fields = group_fields(groups, group)?;
    let (_, v) = fields.iter().find(|(k, _)| k == "last-delivered-id")?;
    let text: String = redis::from_redis_value_ref(v).ok()?;
    StreamId::parse(&text).ok()
}

/// `lag` and `pending` of `group` on one lane stream, from its `XINFO
/// GROUPS` and `XINFO STREAM` replies.
///
/// Redis's `lag` is `entries-added - entries-read`, and Redis 7.0's
/// `entries-read` counter drifts when a stream is trimmed across restarts
/// (seen in the soak: groups read to the last entry, nothing pending, "lag"
/// in the thousands). So a group whose last delivered id is the stream's
/// last generated id has lag 0, and no lag exceeds what the stream holds; a
/// lag Redis cannot tell (nil) counts as 0.
pub(crate) fn lane_counts(groups: &Value, stream: &Value, group: &str) -> Option<(u64, u64)> {
    let fields = group_fields(groups, group)?;
    fn get<'a>(fields: &[(String, &'a Value)], name: &str) -> Option<&'a Value> {
        fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
    fn num(fields: &[(String, &Value)], name: &str) -> Option<u64> {
        get(fields, name).and_then(|v| redis::from_redis_value_ref(v).ok())
    }
    fn id(fields: &[(String, &Value)], name: &str) -> Option<StreamId> {
        let text: String = redis::from_redis_value_ref(get(fields, name)?).ok()?;
        StreamId::parse(&text).ok()
    }
    let pending = num(&fields, "pending").unwrap_or(0);
    let mut lag = num(&fields, "lag").unwrap_or(0);
    let s = info_fields(stream);
    if let (Some(read_to), Some(last)) = (
        id(&fields, "last-delivered-id"),
        id(&s, "last-generated-id"),
    ) && read_to >= last
    {
        lag = 0;
    }
    if let Some(length) = num(&s, "length") {
        lag = lag.min(length);
    }
    Some((lag, pending))
}

/// How many entries `group` has read on one lane stream (`entries-read` in
/// its `XINFO GROUPS` entry): `None` when the group has no position there
/// or Redis cannot tell (nil, e.g. after a `SETID` without `ENTRIESREAD`).
pub(crate) fn entries_read(groups: &Value, group: &str) -> Option<u64> {
    let fields = group_fields(groups, group)?;
    let (_, v) = fields.iter().find(|(k, _)| k == "entries-read")?;
    redis::from_redis_value_ref(v).ok()
}

/// What one lane stream holds now and has ever been given, from its
/// `XINFO STREAM` reply: `(length, entries-added)`, each 0 where missing.
pub(crate) fn stream_totals(stream: &Value) -> (u64, u64) {
    let s = info_fields(stream);
    let num = |name: &str| {
        s.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| redis::from_redis_value_ref(v).ok())
            .unwrap_or(0)
    };
    (num("length"), num("entries-added"))
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

    #[test]
    fn a_lag_redis_cannot_tell_counts_as_zero_and_a_missing_group_as_none() {
        let groups = Value::Array(vec![group_info("g", "1-0", Value::Nil, 1)]);
        assert_eq!(
            lane_counts(&groups, &stream_info(40, "9-0"), "g"),
            Some((0, 1))
        );
        assert_eq!(
            lane_counts(&groups, &stream_info(40, "9-0"), "nobody"),
            None
        );
    }

    #[test]
    fn entries_read_and_stream_totals() {
        let mut g = group_info("g", "1-0", Value::Int(3), 1);
        if let Value::Array(f) = &mut g {
            f.extend([bulk("entries-read"), Value::Int(7)]);
        }
        let groups = Value::Array(vec![g, group_info("h", "1-0", Value::Nil, 0)]);
        assert_eq!(entries_read(&groups, "g"), Some(7));
        assert_eq!(entries_read(&groups, "h"), None, "no field");
        assert_eq!(entries_read(&groups, "nobody"), None);
        let mut stream = stream_info(40, "9-0");
        if let Value::Array(f) = &mut stream {
            f.extend([bulk("entries-added"), Value::Int(52)]);
        }
        assert_eq!(stream_totals(&stream), (40, 52));
        assert_eq!(stream_totals(&Value::Nil), (0, 0));
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
