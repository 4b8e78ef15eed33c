//! Fenced reads on a single server without Lua: the owner reads on a
//! dedicated connection that `WATCH`es the leases of the partitions it
//! reads, checked to be its own. Each read is `MULTI` / `XREADGROUP` /
//! `EXEC` (then `WATCH` again); `EXEC` does nothing if a watched lease
//! changed since, so a member whose lease moved on (a new owner took it)
//! reads nothing. Its own renewals change the leases too: that read is
//! simply checked and done again.
//!
//! Same guarantee as `lua/read_fenced.lua` (used on a cluster, where one
//! connection cannot watch keys of several nodes), without copying every
//! entry through a script: reading is most of a consumer's Redis work.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::backend::Backend;
use super::group_reads::{FencedPart, FencedRead, Fetched, Source, parse_read, wake_cmd};
use super::lane_reads::xread_streams;
use crate::error::check;
use crate::error::{Error, Result};
use crate::store::conn::{BlockingConn, ReadGuard};

/// A tier's read: the entries, and each stream's newest id.
type Tier = (Vec<Fetched>, Vec<(String, String)>);

/// What [`WatchedReader::wait_then_read`] found.
pub(crate) enum WaitRead {
    /// Entries, read fenced as the wait ended.
    Read(Vec<Fetched>),
    /// Nothing read: the streams the wait saw something new on (none on a
    /// timeout), for the next read.
    Woken(Vec<String>),
}

/// The sources [`WatchedReader::read`] reads first: every partition's first
/// lane, with the retry streams when there is only one lane.
fn first_tier<'s>(parts: &[FencedPart<'s>]) -> Vec<&'s Source> {
    let lanes = last_lane(parts.iter());
    parts
        .iter()
        .flat_map(|p| p.sources.iter().copied())
        .filter(|s| if s.retry { lanes == 0 } else { s.lane == 0 })
        .collect()
}

/// The highest lane among the lane sources of `parts`.
fn last_lane<'p, 's: 'p>(parts: impl Iterator<Item = &'p FencedPart<'s>>) -> u8 {
    parts
        .flat_map(|p| p.sources.iter())
        .filter(|s| !s.retry)
        .map(|s| s.lane)
        .max()
        .unwrap_or(0)
}

/// The read connection and the leases checked under its `WATCH`.
#[derive(Default)]
pub(crate) struct WatchedReader {
    conn: Option<BlockingConn>,
    /// (partition, epoch, lease key) found ours after the current `WATCH`
    /// began. Reads may cover fewer partitions; every one stays watched.
    pub(super) watched: Vec<(u32, u64, String)>,
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The first error among a pipeline's top-level replies.
fn first_error(replies: &[Value]) -> Option<Error> {
    replies
        .iter()
        .find(|r| matches!(r, Value::ServerError(_)))
        .and_then(|r| check(r.clone()).err())
}

impl WatchedReader {
    /// Runs `pipe` on the read connection (opening one if needed). On an
    /// error the connection is dropped (a reply could still be on its way)
    /// and nothing counts as checked any more.
    ///
    /// Errors inside `EXEC`'s reply are left in place for the caller's
    /// [`check`]: redis-rs would otherwise walk and rebuild every entry of
    /// the reply looking for them, a fifth of a consumer's client CPU.
    ///
    /// With `keep`, the connection is kept even if others wait for one: a
    /// check's `WATCH` must still be in place for the read that follows it.
    pub(super) async fn run(
        &mut self,
        backend: &Backend,
        mut pipe: redis::Pipeline,
        keep: bool,
    ) -> Result<Vec<Value>> {
        pipe.ignore_errors();
        let conn = match self.conn.take() {
            Some(c) if c.is_current() => c,
            old => {
                // None, or one to a primary that was replaced: the old one
                // may still answer, with its own copy of the leases.
                if let Some(old) = old {
                    old.detach();
                }
                self.watched.clear();
                backend.pool().get().await?
            }
        };
        let mut guard = ReadGuard::new(conn);
        let replies = pipe
            .query_async::<Vec<Value>>(guard.conn())
            .await
            .map_err(Error::from)
            .and_then(|v| match first_error(&v) {
                Some(e) => Err(e),
                None => Ok(v),
            });
        match replies {
            Ok(v) => {
                if keep || backend.pool().has_spare() {
                    self.conn = guard.into_inner();
                } else {
                    // Others need it: back to the pool (which UNWATCHes it);
                    // the leases are checked again on the next read.
                    guard.done();
                    self.watched.clear();
                }
                Ok(v)
            }
            Err(e) => {
                self.watched.clear();
                Err(e)
            }
        }
    }

