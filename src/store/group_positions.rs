//! Where a group stands on its lane streams, and moving it: what `XINFO`
//! says of each lane, counting a lane's entries between two ids, and
//! setting the group's last-delivered ids (`XGROUP SETID`) for a reset.

use redis::Value;

use super::Store;
use super::groups::LaneXinfo;
use super::topics::Layout;
use crate::envelope::StreamId;
use crate::error::{Error, Result, check};

/// Entries fetched per `XRANGE` while counting.
const COUNT_PAGE: usize = 1000;

/// Entries of one lane stream to count: after `after` (from the first
/// entry when `None`) up to and including `through`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryRange<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// The lane.
    pub lane: u8,
    /// Count only entries after this id; `None` counts from the first.
    pub after: Option<StreamId>,
    /// The last id counted (inclusive).
    pub through: StreamId,
}

/// Where a group is to stand on one lane stream after a reset.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LanePosition<'a> {
    /// The partition.
    pub partition: u32,
    /// The lane.
    pub lane: u8,
    /// The new last-delivered id.
    pub to: &'a str,
    /// Entries ever added up to `to` (`ENTRIESREAD`), so Redis's own lag
    /// stays exact.
    pub entries_read: u64,
}

impl Store<'_> {
    /// Per partition, per lane (lane 0 first): the `XINFO STREAM` and
    /// `XINFO GROUPS` replies as Redis sent them (server errors included;
    /// a lane that never existed replies "no such key"), one pipeline per
    /// partition's slot.
    pub(crate) async fn lanes_xinfo(&self, t: Layout<'_>) -> Result<Vec<Vec<LaneXinfo>>> {
        self.keys.require(t.topic)?;
        let keys = self.keys;
        let cmds: Vec<Vec<redis::Cmd>> = (0..t.partitions)
            .map(|p| {
                (0..t.lanes)
                    .flat_map(|lane| {
                        let key = keys.stream(t.topic, p, lane);
                        [
                            redis::cmd("XINFO").arg("STREAM").arg(&key).clone(),
                            redis::cmd("XINFO").arg("GROUPS").arg(&key).clone(),
                        ]
                    })
                    .collect()
            })
            .collect();
        let mut out = Vec::with_capacity(t.partitions as usize);
        for vals in self.query_grouped(cmds).await? {
            let mut vals = vals.into_iter();
            let mut lanes = Vec::with_capacity(t.lanes as usize);
            for _ in 0..t.lanes {
                let (Some(stream), Some(groups)) = (vals.next(), vals.next()) else {
                    return Err(Error::Decode("XINFO reply is missing".into()));
                };
                lanes.push(LaneXinfo { stream, groups });
            }
            out.push(lanes);
        }
        Ok(out)
    }

    /// Counts the entries of a lane stream in `r`, with `XRANGE` in pages
    /// of a thousand.
    pub(crate) async fn count_lane_entries(&self, r: EntryRange<'_>) -> Result<u64> {
        self.keys.require(r.topic)?;
        let key = self.keys.stream(r.topic, r.partition, r.lane);
        let end = r.through.to_string();
        let mut start = match r.after {
            Some(x) => format!("({x}"),
            None => "-".into(),
        };
        let mut conn = self.conn.clone();
        let mut total = 0u64;
        loop {
            let page: Value = redis::cmd("XRANGE")
                .arg(&key)
                .arg(&start)
                .arg(&end)
                .arg("COUNT")
                .arg(COUNT_PAGE)
                .query_async(&mut conn)
                .await?;
            let Value::Array(entries) = page else {
                return Err(Error::Decode("XRANGE reply is not an array".into()));
            };
            total += entries.len() as u64;
            match entries.last().map(entry_id).transpose()?.flatten() {
                Some(last) if entries.len() == COUNT_PAGE => start = format!("({last}"),
                _ => return Ok(total),
            }
        }
    }

    /// Sets `group`'s last-delivered id on each lane stream of `topic`
    /// (`XGROUP SETID ... ENTRIESREAD`), one pipeline per partition's slot
    /// (`lanes` in partition then lane order). On a Redis-compatible server
    /// without `ENTRIESREAD`, sets the ids alone (Redis then reports the lag
    /// as unknown until the group reads).
    pub(crate) async fn set_group_positions(
        &self,
        topic: &str,
        group: &str,
        lanes: &[LanePosition<'_>],
    ) -> Result<()> {
        self.keys.require(topic)?;
        let keys = self.keys;
        // One group of commands per partition (one cluster slot each).
        let batch = |with_entries_read: bool| -> Vec<Vec<redis::Cmd>> {
            let mut groups: Vec<Vec<redis::Cmd>> = Vec::new();
            for l in lanes {
                let mut c = redis::cmd("XGROUP");
                c.arg("SETID")
                    .arg(keys.stream(topic, l.partition, l.lane))
                    .arg(group)
                    .arg(l.to);
                if with_entries_read {
                    c.arg("ENTRIESREAD").arg(l.entries_read);
                }
                match groups.last_mut() {
                    Some(g) if l.lane > 0 => g.push(c),
                    _ => groups.push(vec![c]),
                }
            }
            groups
        };
        let mut replies: Vec<Value> = self
            .query_grouped(batch(true))
            .await?
            .into_iter()
            .flatten()
            .collect();
        let unsupported = |v: &Value| {
            matches!(v, Value::ServerError(e)
            if e.details().is_some_and(|d| {
                let d = d.to_ascii_lowercase();
                d.contains("syntax") || d.contains("entriesread")
            }))
        };
        if replies.iter().any(unsupported) {
            tracing::debug!("XGROUP SETID without ENTRIESREAD");
            replies = self
                .query_grouped(batch(false))
                .await?
                .into_iter()
                .flatten()
                .collect();
        }
        for v in replies {
            check(v)?;
        }
        Ok(())
    }
}

/// The id of an entry as `XRANGE` or `XINFO STREAM` returns it (`[id,
/// fields]`); `None` for anything else.
pub(crate) fn entry_id(v: &Value) -> Result<Option<StreamId>> {
    let Value::Array(parts) = v else {
        return Ok(None);
    };
    match parts.first() {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => {
            let s: String =
                redis::from_redis_value(v.clone()).map_err(|e| Error::Decode(e.to_string()))?;
            StreamId::parse(&s).map(Some)
        }
    }
}
