//! Settling a delivered message for a group: acknowledge it, record a
//! failed attempt, park it for a later retry, or move it to the dead-letter
//! stream. In ordered mode each step runs under the partition lease (the
//! shared guard in `lua/lib/lease.lua`), so a member whose lease moved on
//! settles nothing.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::{Guarded, Holder, Source, Store, guarded_int, int};
use crate::envelope::StreamId;
use crate::error::{Result, check};

/// Whose acks: a topic's group, by one member.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AckOf<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub member: &'a str,
    /// Ordered mode: each batch is fenced by the partition lease at its
    /// epoch. Shared mode: a plain `XACK`.
    pub fenced: bool,
}

/// Ids read from one stream of a partition under one lease epoch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AckBatch<'a> {
    pub partition: u32,
    pub source: Source,
    pub epoch: u64,
    /// Acked without a result.
    pub ids: &'a [StreamId],
    /// Acked with the result their handler returned (or a request's reply).
    pub answers: &'a [&'a Answer],
}

/// How a message with a kept result was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The handler succeeded: `value` is its result.
    Ok,
    /// The message was cancelled.
    Cancelled,
}

impl Settled {
    /// The result hash's `s` field.
    fn as_str(self) -> &'static str {
        match self {
            Settled::Ok => "ok",
            Settled::Cancelled => "cancelled",
        }
    }
}

/// What a handler returned for a delivery, to keep with its ack and, for a
/// request, to send to the requester.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The delivery to ack.
    pub id: StreamId,
    /// The message's lane and first id (its identity: where the result is kept).
    pub lane: u8,
    pub origin: String,
    /// How long the result is kept (ms); 0 keeps none.
    pub ttl_ms: u64,
    /// Succeeded or cancelled.
    pub status: Settled,
    /// The result as MessagePack.
    pub value: Vec<u8>,
    /// The requester to publish `reply` to, if it is a request.
    pub requester: Option<String>,
    /// The reply message (`crate::reply::ReplyWire`), empty without a requester.
    pub reply: Vec<u8>,
}

/// A request's failure, kept and sent with its dead-lettering.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FailedReply<'a> {
    pub ttl_ms: u64,
    pub requester: &'a str,
    pub reply: &'a [u8],
}

/// A failed attempt to record (ordered mode), so a new owner continues the
/// count and the wait.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Failure<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub partition: u32,
    pub holder: Holder<'a>,
    pub id: StreamId,
    /// Failed attempts so far, this one included.
    pub failures: u32,
    /// How long to wait before the next attempt (the record's due time is
    /// Redis's clock plus this).
    pub wait: Duration,
    /// The error of this attempt.
    pub error: &'a str,
}

/// A failed attempt as the group's attempts hash keeps it (ordered mode):
/// the JSON `{"n": failures, "due": ms, "err": text}` that `lua/fail.lua`
/// writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct FailureRecord {
    /// Failed attempts so far.
    pub n: u32,
    /// Not before this Redis time (ms).
    pub due: u64,
    /// The last error.
    pub err: String,
}

/// A failed message to park in the group's retry set (shared mode).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryLater<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub partition: u32,
    pub source: Source,
    pub id: StreamId,
    pub wait: Duration,
    /// The retry set's member: MessagePack `[nonce, lane, key, headers,
    /// payload, next attempt, origin id]`.
    pub entry: &'a [u8],
}

/// A message that will not be tried again, with what the dead-letter entry
/// records of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeadLetter<'a> {
    /// The topic it was read from; never a dead-letter view (a view's
    /// group acks what it gives up on: its entries are dead letters
    /// already).
    pub topic: &'a str,
    pub group: &'a str,
    pub partition: u32,
    pub source: Source,
    /// Ordered mode: only while this holder has the lease.
    pub holder: Option<Holder<'a>>,
    pub id: StreamId,
    pub key: &'a [u8],
    /// The headers as a MessagePack map (empty when none).
    pub headers: &'a [u8],
    pub payload: &'a [u8],
    pub lane: u8,
    /// The id it was first published with.
    pub origin: &'a str,
    pub attempts: u32,
    pub error: &'a str,
    /// A request's failure to keep and send.
    pub reply: Option<FailedReply<'a>>,
}

