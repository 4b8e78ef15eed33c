//! Publishing: the commands that write one record (`XADD`, or
//! `lua/publish_dedup.lua` with a dedup id, or `lua/delay.lua` for a delayed
//! one), the retention trim that rides along (`lua/trim.lua`), and sending
//! them in pipelines, one per partition's slot on a cluster. The producer
//! validates, encodes, picks the partition and batches; the store builds
//! the keys and commands and reads the replies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Cmd, Value};
use serde::Serialize;

use crate::acks::Acks;
use crate::envelope::{encode_delayed, entry_fields};
use crate::error::{Error, Result};
use crate::id::MessageId;
use crate::store::conn::{Conn, run_pipeline_noting_retries};
use crate::store::keys::KeySpace;
use crate::store::scripts::Scripts;

/// Where a published message went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Receipt {
    /// The partition.
    pub partition: u32,
    /// The lane.
    pub lane: u8,
    /// The message's identity within the topic, `<partition>:<lane>:<id>`:
    /// what handlers get as their context's `message_id`, `dlq list` shows
    /// and commands that take a message id accept.
    pub message_id: MessageId,
    /// The stream id (`<ms>-<seq>`) of a message in its stream, or for a
    /// delayed message a token `<due ms>-<sha1>` naming it in the delayed set.
    pub id: String,
    /// For a delayed message, when it is due (ms since the epoch, Redis clock).
    pub due_ms: Option<u64>,
    /// True when a dedup id matched an earlier publish: nothing was written
    /// and `message_id`, `lane` and `id` are the first message's.
    pub duplicate: bool,
}

/// When a record is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// At once.
    Now,
    /// After a delay, on Redis's clock.
    After(Duration),
    /// At a time, ms since the Unix epoch.
    At(u64),
}

/// One validated, encoded record to write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PublishStep<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub lane: u8,
    pub key: Option<&'a str>,
    /// The headers as a MessagePack map (empty when none).
    pub headers: &'a [u8],
    pub payload: &'a [u8],
    /// The topic's `max_len` cap.
    pub max_len: Option<u64>,
    /// The topic's retention (for the trim that may ride along).
    pub retention: Duration,
    /// A dedup id and how long its marker lives.
    pub dedup: Option<(&'a str, Duration)>,
    pub due: Due,
}

/// What a prepared publish needs from Redis.
#[derive(Debug)]
pub(crate) enum Kind {
    /// `XADD` replying with the id.
    Add,
    /// A script replying `{created, id}`.
    Script,
    /// The `delay` script replying `{created, token}`.
    Delay,
}

/// One publish turned into a command.
pub(crate) struct Prepared {
    pub(crate) partition: u32,
    lane: u8,
    kind: Kind,
    cmd: Cmd,
    /// Stream and retention for the trim that may ride along.
    pub(crate) trim: Option<(String, u64)>,
}

/// A number no other call in this process (and almost surely no other
/// process) gets: nonces of delayed members, read fences.
pub(crate) fn unique_nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ (u64::from(std::process::id()) << 40)
    });
    seed.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The command for one record (pure apart from the nonce of a delayed one).
