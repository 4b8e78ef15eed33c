//! The overview's reads: a fixed number of round trips whatever the number
//! of topics, groups and partitions. [`Store::overview_heads`] reads every
//! topic's settings and group names (and Redis's clock) in one pipeline;
//! [`Store::overview_reads`] then reads, in one more, whether each topic
//! still exists, every group's pause flag and live member count, and every
//! partition's lane `XINFO`s, delayed count and dead-letter count. On a
//! cluster each step is one pipeline per slot, all in flight at once
//! ([`Store::query_grouped`]).

use redis::{Cmd, Value};

use super::Store;
use super::groups::{LaneXinfo, no_such_key};
use super::topics::Layout;
use crate::error::{Error, Result, check};

/// What the first step read of one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TopicHead {
    /// The field/value pairs of its settings hash, or `None` when there is
    /// none (the topic was deleted after its name was listed).
    pub meta: Option<Vec<(String, String)>>,
    /// Its registry of groups, unsorted.
    pub groups: Vec<String>,
}

/// What the first step read: one head per name asked, in order, and
/// Redis's clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Heads {
    /// Redis's clock (`TIME`) in milliseconds.
    pub time_ms: u64,
    /// Per topic name asked, in the order given.
    pub topics: Vec<TopicHead>,
}

/// A topic to read in the second step: where its keys are and which groups
/// to read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Surveyed<'a> {
    /// The topic's streams.
    pub layout: Layout<'a>,
    /// Its groups, in the order their reads come back.
    pub groups: &'a [String],
}

/// What the second step read of one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupReads {
    /// Whether its pause flag is set.
    pub paused: bool,
    /// Members whose session deadline is at or after the clock read in
    /// the first step.
    pub live_members: u64,
}

/// What the second step read of one partition.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PartitionReads {
    /// Per lane, lane 0 first: its `XINFO` replies, or `None` where the
    /// lane stream does not exist.
    pub lanes: Vec<Option<LaneXinfo>>,
    /// Delayed messages waiting (`ZCARD`).
    pub delayed: u64,
    /// Entries of the dead-letter stream (`XLEN`).
    pub dead_letters: u64,
}

/// What the second step read of one topic.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TopicReads {
    /// Whether its settings hash still exists.
    pub exists: bool,
    /// Per group, in the order given.
    pub groups: Vec<GroupReads>,
    /// Per partition, partition 0 first.
    pub partitions: Vec<PartitionReads>,
}

