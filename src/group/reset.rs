//! Moving a group to another position; how a reset works is told on
//! [`ResetPlan`].

use redis::Value;
use serde::Serialize;

use crate::envelope::StreamId;
use crate::error::check;
use crate::error::{Error, Result};
use crate::reader::StartAt;
use crate::store::group_positions::{EntryRange, LanePosition, entry_id};
use crate::store::groups::{LaneXinfo, no_such_key};
use crate::topic::Catalog;

/// One partition lane of a [`ResetPlan`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LaneReset {
    /// The partition.
    pub partition: u32,
    /// The lane (priority).
    pub lane: u8,
    /// The group's last-delivered id now; `None` where the group does not
    /// exist on this lane yet (a partition added later): a reset creates it.
    pub from: Option<String>,
    /// The last-delivered id after the reset.
    pub to: String,
    /// Entries not yet delivered to the group now, as Redis reports it
    /// (`None` when Redis cannot tell, e.g. after deletions).
    pub lag_before: Option<u64>,
    /// Entries the group will be delivered after the reset.
    pub lag_after: u64,
    /// Entries delivered but not acknowledged; a reset leaves them pending.
    pub pending: u64,
}

/// What a group reset changes (or changed), per partition lane.
///
/// # How a reset works
///
/// Moving a group to another position: replay from the start, from a time
/// or an id, or skip to the end (like `kafka-consumer-groups
/// --reset-offsets`).
///
/// A reset sets the last-delivered id of the group's Redis consumer group on
/// every partition lane stream (`XGROUP SETID`), so its members' next reads
/// (`XREADGROUP ... >`) start after it:
///
/// | target | new last-delivered id, per lane | undelivered after the reset |
/// | --- | --- | --- |
/// | earliest | `0-0` | every retained entry (`XLEN`) |
/// | latest | the stream's last generated id | none |
/// | a time `t` | the id just before `t-0` | the entries published at or after `t` |
/// | an id `i` | the id just before `i` | the entries with id `i` or later |
///
/// **Lag after the reset** is counted at planning time: `XLEN` or 0 where
/// the target is before the first or after the last entry; otherwise the
/// entries on one side of the target are counted with paged `XRANGE` (the
/// side that looks shorter from the ids' timestamps) and the other side
/// follows from the length. The reset passes `ENTRIESREAD` (entries added
/// ever, minus that lag) with `SETID`, so Redis's own `lag` in `XINFO
/// GROUPS` (what `describe_group` shows) stays exact after a reset into the
/// middle of a stream, where Redis alone would report it as unknown.
/// Entries published after the plan was made count as undelivered, as they
/// should; the count is exact while nothing is trimmed meanwhile.
///
/// Left alone: the group's pending entries (delivered, not acknowledged)
/// stay pending and are still redelivered by the group's normal recovery
/// (a new owner's `XAUTOCLAIM`, the stranded-entry sweep); a reset to before
/// them also delivers them again as new reads. The group's retry stream and
/// retry set (retries and dead-letter replays to the group), its recorded
/// failed attempts, its members, leases and pause flag are not touched.
///
/// A reset refuses while the group has live members (a session deadline in
/// the future), unless forced: they would carry on from the new position
/// with messages already in hand. The check and the `SETID`s are separate
/// steps (the members live in another cluster slot than the streams), so a
/// member joining in between is not noticed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ResetPlan {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// The target: `earliest`, `latest`, an RFC 3339 time or a stream id.
    pub to: String,
    /// The group's live members when the plan was made, sorted.
    pub members: Vec<String>,
    /// Per partition lane, in partition then lane order.
    pub partitions: Vec<LaneReset>,
    /// Total lag after the reset.
    pub lag_after: u64,
    /// Total pending entries (left as they are).
    pub pending: u64,
    /// Whether the reset was applied (false for a plan).
    pub applied: bool,
}

/// What `XINFO STREAM` and `XINFO GROUPS` say about one lane.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LaneState {
    length: u64,
    entries_added: u64,
    last_generated: StreamId,
    first_entry: Option<StreamId>,
    group: Option<GroupState>,
}