pub(crate) fn prepare(keys: &KeySpace, scripts: &Scripts, s: PublishStep<'_>) -> Prepared {
    let (topic, partition, lane) = (s.topic, s.partition, s.lane);
    let stream = keys.stream(topic, partition, lane);
    let maxlen = s.max_len.map(|n| n.to_string()).unwrap_or_default();
    let lane_arg = lane.to_string();
    let dedup = s.dedup.map(|(id, ttl)| {
        (
            keys.dedup(topic, partition, id),
            ttl.as_millis().to_string(),
        )
    });
    let (kind, cmd, trim) = match s.due {
        Due::Now => {
            let fields = entry_fields(s.key, s.headers, s.payload);
            let retention = s.retention.as_millis() as u64;
            match dedup {
                None => {
                    // Sized up front: growing the buffer argument by
                    // argument cost more than the rest of the publish.
                    let bytes = 16 + stream.len() + fields.iter().map(|f| f.len()).sum::<usize>();
                    let mut c = Cmd::with_capacity(12, bytes);
                    c.arg("XADD").arg(&stream);
                    if let Some(n) = s.max_len {
                        c.arg("MAXLEN").arg("~").arg(n);
                    }
                    c.arg("*").arg(&fields[..]);
                    (Kind::Add, c, Some((stream, retention)))
                }
                Some((marker, ttl)) => {
                    let mut args: Vec<&[u8]> = vec![ttl.as_bytes(), maxlen.as_bytes()];
                    args.extend(fields);
                    args.push(lane_arg.as_bytes());
                    let c = scripts.publish_dedup.cmd(&[&marker, &stream], &args);
                    (Kind::Script, c, Some((stream, retention)))
                }
            }
        }
        Due::After(_) | Due::At(_) => {
            let (amount, mode) = match s.due {
                Due::After(d) => (d.as_millis() as u64, "rel"),
                Due::At(ms) => (ms, "abs"),
                Due::Now => unreachable!("handled above"),
            };
            let member = encode_delayed(unique_nonce(), lane, s.key, s.headers, s.payload);
            let amount = amount.to_string();
            let delayed = keys.delayed(topic, partition);
            let wake = keys.wake(topic, partition);
            let c = match &dedup {
                None => scripts.delay.cmd(
                    &[&delayed, &wake],
                    &[
                        amount.as_bytes(),
                        mode.as_bytes(),
                        &member,
                        b"",
                        lane_arg.as_bytes(),
                    ][..],
                ),
                Some((marker, ttl)) => scripts.delay.cmd(
                    &[&delayed, &wake, marker],
                    &[
                        amount.as_bytes(),
                        mode.as_bytes(),
                        &member,
                        ttl.as_bytes(),
                        lane_arg.as_bytes(),
                    ][..],
                ),
            };
            (Kind::Delay, c, None)
        }
    };
    Prepared {
        partition,
        lane,
        kind,
        cmd,
        trim,
    }
}

/// The retention trim of one partition lane (`lua/trim.lua`; it keeps what a
/// live group has not handled yet).
pub(crate) fn trim(scripts: &Scripts, stream: &str, retention_ms: u64) -> Cmd {
    scripts.trim.cmd(&[stream], &[retention_ms.to_string()][..])
}

fn to_receipt(partition: u32, lane: u8, kind: &Kind, v: Value) -> Result<Receipt> {
    let bad = |v: &Value| Error::Decode(format!("unexpected publish reply {v:?}"));
    let added = |id: String| Receipt {
        partition,
        lane,
        message_id: MessageId::read(partition, lane, id.clone()),
        id,
        due_ms: None,
        duplicate: false,
    };
    match (kind, v) {
        (_, Value::ServerError(e)) => Err(Error::from(redis::RedisError::from(e))),
        (Kind::Add, Value::BulkString(bytes)) => Ok(added(
            String::from_utf8(bytes).map_err(|e| bad(&Value::BulkString(e.into_bytes())))?,
        )),
        (Kind::Add, Value::SimpleString(id)) => Ok(added(id)),
        (Kind::Add, v) => Err(bad(&v)),
        (Kind::Script | Kind::Delay, v) => {
            let (created, reply): (i64, String) =
                redis::from_redis_value(v.clone()).map_err(|_| bad(&v))?;
            // A duplicate's reply is the dedup marker: "<lane>:<id>" of the
            // first message (a bare id when an older version set it).
            let (lane, id) = match reply.split_once(':') {
                Some((l, id)) if created == 0 => (l.parse().map_err(|_| bad(&v))?, id.to_string()),
                _ => (lane, reply),
            };
            let due_ms = match kind {
                Kind::Delay => id.split('-').next().and_then(|d| d.parse().ok()),
                _ => None,
            };
            Ok(Receipt {
                partition,
                lane,
                message_id: MessageId::read(partition, lane, id.clone()),
                id,
                due_ms,
                duplicate: created == 0,
            })
        }
    }
}