impl Store<'_> {
    /// Acknowledges each batch (one pipeline per partition's slot). Returns,
    /// per batch in order, how many Redis acknowledged, or that the lease
    /// had moved on (nothing acknowledged).
    pub(crate) async fn ack(
        &self,
        of: AckOf<'_>,
        batches: &[AckBatch<'_>],
    ) -> Result<Vec<Guarded<u64>>> {
        self.keys.require(of.topic)?;
        let mut cmds = Vec::with_capacity(batches.len());
        for b in batches {
            let stream = self.stream(of.topic, b.partition, of.group, b.source);
            let cmd = if of.fenced || !b.answers.is_empty() {
                self.ack_script(of, b, &stream)
            } else {
                let mut cmd = redis::cmd("XACK");
                cmd.arg(&stream).arg(of.group);
                for id in b.ids {
                    cmd.arg(id);
                }
                cmd
            };
            cmds.push((b.partition, cmd));
        }
        self.query_per_partition(cmds)
            .await?
            .into_iter()
            .map(|v| {
                let n = int(&check(v)?).unwrap_or(0);
                Ok(if n < 0 {
                    Guarded::LeaseLost
                } else {
                    Guarded::Done(n as u64)
                })
            })
            .collect()
    }

    /// `lua/ack.lua` for one batch: fenced by the lease in ordered mode,
    /// and writing the batch's results with their acks.
    fn ack_script(&self, of: AckOf<'_>, b: &AckBatch<'_>, stream: &str) -> redis::Cmd {
        let lease = self.keys.lease(of.topic, b.partition, of.group);
        let results: Vec<String> = b
            .answers
            .iter()
            .map(|a| {
                self.keys
                    .result(of.topic, b.partition, of.group, a.lane, &a.origin)
            })
            .collect();
        let mut keys: Vec<&str> = vec![&lease, stream];
        keys.extend(results.iter().map(String::as_str));
        let mut cmd = self.scripts.ack.cmd(&keys, &[of.group, of.member][..]);
        if of.fenced {
            cmd.arg(b.epoch);
        } else {
            cmd.arg("");
        }
        cmd.arg(b.ids.len());
        for id in b.ids {
            cmd.arg(id);
        }
        for a in b.answers {
            let channel = a
                .requester
                .as_deref()
                .map(|r| self.keys.reply_channel(r))
                .unwrap_or_default();
            cmd.arg(a.id)
                .arg(a.ttl_ms)
                .arg(a.status.as_str())
                .arg(&a.value)
                .arg(channel)
                .arg(&a.reply);
        }
        cmd
    }

    /// Forgets the recorded failures of messages that finally succeeded,
    /// per partition.
    pub(crate) async fn clear_attempts(
        &self,
        topic: &str,
        group: &str,
        ids: Vec<(u32, Vec<String>)>,
    ) -> Result<()> {
        self.keys.require(topic)?;
        let cmds = ids
            .into_iter()
            .map(|(p, ids)| {
                vec![
                    redis::cmd("HDEL")
                        .arg(self.keys.attempts(topic, p, group))
                        .arg(ids)
                        .clone(),
                ]
            })
            .collect();
        self.query_grouped(cmds).await?;
        Ok(())
    }

    /// Records a failed attempt under the lease (`lua/fail.lua`).
    pub(crate) async fn record_failure(&self, f: Failure<'_>) -> Result<Guarded<()>> {
        self.keys.require(f.topic)?;
        let lease = self.keys.lease(f.topic, f.partition, f.group);
        let attempts = self.keys.attempts(f.topic, f.partition, f.group);
        let epoch = f.holder.epoch.to_string();
        let id = f.id.to_string();
        let failures = f.failures.to_string();
        let wait_ms = f.wait.as_millis().to_string();
        let v = self
            .eval(
                &self.scripts.fail,
                &[&lease, &attempts],
                &[
                    f.holder.member.as_bytes(),
                    epoch.as_bytes(),
                    id.as_bytes(),
                    failures.as_bytes(),
                    wait_ms.as_bytes(),
                    f.error.as_bytes(),
                ],
            )
            .await?;
        Ok(match guarded_int(&v)? {
            Guarded::Done(_) => Guarded::Done(()),
            Guarded::LeaseLost => Guarded::LeaseLost,
        })
    }

    /// The failures recorded for `ids` of `partition` by `group` (ordered
    /// mode); an id without a readable record is left out.
    pub(crate) async fn recorded_failures(
        &self,
        topic: &str,
        group: &str,
        partition: u32,
        ids: &[StreamId],
    ) -> Result<HashMap<StreamId, FailureRecord>> {
        self.keys.require(topic)?;
        let key = self.keys.attempts(topic, partition, group);
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&key)
            .arg(ids.iter().map(ToString::to_string).collect::<Vec<_>>())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(ids
            .iter()
            .zip(raw)
            .filter_map(|(id, r)| Some((*id, serde_json::from_str(&r?).ok()?)))
            .collect())
    }

    /// Acks a failed message and parks it in the group's retry set until
    /// due, waking the partition's promoters (`lua/retry_later.lua`).
    /// Returns the due time (ms, Redis clock).
    pub(crate) async fn retry_later(&self, r: RetryLater<'_>) -> Result<u64> {
        self.keys.require(r.topic)?;
        let source = self.stream(r.topic, r.partition, r.group, r.source);
        let retry_set = self.keys.retry(r.topic, r.partition, r.group);
        let wake = self.keys.wake(r.topic, r.partition);
        let id = r.id.to_string();
        let wait_ms = r.wait.as_millis().to_string();
        let v = self
            .eval(
                &self.scripts.retry_later,
                &[&source, &retry_set, &wake],
                &[
                    r.group.as_bytes(),
                    id.as_bytes(),
                    wait_ms.as_bytes(),
                    r.entry,
                ],
            )
            .await?;
        Ok(int(&v)? as u64)
    }

    /// Moves a message to its partition's dead-letter stream with its ack,
    /// in one step (`lua/dead_letter.lua`). Returns the dead-letter entry's
    /// id.
    pub(crate) async fn dead_letter(&self, d: DeadLetter<'_>) -> Result<Guarded<String>> {
        self.keys.require(d.topic)?;
        debug_assert!(!d.topic.ends_with(".dlq"), "dead-lettering from a view");
        let lease = self.keys.lease(d.topic, d.partition, d.group);
        let source = self.stream(d.topic, d.partition, d.group, d.source);
        let dlq = self.keys.dlq(d.topic, d.partition);
        let attempts_key = self.keys.attempts(d.topic, d.partition, d.group);
        let (member, epoch, check_lease) = match d.holder {
            Some(h) => (h.member, h.epoch.to_string(), "1"),
            None => ("", "0".to_string(), "0"),
        };
        let id = d.id.to_string();
        let (partition, lane, n) = (
            d.partition.to_string(),
            d.lane.to_string(),
            d.attempts.to_string(),
        );
        let mut keys: Vec<String> = vec![lease, source, dlq, attempts_key];
        let (ttl, channel);
        let mut args: Vec<&[u8]> = vec![
            d.group.as_bytes(),
            member.as_bytes(),
            epoch.as_bytes(),
            check_lease.as_bytes(),
            id.as_bytes(),
            d.key,
            d.headers,
            d.payload,
            partition.as_bytes(),
            lane.as_bytes(),
            d.origin.as_bytes(),
            n.as_bytes(),
            d.error.as_bytes(),
        ];
        if let Some(r) = &d.reply {
            keys.push(
                self.keys
                    .result(d.topic, d.partition, d.group, d.lane, d.origin),
            );
            ttl = r.ttl_ms.to_string();
            channel = if r.requester.is_empty() {
                String::new()
            } else {
                self.keys.reply_channel(r.requester)
            };
            args.extend([ttl.as_bytes(), channel.as_bytes(), r.reply]);
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let v = self.eval(&self.scripts.dead_letter, &keys, &args).await?;
        Ok(match v {
            Value::Int(-1) => Guarded::LeaseLost,
            other => Guarded::Done(redis::from_redis_value(other).unwrap_or_default()),
        })
    }
}