impl Store<'_> {
    /// Every named topic's settings hash (`HGETALL`) and group registry
    /// (`SMEMBERS`), and `TIME`: one round trip.
    pub(crate) async fn overview_heads(&self, names: &[String]) -> Result<Heads> {
        let keys = self.keys;
        let mut cmds: Vec<Vec<Cmd>> = names
            .iter()
            .map(|t| {
                vec![
                    redis::cmd("HGETALL").arg(keys.meta(t)).clone(),
                    redis::cmd("SMEMBERS").arg(keys.groups(t)).clone(),
                ]
            })
            .collect();
        // Keyless: on a cluster its own pipeline, to any node.
        cmds.push(vec![redis::cmd("TIME")]);
        let mut replies = self.query_grouped(cmds).await?;
        let time = replies
            .pop()
            .and_then(|mut r| r.pop())
            .ok_or_else(|| Error::Decode("no reply to TIME".into()))?;
        let (secs, micros): (u64, u64) = decode(time)?;
        let mut topics = Vec::with_capacity(names.len());
        for reply in replies {
            let mut reply = reply.into_iter();
            let (Some(meta), Some(groups)) = (reply.next(), reply.next()) else {
                return Err(Error::Decode("topic head replies are missing".into()));
            };
            let meta: Vec<(String, String)> = decode(meta)?;
            topics.push(TopicHead {
                meta: (!meta.is_empty()).then_some(meta),
                groups: decode(groups)?,
            });
        }
        Ok(Heads {
            time_ms: secs * 1000 + micros / 1000,
            topics,
        })
    }

    /// For every topic: whether its settings hash exists (`EXISTS`); per
    /// group its pause flag (`EXISTS`) and the members live at `now_ms`
    /// (`ZCOUNT` of deadlines from `now_ms`); per partition each lane's
    /// `XINFO STREAM` and `XINFO GROUPS`, the delayed set's `ZCARD` and the
    /// dead-letter stream's `XLEN`. One round trip.
    pub(crate) async fn overview_reads(
        &self,
        topics: &[Surveyed<'_>],
        now_ms: u64,
    ) -> Result<Vec<TopicReads>> {
        for t in topics {
            self.keys.require(t.layout.topic)?;
        }
        let keys = self.keys;
        // Groups of commands, each in one slot: per topic its meta, then
        // each group's pair, then each partition's commands.
        let mut cmds: Vec<Vec<Cmd>> = Vec::new();
        for s in topics {
            let t = s.layout;
            cmds.push(vec![redis::cmd("EXISTS").arg(keys.meta(t.topic)).clone()]);
            for g in s.groups {
                cmds.push(vec![
                    redis::cmd("EXISTS").arg(keys.paused(t.topic, g)).clone(),
                    redis::cmd("ZCOUNT")
                        .arg(keys.members(t.topic, g))
                        .arg(now_ms)
                        .arg("+inf")
                        .clone(),
                ]);
            }
            for p in 0..t.partitions {
                let mut v = Vec::with_capacity(2 * t.lanes as usize + 2);
                for lane in 0..t.lanes {
                    let stream = keys.stream(t.topic, p, lane);
                    v.push(redis::cmd("XINFO").arg("STREAM").arg(&stream).clone());
                    v.push(redis::cmd("XINFO").arg("GROUPS").arg(&stream).clone());
                }
                v.push(redis::cmd("ZCARD").arg(keys.delayed(t.topic, p)).clone());
                v.push(redis::cmd("XLEN").arg(keys.dlq(t.topic, p)).clone());
                cmds.push(v);
            }
        }
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let mut replies = self.query_grouped(cmds).await?.into_iter();
        let mut next = || {
            replies
                .next()
                .ok_or_else(|| Error::Decode("overview replies are missing".into()))
        };
        let mut out = Vec::with_capacity(topics.len());
        for s in topics {
            let exists: u64 = decode(one(next()?)?)?;
            let mut groups = Vec::with_capacity(s.groups.len());
            for _ in s.groups {
                let mut r = next()?.into_iter();
                let (Some(paused), Some(live)) = (r.next(), r.next()) else {
                    return Err(Error::Decode("group replies are missing".into()));
                };
                groups.push(GroupReads {
                    paused: decode::<u64>(paused)? > 0,
                    live_members: decode(live)?,
                });
            }
            let mut partitions = Vec::with_capacity(s.layout.partitions as usize);
            for _ in 0..s.layout.partitions {
                partitions.push(partition_reads(next()?, s.layout.lanes)?);
            }
            out.push(TopicReads {
                exists: exists > 0,
                groups,
                partitions,
            });
        }
        Ok(out)
    }
}

/// One partition's replies: per lane `XINFO STREAM` and `XINFO GROUPS`,
/// then `ZCARD` and `XLEN`.
fn partition_reads(replies: Vec<Value>, lanes: u8) -> Result<PartitionReads> {
    let mut r = replies.into_iter();
    let mut out = PartitionReads {
        lanes: Vec::with_capacity(lanes as usize),
        ..PartitionReads::default()
    };
    for _ in 0..lanes {
        let (Some(stream), Some(groups)) = (r.next(), r.next()) else {
            return Err(Error::Decode("lane replies are missing".into()));
        };
        if no_such_key(&stream) || no_such_key(&groups) {
            out.lanes.push(None);
            continue;
        }
        out.lanes.push(Some(LaneXinfo {
            stream: check(stream)?,
            groups: check(groups)?,
        }));
    }
    let (Some(delayed), Some(dead_letters)) = (r.next(), r.next()) else {
        return Err(Error::Decode("partition length replies are missing".into()));
    };
    out.delayed = decode(delayed)?;
    out.dead_letters = decode(dead_letters)?;
    Ok(out)
}

/// The only reply of a one-command group.
fn one(replies: Vec<Value>) -> Result<Value> {
    replies
        .into_iter()
        .next()
        .ok_or_else(|| Error::Decode("a reply is missing".into()))
}

/// A reply (server errors raised) as `T`.
fn decode<T: redis::FromRedisValue>(v: Value) -> Result<T> {
    redis::from_redis_value(check(v)?).map_err(|e| Error::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_partition_reads_lanes_that_exist_and_its_counts() {
        let missing = redis::parse_redis_value(b"-ERR no such key\r\n").unwrap();
        assert!(no_such_key(&missing));
        let replies = vec![
            Value::Array(vec![bulk("length"), Value::Int(2)]),
            Value::Array(vec![]),
            missing.clone(),
            missing,
            Value::Int(3),
            Value::Int(4),
        ];
        let p = partition_reads(replies, 2).unwrap();
        assert_eq!(p.lanes.len(), 2);
        assert!(p.lanes[0].is_some() && p.lanes[1].is_none());
        assert_eq!((p.delayed, p.dead_letters), (3, 4));
        assert!(partition_reads(vec![Value::Int(1)], 1).is_err());
    }
}