/// Sends prepared publishes: one pipeline on a single server, one per
/// partition on a cluster (trims go with their partition), retrying script
/// calls that met `NOSCRIPT`. Commands are moved into the pipelines, not copied.
/// With [`Acks::Replicas`] a `WAIT` follows the writes (in the same
/// pipeline on one server); the writes it does not confirm are
/// [`Error::NotReplicated`].
pub(crate) async fn send(
    conn: &Conn,
    scripts: &Scripts,
    items: Vec<Prepared>,
    trims: Vec<(u32, Cmd)>,
    acks: Acks,
) -> Vec<Result<Receipt>> {
    let cluster = conn.is_cluster();
    let mut metas = Vec::with_capacity(items.len());
    let mut groups: Vec<(u32, Vec<usize>, redis::Pipeline)> = Vec::new();
    for (i, p) in items.into_iter().enumerate() {
        let g = if cluster {
            match groups.iter().position(|(part, _, _)| *part == p.partition) {
                Some(g) => g,
                None => {
                    groups.push((p.partition, Vec::new(), redis::pipe()));
                    groups.len() - 1
                }
            }
        } else {
            if groups.is_empty() {
                groups.push((0, Vec::new(), redis::pipe()));
            }
            0
        };
        groups[g].1.push(i);
        groups[g].2.add_command(p.cmd);
        metas.push((p.partition, p.lane, p.kind));
    }
    for (partition, trim) in trims {
        let g = if cluster {
            groups.iter().position(|(part, _, _)| *part == partition)
        } else {
            Some(0)
        };
        if let Some(g) = g {
            groups[g].2.add_command(trim).ignore();
        }
    }
    // On one server the WAIT ends the pipeline, so it covers exactly the
    // connection that made the writes (behind Sentinel, the connection of
    // the primary they went to). A cluster's WAIT goes to every primary
    // (redis-rs routes it so), after the pipelines.
    let wait = (acks != Acks::Primary).then_some(acks);
    let inline = wait.is_some() && !cluster;
    let futs = groups.into_iter().map(|(_, idx, mut pipe)| {
        let mut conn = conn.clone();
        async move {
            if let (true, Some(cmd)) = (inline, wait.and_then(wait_cmd)) {
                pipe.add_command(cmd);
            }
            let count = idx.len() + usize::from(inline);
            let replies = run_pipeline_noting_retries(&mut conn, scripts, pipe, count).await;
            let replies = match replies {
                Ok((mut values, retried)) if inline => {
                    let waited = values.pop();
                    let waited = match (retried, wait) {
                        // Some writes went after the WAIT: wait for them.
                        (true, Some(w)) => wait_for_replicas(&mut conn, w).await,
                        (_, Some(w)) => waited_enough(waited, w),
                        (_, None) => Ok(()),
                    };
                    Ok((values, waited))
                }
                Ok((values, _)) => Ok((values, Ok(()))),
                Err(e) => Err(e),
            };
            (idx, replies)
        }
    });
    let mut results: Vec<Option<Result<Receipt>>> = (0..metas.len()).map(|_| None).collect();
    let mut wait_failed: Option<Error> = None;
    for (idx, replies) in futures_util::future::join_all(futs).await {
        match replies {
            Ok((values, waited)) => {
                if let Err(e) = waited {
                    wait_failed = Some(e);
                }
                for (i, v) in idx.iter().zip(values) {
                    let (partition, lane, kind) = &metas[*i];
                    results[*i] = Some(to_receipt(*partition, *lane, kind, v));
                }
            }
            Err(e) => {
                for i in idx {
                    results[i] = Some(Err(Error::from(e.clone())));
                }
            }
        }
    }
    let mut results: Vec<Result<Receipt>> = results
        .into_iter()
        .map(|r| r.unwrap_or(Err(Error::ProducerClosed)))
        .collect();
    if let (Some(w), false) = (wait, inline)
        && results.iter().any(Result::is_ok)
    {
        wait_failed = wait_for_replicas(&mut conn.clone(), w).await.err();
    }
    if matches!(wait_failed, Some(Error::NotReplicated { .. })) {
        // No replica has what this primary took: behind Sentinel it may be
        // cut off from the rest (a partition), so ask the sentinels again.
        conn.suspect_primary();
    }
    if results.iter().any(Result::is_ok)
        && let Some(e) = wait_failed
    {
        // Each write the wait was for has the same unknown outcome.
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(match &e {
                Error::NotReplicated {
                    wanted,
                    acked,
                    timeout,
                    primary_fsynced,
                } => Error::NotReplicated {
                    wanted: *wanted,
                    acked: *acked,
                    timeout: *timeout,
                    primary_fsynced: *primary_fsynced,
                },
                Error::UnsupportedServer { server, reason } => Error::UnsupportedServer {
                    server: server.clone(),
                    reason: reason.clone(),
                },
                Error::Redis(re) => Error::from(re.clone()),
                other => Error::Redis(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "waiting for replicas failed",
                    other.to_string(),
                ))),
            });
        }
    }
    results
}

/// The command that waits as `acks` asks: `WAIT replicas timeout` (until
/// that many replicas have every write the connection made before it) or
/// `WAITAOF 1 replicas timeout` (until the primary and that many replicas
/// have fsynced them); none for [`Acks::Primary`].
pub(crate) fn wait_cmd(acks: Acks) -> Option<Cmd> {
    let ms = |t: Duration| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1);
    match acks {
        Acks::Primary => None,
        Acks::Replicas { replicas, timeout } => {
            let mut cmd = redis::cmd("WAIT");
            cmd.arg(replicas).arg(ms(timeout));
            Some(cmd)
        }
        Acks::Fsynced { replicas, timeout } => {
            let mut cmd = redis::cmd("WAITAOF");
            cmd.arg(1).arg(replicas).arg(ms(timeout));
            Some(cmd)
        }
    }
}

