//! Kept results and who may answer a request: reading a group's result of
//! a message (written by `lua/ack.lua` and `lua/dead_letter.lua`), and
//! counting a group's live members (`lua/responders.lua`).

use std::collections::HashMap;

use super::{Guarded, Holder, Store, int};
use crate::error::Result;
use crate::reply::KeptResult;

/// Which message's result, for which group.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResultOf<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub group: &'a str,
    pub lane: u8,
    /// The message's first stream id.
    pub first: &'a str,
}

impl Store<'_> {
    /// The group's kept result of a message, if it is still kept.
    pub(crate) async fn kept_result(&self, of: ResultOf<'_>) -> Result<Option<KeptResult>> {
        Ok(KeptResult::from_fields(&self.result_fields(of).await?))
    }

    /// Every field of the group's result hash of a message (empty when
    /// there is none): the result, and the progress reported.
    pub(crate) async fn result_fields(&self, of: ResultOf<'_>) -> Result<HashMap<String, Vec<u8>>> {
        let key = self
            .keys
            .result(of.topic, of.partition, of.group, of.lane, of.first);
        Ok(redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Writes a running handler's progress (`lua/progress.lua`), fenced by
    /// the lease when `holder` is given.
    pub(crate) async fn write_progress(
        &self,
        of: ResultOf<'_>,
        holder: Option<Holder<'_>>,
        json: &str,
        ttl_ms: u64,
    ) -> Result<Guarded<()>> {
        self.keys.require(of.topic)?;
        let lease = self.keys.lease(of.topic, of.partition, of.group);
        let key = self
            .keys
            .result(of.topic, of.partition, of.group, of.lane, of.first);
        let (member, epoch) = match holder {
            Some(h) => (h.member, h.epoch.to_string()),
            None => ("", String::new()),
        };
        let ttl = ttl_ms.to_string();
        let v = self
            .eval(
                &self.scripts.progress,
                &[&lease, &key],
                &[
                    member.as_bytes(),
                    epoch.as_bytes(),
                    json.as_bytes(),
                    ttl.as_bytes(),
                ],
            )
            .await?;
        Ok(match int(&v)? {
            -1 => Guarded::LeaseLost,
            _ => Guarded::Done(()),
        })
    }

    /// How many members of `group` have a heartbeat within their session.
    pub(crate) async fn responders(&self, topic: &str, group: &str) -> Result<u64> {
        let v = self
            .eval(
                &self.scripts.responders,
                &[&self.keys.members(topic, group)],
                &[],
            )
            .await?;
        Ok(int(&v)?.max(0) as u64)
    }
}

impl Store<'_> {
    /// Asks `group` to cancel message `id` (`lua/cancel_request.lua`).
    pub(crate) async fn request_cancel(&self, topic: &str, group: &str, id: &str) -> Result<()> {
        self.eval(
            &self.scripts.cancel_request,
            &[&self.keys.cancels(topic, group)],
            &[id.as_bytes()],
        )
        .await?;
        Ok(())
    }

    /// The group's cancel requests: message id → when (ms, Redis clock).
    pub(crate) async fn cancel_requests(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<HashMap<String, u64>> {
        let mut all: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(self.keys.cancels(topic, group))
            .query_async(&mut self.conn.clone())
            .await?;
        all.remove("v");
        Ok(all)
    }

    /// Forgets cancel requests that were carried out (or outlived their
    /// message).
    pub(crate) async fn forget_cancels(
        &self,
        topic: &str,
        group: &str,
        ids: &[String],
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: i64 = redis::cmd("HDEL")
            .arg(self.keys.cancels(topic, group))
            .arg(ids)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Writes a group's result of a message that was cancelled before a
    /// member took it (a parked retry removed by the canceller).
    pub(crate) async fn keep_cancelled(&self, of: ResultOf<'_>, ttl_ms: u64) -> Result<()> {
        let key = self
            .keys
            .result(of.topic, of.partition, of.group, of.lane, of.first);
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&key).ignore();
        pipe.cmd("HSET")
            .arg(&key)
            .arg("s")
            .arg("cancelled")
            .ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
        let _: () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Removes `members` (parked retries, shared mode) from `group`'s retry
    /// set in `partition`. Returns how many were still there.
    pub(crate) async fn remove_parked(
        &self,
        topic: &str,
        partition: u32,
        group: &str,
        members: &[Vec<u8>],
    ) -> Result<u64> {
        self.keys.require(topic)?;
        if members.is_empty() {
            return Ok(0);
        }
        let n: u64 = redis::cmd("ZREM")
            .arg(self.keys.retry(topic, partition, group))
            .arg(members)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n)
    }
}
