//! Reading a topic without a consumer group: for read models, debugging and
//! `millrace tail`.
//!
//! A [`Reader`] keeps a cursor per partition lane, reads each with `XRANGE`
//! in batches (one pipeline, or one per partition on a cluster) and merges
//! them by stream id, so messages come out in publish-time order across
//! partitions. At the end it stops, or with `follow` waits on a blocking
//! `XREAD` on a dedicated pooled connection (one per partition on a cluster,
//! where one `XREAD` cannot span slots).

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::Value;

use crate::envelope::{Message, StreamId, parse_entries, parse_entry};
use crate::error::check;
use crate::error::{Error, Result};
use crate::store::idempotent;
use crate::topic::Catalog;
use crate::topic::TopicSpec;

/// Where a reader (or a group, later) starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained message.
    Earliest,
    /// Only messages published after the reader started.
    Latest,
    /// Messages published at or after this time (ms since the epoch).
    TimeMs(u64),
    /// Messages with this stream id or later, in every partition.
    Id(StreamId),
}

impl FromStr for StartAt {
    type Err = Error;

    /// `earliest`, `latest`, an RFC 3339 time, or a stream id (`<ms>-<seq>`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            _ if s.contains('T') => {
                let t =
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| {
                            Error::invalid("start", format!("{s:?} is not an RFC 3339 time: {e}"))
                        })?;
                let ms = t.unix_timestamp_nanos() / 1_000_000;
                Ok(StartAt::TimeMs(u64::try_from(ms).unwrap_or(0)))
            }
            _ => StreamId::parse(s).map(StartAt::Id).map_err(|_| {
                Error::invalid(
                    "start",
                    format!("{s:?}: use earliest, latest, an RFC 3339 time or a stream id"),
                )
            }),
        }
    }
}

struct Lane {
    partition: u32,
    lane: u8,
    key: String,
    /// Last id delivered (or the position before the start): exclusive.
    after: StreamId,
    buffer: VecDeque<Message>,
    /// True once a read found nothing new.
    drained: bool,
}

/// Reads a topic without a group, in publish-time order across partitions.
pub struct Reader {
    client: Catalog,
    spec: TopicSpec,
    lanes: Vec<Lane>,
    batch: usize,
    follow: bool,
}

impl Reader {
    /// A reader of `topic` from `start`.
    pub(crate) async fn open(client: &Catalog, topic: &str, start: StartAt) -> Result<Reader> {
        let spec = client.topic(topic).await?;
        let keys = client.keys();
        let mut lanes = Vec::new();
        for p in 0..spec.partitions {
            for lane in 0..spec.lanes {
                lanes.push(Lane {
                    partition: p,
                    lane,
                    key: keys.stream(topic, p, lane),
                    after: StreamId { ms: 0, seq: 0 },
                    buffer: VecDeque::new(),
                    drained: false,
                });
            }
        }
        match start {
            StartAt::Earliest => {}
            StartAt::TimeMs(ms) => {
                for l in &mut lanes {
                    l.after = StreamId { ms, seq: 0 }.predecessor();
                }
            }
            StartAt::Id(id) => {
                for l in &mut lanes {
                    l.after = id.predecessor();
                }
            }
            StartAt::Latest => {
                let groups = per_partition(&lanes, |l| {
                    redis::cmd("XREVRANGE")
                        .arg(&l.key)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .clone()
                });
                let replies = idempotent(|| client.query_grouped(groups.cmds.clone())).await?;
                for (i, v) in groups.order.iter().zip(replies.into_iter().flatten()) {
                    let l = &mut lanes[*i];
                    if let Some(m) = parse_entries(topic, l.partition, l.lane, check(v)?)?.pop() {
                        l.after = m.id;
                    }
                }
            }
        }
        Ok(Reader {
            client: client.clone(),
            spec,
            lanes,
            batch: 500,
            follow: false,
        })
    }

