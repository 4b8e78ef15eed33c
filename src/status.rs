//! Where a message stands: the message itself (in its lane, waiting in the
//! delayed set, or gone), and in every group of its topic one state:
//! not yet read, in flight, waiting to retry, dead-lettered, done, or gone.
//!
//! The facts come from bounded reads ([`crate::store::status`]); the state
//! each group is in follows from them in [`group_state`], which is pure.

use serde::Serialize;

use crate::dlq::{self, DeadLetter};
use crate::envelope::{self, Message, StreamId};
use crate::error::{Error, Result};
use crate::group;
use crate::id::MessageId;
use crate::store::settle::FailureRecord;
use crate::store::status::PendingEntry;
use crate::topic::Catalog;

/// What state a message is in for one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// The group has not read it yet (or it is delayed and not yet due).
    #[default]
    Unread,
    /// A member is handling it now.
    InFlight,
    /// It failed and waits for its next attempt.
    Retrying,
    /// The group gave up on it: it is in the topic's dead letters.
    DeadLettered,
    /// The group handled it.
    Done,
    /// Trimmed (retention or the length cap) before the group handled it.
    Gone,
    /// Cancelled for the group ([`Client::cancel`](crate::Client::cancel)):
    /// skipped, stopped, or its retry dropped.
    Cancelled,
}

impl MessageState {
    /// `unread`, `in_flight`, `retrying`, `dead_lettered`, `done`, `gone` or
    /// `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Unread => "unread",
            MessageState::InFlight => "in_flight",
            MessageState::Retrying => "retrying",
            MessageState::DeadLettered => "dead_lettered",
            MessageState::Done => "done",
            MessageState::Gone => "gone",
            MessageState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for MessageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a message stands in one group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GroupState {
    /// The group.
    pub group: String,
    /// Its state.
    pub state: MessageState,
    /// In flight: the attempt running; retrying: the next attempt;
    /// dead-lettered: the attempts made.
    pub attempt: Option<u32>,
    /// In flight: the member handling it.
    pub member: Option<String>,
    /// In flight: since when it was delivered (ms since the epoch, Redis
    /// clock, as far as the member's idle time tells).
    pub since_ms: Option<u64>,
    /// Retrying: when the next attempt is due (ms since the epoch, Redis
    /// clock; for an ordered group, the earliest it is taken up again).
    /// Unread: when a delayed message is due.
    pub due_ms: Option<u64>,
    /// Retrying or dead-lettered: the last error.
    pub error: Option<String>,
    /// Dead-lettered: the dead letter's address `P:ID` (for `dlq show`).
    pub dead_letter: Option<String>,
    /// Dead-lettered: when (ms since the epoch, Redis clock).
    pub failed_at_ms: Option<u64>,
    /// Done: what the handler returned, as JSON, while the group keeps it
    /// (see [`WorkerBuilder::result_ttl`](crate::WorkerBuilder::result_ttl)).
    pub result: Option<serde_json::Value>,
    /// Done or cancelled: when it was acked with its result (ms since the
    /// epoch, Redis clock), while the result is kept.
    pub done_at_ms: Option<u64>,
    /// The latest progress its handler reported
    /// ([`Context::progress`](crate::Context::progress)), as JSON.
    pub progress: Option<serde_json::Value>,
    /// When that progress was written (ms since the epoch, Redis clock).
    pub progress_at_ms: Option<u64>,
}

/// Where a message stands: the message and its state in every group.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MessageStatus {
    /// The message's id.
    pub message_id: MessageId,
    /// The message as it is stored (in its lane, or in the delayed set
    /// until due); `None` once trimmed.
    pub message: Option<Message>,
    /// When a delayed message not yet moved into its lane is due (ms since
    /// the epoch, Redis clock).
    pub due_ms: Option<u64>,
    /// Its state in each group of the topic, by group name.
    pub groups: Vec<GroupState>,
}

