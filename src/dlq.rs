//! Dead letters: list, show, replay and purge.
//!
//! Each partition of topic `T` has one dead-letter stream (all groups); an
//! entry keeps the message (key, headers, payload) and where and why it
//! failed (group, partition, lane, origin id, attempts, last error, time).
//! The same streams read as the topic `T.dlq`, so a group can consume them.
//! Replay puts an entry back — into the group's retry stream (that group
//! only) or into its partition lane stream (every group) — and deletes it
//! from the dead-letter stream in the same script, so an entry is never
//! lost in between.

use serde::Serialize;

use crate::envelope::{Headers, Message, StreamId, meta};
use crate::error::{Error, Result};
use crate::id::MessageId;
use crate::store::dead_letters::{Replay, ReplayTarget};
use crate::store::dlq_entries::DeadLetterPage;
use crate::topic::Catalog;

/// Entries read per page of a dead-letter stream.
const PAGE: usize = 500;

/// One dead letter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The message's identity (`<partition>:<lane>:<first id>`), as its
    /// handlers saw it: the same for every dead letter of one message (one
    /// per group that gave up on it).
    pub message_id: MessageId,
    /// Its id in the partition's dead-letter stream (`<partition>:<id>`
    /// addresses this dead letter).
    pub id: String,
    /// The partition it came from.
    pub partition: u32,
    /// The lane it came from.
    pub lane: u8,
    /// The group that gave up on it.
    pub group: String,
    /// The message's first id: the stream id it was published with, or a
    /// delayed message's token (the last part of `message_id`).
    pub origin_id: String,
    /// The partition key.
    pub key: Option<String>,
    /// The payload bytes.
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// Headers.
    pub headers: Headers,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When it was dead-lettered (ms since the epoch, Redis clock).
    pub failed_at_ms: u64,
}

/// Which dead letters an operation applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These ids: dead-letter ids `ms-seq` (looked up in every partition)
    /// or `P:ms-seq`, or message ids `P:L:first` (every dead letter of that
    /// message).
    Ids(Vec<String>),
    /// All of them (optionally of one group).
    All,
}

/// Where a replay sends dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayTo {
    /// Only the group that gave up on each entry (through its retry stream).
    Group,
    /// The whole topic: every group sees it again.
    Topic,
}

fn take(headers: &mut Headers, name: &str) -> String {
    headers.remove(name).unwrap_or_default()
}

/// Parses an `XRANGE` reply of a dead-letter stream, as the store's reads
/// and [`dead_letters_of`] do (for the fuzz targets).
#[cfg(feature = "fuzzing")]
pub(crate) fn parse_dead_letters(
    topic: &str,
    partition: u32,
    v: redis::Value,
) -> Result<Vec<DeadLetter>> {
    Ok(dead_letters_of(crate::envelope::parse_entries(
        topic, partition, 0, v,
    )?))
}

/// Dead letters from the entries of a dead-letter stream: where and why
/// each failed comes out of its headers.
fn dead_letters_of(entries: Vec<Message>) -> Vec<DeadLetter> {
    entries
        .into_iter()
        .map(|m| {
            let mut headers = m.headers;
            let lane = take(&mut headers, meta::LANE).parse().unwrap_or(0);
            let origin_id = take(&mut headers, meta::ORIGIN_ID);
            DeadLetter {
                message_id: MessageId::read(m.partition, lane, origin_id.clone()),
                id: m.id.to_string(),
                partition: m.partition,
                lane,
                group: take(&mut headers, meta::GROUP),
                origin_id,
                attempts: take(&mut headers, meta::ATTEMPTS).parse().unwrap_or(0),
                error: take(&mut headers, meta::ERROR),
                failed_at_ms: take(&mut headers, meta::FAILED_AT_MS).parse().unwrap_or(0),
                key: m.key,
                payload: m.payload.to_vec(),
                headers: {
                    headers.remove(meta::PARTITION);
                    headers
                },
            }
        })
        .collect()
}

/// Splits `P:ms-seq` into its partition and id; a bare id has no partition.
pub(crate) fn parse_id(id: &str) -> Result<(Option<u32>, StreamId)> {
    match id.split_once(':') {
        Some((p, rest)) => {
            let p = p.parse().map_err(|_| {
                Error::invalid(
                    "dead-letter id",
                    format!("{id:?}: use ID, PARTITION:ID or a message id PARTITION:LANE:ID"),
                )
            })?;
            Ok((Some(p), StreamId::parse(rest)?))
        }
        None => Ok((None, StreamId::parse(id)?)),
    }
}

/// Dead letters of `topic`, oldest first, at most `limit`, optionally of
/// one group.
pub(crate) async fn dead_letters(
    cat: &Catalog,
    topic: &str,
    group: Option<&str>,
    limit: usize,
) -> Result<Vec<DeadLetter>> {
    let spec = cat.topic_cached(topic).await?;
    let mut all = Vec::new();
    for p in 0..spec.partitions {
        all.extend(partition_dead_letters(cat, topic, p, group, limit).await?);
    }
    all.sort_by_key(|d| (d.failed_at_ms, d.partition, d.id.clone()));
    all.truncate(limit);
    Ok(all)
}

