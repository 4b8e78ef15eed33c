//! Fenced acks on a single server without Lua, the way
//! [`super::watched`] fences reads: a connection of the acker's own
//! `WATCH`es the leases of the partitions it acks, checked to be the
//! member's at their epochs, and each flush is `MULTI` / `XACK`... / `EXEC`
//! (then `WATCH` again). `EXEC` does nothing if a watched lease changed
//! since (a new owner took it, or the member's own renewal): the leases are
//! checked again and the flush sent once more.
//!
//! Same guarantee as `lua/ack.lua` for acks without results (a member
//! whose lease moved on acks nothing of that partition), at the cost of
//! plain `XACK`s: the script's per-call work (its arguments copied into
//! Lua and back, the lease read, `TIME`) was about 60 % of an ordered
//! consume's ack cost on the server. Acks with results, on a cluster, or
//! waiting for replicas (whose `WAIT` covers one connection's writes) keep
//! the script.

use redis::Value;

use super::backend::Backend;
use super::group_reads::FencedPart;
use super::keys::KeySpace;
use super::settle::{AckBatch, AckOf};
use super::watched::WatchedReader;
use super::{Guarded, Source};
use crate::error::{Error, Result, check};

/// Flushes sent again after a watched lease changed before the checks
/// give up (the caller then acks through the script).
const ATTEMPTS: usize = 3;

impl WatchedReader {
    /// Acks `batches` (none with results) fenced by their leases; per batch
    /// in order, how many Redis acknowledged or that the lease moved on.
    /// `None` when the leases kept changing under the flush: the caller
    /// acks through the script instead.
    pub(crate) async fn ack(
        &mut self,
        backend: &Backend,
        of: AckOf<'_>,
        batches: &[AckBatch<'_>],
    ) -> Result<Option<Vec<Guarded<u64>>>> {
        let keys = backend.keys();
        keys.require(of.topic)?;
        let is_watched = |w: &[(u32, u64, String)], partition: u32, epoch: u64| {
            w.iter().any(|(q, e, _)| *q == partition && *e == epoch)
        };
        for _ in 0..ATTEMPTS {
            let all_watched = batches
                .iter()
                .all(|b| is_watched(&self.watched, b.partition, b.epoch));
            if !self.can_read() || !all_watched {
                let parts = self.to_check(keys, of, batches);
                self.check(backend, of.member, &parts).await?;
            }
            let live: Vec<bool> = batches
                .iter()
                .map(|b| is_watched(&self.watched, b.partition, b.epoch))
                .collect();
            if !live.contains(&true) {
                return Ok(Some(vec![Guarded::LeaseLost; batches.len()]));
            }
            if !self.can_read() {
                continue;
            }
            let mut pipe = redis::pipe();
            pipe.cmd("MULTI");
            for (b, _) in batches.iter().zip(&live).filter(|(_, l)| **l) {
                let stream = match b.source {
                    Source::Lane(lane) => keys.stream(of.topic, b.partition, lane),
                    Source::Retry => keys.retry_stream(of.topic, b.partition, of.group),
                };
                let mut ack = redis::cmd("XACK");
                ack.arg(stream).arg(of.group);
                for id in b.ids {
                    ack.arg(id);
                }
                pipe.add_command(ack);
            }
            pipe.cmd("EXEC");
            let mut watch = redis::cmd("WATCH");
            for (_, _, lease) in &self.watched {
                watch.arg(lease);
            }
            pipe.add_command(watch);
            let replies = self.run(backend, pipe, false).await?;
            // MULTI, QUEUED per XACK, EXEC, WATCH.
            let exec = replies
                .into_iter()
                .rev()
                .nth(1)
                .ok_or_else(|| Error::Decode("no EXEC reply".into()))?;
            let counts = match check(exec)? {
                Value::Array(r) => r,
                Value::Nil => {
                    // A watched lease changed: check again.
                    self.watched.clear();
                    continue;
                }
                other => {
                    return Err(Error::Decode(format!("unexpected EXEC reply {other:?}")));
                }
            };
            let mut counts = counts.into_iter();
            let mut out = Vec::with_capacity(batches.len());
            for l in live {
                if !l {
                    out.push(Guarded::LeaseLost);
                    continue;
                }
                let n = match counts.next().map(check).transpose()? {
                    Some(Value::Int(n)) => n.max(0) as u64,
                    other => return Err(Error::Decode(format!("unexpected XACK reply {other:?}"))),
                };
                out.push(Guarded::Done(n));
            }
            return Ok(Some(out));
        }
        Ok(None)
    }

    /// The leases an ack flush checks: those watched already (flushes cover
    /// a few partitions each, and the watch should not narrow to them) and
    /// those of `batches`' partitions at their epochs.
    fn to_check(
        &self,
        keys: &KeySpace,
        of: AckOf<'_>,
        batches: &[AckBatch<'_>],
    ) -> Vec<FencedPart<'static>> {
        let mut parts: Vec<FencedPart<'static>> = self
            .watched
            .iter()
            .map(|(partition, epoch, lease)| FencedPart {
                partition: *partition,
                epoch: *epoch,
                fence: String::new(),
                lease: lease.clone(),
                sources: Vec::new(),
            })
            .collect();
        for b in batches {
            if !parts
                .iter()
                .any(|p| p.partition == b.partition && p.epoch == b.epoch)
            {
                parts.push(FencedPart {
                    partition: b.partition,
                    epoch: b.epoch,
                    fence: String::new(),
                    lease: keys.lease(of.topic, b.partition, of.group),
                    sources: Vec::new(),
                });
            }
        }
        parts
    }
}