/// What the reads found of one message in one group.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupFacts {
    /// The group's last delivered id on the message's lane (`None`: the
    /// group has no position there).
    pub last_delivered: Option<StreamId>,
    /// The message's pending entry on its lane.
    pub pending: Option<PendingEntry>,
    /// Its recorded failure (ordered mode).
    pub failure: Option<FailureRecord>,
    /// A parked retry (shared mode): the attempt it will be and when.
    pub parked: Option<(u32, u64)>,
    /// A retry re-added to the group's retry stream (shared mode): the
    /// attempt, and its pending entry there once read.
    pub retry: Option<(u32, Option<PendingEntry>)>,
    /// The group's dead letter of it.
    pub dead_letter: Option<DeadLetter>,
}

/// Where the message itself is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// In its lane, at this stream id.
    Lane(StreamId),
    /// In the delayed set, due then.
    Delayed(u64),
    /// Not in its lane any more: trimmed. Its id there (for a delayed
    /// message, its due time), to tell which groups had read past it.
    Trimmed(StreamId),
}

/// The state of a message in one group, from what the reads found (pure).
/// `now_ms` is Redis's time of the reads.
pub(crate) fn group_state(group: &str, found: Found, facts: GroupFacts, now_ms: u64) -> GroupState {
    let mut s = GroupState {
        group: group.to_string(),
        ..GroupState::default()
    };
    let since = |p: &PendingEntry| now_ms.saturating_sub(p.idle_ms);
    if let Some(d) = facts.dead_letter {
        s.state = MessageState::DeadLettered;
        s.attempt = Some(d.attempts);
        s.error = Some(d.error);
        s.dead_letter = Some(format!("{}:{}", d.partition, d.id));
        s.failed_at_ms = Some(d.failed_at_ms);
        return s;
    }
    if let Some((attempt, due)) = facts.parked {
        s.state = MessageState::Retrying;
        s.attempt = Some(attempt);
        s.due_ms = Some(due);
        return s;
    }
    if let Some((attempt, pending)) = facts.retry {
        s.attempt = Some(attempt);
        match pending {
            Some(p) => {
                s.state = MessageState::InFlight;
                s.since_ms = Some(since(&p));
                s.member = Some(p.member);
            }
            // Due, re-added, not yet taken by a member.
            None => s.state = MessageState::Retrying,
        }
        return s;
    }
    let (id, present) = match found {
        Found::Delayed(due) => {
            s.due_ms = Some(due);
            return s;
        }
        Found::Lane(id) => (id, true),
        Found::Trimmed(id) => (id, false),
    };
    if let Some(p) = facts.pending {
        match facts.failure {
            Some(f) if f.due > now_ms => {
                s.state = MessageState::Retrying;
                s.attempt = Some(f.n + 1);
                s.due_ms = Some(f.due);
                s.error = Some(f.err);
            }
            failure => {
                s.state = MessageState::InFlight;
                s.attempt = Some(match &failure {
                    Some(f) => f.n + 1,
                    None => u32::try_from(p.deliveries).unwrap_or(u32::MAX).max(1),
                });
                s.error = failure.map(|f| f.err).filter(|e| !e.is_empty());
                s.since_ms = Some(since(&p));
                s.member = Some(p.member);
            }
        }
        return s;
    }
    // Delivered and settled (nothing pending, no retry, no dead letter):
    // handled, whether or not the entry is still there.
    s.state = if facts.last_delivered.is_some_and(|l| l >= id) {
        MessageState::Done
    } else if present {
        MessageState::Unread
    } else {
        MessageState::Gone
    };
    s
}

/// What every message of one partition shares for a status: Redis's
/// time, the topic's groups (sorted) and the partition's dead letters,
/// read once however many of its messages are looked at.
struct PartitionView {
    now_ms: u64,
    groups: Vec<String>,
    dead: Vec<DeadLetter>,
}

async fn partition_view(cat: &Catalog, topic: &str, partition: u32) -> Result<PartitionView> {
    let mut groups = cat.store().group_names(topic).await?;
    groups.sort();
    Ok(PartitionView {
        now_ms: cat.redis_time_ms().await?,
        groups,
        dead: dlq::partition_dead_letters(cat, topic, partition, None, usize::MAX).await?,
    })
}

