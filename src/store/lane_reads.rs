//! Reading a topic's lane streams without a consumer group (the `Reader`):
//! the last entry of each lane, a batch after a cursor (`XRANGE`, one
//! pipeline per partition's slot), and waiting for new entries with a
//! blocking `XREAD` on a dedicated pooled connection (one per partition on
//! a cluster, where one `XREAD` cannot span slots). Each read is sent again
//! while its failure passes ([`idempotent`]).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::Value;

use super::backend::Backend;
use super::{Store, idempotent};
use crate::envelope::{Message, StreamId, parse_entries, parse_entry};
use crate::error::{Error, Result, check};

/// One lane stream of a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaneRef {
    /// The partition.
    pub partition: u32,
    /// The lane.
    pub lane: u8,
}

/// A lane stream and the position read up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaneCursor {
    /// The lane stream.
    pub at: LaneRef,
    /// The last id read (exclusive: reads start after it).
    pub after: StreamId,
}

/// New entries of one lane, found by [`Backend::wait_for_lanes`].
#[derive(Debug)]
pub(crate) struct LaneNews {
    /// Which lane: its index in the cursors given.
    pub index: usize,
    /// Its entries in the order the `XREAD` returned them (at most the
    /// count asked for; possibly some at or before the cursor, on a read
    /// sent again), each decoded or with why it could not be.
    pub messages: Vec<Result<Message>>,
}

impl Store<'_> {
    /// The id of the last entry of each lane of `topic` (`XREVRANGE ...
    /// COUNT 1`), in the order given; `None` for an empty lane.
    pub(crate) async fn last_lane_ids(
        &self,
        topic: &str,
        lanes: &[LaneRef],
    ) -> Result<Vec<Option<StreamId>>> {
        Ok(self
            .last_lane_entries(topic, lanes, 1)
            .await?
            .into_iter()
            .map(|mut entries| entries.pop().map(|m| m.id))
            .collect())
    }

    /// The last `count` entries of each lane of `topic` (`XREVRANGE ...
    /// COUNT count`), in the order given, each lane's newest first.
    pub(crate) async fn last_lane_entries(
        &self,
        topic: &str,
        lanes: &[LaneRef],
        count: usize,
    ) -> Result<Vec<Vec<Message>>> {
        self.keys.require(topic)?;
        let cmds: Vec<(u32, redis::Cmd)> = lanes
            .iter()
            .map(|l| {
                let cmd = redis::cmd("XREVRANGE")
                    .arg(self.keys.stream(topic, l.partition, l.lane))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(count)
                    .clone();
                (l.partition, cmd)
            })
            .collect();
        let replies = idempotent(|| self.query_per_partition(cmds.clone())).await?;
        lanes
            .iter()
            .zip(replies)
            .map(|(l, v)| parse_entries(topic, l.partition, l.lane, check(v)?))
            .collect()
    }

    /// Up to `count` entries of each lane of `topic` after its cursor
    /// (`XRANGE`), in the order given: per lane its entries, or the error
    /// its reply came with (or could not be decoded for).
    pub(crate) async fn read_lanes(
        &self,
        topic: &str,
        lanes: &[LaneCursor],
        count: usize,
    ) -> Result<Vec<Result<Vec<Message>>>> {
        self.keys.require(topic)?;
        let cmds: Vec<(u32, redis::Cmd)> = lanes
            .iter()
            .map(|c| {
                let cmd = redis::cmd("XRANGE")
                    .arg(self.keys.stream(topic, c.at.partition, c.at.lane))
                    .arg(format!("({}", c.after))
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .clone();
                (c.at.partition, cmd)
            })
            .collect();
        let replies = idempotent(|| self.query_per_partition(cmds.clone())).await?;
        Ok(lanes
            .iter()
            .zip(replies)
            .map(|(c, v)| parse_entries(topic, c.at.partition, c.at.lane, check(v)?))
            .collect())
    }
}

impl Backend {
    /// Waits up to `block` for entries after the cursors in any lane of
    /// `topic` (`XREAD COUNT count BLOCK`, on dedicated connections: one for
    /// all lanes on a single server, one per partition on a cluster).
    /// Returns the entries of the first read that found some, per lane;
    /// nothing when every read timed out. The other reads are dropped.
    pub(crate) async fn wait_for_lanes(
        &self,
        topic: &str,
        lanes: &[LaneCursor],
        count: usize,
        block: Duration,
    ) -> Result<Vec<LaneNews>> {
        self.keys().require(topic)?;
        let block_ms = block.as_millis() as u64;
        let keys: Vec<String> = lanes
            .iter()
            .map(|c| self.keys().stream(topic, c.at.partition, c.at.lane))
            .collect();
        let by_key: HashMap<&str, usize> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        // One XREAD per slot: everything on a single server, per partition on a cluster.
        let mut slots: Vec<Vec<usize>> = Vec::new();
        if self.is_cluster() {
            let mut map: HashMap<u32, Vec<usize>> = HashMap::new();
            for (i, c) in lanes.iter().enumerate() {
                map.entry(c.at.partition).or_default().push(i);
            }
            slots.extend(map.into_values());
        } else {
            slots.push((0..lanes.len()).collect());
        }
        let mut futs = FuturesUnordered::new();
        for idx in slots {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS");
            for &i in &idx {
                cmd.arg(&keys[i]);
            }
            for &i in &idx {
                cmd.arg(lanes[i].after.to_string());
            }
            // A wait cut by a restart or a dropped connection is sent again
            // on a new connection.
            futs.push(async move {
                idempotent(|| async {
                    let mut conn = self.blocking_connection().await?;
                    let v: Value = cmd.query_async(&mut conn).await?;
                    Ok::<Value, Error>(v)
                })
                .await
            });
        }
        while let Some(reply) = futs.next().await {
            let reply = reply?;
            if matches!(reply, Value::Nil) {
                continue;
            }
            let mut news = Vec::new();
            for (key, entries) in xread_streams(reply)? {
                let Some(&index) = by_key.get(key.as_str()) else {
                    continue;
                };
                let at = lanes[index].at;
                let messages = match entries {
                    Value::Array(items) => items
                        .into_iter()
                        .map(|e| parse_entry(topic, at.partition, at.lane, e))
                        .collect(),
                    _ => Vec::new(),
                };
                news.push(LaneNews { index, messages });
            }
            return Ok(news);
        }
        Ok(Vec::new())
    }
}

/// Splits an XREAD reply into (stream key, entries) pairs (RESP2 or RESP3).
pub(crate) fn xread_streams(v: Value) -> Result<Vec<(String, Value)>> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|kv| match kv {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop()?;
                    let key = kv.pop()?;
                    Some((key, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(items) => items,
        Value::Nil => Vec::new(),
        other => return Err(Error::Decode(format!("unexpected XREAD reply {other:?}"))),
    };
    pairs
        .into_iter()
        .map(|(k, e)| {
            let key: String =
                redis::from_redis_value(k).map_err(|e| Error::Decode(e.to_string()))?;
            Ok((key, e))
        })
        .collect()
}
