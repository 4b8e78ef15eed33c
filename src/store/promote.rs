//! Promotion: moving due delayed messages into their lanes
//! (`lua/promote.lua`) and a group's due retries into its retry stream
//! (`lua/promote_retry.lua`), a chunk per partition per call.

use std::time::Duration;

use redis::Value;

use super::Store;
use super::backend::Backend;
use crate::error::{Error, Result, check};
use crate::store::conn::ReadGuard;

/// What to promote: a topic's delayed messages on some partitions, and with
/// `group`, that group's retries there too.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Promote<'a> {
    pub topic: &'a str,
    pub lanes: u8,
    /// The topic's `max_len` cap, if any.
    pub max_len: Option<u64>,
    /// The topic's retention (the retry stream is trimmed within it).
    pub retention: Duration,
    pub group: Option<&'a str>,
    pub partitions: &'a [u32],
    /// Most entries moved per partition and call.
    pub chunk: usize,
}

/// One round of promotion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Promoted {
    /// Time until the next due entry, if any.
    pub next: Option<Duration>,
    /// Some call moved a whole chunk: more may be due now.
    pub full: bool,
}

impl Store<'_> {
    /// Moves what is due now (at most `chunk` entries per partition and
    /// kind) in one round.
    pub(crate) async fn promote(&self, w: Promote<'_>) -> Result<Promoted> {
        self.keys.require(w.topic)?;
        let keys = self.keys;
        let maxlen = w.max_len.map(|n| n.to_string()).unwrap_or_default();
        let chunk = w.chunk.to_string();
        let retention = w.retention.as_millis().to_string();
        let cmds: Vec<Vec<redis::Cmd>> = w
            .partitions
            .iter()
            .map(|&p| {
                let mut k = vec![keys.delayed(w.topic, p)];
                k.extend((0..w.lanes).map(|lane| keys.stream(w.topic, p, lane)));
                let mut v = vec![
                    self.scripts
                        .promote
                        .cmd(&k, &[chunk.as_str(), maxlen.as_str()][..]),
                ];
                if let Some(g) = w.group {
                    v.push(self.scripts.promote_retry.cmd(
                        &[keys.retry(w.topic, p, g), keys.retry_stream(w.topic, p, g)],
                        &[chunk.as_str(), g, retention.as_str()][..],
                    ));
                }
                v
            })
            .collect();
        let mut round = Promoted::default();
        for v in self.query_grouped(cmds).await?.into_iter().flatten() {
            let (moved, due, now): (i64, i64, i64) =
                redis::from_redis_value(check(v)?).map_err(|e| Error::Decode(e.to_string()))?;
            round.full |= moved as usize >= w.chunk;
            if due >= 0 {
                let wait = Duration::from_millis(due.saturating_sub(now).max(0) as u64);
                round.next = Some(round.next.map_or(wait, |n| n.min(wait)));
            }
        }
        Ok(round)
    }
}

impl Backend {
    /// Waits up to `timeout` (whole seconds) for a token on the wake list of
    /// any of `partitions` of `topic` (`BLPOP` on a blocking connection; a
    /// single server only, since one `BLPOP` cannot span cluster slots).
    /// True when one came: something was scheduled.
    pub(crate) async fn wait_for_wake(
        &self,
        topic: &str,
        partitions: &[u32],
        timeout: Duration,
    ) -> Result<bool> {
        self.keys().require(topic)?;
        let mut cmd = redis::cmd("BLPOP");
        for p in partitions {
            cmd.arg(self.keys().wake(topic, *p));
        }
        cmd.arg(timeout.as_secs().max(1));
        let mut guard = ReadGuard::new(self.blocking_connection().await?);
        let v: Value = cmd.query_async(guard.conn()).await?;
        guard.done();
        Ok(v != Value::Nil)
    }
}