/// Where message `id` of `topic` stands: `None` when no such message was
/// ever there (or it was trimmed and no group remembers it).
pub(crate) async fn message_status(
    cat: &Catalog,
    topic: &str,
    id: &MessageId,
) -> Result<Option<MessageStatus>> {
    let spec = cat.topic_cached(topic).await?;
    if id.partition() >= spec.partitions || id.lane() >= spec.lanes {
        return Err(Error::invalid(
            "message id",
            format!(
                "{id}: topic {topic} has partitions 0 to {} and lanes 0 to {}",
                spec.partitions - 1,
                spec.lanes - 1
            ),
        ));
    }
    let view = partition_view(cat, topic, id.partition()).await?;
    status_in(cat, topic, id, &view).await
}

/// Where the message itself is: in its lane by its stream id, or a delayed
/// one by its token (in the delayed set, or promoted: an entry whose `o` is
/// the token, added at or after its due time).
async fn locate(cat: &Catalog, topic: &str, id: &MessageId) -> Result<(Found, Option<Message>)> {
    let store = cat.store();
    let (p, lane) = (id.partition(), id.lane());
    let due = match (id.stream_id(), id.due_ms()) {
        (Some(sid), _) => {
            return Ok(match store.lane_entry(topic, p, lane, sid).await? {
                Some(m) => (Found::Lane(sid), Some(m)),
                None => (Found::Trimmed(sid), None),
            });
        }
        (None, Some(due)) => due,
        (None, None) => return Err(Error::invalid("message id", format!("{id}"))),
    };
    let waiting = store
        .delayed_due_at(topic, p, due)
        .await?
        .into_iter()
        .find(|m| envelope::delayed_token(due, m) == id.first());
    if let Some(member) = waiting {
        return Ok((
            Found::Delayed(due),
            Some(delayed_message(topic, id, &member)?),
        ));
    }
    let promoted = store
        .lane_entries_from(topic, p, lane, due)
        .await?
        .into_iter()
        .find(|m| m.message_id == *id);
    Ok(match promoted {
        Some(m) => (Found::Lane(m.id), Some(m)),
        None => (Found::Trimmed(StreamId { ms: due, seq: 0 }), None),
    })
}

/// The status of `id`, given what its partition shares.
async fn status_in(
    cat: &Catalog,
    topic: &str,
    id: &MessageId,
    view: &PartitionView,
) -> Result<Option<MessageStatus>> {
    let (found, message) = locate(cat, topic, id).await?;
    if let Found::Trimmed(at) = found
        && !was_there(cat, topic, id, at).await?
    {
        return Ok(None);
    }
    let xinfo = cat
        .store()
        .lane_groups(topic, id.partition(), id.lane())
        .await?;
    let mut groups = Vec::with_capacity(view.groups.len());
    for group in &view.groups {
        let dead_letter = view
            .dead
            .iter()
            .find(|d| d.group == *group && d.message_id == *id)
            .cloned();
        let facts = GroupFacts {
            last_delivered: group::last_delivered(&xinfo, group),
            dead_letter,
            ..GroupFacts::default()
        };
        let facts = group_facts(cat, topic, id, group, found, facts).await?;
        let mut state = group_state(group, found, facts, view.now_ms);
        if !matches!(state.state, MessageState::Unread | MessageState::Gone) {
            let of = crate::store::results::ResultOf {
                topic,
                partition: id.partition(),
                group,
                lane: id.lane(),
                first: id.first(),
            };
            let fields = cat.store().result_fields(of).await?;
            if let Some(kept) = crate::reply::KeptResult::from_fields(&fields)
                && state.state == MessageState::Done
            {
                if kept.cancelled {
                    state.state = MessageState::Cancelled;
                }
                state.result = kept.json();
                state.done_at_ms = Some(kept.at_ms);
            }
            let (progress, at) = crate::reply::progress_of(&fields);
            state.progress = progress;
            state.progress_at_ms = at;
        }
        groups.push(state);
    }
    Ok(Some(MessageStatus {
        message_id: id.clone(),
        message,
        due_ms: match found {
            Found::Delayed(due) => Some(due),
            _ => None,
        },
        groups,
    }))
}

