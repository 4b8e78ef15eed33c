//! The store: the layer between millrace's domain modules (producer,
//! consumer runtime, group, topic, schedule, dlq, rate limit, reader) and
//! Redis. Every Redis command millrace sends is built here.
//!
//! It owns the connected [`backend::Backend`] (connections, key space,
//! script registry), the connection layer under it ([`conn`], [`direct`],
//! [`tls`], [`scripts`], [`keys`], [`resp`]), and offers one typed function
//! per step: named arguments in, typed outcomes out (a lease that moved on
//! is [`Guarded::LeaseLost`], not a `-1`). Callers never build keys, pick a
//! script or read a reply by position. Pipelines are grouped per partition,
//! so on a cluster each partition's commands go to its own slot. The steps,
//! module by module, are listed in docs/architecture.md.

pub(crate) mod backend;
pub(crate) mod cluster_slots;
pub(crate) mod conn;
pub(crate) mod coordination;
pub(crate) mod dead_letters;
pub(crate) mod direct;
pub(crate) mod dlq_entries;
pub(crate) mod group_positions;
pub(crate) mod group_reads;
pub(crate) mod groups;
pub mod keys;
pub(crate) mod lane_reads;
pub(crate) mod lease;
pub(crate) mod membership;
pub(crate) mod overview;
pub(crate) mod promote;
pub(crate) mod publish;
pub(crate) mod resp;
pub(crate) mod results;
pub(crate) mod schedules;
pub(crate) mod schemas;
pub(crate) mod scripts;
pub(crate) mod sentinel;
pub(crate) mod settle;
pub(crate) mod status;
pub(crate) mod tls;
pub(crate) mod topics;
pub(crate) mod watched;
mod watched_acks;

use futures_util::future::join_all;
use redis::{Cmd, Value};

use crate::duration::Doubling;
use crate::error::{Error, Result};
use crate::store::conn::{Conn, run_pipeline};
use crate::store::keys::KeySpace;
use crate::store::scripts::Scripts;

/// A view of the store for one call: the connection, the scripts and the
/// key space (cheap: a clone of the multiplexed connection and two
/// borrows).
pub(crate) struct Store<'a> {
    conn: Conn,
    scripts: &'a Scripts,
    keys: &'a KeySpace,
}

/// The holder of a partition lease, as a lease-guarded step checks it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Holder<'a> {
    /// The member id.
    pub member: &'a str,
    /// The lease epoch (fencing token) it holds.
    pub epoch: u64,
}

/// What a lease-guarded step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Guarded<T> {
    /// It ran, with this result.
    Done(T),
    /// The lease was not the caller's at that epoch (or had expired):
    /// nothing was written.
    LeaseLost,
}

/// Which stream of a partition a message was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A partition lane.
    Lane(u8),
    /// The group's retry stream.
    Retry,
}

impl<'a> Store<'a> {
    pub(crate) fn new(conn: Conn, scripts: &'a Scripts, keys: &'a KeySpace) -> Self {
        Store {
            conn,
            scripts,
            keys,
        }
    }

    /// The key of the stream `source` of `topic`'s partition `p`, as read
    /// by `group`.
    fn stream(&self, topic: &str, p: u32, group: &str, source: Source) -> String {
        match source {
            Source::Lane(lane) => self.keys.stream(topic, p, lane),
            Source::Retry => self.keys.retry_stream(topic, p, group),
        }
    }

    /// Runs one script call (reloading the scripts on `NOSCRIPT`).
    async fn eval(
        &self,
        script: &crate::store::scripts::Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<Value> {
        self.conn
            .clone()
            .eval(self.scripts, script, keys, args)
            .await
    }

    /// Sends groups of commands, one group per partition: on a single
    /// server everything goes in one pipeline; on a cluster each group is
    /// its own pipeline, all in flight at once. Returns each command's reply
    /// or server error, in order.
    pub(crate) async fn query_grouped(&self, groups: Vec<Vec<Cmd>>) -> Result<Vec<Vec<Value>>> {
        let conn = &self.conn;
        let scripts = self.scripts;
        if !conn.is_cluster() {
            let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
            let mut pipe = redis::pipe();
            for c in groups.into_iter().flatten() {
                pipe.add_command(c);
            }
            if pipe.is_empty() {
                return Ok(sizes.iter().map(|_| Vec::new()).collect());
            }
            let count = pipe.len();
            let mut flat = run_pipeline(&mut conn.clone(), scripts, pipe, count).await?;
            let mut out = Vec::with_capacity(sizes.len());
            let mut rest = flat.drain(..);
            for n in sizes {
                out.push(rest.by_ref().take(n).collect());
            }
            return Ok(out);
        }
        let futs = groups.into_iter().map(|cmds| {
            let mut conn = conn.clone();
            async move {
                if cmds.is_empty() {
                    return Ok(Vec::new());
                }
                let mut pipe = redis::pipe();
                let count = cmds.len();
                for c in cmds {
                    pipe.add_command(c);
                }
                run_pipeline(&mut conn, scripts, pipe, count).await
            }
        });
        join_all(futs)
            .await
            .into_iter()
            .map(|r| r.map_err(Error::from))
            .collect()
    }
}

impl Store<'_> {
    /// Sends `(partition, command)` pairs grouped by partition (one
    /// pipeline per slot on a cluster) and returns each command's reply or
    /// server error in the order given.
    pub(crate) async fn query_per_partition(&self, cmds: Vec<(u32, Cmd)>) -> Result<Vec<Value>> {
        let mut partitions: Vec<u32> = Vec::new();
        let mut groups: Vec<Vec<Cmd>> = Vec::new();
        let mut at: Vec<(usize, usize)> = Vec::with_capacity(cmds.len());
        for (p, cmd) in cmds {
            let g = match partitions.iter().position(|q| *q == p) {
                Some(g) => g,
                None => {
                    partitions.push(p);
                    groups.push(Vec::new());
                    groups.len() - 1
                }
            };
            at.push((g, groups[g].len()));
            groups[g].push(cmd);
        }
        let mut replies = self.query_grouped(groups).await?;
        Ok(at
            .into_iter()
            .map(|(g, i)| {
                replies
                    .get_mut(g)
                    .and_then(|r| r.get_mut(i))
                    .map(std::mem::take)
                    .unwrap_or(Value::Nil)
            })
            .collect())
    }
}

/// Runs an idempotent Redis step (a read, releasing a lease, leaving a
/// group) again while its failure is one that passes: after a restart or a
/// cut, the multiplexed connection fails its next command while it
/// reconnects. Up to five tries, 0.75 s of waiting in all; then the error
/// stands.
pub(crate) async fn idempotent<T, F, Fut>(mut step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Doubling::new(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_millis(400),
    );
    for _ in 0..4 {
        match step().await {
            Err(e) if e.is_retryable() => {
                tracing::debug!(error = %e, "idempotent step failed; trying again");
                tokio::time::sleep(delay.next_wait()).await;
            }
            other => return other,
        }
    }
    step().await
}

/// A reply as an integer.
pub(crate) fn int(v: &Value) -> Result<i64> {
    redis::from_redis_value_ref(v).map_err(|e| Error::Decode(e.to_string()))
}

/// A reply as text.
pub(crate) fn text(v: &Value) -> Result<String> {
    redis::from_redis_value_ref(v).map_err(|e| Error::Decode(e.to_string()))
}

/// A lease-guarded script's integer reply: -1 is the guard's refusal.
fn guarded_int(v: &Value) -> Result<Guarded<i64>> {
    Ok(match int(v)? {
        -1 => Guarded::LeaseLost,
        n => Guarded::Done(n),
    })
}
