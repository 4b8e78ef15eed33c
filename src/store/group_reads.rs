//! Reading for a group: `XREADGROUP` over the partitions a member reads
//! (lanes in priority order, blocking only when idle) and `XAUTOCLAIM` to
//! take over pending entries. Pure I/O and reply parsing.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::backend::Backend;
use super::lane_reads::xread_streams;
use super::lease::Held;
use crate::envelope::{Message, parse_entries, parse_entry};
use crate::error::check;
use crate::error::{Error, Result};
use crate::store::conn::{HeldConns, query_value};

/// One stream a member reads: partition, lane, key, and whether it is the
/// group's retry stream of the partition (retries and replays).
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub partition: u32,
    pub lane: u8,
    pub key: String,
    pub retry: bool,
}

impl Backend {
    /// The streams a member of `group` reads of `partitions` of `topic`
    /// (`lanes` lanes each): every lane of every partition in priority
    /// order, then each partition's retry stream of the group.
    pub(crate) fn group_sources(
        &self,
        topic: &str,
        group: &str,
        lanes: u8,
        partitions: &[u32],
    ) -> Vec<Source> {
        let keys = self.keys();
        let mut out = Vec::new();
        for lane in 0..lanes {
            for &p in partitions {
                out.push(Source {
                    partition: p,
                    lane,
                    key: keys.stream(topic, p, lane),
                    retry: false,
                });
            }
        }
        for &p in partitions {
            out.push(Source {
                partition: p,
                lane: 0,
                key: keys.retry_stream(topic, p, group),
                retry: true,
            });
        }
        out
    }
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

pub(crate) fn parse_read(
    topic: &str,
    by_key: &HashMap<&str, &Source>,
    v: Value,
) -> Result<Vec<Fetched>> {
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
#[allow(clippy::too_many_arguments)]
pub(crate) async fn read_new(
    backend: &Backend,
    topic: &str,
    group: &str,
    member: &str,
    sources: &[Source],
    count: usize,
    block: Option<Duration>,
    held: &HeldConns,
) -> Result<Vec<Fetched>> {
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let by_key: HashMap<&str, &Source> = sources.iter().map(|s| (s.key.as_str(), s)).collect();
    let slots: Vec<Vec<&Source>> = if backend.is_cluster() {
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
            for v in backend.query_grouped(cmds).await?.into_iter().flatten() {
                out.extend(parse_read(topic, &by_key, check(v)?)?);
            }
        }
        Some(b) => {
            let futs = slots.iter().map(|srcs| {
                let cmd = xreadgroup(group, member, count, Some(b), srcs);
                async move {
                    let mut guard = held.take(backend.pool()).await?;
                    let v = query_value(guard.conn(), &cmd).await?;
                    guard.keep(held, backend.pool());
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

/// One owned partition to read with [`read_fenced`]: the lease it is held
/// by, at which epoch, and its streams in priority order.
pub(crate) struct FencedPart<'a> {
    pub partition: u32,
    pub epoch: u64,
    /// The lease's `fence` value the holder last wrote ("" if none).
    pub fence: String,
    pub lease: String,
    pub sources: Vec<&'a Source>,
}

impl<'a> FencedPart<'a> {
    /// A partition of `topic` that `group`'s member holds (`held`), to
    /// read from `sources`.
    pub(crate) fn new(
        backend: &Backend,
        topic: &str,
        group: &str,
        held: Held,
        fence: String,
        sources: Vec<&'a Source>,
    ) -> Self {
        FencedPart {
            partition: held.partition,
            epoch: held.epoch,
            fence,
            lease: backend.keys().lease(topic, held.partition, group),
            sources,
        }
    }
}

/// What [`read_fenced`] found.
#[derive(Debug, Default)]
pub(crate) struct FencedRead {
    pub messages: Vec<Fetched>,
    /// Partitions whose lease is no longer ours at that epoch.
    pub lost: Vec<u32>,
    /// When nothing at all was read: each stream with its newest entry id,
    /// to wait for anything newer ([`wait_for_new`]).
    pub idle: Vec<(String, String)>,
}

/// Reads new messages of owned partitions (ordered mode) with
/// `lua/read_fenced.lua`: one script per partition, all in one pipeline (one
/// per slot on a cluster), each reading only while the lease is ours.
pub(crate) async fn read_fenced(
    backend: &Backend,
    topic: &str,
    group: &str,
    member: &str,
    parts: &[FencedPart<'_>],
    count: usize,
) -> Result<FencedRead> {
    let script = &backend.scripts().read_fenced;
    let count = count.max(1).to_string();
    let groups: Vec<Vec<redis::Cmd>> = parts
        .iter()
        .map(|p| {
            let epoch = p.epoch.to_string();
            let mut keys: Vec<&str> = vec![&p.lease];
            keys.extend(p.sources.iter().map(|s| s.key.as_str()));
            let argv: [&[u8]; 5] = [
                group.as_bytes(),
                member.as_bytes(),
                epoch.as_bytes(),
                count.as_bytes(),
                p.fence.as_bytes(),
            ];
            vec![script.cmd(&keys, &argv[..])]
        })
        .collect();
    let replies = backend.query_grouped(groups).await?;
    let mut out = FencedRead::default();
    let mut idle = Vec::new();
    for (p, v) in parts.iter().zip(replies.into_iter().flatten()) {
        match check(v)? {
            Value::Int(_) => out.lost.push(p.partition),
            Value::Array(mut two) if two.len() == 2 => {
                let last = two.pop().unwrap_or(Value::Nil);
                let reads = two.pop().unwrap_or(Value::Nil);
                let by_key: HashMap<&str, &Source> =
                    p.sources.iter().map(|s| (s.key.as_str(), *s)).collect();
                out.messages.extend(parse_read(topic, &by_key, reads)?);
                if let Value::Array(ids) = last {
                    for (src, id) in p.sources.iter().zip(ids) {
                        let id: String = redis::from_redis_value(id)
                            .map_err(|e| Error::Decode(e.to_string()))?;
                        idle.push((src.key.clone(), id));
                    }
                }
            }
            other => {
                return Err(Error::Decode(format!(
                    "unexpected read_fenced reply: {other:?}"
                )));
            }
        }
    }
    if out.messages.is_empty() && out.lost.is_empty() {
        out.idle = idle;
    }
    Ok(out)
}

/// `XREAD COUNT 1 BLOCK` from each stream's given id: wakes on anything newer
/// and delivers nothing to a group.
pub(crate) fn wake_cmd<'a>(
    streams: impl Iterator<Item = &'a (String, String)> + Clone,
    block: Duration,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(block.as_millis().max(1) as u64)
        .arg("STREAMS");
    for (k, _) in streams.clone() {
        cmd.arg(k);
    }
    for (_, id) in streams {
        cmd.arg(id);
    }
    cmd
}

/// Waits up to `block` for an entry newer than the given id in any of the
/// streams (`XREAD`, no group: it delivers nothing, so it cannot strand
/// anything), on dedicated pooled connections, one per partition on a
/// cluster. Returns the streams that have something new (none on a
/// timeout); the caller then reads them with [`read_fenced`].
pub(crate) async fn wait_for_new(
    backend: &Backend,
    streams: &[(String, String)],
    partition_of: impl Fn(&str) -> u32,
    block: Duration,
    held: &HeldConns,
) -> Result<Vec<String>> {
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let slots: Vec<Vec<&(String, String)>> = if backend.is_cluster() {
        let mut per: Vec<(u32, Vec<&(String, String)>)> = Vec::new();
        for s in streams {
            let p = partition_of(&s.0);
            match per.iter_mut().find(|(q, _)| *q == p) {
                Some((_, v)) => v.push(s),
                None => per.push((p, vec![s])),
            }
        }
        per.into_iter().map(|(_, v)| v).collect()
    } else {
        vec![streams.iter().collect()]
    };
    let futs = slots.iter().map(|streams| {
        let cmd = wake_cmd(streams.iter().copied(), block);
        async move {
            let mut guard = held.take(backend.pool()).await?;
            let v = query_value(guard.conn(), &cmd).await?;
            guard.keep(held, backend.pool());
            Ok::<Value, Error>(v)
        }
    });
    let mut woken = Vec::new();
    for r in futures_util::future::join_all(futs).await {
        woken.extend(xread_streams(r?)?.into_iter().map(|(key, _)| key));
    }
    Ok(woken)
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
    backend: &Backend,
    topic: &str,
    group: &str,
    member: &str,
    source: &Source,
    min_idle: Duration,
    limit: usize,
) -> Result<Claimed> {
    let mut out = Claimed::default();
    let mut cursor = "0-0".to_string();
    let mut conn = backend.connection();
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
    backend: &Backend,
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
        .query_async(&mut backend.connection())
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, _, _, n)| Some((crate::envelope::StreamId::parse(&id).ok()?, n)))
        .collect())
}

/// Entries pending for `member` itself in `source` whose ids `skip` does not
/// reject, with their bodies and delivery counts (`XPENDING` for the member,
/// then `XRANGE` per id). Unlike `XAUTOCLAIM` or a history read, neither
/// command counts as a delivery. Used after a read whose reply was lost: the
/// entries it delivered are pending for us, but no handler saw them.
pub(crate) async fn own_pending(
    backend: &Backend,
    topic: &str,
    group: &str,
    member: &str,
    source: &Source,
    skip: impl Fn(crate::envelope::StreamId) -> bool,
) -> Result<(Vec<(Fetched, u64)>, usize)> {
    let mut wanted: Vec<(String, u64)> = Vec::new();
    let mut start = "-".to_string();
    loop {
        let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&source.key)
            .arg(group)
            .arg(&start)
            .arg("+")
            .arg(500)
            .arg(member)
            .query_async(&mut backend.connection())
            .await?;
        let full = rows.len() == 500;
        if let Some((last, ..)) = rows.last() {
            start = format!("({last}");
        }
        for (id, _, _, n) in rows {
            match crate::envelope::StreamId::parse(&id) {
                Ok(sid) if !skip(sid) => wanted.push((id, n)),
                _ => {}
            }
        }
        if !full {
            break;
        }
    }
    if wanted.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let cmds: Vec<redis::Cmd> = wanted
        .iter()
        .map(|(id, _)| {
            redis::cmd("XRANGE")
                .arg(&source.key)
                .arg(id)
                .arg(id)
                .clone()
        })
        .collect();
    let replies = backend.query_grouped(vec![cmds]).await?;
    let mut out = Vec::new();
    let mut trimmed = 0;
    for ((_, n), v) in wanted.iter().zip(replies.into_iter().flatten()) {
        let entries = parse_entries(topic, source.partition, source.lane, check(v)?)?;
        match entries.into_iter().next() {
            Some(msg) => out.push((
                Fetched {
                    msg,
                    retry: source.retry,
                },
                *n,
            )),
            None => trimmed += 1,
        }
    }
    Ok((out, trimmed))
}