/// Completes one group's facts: the pending entry and recorded failure on
/// the lane, else a parked or re-added retry (not looked for once the
/// message is dead-lettered or pending there).
async fn group_facts(
    cat: &Catalog,
    topic: &str,
    id: &MessageId,
    group: &str,
    found: Found,
    mut facts: GroupFacts,
) -> Result<GroupFacts> {
    let store = cat.store();
    let (p, lane) = (id.partition(), id.lane());
    if let Found::Lane(sid) = found {
        facts.pending = store
            .pending_entry(topic, p, lane, group, false, sid)
            .await?;
        if facts.pending.is_some() {
            facts.failure = store
                .recorded_failures(topic, group, p, &[sid])
                .await?
                .remove(&sid);
        }
    }
    if facts.dead_letter.is_some() || facts.pending.is_some() {
        return Ok(facts);
    }
    facts.parked = store
        .parked_retries(topic, p, group)
        .await?
        .into_iter()
        .find_map(|(member, due)| {
            let (l, attempt, origin) = envelope::retry_origin(&member)?;
            (l == lane && origin == id.first()).then_some((attempt, due))
        });
    if facts.parked.is_some() {
        return Ok(facts);
    }
    let readded = store
        .retry_stream_entries(topic, p, group)
        .await?
        .into_iter()
        .find(|m| m.message_id == *id);
    if let Some(m) = readded {
        let attempt = m
            .headers
            .get(envelope::meta::ATTEMPTS)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1);
        let pending = store
            .pending_entry(topic, p, lane, group, true, m.id)
            .await?;
        facts.retry = Some((attempt, pending));
    }
    Ok(facts)
}

/// Newest entries of each lane that
/// [`Client::messages_by_key`](crate::Client::messages_by_key) looks through.
pub const KEY_SCAN: usize = 10_000;

/// The newest messages of `key` in `topic` (at most `limit`, newest
/// first), each with where it stands. Looks through the newest
/// [`KEY_SCAN`] entries of each lane of the key's partition, no more.
pub(crate) async fn messages_by_key(
    cat: &Catalog,
    topic: &str,
    key: &str,
    limit: usize,
) -> Result<Vec<MessageStatus>> {
    envelope::validate_key(key)?;
    let spec = cat.topic_cached(topic).await?;
    let p = crate::partitioner::partition_for_key(key, spec.partitions);
    let mut found: Vec<Message> = Vec::new();
    for lane in 0..spec.lanes {
        let newest = cat.store().lane_newest(topic, p, lane, KEY_SCAN).await?;
        found.extend(
            newest
                .into_iter()
                .filter(|m| m.key.as_deref() == Some(key))
                .take(limit),
        );
    }
    found.sort_by_key(|m| std::cmp::Reverse(m.id));
    // A dead letter replayed to the topic is a second entry of one message.
    let mut seen = std::collections::HashSet::new();
    found.retain(|m| seen.insert(m.message_id.clone()));
    found.truncate(limit);
    if found.is_empty() {
        return Ok(Vec::new());
    }
    // One partition: its time, groups and dead letters are read once.
    let view = partition_view(cat, topic, p).await?;
    let mut out = Vec::with_capacity(found.len());
    for m in found {
        if let Some(s) = status_in(cat, topic, &m.message_id, &view).await? {
            out.push(s);
        }
    }
    Ok(out)
}

/// Whether a message no longer in its lane was ever there: its id is
/// before the lane's first entry (or the lane is empty now), so trimming
/// can explain it. An id after the first entry that is not there never was.
async fn was_there(cat: &Catalog, topic: &str, id: &MessageId, at: StreamId) -> Result<bool> {
    let first = cat
        .store()
        .lane_first_id(topic, id.partition(), id.lane())
        .await?;
    Ok(first.is_none_or(|f| at < f))
}

/// A delayed message as its member in the delayed set holds it.
fn delayed_message(topic: &str, id: &MessageId, member: &[u8]) -> Result<Message> {
    let e = envelope::decode_delayed(member)?;
    Ok(Message {
        message_id: id.clone(),
        id: StreamId {
            ms: id.due_ms().unwrap_or(0),
            seq: 0,
        },
        topic: topic.to_string(),
        partition: id.partition(),
        lane: e.lane,
        key: e.key,
        headers: e.headers,
        payload: e.payload.into(),
    })
}

#[cfg(test)]
mod tests;
