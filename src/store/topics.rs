//! A topic's keys outside the atomic steps: the registry of topic names,
//! the settings hash as stored, what the topic's streams hold, and deleting
//! every key of a topic. (Creating the settings is a script step, in
//! [`super::coordination`].)

use redis::AsyncCommands;

use super::Store;
use crate::error::{Error, Result, check};

/// Where a topic's keys are: its name and how many partitions and lanes it
/// has (what the store needs of its settings).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout<'a> {
    /// The topic name (a dead-letter view `T.dlq` finds `T`'s dead-letter
    /// streams).
    pub topic: &'a str,
    /// Number of partitions.
    pub partitions: u32,
    /// Number of lanes per partition.
    pub lanes: u8,
}

/// What one partition of a topic holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PartitionLengths {
    /// Entries of each lane stream, lane 0 first.
    pub lanes: Vec<u64>,
    /// Delayed messages waiting.
    pub delayed: u64,
    /// Entries of the dead-letter stream.
    pub dead_letters: u64,
}

impl Store<'_> {
    /// Adds `topic` to the registry of topic names (`SADD`).
    pub(crate) async fn register_topic(&self, topic: &str) -> Result<()> {
        let _: () = self.conn.clone().sadd(self.keys.topics(), topic).await?;
        Ok(())
    }

    /// The names in the registry of topics, unsorted.
    pub(crate) async fn topic_names(&self) -> Result<Vec<String>> {
        Ok(self.conn.clone().smembers(self.keys.topics()).await?)
    }

    /// The field/value pairs of `topic`'s settings hash, or `None` when
    /// there is none (no such topic).
    pub(crate) async fn topic_meta(&self, topic: &str) -> Result<Option<Vec<(String, String)>>> {
        let fields: Vec<(String, String)> =
            self.conn.clone().hgetall(self.keys.meta(topic)).await?;
        Ok((!fields.is_empty()).then_some(fields))
    }

    /// How many entries each partition's lanes, delayed set and dead-letter
    /// stream hold (`XLEN`, `ZCARD`), one pipeline per partition's slot.
    pub(crate) async fn topic_lengths(&self, t: Layout<'_>) -> Result<Vec<PartitionLengths>> {
        self.keys.require(t.topic)?;
        let keys = self.keys;
        let cmds: Vec<Vec<redis::Cmd>> = (0..t.partitions)
            .map(|p| {
                let mut cmds: Vec<redis::Cmd> = (0..t.lanes)
                    .map(|lane| {
                        redis::cmd("XLEN")
                            .arg(keys.stream(t.topic, p, lane))
                            .clone()
                    })
                    .collect();
                cmds.push(redis::cmd("ZCARD").arg(keys.delayed(t.topic, p)).clone());
                cmds.push(redis::cmd("XLEN").arg(keys.dlq(t.topic, p)).clone());
                cmds
            })
            .collect();
        let lanes = t.lanes as usize;
        let mut out = Vec::with_capacity(t.partitions as usize);
        for part in self.query_grouped(cmds).await? {
            let nums = part
                .into_iter()
                .map(|v| {
                    redis::from_redis_value::<u64>(check(v)?)
                        .map_err(|e| Error::Decode(e.to_string()))
                })
                .collect::<Result<Vec<u64>>>()?;
            let (Some(lane_lengths), Some(&delayed), Some(&dead_letters)) =
                (nums.get(..lanes), nums.get(lanes), nums.get(lanes + 1))
            else {
                return Err(Error::Decode("topic length replies are missing".into()));
            };
            out.push(PartitionLengths {
                lanes: lane_lengths.to_vec(),
                delayed,
                dead_letters,
            });
        }
        Ok(out)
    }

    /// Deletes every key of a topic: per partition (one pipeline per slot)
    /// its lane streams, delayed set, dead-letter stream, wake stream and
    /// `groups`' retry sets, leases, retry streams and attempt records;
    /// then each group's coordination keys, the settings hash and the
    /// group registry; and last the name from the registry of topics.
    /// Dedup markers are left to expire with their TTL.
    pub(crate) async fn delete_topic_keys(&self, t: Layout<'_>, groups: &[String]) -> Result<()> {
        self.keys.require(t.topic)?;
        let (keys, name) = (self.keys, t.topic);
        let per_partition: Vec<Vec<redis::Cmd>> = (0..t.partitions)
            .map(|p| {
                let mut del = redis::cmd("DEL");
                for lane in 0..t.lanes {
                    del.arg(keys.stream(name, p, lane));
                }
                del.arg(keys.delayed(name, p)).arg(keys.dlq(name, p));
                del.arg(keys.wake(name, p));
                for g in groups {
                    del.arg(keys.retry(name, p, g))
                        .arg(keys.lease(name, p, g))
                        .arg(keys.retry_stream(name, p, g))
                        .arg(keys.attempts(name, p, g));
                }
                vec![del]
            })
            .collect();
        for reply in self
            .query_grouped(per_partition)
            .await?
            .into_iter()
            .flatten()
        {
            check(reply)?;
        }
        let mut conn = self.conn.clone();
        for g in groups {
            let _: () = conn
                .del(&[
                    keys.members(name, g),
                    keys.member_info(name, g),
                    keys.assign(name, g),
                    keys.paused(name, g),
                    keys.rate(name, g),
                    keys.cancels(name, g),
                ])
                .await?;
        }
        let _: () = conn
            .del(&[keys.meta(name), keys.groups(name), keys.schemas(name)])
            .await?;
        let _: () = conn.srem(keys.topics(), name).await?;
        Ok(())
    }
}
