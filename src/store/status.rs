//! Reads that say where one message stands: its entry in a lane (by stream
//! id, or a promoted delayed message by its token), a delayed message not
//! yet due, and per group the facts its state follows from: the group's
//! position on the lane, the message's pending entry (`XPENDING` for one
//! id), a recorded failure (ordered mode), a parked or re-added retry
//! (shared mode). Every read is bounded; none changes anything (`XPENDING`
//! and `XRANGE` are not deliveries).

use redis::Value;

use super::Store;
use crate::envelope::{Message, StreamId, parse_entries};
use crate::error::Result;

/// Entries scanned after a due time for the promoted copy of a delayed
/// message, and of a group's retry stream for a re-added retry.
pub(crate) const SCAN: usize = 1000;
/// Members of a group's retry set scanned for a parked retry.
pub(crate) const RETRY_SCAN: isize = 10_000;

/// A message's pending entry in one stream for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingEntry {
    /// The member (consumer) holding it.
    pub member: String,
    /// Milliseconds since it was last delivered.
    pub idle_ms: u64,
    /// How often it was delivered.
    pub deliveries: u64,
}

/// One `XRANGE` (or `XREVRANGE`, from `+` down) of a stream.
#[derive(Clone, Copy)]
struct Range<'a> {
    command: &'static str,
    from: &'a str,
    to: &'a str,
    count: Option<usize>,
}

impl Store<'_> {
    /// The entries `r` names in the stream `key`, parsed as `topic`'s
    /// partition `partition`, lane `lane`.
    async fn range(
        &self,
        key: String,
        r: Range<'_>,
        (topic, partition, lane): (&str, u32, u8),
    ) -> Result<Vec<Message>> {
        let mut cmd = redis::cmd(r.command);
        cmd.arg(key).arg(r.from).arg(r.to);
        if let Some(n) = r.count {
            cmd.arg("COUNT").arg(n);
        }
        let v: Value = cmd.query_async(&mut self.conn.clone()).await?;
        parse_entries(topic, partition, lane, v)
    }

    /// The entry with id `id` in a lane stream, if it is there.
    pub(crate) async fn lane_entry(
        &self,
        topic: &str,
        partition: u32,
        lane: u8,
        id: StreamId,
    ) -> Result<Option<Message>> {
        self.keys.require(topic)?;
        let id = id.to_string();
        let r = Range {
            command: "XRANGE",
            from: &id,
            to: &id,
            count: None,
        };
        let key = self.keys.stream(topic, partition, lane);
        Ok(self.range(key, r, (topic, partition, lane)).await?.pop())
    }

    /// Up to [`SCAN`] entries of a lane stream from `from` (ms) on.
    pub(crate) async fn lane_entries_from(
        &self,
        topic: &str,
        partition: u32,
        lane: u8,
        from: u64,
    ) -> Result<Vec<Message>> {
        self.keys.require(topic)?;
        let from = from.to_string();
        let r = Range {
            command: "XRANGE",
            from: &from,
            to: "+",
            count: Some(SCAN),
        };
        let key = self.keys.stream(topic, partition, lane);
        self.range(key, r, (topic, partition, lane)).await
    }

    /// Up to `count` of a lane stream's newest entries, newest first.
    pub(crate) async fn lane_newest(
        &self,
        topic: &str,
        partition: u32,
        lane: u8,
        count: usize,
    ) -> Result<Vec<Message>> {
        self.keys.require(topic)?;
        let r = Range {
            command: "XREVRANGE",
            from: "+",
            to: "-",
            count: Some(count),
        };
        let key = self.keys.stream(topic, partition, lane);
        self.range(key, r, (topic, partition, lane)).await
    }

    /// The id of a lane stream's first entry (`None` when it is empty).
    pub(crate) async fn lane_first_id(
        &self,
        topic: &str,
        partition: u32,
        lane: u8,
    ) -> Result<Option<StreamId>> {
        self.keys.require(topic)?;
        let r = Range {
            command: "XRANGE",
            from: "-",
            to: "+",
            count: Some(1),
        };
        let key = self.keys.stream(topic, partition, lane);
        let first = self.range(key, r, (topic, partition, lane)).await?;
        Ok(first.first().map(|m| m.id))
    }

    /// The `XINFO GROUPS` reply of a lane stream (`Nil` when the stream
    /// does not exist).
    pub(crate) async fn lane_groups(&self, topic: &str, partition: u32, lane: u8) -> Result<Value> {
        self.keys.require(topic)?;
        let reply: redis::RedisResult<Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.keys.stream(topic, partition, lane))
            .query_async(&mut self.conn.clone())
            .await;
        match reply {
            Ok(v) => Ok(v),
            Err(e) if e.code() == Some("ERR") && e.to_string().contains("no such key") => {
                Ok(Value::Nil)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The pending entry of `id` for `group` in a lane stream (`retry:
    /// false`) or the group's retry stream (`retry: true`), if any.
    pub(crate) async fn pending_entry(
        &self,
        topic: &str,
        partition: u32,
        lane: u8,
        group: &str,
        retry: bool,
        id: StreamId,
    ) -> Result<Option<PendingEntry>> {
        self.keys.require(topic)?;
        let key = if retry {
            self.keys.retry_stream(topic, partition, group)
        } else {
            self.keys.stream(topic, partition, lane)
        };
        let reply: redis::RedisResult<Vec<(String, String, u64, u64)>> = redis::cmd("XPENDING")
            .arg(&key)
            .arg(group)
            .arg(id.to_string())
            .arg(id.to_string())
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await;
        match reply {
            Ok(rows) => Ok(rows
                .into_iter()
                .next()
                .map(|(_, member, idle_ms, n)| PendingEntry {
                    member,
                    idle_ms,
                    deliveries: n,
                })),
            // No such stream or group: nothing pending there.
            Err(e) if matches!(e.code(), Some("NOGROUP")) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The members (MessagePack, see `envelope::encode_retry`) and due
    /// times of a group's parked retries, at most [`RETRY_SCAN`].
    pub(crate) async fn parked_retries(
        &self,
        topic: &str,
        partition: u32,
        group: &str,
    ) -> Result<Vec<(Vec<u8>, u64)>> {
        self.keys.require(topic)?;
        let rows: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
            .arg(self.keys.retry(topic, partition, group))
            .arg(0)
            .arg(RETRY_SCAN - 1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(rows.into_iter().map(|(m, s)| (m, s as u64)).collect())
    }

    /// Up to [`SCAN`] entries of a group's retry stream, oldest first.
    pub(crate) async fn retry_stream_entries(
        &self,
        topic: &str,
        partition: u32,
        group: &str,
    ) -> Result<Vec<Message>> {
        self.keys.require(topic)?;
        let r = Range {
            command: "XRANGE",
            from: "-",
            to: "+",
            count: Some(SCAN),
        };
        let key = self.keys.retry_stream(topic, partition, group);
        self.range(key, r, (topic, partition, 0)).await
    }

    /// The members of a partition's delayed set due exactly at `due_ms`.
    pub(crate) async fn delayed_due_at(
        &self,
        topic: &str,
        partition: u32,
        due_ms: u64,
    ) -> Result<Vec<Vec<u8>>> {
        self.keys.require(topic)?;
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.delayed(topic, partition))
            .arg(due_ms)
            .arg(due_ms)
            .query_async(&mut self.conn.clone())
            .await?)
    }
}