/// Dead letters of one partition, oldest first, at least `limit` of them
/// when there are (whole pages), optionally of one group.
pub(crate) async fn partition_dead_letters(
    cat: &Catalog,
    topic: &str,
    p: u32,
    group: Option<&str>,
    limit: usize,
) -> Result<Vec<DeadLetter>> {
    let store = cat.store();
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = DeadLetterPage {
            topic,
            partition: p,
            after,
            count: PAGE,
        };
        let entries = store.dead_letter_page(page).await?;
        let n = entries.len();
        if let Some(last) = entries.last() {
            after = Some(last.id);
        }
        let batch = dead_letters_of(entries);
        out.extend(
            batch
                .into_iter()
                .filter(|d| group.is_none_or(|g| d.group == g)),
        );
        if n < PAGE || out.len() >= limit {
            return Ok(out);
        }
    }
}

/// One dead letter by id (`ms-seq` or `P:ms-seq`, or the message id
/// `P:L:first` of a message with one dead letter; a bare id found in
/// several partitions, or a message dead-lettered by several groups, is an
/// error naming each `P:ms-seq`).
pub(crate) async fn dead_letter(
    cat: &Catalog,
    topic: &str,
    id: &str,
) -> Result<Option<DeadLetter>> {
    let mut found = find_dead_letters(cat, topic, &[id.to_string()]).await?;
    if found.len() > 1 {
        return Err(Error::invalid(
            "dead-letter id",
            format!(
                "message {id} has {} dead letters (one per group that gave up on it); use one of {}",
                found.len(),
                addresses(&found)
            ),
        ));
    }
    Ok(found.pop())
}

/// `P:ms-seq, ...` of dead letters.
fn addresses(letters: &[DeadLetter]) -> String {
    letters
        .iter()
        .map(|d| format!("{}:{}", d.partition, d.id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every dead letter of the message `id` (one per group that gave up on it).
async fn dead_letters_of_message(
    cat: &Catalog,
    topic: &str,
    partitions: u32,
    id: &MessageId,
) -> Result<Vec<DeadLetter>> {
    if id.partition() >= partitions {
        return Err(Error::invalid(
            "partition",
            format!("{} is not a partition of {topic}", id.partition()),
        ));
    }
    let all = partition_dead_letters(cat, topic, id.partition(), None, usize::MAX).await?;
    Ok(all.into_iter().filter(|d| d.message_id == *id).collect())
}

async fn find_dead_letters(cat: &Catalog, topic: &str, ids: &[String]) -> Result<Vec<DeadLetter>> {
    let spec = cat.topic_cached(topic).await?;
    let mut out = Vec::new();
    for id in ids {
        if id.matches(':').count() == 2 {
            let message = MessageId::parse(id)?;
            out.extend(dead_letters_of_message(cat, topic, spec.partitions, &message).await?);
            continue;
        }
        let (partition, sid) = parse_id(id)?;
        let parts: Vec<u32> = match partition {
            Some(p) if p < spec.partitions => vec![p],
            Some(p) => {
                return Err(Error::invalid(
                    "partition",
                    format!("{p} is not a partition of {topic}"),
                ));
            }
            None => (0..spec.partitions).collect(),
        };
        let mut matches = Vec::new();
        for p in parts {
            let entries = cat.store().dead_letters_with_id(topic, p, sid).await?;
            matches.extend(dead_letters_of(entries));
        }
        // Each partition's stream makes its own ids, so a bare id can
        // name entries in two partitions: refuse rather than guess.
        if partition.is_none() && matches.len() > 1 {
            return Err(Error::invalid(
                "dead-letter id",
                format!(
                    "{id} is in several partitions; use one of {}",
                    addresses(&matches)
                ),
            ));
        }
        out.extend(matches);
    }
    Ok(out)
}

async fn select(
    cat: &Catalog,
    topic: &str,
    selection: &Selection,
    group: Option<&str>,
) -> Result<Vec<DeadLetter>> {
    let found = match selection {
        Selection::All => dead_letters(cat, topic, group, usize::MAX).await?,
        Selection::Ids(ids) => find_dead_letters(cat, topic, ids).await?,
    };
    Ok(found
        .into_iter()
        .filter(|d| group.is_none_or(|g| d.group == g))
        .collect())
}

/// Replays dead letters (to the failing group only, or to the whole
/// topic). Each leaves the DLQ only once it is back in a stream. Returns
/// how many were replayed.
pub(crate) async fn replay_dead_letters(
    cat: &Catalog,
    topic: &str,
    selection: &Selection,
    group: Option<&str>,
    to: ReplayTo,
) -> Result<usize> {
    let found = select(cat, topic, selection, group).await?;
    let letters: Vec<Replay> = found
        .iter()
        .map(|d| Replay {
            partition: d.partition,
            id: &d.id,
            to: match to {
                ReplayTo::Group => ReplayTarget::Group(&d.group),
                ReplayTo::Topic => ReplayTarget::Lane(d.lane),
            },
        })
        .collect();
    cat.store().replay_dead_letters(topic, &letters).await
}

/// Deletes dead letters. Returns how many were deleted.
pub(crate) async fn purge_dead_letters(
    cat: &Catalog,
    topic: &str,
    selection: &Selection,
    group: Option<&str>,
) -> Result<usize> {
    let found = select(cat, topic, selection, group).await?;
    let mut per_partition: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for d in found {
        per_partition.entry(d.partition).or_default().push(d.id);
    }
    cat.store().delete_dead_letters(topic, &per_partition).await
}