impl Default for LaneState {
    /// A stream that does not exist (yet).
    fn default() -> Self {
        LaneState {
            length: 0,
            entries_added: 0,
            last_generated: ZERO,
            first_entry: None,
            group: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupState {
    last_delivered: StreamId,
    lag: Option<u64>,
    pending: u64,
}

/// How many entries a target leaves undelivered: known from the stream's
/// summary, or to be counted from the entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lag {
    Known(u64),
    /// Count the entries after this id (it lies inside the stream).
    After(StreamId),
}

const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

/// The new last-delivered id for `to` on a lane, and its lag.
fn target(to: &StartAt, s: &LaneState) -> (StreamId, Lag) {
    let x = match to {
        StartAt::Earliest => return (ZERO, Lag::Known(s.length)),
        StartAt::Latest => return (s.last_generated, Lag::Known(0)),
        StartAt::TimeMs(ms) => StreamId { ms: *ms, seq: 0 }.predecessor(),
        StartAt::Id(id) => id.predecessor(),
    };
    let lag = match s.first_entry {
        _ if s.length == 0 || x >= s.last_generated => Lag::Known(0),
        Some(first) if x >= first => Lag::After(x),
        _ => Lag::Known(s.length),
    };
    (x, lag)
}

/// How the target is named in a plan.
fn label(to: &StartAt) -> String {
    match to {
        StartAt::Earliest => "earliest".into(),
        StartAt::Latest => "latest".into(),
        StartAt::TimeMs(ms) => i128::from(*ms)
            .checked_mul(1_000_000)
            .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("{ms} ms")),
        StartAt::Id(id) => id.to_string(),
    }
}

/// The field/value pairs of a RESP2 array or a RESP3 map.
fn fields(v: &Value) -> Vec<(String, &Value)> {
    let key = |k: &Value| redis::from_redis_value::<String>(k.clone()).ok();
    match v {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| match c {
                [k, v] => Some((key(k)?, v)),
                _ => None,
            })
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((key(k)?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

fn field<'a>(fields: &[(String, &'a Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn num(v: Option<&Value>) -> Option<u64> {
    v.and_then(|v| redis::from_redis_value(v.clone()).ok())
}

fn id(v: Option<&Value>) -> Result<Option<StreamId>> {
    match v {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => {
            let s: String =
                redis::from_redis_value(v.clone()).map_err(|e| Error::Decode(e.to_string()))?;
            StreamId::parse(&s).map(Some)
        }
    }
}

/// Parses a lane's `XINFO STREAM` and `XINFO GROUPS` replies.
fn lane_state(stream: Value, groups: Value, group: &str) -> Result<LaneState> {
    if no_such_key(&stream) {
        return Ok(LaneState::default());
    }
    let stream = check(stream)?;
    let f = fields(&stream);
    let mut state = LaneState {
        length: num(field(&f, "length")).unwrap_or(0),
        entries_added: num(field(&f, "entries-added")).unwrap_or(0),
        last_generated: id(field(&f, "last-generated-id"))?.unwrap_or(ZERO),
        first_entry: field(&f, "first-entry")
            .map(entry_id)
            .transpose()?
            .flatten(),
        group: None,
    };
    if no_such_key(&groups) {
        return Ok(state);
    }
    let Value::Array(all) = check(groups)? else {
        return Err(Error::Decode("XINFO GROUPS reply is not an array".into()));
    };
    for g in &all {
        let f = fields(g);
        let name: Option<String> =
            field(&f, "name").and_then(|v| redis::from_redis_value(v.clone()).ok());
        if name.as_deref() == Some(group) {
            state.group = Some(GroupState {
                last_delivered: id(field(&f, "last-delivered-id"))?.unwrap_or(ZERO),
                lag: num(field(&f, "lag")),
                pending: num(field(&f, "pending")).unwrap_or(0),
            });
        }
    }
    Ok(state)
}

/// What [`reset_group`](crate::Client::reset_group) would do, without changing
/// anything: per partition lane the group's last-delivered id now and
/// after the reset, and the lag the reset leaves. See [`crate::group::reset`].
pub(crate) async fn plan_group_reset(
    cat: &Catalog,
    topic: &str,
    group: &str,
    to: &StartAt,
) -> Result<ResetPlan> {
    Ok(plan(cat, topic, group, to).await?.0)
}

/// The plan, and for each of its lanes the `ENTRIESREAD` to pass with
/// `SETID`: how many entries were ever added up to the new id.
async fn plan(
    cat: &Catalog,
    topic: &str,
    group: &str,
    to: &StartAt,
) -> Result<(ResetPlan, Vec<u64>)> {
    super::require_group(cat, topic, group).await?;
    let spec = cat.topic_cached(topic).await?;
    let store = cat.store();

    let now = cat.redis_time_ms().await?;
    let mut members = store.live_member_ids(topic, group, now).await?;
    members.sort();

    let mut partitions = Vec::new();
    let mut entries_read = Vec::new();
    for (p, lanes) in (0..spec.partitions).zip(store.lanes_xinfo(spec.layout()).await?) {
        for (lane, LaneXinfo { stream, groups }) in (0..spec.lanes).zip(lanes) {
            let state = lane_state(stream, groups, group)?;
            let (new_id, lag) = target(to, &state);
            let lag_after = match lag {
                Lag::Known(n) => n,
                Lag::After(x) => count_after(cat, topic, (p, lane), x, &state).await?,
            };
            partitions.push(LaneReset {
                partition: p,
                lane,
                from: state.group.as_ref().map(|g| g.last_delivered.to_string()),
                to: new_id.to_string(),
                lag_before: state.group.as_ref().and_then(|g| g.lag),
                lag_after,
                pending: state.group.as_ref().map_or(0, |g| g.pending),
            });
            entries_read.push(state.entries_added.saturating_sub(lag_after));
        }
    }
    let plan = ResetPlan {
        topic: topic.to_string(),
        group: group.to_string(),
        to: label(to),
        members,
        lag_after: partitions.iter().map(|l| l.lag_after).sum(),
        pending: partitions.iter().map(|l| l.pending).sum(),
        partitions,
        applied: false,
    };
    Ok((plan, entries_read))
}

/// Moves `group` to `to` on every partition lane of `topic`
/// (`XGROUP SETID`), and returns what it changed (see
/// [`plan_group_reset`](crate::Client::plan_group_reset)). Pending entries stay
/// pending; they are still redelivered by the group's normal recovery.
///
/// Refuses with [`Error::GroupHasMembers`] while the group has live
/// members, unless `force`; an unknown group is
/// [`Error::GroupNotFound`].
pub(crate) async fn reset_group(
    cat: &Catalog,
    topic: &str,
    group: &str,
    to: &StartAt,
    force: bool,
) -> Result<ResetPlan> {
    let (mut plan, entries_read) = plan(cat, topic, group, to).await?;
    if !plan.members.is_empty() && !force {
        return Err(Error::GroupHasMembers {
            topic: topic.to_string(),
            group: group.to_string(),
            members: plan.members,
        });
    }
    if plan.partitions.iter().any(|l| l.from.is_none()) {
        // A lane without the group (a partition added since): create it
        // there the way a worker would, then set it like the others.
        super::create_group(cat, topic, group, to).await?;
    }
    let lanes: Vec<LanePosition> = plan
        .partitions
        .iter()
        .zip(&entries_read)
        .map(|(l, read)| LanePosition {
            partition: l.partition,
            lane: l.lane,
            to: &l.to,
            entries_read: *read,
        })
        .collect();
    cat.store()
        .set_group_positions(topic, group, &lanes)
        .await?;
    tracing::info!(topic = %topic, group = %group, to = %plan.to, lag_after = plan.lag_after,
        forced = !plan.members.is_empty(), "group reset");
    plan.applied = true;
    Ok(plan)
}

/// Counts the entries of a lane stream after `x`, which lies between its
/// first entry and its last generated id: directly, or as the length minus
/// the entries up to `x` when that side looks shorter by time.
async fn count_after(
    cat: &Catalog,
    topic: &str,
    (partition, lane): (u32, u8),
    x: StreamId,
    s: &LaneState,
) -> Result<u64> {
    let first = s.first_entry.unwrap_or(ZERO);
    let before_is_shorter = x.ms.saturating_sub(first.ms) < s.last_generated.ms - x.ms;
    let range = |after, through| EntryRange {
        topic,
        partition,
        lane,
        after,
        through,
    };
    let store = cat.store();
    if before_is_shorter {
        let upto = store.count_lane_entries(range(None, x)).await?;
        Ok(s.length.saturating_sub(upto))
    } else {
        // Only up to the last id seen in the summary: entries added since
        // are not in `entries_added` either, and count as lag anyway.
        store
            .count_lane_entries(range(Some(x), s.last_generated))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    fn stream(first: u64, last: u64, length: u64) -> LaneState {
        LaneState {
            length,
            entries_added: length + 5,
            last_generated: sid(last, 0),
            first_entry: Some(sid(first, 0)),
            group: None,
        }
    }

    #[test]
    fn targets_per_position() {
        let s = stream(100, 200, 50);
        assert_eq!(target(&StartAt::Earliest, &s), (ZERO, Lag::Known(50)));
        assert_eq!(target(&StartAt::Latest, &s), (sid(200, 0), Lag::Known(0)));
        // Before the first entry: everything; inside: count; after: nothing.
        assert_eq!(
            target(&StartAt::TimeMs(50), &s),
            (sid(49, u64::MAX), Lag::Known(50))
        );
        assert_eq!(
            target(&StartAt::TimeMs(100), &s),
            (sid(99, u64::MAX), Lag::Known(50))
        );
        assert_eq!(
            target(&StartAt::TimeMs(150), &s),
            (sid(149, u64::MAX), Lag::After(sid(149, u64::MAX)))
        );
        assert_eq!(
            target(&StartAt::Id(sid(100, 1)), &s),
            (sid(100, 0), Lag::After(sid(100, 0)))
        );
        assert_eq!(
            target(&StartAt::Id(sid(200, 0)), &s),
            (sid(199, u64::MAX), Lag::After(sid(199, u64::MAX)))
        );
        assert_eq!(
            target(&StartAt::Id(sid(200, 1)), &s),
            (sid(200, 0), Lag::Known(0))
        );
        assert_eq!(
            target(&StartAt::TimeMs(300), &s),
            (sid(299, u64::MAX), Lag::Known(0))
        );
    }

    #[test]
    fn an_empty_or_missing_stream_has_nothing_to_deliver() {
        let empty = LaneState::default();
        for to in [
            StartAt::Earliest,
            StartAt::Latest,
            StartAt::TimeMs(5),
            StartAt::Id(sid(5, 5)),
        ] {
            assert_eq!(target(&to, &empty).1, Lag::Known(0), "{to:?}");
        }
        assert_eq!(target(&StartAt::Latest, &empty).0, ZERO);
    }

    #[test]
    fn targets_are_labelled_as_typed() {
        assert_eq!(label(&StartAt::Earliest), "earliest");
        assert_eq!(label(&StartAt::Latest), "latest");
        assert_eq!(
            label(&StartAt::TimeMs(1_764_237_600_123)),
            "2025-11-27T10:00:00.123Z"
        );
        assert_eq!(label(&StartAt::Id(sid(5, 2))), "5-2");
    }

    #[test]
    fn xinfo_replies_parse() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let stream = Value::Array(vec![
            bulk("length"),
            Value::Int(5),
            bulk("last-generated-id"),
            bulk("5-0"),
            bulk("entries-added"),
            Value::Int(7),
            bulk("first-entry"),
            Value::Array(vec![bulk("3-0"), Value::Array(vec![bulk("k"), bulk("")])]),
        ]);
        let group = |name: &str, lag: Value| {
            Value::Array(vec![
                bulk("name"),
                bulk(name),
                bulk("pending"),
                Value::Int(2),
                bulk("last-delivered-id"),
                bulk("4-0"),
                bulk("lag"),
                lag,
            ])
        };
        let groups = Value::Array(vec![group("other", Value::Int(9)), group("g", Value::Nil)]);
        assert_eq!(
            lane_state(stream, groups, "g").unwrap(),
            LaneState {
                length: 5,
                entries_added: 7,
                last_generated: sid(5, 0),
                first_entry: Some(sid(3, 0)),
                group: Some(GroupState {
                    last_delivered: sid(4, 0),
                    lag: None,
                    pending: 2,
                }),
            }
        );
    }
}