/// After writes on `conn`: waits as `acks` asks for every write this
/// connection made so far (on a cluster, on every primary: the fewest
/// counts).
pub(crate) async fn wait_for_replicas(conn: &mut Conn, acks: Acks) -> Result<()> {
    let Some(cmd) = wait_cmd(acks) else {
        return Ok(());
    };
    let reply = redis::aio::ConnectionLike::req_packed_command(conn, &cmd)
        .await
        .map_err(|e| {
            let unknown = e.kind()
                == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                && e.to_string()
                    .to_ascii_lowercase()
                    .contains("unknown command");
            if unknown {
                unsupported_wait(acks)
            } else if e.kind() == redis::ErrorKind::UnexpectedReturnType {
                // On a cluster redis-rs asks every primary and combines
                // the counts; a node that answered something else (an
                // error, mid-failover) leaves the outcome unknown.
                unconfirmed(acks)
            } else {
                Error::from(e)
            }
        })?;
    waited_enough(Some(reply), acks)
}

/// No replica count could be read: as for too few, the outcome is unknown.
fn unconfirmed(acks: Acks) -> Error {
    match acks {
        Acks::Replicas { replicas, timeout } | Acks::Fsynced { replicas, timeout } => {
            Error::NotReplicated {
                wanted: replicas,
                acked: 0,
                timeout,
                primary_fsynced: matches!(acks, Acks::Fsynced { .. }).then_some(false),
            }
        }
        Acks::Primary => Error::Decode("a wait without replicas to wait for".into()),
    }
}

/// The server does not have the command `acks` needs.
fn unsupported_wait(acks: Acks) -> Error {
    Error::UnsupportedServer {
        server: "this server".into(),
        reason: match acks {
            Acks::Fsynced { .. } => {
                "Acks::Fsynced needs WAITAOF (Redis 7.2 or later, Valkey 8)".into()
            }
            _ => "it has no WAIT".into(),
        },
    }
}

/// The wait's reply against what `acks` asked: fewer is
/// [`Error::NotReplicated`].
fn waited_enough(reply: Option<Value>, acks: Acks) -> Result<()> {
    let (wanted, timeout) = match acks {
        Acks::Primary => return Ok(()),
        Acks::Replicas { replicas, timeout } | Acks::Fsynced { replicas, timeout } => {
            (replicas, timeout)
        }
    };
    let count = |v: &Value| match v {
        Value::Int(n) => Some(u32::try_from((*n).max(0)).unwrap_or(u32::MAX)),
        _ => None,
    };
    let (acked, primary_fsynced) = match (&reply, acks) {
        (Some(Value::ServerError(e)), _) => {
            let e = redis::RedisError::from(e.clone());
            if e.to_string()
                .to_ascii_lowercase()
                .contains("unknown command")
            {
                return Err(unsupported_wait(acks));
            }
            if e.to_string().contains("appendonly is disabled") {
                return Err(Error::UnsupportedServer {
                    server: "this server".into(),
                    reason: "Acks::Fsynced needs appendonly yes on the primary".into(),
                });
            }
            return Err(Error::from(e));
        }
        (Some(v @ Value::Int(_)), Acks::Replicas { .. }) => (count(v), None),
        (Some(Value::Array(parts)), Acks::Fsynced { .. }) if parts.len() == 2 => {
            let local = count(&parts[0]);
            (count(&parts[1]), local.map(|l| l >= 1))
        }
        _ => (None, None),
    };
    let Some(acked) = acked else {
        return Err(Error::Decode(format!(
            "the wait answered {reply:?}, not a number of replicas"
        )));
    };
    if acked < wanted || primary_fsynced == Some(false) {
        return Err(Error::NotReplicated {
            wanted,
            acked,
            timeout,
            primary_fsynced,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_whose_counts_could_not_be_combined_is_an_unknown_outcome() {
        let acks = Acks::replicas(1, Duration::from_millis(100));
        let e = unconfirmed(acks);
        assert!(
            matches!(
                e,
                Error::NotReplicated {
                    wanted: 1,
                    acked: 0,
                    primary_fsynced: None,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.is_retryable(), "published again with its dedup id");
    }
}