    /// Keep waiting for new messages at the end instead of stopping.
    #[must_use]
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// Messages fetched per partition lane per read (default 500).
    #[must_use]
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The next message in time order; `None` at the end when not following.
    pub async fn next(&mut self) -> Result<Option<Message>> {
        loop {
            self.refill().await?;
            let best = self
                .lanes
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.buffer.front().map(|m| (m.id, i)))
                .min();
            if let Some((_, i)) = best {
                let lane = &mut self.lanes[i];
                let m = lane.buffer.pop_front();
                if let Some(m) = &m {
                    lane.after = m.id;
                }
                return Ok(m);
            }
            if !self.follow {
                return Ok(None);
            }
            self.block().await?;
        }
    }

    /// Reads every lane whose buffer is empty and that was not drained.
    async fn refill(&mut self) -> Result<()> {
        let need: Vec<usize> = (0..self.lanes.len())
            .filter(|&i| self.lanes[i].buffer.is_empty() && !self.lanes[i].drained)
            .collect();
        if need.is_empty() {
            return Ok(());
        }
        let count = self.batch;
        let subset: Vec<&Lane> = need.iter().map(|&i| &self.lanes[i]).collect();
        let groups = per_partition_refs(&subset, |l| {
            redis::cmd("XRANGE")
                .arg(&l.key)
                .arg(format!("({}", l.after))
                .arg("+")
                .arg("COUNT")
                .arg(count)
                .clone()
        });
        let replies = idempotent(|| self.client.query_grouped(groups.cmds.clone())).await?;
        for (j, v) in groups.order.iter().zip(replies.into_iter().flatten()) {
            let i = need[*j];
            let l = &mut self.lanes[i];
            let msgs = parse_entries(&self.spec.name, l.partition, l.lane, check(v)?)?;
            l.drained = msgs.len() < count;
            l.buffer.extend(msgs);
        }
        Ok(())
    }

    /// Waits for new entries in any lane (up to the block timeout).
    async fn block(&mut self) -> Result<()> {
        let block_ms = self.client.config().block_timeout.as_millis() as u64;
        let by_key: HashMap<String, usize> = self
            .lanes
            .iter()
            .enumerate()
            .map(|(i, l)| (l.key.clone(), i))
            .collect();
        // One XREAD per slot: everything on a single server, per partition on a cluster.
        let mut slots: Vec<Vec<usize>> = Vec::new();
        if self.client.connection().is_cluster() {
            let mut map: HashMap<u32, Vec<usize>> = HashMap::new();
            for (i, l) in self.lanes.iter().enumerate() {
                map.entry(l.partition).or_default().push(i);
            }
            slots.extend(map.into_values());
        } else {
            slots.push((0..self.lanes.len()).collect());
        }
        let mut futs = FuturesUnordered::new();
        for idx in slots {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(self.batch)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS");
            for &i in &idx {
                cmd.arg(&self.lanes[i].key);
            }
            for &i in &idx {
                cmd.arg(self.lanes[i].after.to_string());
            }
            let client = self.client.clone();
            // Idempotent like the other reads: a wait cut by a restart or a
            // dropped connection is sent again on a new connection.
            futs.push(async move {
                idempotent(|| async {
                    let mut conn = client.blocking_connection().await?;
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
            for (key, entries) in xread_streams(reply)? {
                let Some(&i) = by_key.get(&key) else { continue };
                let l = &mut self.lanes[i];
                if let Value::Array(items) = entries {
                    for e in items {
                        let m = parse_entry(&self.spec.name, l.partition, l.lane, e)?;
                        if m.id > l.after && l.buffer.back().is_none_or(|b| m.id > b.id) {
                            l.buffer.push_back(m);
                        }
                    }
                }
                l.drained = false;
            }
            // Something arrived: hand it out now; other partitions' blocked
            // reads are dropped and simply read again next time.
            return Ok(());
        }
        Ok(())
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

/// Commands grouped per partition, and which lane each reply belongs to.
struct Grouped {
    cmds: Vec<Vec<redis::Cmd>>,
    order: Vec<usize>,
}

fn per_partition(lanes: &[Lane], f: impl Fn(&Lane) -> redis::Cmd) -> Grouped {
    let refs: Vec<&Lane> = lanes.iter().collect();
    per_partition_refs(&refs, f)
}

fn per_partition_refs(lanes: &[&Lane], f: impl Fn(&Lane) -> redis::Cmd) -> Grouped {
    let mut by_part: Vec<(u32, Vec<usize>)> = Vec::new();
    for (i, l) in lanes.iter().enumerate() {
        match by_part.iter_mut().find(|(p, _)| *p == l.partition) {
            Some((_, v)) => v.push(i),
            None => by_part.push((l.partition, vec![i])),
        }
    }
    let mut cmds = Vec::new();
    let mut order = Vec::new();
    for (_, idx) in by_part {
        cmds.push(idx.iter().map(|&i| f(lanes[i])).collect());
        order.extend(idx);
    }
    Grouped { cmds, order }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!("earliest".parse::<StartAt>().unwrap(), StartAt::Earliest);
        assert_eq!(
            "2026-01-01T00:00:00Z".parse::<StartAt>().unwrap(),
            StartAt::TimeMs(1_767_225_600_000)
        );
        assert_eq!(
            "5-1".parse::<StartAt>().unwrap(),
            StartAt::Id(StreamId { ms: 5, seq: 1 })
        );
        assert!("yesterday".parse::<StartAt>().is_err());
    }

    #[test]
    fn predecessor_makes_a_cursor_inclusive() {
        assert_eq!(
            StreamId { ms: 10, seq: 0 }.predecessor(),
            StreamId {
                ms: 9,
                seq: u64::MAX
            }
        );
        assert_eq!(
            StreamId { ms: 10, seq: 3 }.predecessor(),
            StreamId { ms: 10, seq: 2 }
        );
    }
}
