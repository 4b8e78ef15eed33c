//! Reading for a group: `XREADGROUP` over the partitions a member reads
//! (lanes in priority order, blocking only when idle) and `XAUTOCLAIM` to
//! take over pending entries. Pure I/O and reply parsing.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use crate::client::{Client, check};
use crate::conn::ReadGuard;
use crate::envelope::{Message, parse_entries, parse_entry};
use crate::error::{Error, Result};
use crate::reader::xread_streams;

/// One stream a member reads: partition, lane, key, and whether it is the
/// group's retry stream of the partition (retries and replays).
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub partition: u32,
    pub lane: u8,
    pub key: String,
    pub retry: bool,
}

/// A message as read, with where it came from.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub msg: Message,
    /// Read from the group's retry stream.
    pub retry: bool,
}

fn xreadgroup(
    group: &str,
    member: &str,
    count: usize,
    block: Option<Duration>,
    sources: &[&Source],
) -> redis::Cmd {
    let mut c = redis::cmd("XREADGROUP");
    c.arg("GROUP")
        .arg(group)
        .arg(member)
        .arg("COUNT")
        .arg(count.max(1));
    if let Some(b) = block {
        c.arg("BLOCK").arg(b.as_millis().max(1) as u64);
    }
    c.arg("STREAMS");
    for s in sources {
        c.arg(&s.key);
    }
    for _ in sources {
        c.arg(">");
    }
    c
}

fn parse_read(topic: &str, by_key: &HashMap<&str, &Source>, v: Value) -> Result<Vec<Fetched>> {
    let mut out = Vec::new();
    for (key, entries) in xread_streams(v)? {
        let Some(s) = by_key.get(key.as_str()) else {
            continue;
        };
        out.extend(
            parse_entries(topic, s.partition, s.lane, entries)?
                .into_iter()
                .map(|msg| Fetched {
                    msg,
                    retry: s.retry,
                }),
        );
    }
    Ok(out)
}

/// Reads new messages (`>`) for `member` from `sources`, at most `count`
/// per stream. On a single server one command covers every stream; on a
/// cluster there is one per partition (a command cannot span slots), all in
/// flight at once. With `block`, waits up to that long when nothing is there,
/// on dedicated pooled connections.
pub(crate) async fn read_new(
    client: &Client,
    topic: &str,
    group: &str,
    member: &str,
    sources: &[Source],
    count: usize,
    block: Option<Duration>,
) -> Result<Vec<Fetched>> {
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let by_key: HashMap<&str, &Source> = sources.iter().map(|s| (s.key.as_str(), s)).collect();
    let slots: Vec<Vec<&Source>> = if client.connection().is_cluster() {
        let mut per: Vec<(u32, Vec<&Source>)> = Vec::new();
        for s in sources {
            match per.iter_mut().find(|(p, _)| *p == s.partition) {
                Some((_, v)) => v.push(s),
                None => per.push((s.partition, vec![s])),
            }
        }
        per.into_iter().map(|(_, v)| v).collect()
    } else {
        vec![sources.iter().collect()]
    };
    let mut out = Vec::new();
    match block {
        None => {
            let cmds = slots
                .iter()
                .map(|srcs| vec![xreadgroup(group, member, count, None, srcs)])
                .collect();
            for v in client.query_grouped(cmds).await?.into_iter().flatten() {
                out.extend(parse_read(topic, &by_key, check(v)?)?);
            }
        }
        Some(b) => {
            let futs = slots.iter().map(|srcs| {
                let cmd = xreadgroup(group, member, count, Some(b), srcs);
                async move {
                    let mut guard = ReadGuard::new(client.blocking_connection().await?);
                    let v: Value = cmd.query_async(guard.conn()).await?;
                    guard.done();
                    Ok::<Value, Error>(v)
                }
            });
            for v in futures_util::future::join_all(futs).await {
                out.extend(parse_read(topic, &by_key, v?)?);
            }
        }
    }
    Ok(out)
}

/// What `claim` took over.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    /// The entries now pending for the claimer, oldest first per stream.
    pub messages: Vec<Fetched>,
    /// Pending entries whose message was trimmed away before it was handled.
    pub trimmed: usize,
}

/// Takes over every entry of `source` pending for `group` that has been idle
/// at least `min_idle` (`XAUTOCLAIM`), up to `limit` entries.
pub(crate) async fn claim(
    client: &Client,
    topic: &str,
    group: &str,
    member: &str,
    source: &Source,
    min_idle: Duration,
    limit: usize,
) -> Result<Claimed> {
    let mut out = Claimed::default();
    let mut cursor = "0-0".to_string();
    let mut conn = client.connection();
    loop {
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(&source.key)
            .arg(group)
            .arg(member)
            .arg(min_idle.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(100)
            .query_async(&mut conn)
            .await?;
        let Value::Array(parts) = v else {
            return Err(Error::Decode("XAUTOCLAIM reply is not an array".into()));
        };
        let mut parts = parts.into_iter();
        let next: String = parts
            .next()
            .map(redis::from_redis_value)
            .transpose()
            .map_err(|e| Error::Decode(e.to_string()))?
            .unwrap_or_else(|| "0-0".into());
        if let Some(Value::Array(entries)) = parts.next() {
            for e in entries {
                // A claimed id whose entry was deleted comes back with nil fields.
                match parse_entry(topic, source.partition, source.lane, e) {
                    Ok(msg) => out.messages.push(Fetched {
                        msg,
                        retry: source.retry,
                    }),
                    Err(_) => out.trimmed += 1,
                }
            }
        }
        if let Some(Value::Array(deleted)) = parts.next() {
            out.trimmed += deleted.len();
        }
        if next == "0-0" || out.messages.len() >= limit {
            return Ok(out);
        }
        cursor = next;
    }
}

/// How often each of `ids` (pending for `member` in `source`) has been
/// delivered (`XPENDING` extended form), to continue attempt counts.
pub(crate) async fn deliveries(
    client: &Client,
    group: &str,
    member: &str,
    source: &Source,
    ids: &[crate::envelope::StreamId],
) -> Result<HashMap<crate::envelope::StreamId, u64>> {
    let (Some(first), Some(last)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(HashMap::new());
    };
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&source.key)
        .arg(group)
        .arg(first.to_string())
        .arg(last.to_string())
        .arg(ids.len() + 10)
        .arg(member)
        .query_async(&mut client.connection())
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, _, _, n)| Some((crate::envelope::StreamId::parse(&id).ok()?, n)))
        .collect())
}