    /// `WATCH`es the leases of `parts` and checks they are ours at their
    /// epochs; returns the partitions that are not.
    pub(super) async fn check(
        &mut self,
        backend: &Backend,
        member: &str,
        parts: &[FencedPart<'_>],
    ) -> Result<Vec<u32>> {
        let mut pipe = redis::pipe();
        pipe.cmd("UNWATCH");
        let mut watch = redis::cmd("WATCH");
        for p in parts {
            watch.arg(&p.lease);
        }
        pipe.add_command(watch);
        pipe.cmd("TIME");
        for p in parts {
            pipe.cmd("HMGET")
                .arg(&p.lease)
                .arg("owner")
                .arg("epoch")
                .arg("expires");
        }
        let replies = self.run(backend, pipe, true).await?;
        let mut replies = replies.into_iter().skip(2);
        let (secs, micros): (u64, u64) = replies
            .next()
            .map(|v| redis::from_redis_value(check(v)?).map_err(|e| Error::Decode(e.to_string())))
            .transpose()?
            .ok_or_else(|| Error::Decode("no TIME reply".into()))?;
        let now_ms = secs * 1000 + micros / 1000;
        let mut lost = Vec::new();
        let mut ok = Vec::new();
        for (p, v) in parts.iter().zip(replies) {
            let fields = match check(v)? {
                Value::Array(f) => f,
                _ => Vec::new(),
            };
            let owner = fields.first().and_then(as_string);
            let epoch = fields.get(1).and_then(as_string);
            let expires: u64 = fields
                .get(2)
                .and_then(as_string)
                .and_then(|e| e.parse().ok())
                .unwrap_or(0);
            if owner.as_deref() == Some(member)
                && epoch == Some(p.epoch.to_string())
                && expires > now_ms
            {
                ok.push((p.partition, p.epoch, p.lease.clone()));
            } else {
                lost.push(p.partition);
            }
        }
        self.watched = ok;
        Ok(lost)
    }

    /// Reads new entries of `parts` (at most `count` per stream), fenced by
    /// their leases. Partitions whose lease is not ours come back in `lost`.
    pub(crate) async fn read(
        &mut self,
        backend: &Backend,
        topic: &str,
        group: &str,
        member: &str,
        parts: &[FencedPart<'_>],
        count: usize,
    ) -> Result<FencedRead> {
        let mut out = FencedRead::default();
        let is_watched = |w: &[(u32, u64, String)], p: &FencedPart<'_>| {
            w.iter().any(|(q, e, _)| *q == p.partition && *e == p.epoch)
        };
        let current = self.conn.as_ref().is_some_and(BlockingConn::is_current);
        if !current || !parts.iter().all(|p| is_watched(&self.watched, p)) {
            out.lost = self.check(backend, member, parts).await?;
        }
        let parts: Vec<&FencedPart<'_>> = parts
            .iter()
            .filter(|p| is_watched(&self.watched, p))
            .collect();
        if parts.is_empty() {
            return Ok(out);
        }
        // Lanes in priority order: the next lane only when the ones before
        // had less than `count` (the retry streams go with the last lane).
        let lanes = last_lane(parts.iter().copied());
        let mut idle = Vec::new();
        for lane in 0..=lanes {
            let tier: Vec<&Source> = parts
                .iter()
                .flat_map(|p| p.sources.iter().copied())
                .filter(|s| {
                    if s.retry {
                        lane == lanes
                    } else {
                        s.lane == lane
                    }
                })
                .collect();
            match self
                .read_tier(backend, topic, group, member, &tier, count)
                .await?
            {
                None => return Ok(out),
                Some((got, newest)) => {
                    out.messages.extend(got);
                    idle.extend(newest);
                }
            }
            if out.messages.len() >= count {
                break;
            }
        }
        if out.messages.is_empty() && out.lost.is_empty() {
            out.idle = idle;
        }
        Ok(out)
    }

    /// One `MULTI` / `XREADGROUP` / `EXEC` over `sources`, then `WATCH` of
    /// every checked lease again. `None` when `EXEC` did nothing (a watched
    /// lease changed: checked again next time). Otherwise the entries, and
    /// each stream's newest id (for a wait, when nothing was read).
    async fn read_tier(
        &mut self,
        backend: &Backend,
        topic: &str,
        group: &str,
        member: &str,
        sources: &[&Source],
        count: usize,
    ) -> Result<Option<Tier>> {
        if sources.is_empty() {
            return Ok(Some((Vec::new(), Vec::new())));
        }
        if !self.can_read() {
            // The leases were checked under a `WATCH` on a connection we no
            // longer hold (given back, failed, or to a replaced primary): a
            // read on another would not be fenced. Checked again next time.
            self.watched.clear();
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        self.add_tier(&mut pipe, group, member, sources, count, true);
        let replies = self.run(backend, pipe, false).await?;
        self.parse_tier(topic, sources, replies)
    }

    /// Whether a read may go out now: leases checked under a `WATCH` on the
    /// connection held, which is to the current primary.
    pub(super) fn can_read(&self) -> bool {
        !self.watched.is_empty() && self.conn.as_ref().is_some_and(BlockingConn::is_current)
    }

    /// Adds a tier's read to `pipe`: `MULTI`, `XREADGROUP`, with `newest`
    /// an `XREVRANGE` per source (its newest id, to wait from when nothing
    /// was read), `EXEC`, and the `WATCH` again.
    fn add_tier(
        &self,
        pipe: &mut redis::Pipeline,
        group: &str,
        member: &str,
        sources: &[&Source],
        count: usize,
        newest: bool,
    ) {
        pipe.cmd("MULTI");
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(group)
            .arg(member)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("STREAMS");
        for s in sources {
            read.arg(&s.key);
        }
        for _ in sources {
            read.arg(">");
        }
        pipe.add_command(read);
        for s in sources.iter().filter(|_| newest) {
            pipe.cmd("XREVRANGE")
                .arg(&s.key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        pipe.cmd("EXEC");
        let mut watch = redis::cmd("WATCH");
        for (_, _, lease) in &self.watched {
            watch.arg(lease);
        }
        pipe.add_command(watch);
    }

    /// The replies of a pipeline that ends with [`Self::add_tier`]'s
    /// commands. `None` when `EXEC` did nothing.
    fn parse_tier(
        &mut self,
        topic: &str,
        sources: &[&Source],
        replies: Vec<Value>,
    ) -> Result<Option<Tier>> {
        // ... MULTI, QUEUED per command, EXEC, WATCH.
        let exec = replies
            .into_iter()
            .rev()
            .nth(1)
            .ok_or_else(|| Error::Decode("no EXEC reply".into()))?;
        let results = match check(exec)? {
            Value::Array(r) => r,
            Value::Nil => {
                self.watched.clear();
                return Ok(None);
            }
            other => return Err(Error::Decode(format!("unexpected EXEC reply {other:?}"))),
        };
        let mut results = results.into_iter();
        let by_key: HashMap<&str, &Source> = sources.iter().map(|s| (s.key.as_str(), *s)).collect();
        let got = match results.next() {
            Some(v) => parse_read(topic, &by_key, check(v)?)?,
            None => Vec::new(),
        };
        let mut newest = Vec::new();
        for (s, v) in sources.iter().zip(results) {
            let id = match check(v)? {
                Value::Array(entries) => entries.first().and_then(|e| match e {
                    Value::Array(kv) => kv.first().and_then(as_string),
                    _ => None,
                }),
                _ => None,
            };
            newest.push((s.key.clone(), id.unwrap_or_else(|| "0-0".into())));
        }
        Ok(Some((got, newest)))
    }

    /// Waits up to `block` for anything newer than `streams`' ids and, in
    /// the same request, reads the first tier of `parts` fenced: Redis runs
    /// a blocked client's next commands as soon as it is unblocked, so a
    /// message that ends the wait is read without another round trip. The
    /// fence is the same as [`Self::read`]'s: the read is a `MULTI`/`EXEC`
    /// under the `WATCH` of leases checked before, which does nothing if one
    /// changed meanwhile (then the woken streams come back and the next read
    /// checks again).
    ///
    /// Falls back to a plain [`Self::wait`] when the leases of `parts` are
    /// not all checked on the connection held.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn wait_then_read(
        &mut self,
        backend: &Backend,
        topic: &str,
        group: &str,
        member: &str,
        streams: &[(String, String)],
        parts: &[FencedPart<'_>],
        count: usize,
        block: Duration,
    ) -> Result<WaitRead> {
        let watched = |p: &FencedPart<'_>| {
            self.watched
                .iter()
                .any(|(q, e, _)| *q == p.partition && *e == p.epoch)
        };
        if streams.is_empty() || !self.can_read() || !parts.iter().all(watched) {
            return Ok(WaitRead::Woken(self.wait(backend, streams, block).await?));
        }
        let tier = first_tier(parts);
        let mut pipe = redis::pipe();
        pipe.add_command(wake_cmd(streams.iter(), block));
        // No newest ids: when this read finds nothing, the next one (with
        // them) follows anyway.
        self.add_tier(&mut pipe, group, member, &tier, count, false);
        let mut replies = self.run(backend, pipe, false).await?;
        if replies.is_empty() {
            return Err(Error::Decode("no XREAD reply".into()));
        }
        let woken: Vec<String> = xread_streams(check(replies.remove(0))?)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        match self.parse_tier(topic, &tier, replies)? {
            Some((got, _)) if !got.is_empty() => Ok(WaitRead::Read(got)),
            // Nothing in the first tier: whatever woke the wait (a later
            // lane, a retry) is read the usual way.
            _ => Ok(WaitRead::Woken(woken)),
        }
    }

    /// Waits up to `block` for anything newer than the given ids (`XREAD`
    /// on the read connection: the `WATCH` stays). Returns the streams that
    /// have something.
    pub(crate) async fn wait(
        &mut self,
        backend: &Backend,
        streams: &[(String, String)],
        block: Duration,
    ) -> Result<Vec<String>> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.add_command(wake_cmd(streams.iter(), block));
        let v = self
            .run(backend, pipe, false)
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        Ok(xread_streams(check(v)?)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }
}
