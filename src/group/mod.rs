//! Consumer groups: creation and the admin view of a group (list, describe,
//! reset). Membership, leases and acks are steps of the store (`src/store`).
//!
//! A group is one Redis consumer group per partition lane stream, created
//! with the group's start position, plus coordination keys in the group's
//! slot `{T|G}` (members, member info, target assignment) and a lease per
//! partition in the partition's slot `{T:p}`. The sticky assignment itself is
//! pure logic in [`assignment`]; the consumer runtime in [`crate::consumer`]
//! drives these calls.

pub mod assignment;
mod lag;

pub(crate) use lag::{group_facts, last_delivered, stream_facts};
pub mod reset;

use serde::Serialize;

use crate::envelope::StreamId;
use crate::error::{Error, Result};
use crate::reader::StartAt;
use crate::store::groups::NewGroup;
use crate::store::keys::validate_name;
use crate::topic::Catalog;

pub use reset::{LaneReset, ResetPlan};

/// The placeholder consumer each group gets on creation (see `lua/trim.lua`).
pub const CREATED_CONSUMER: &str = "~created";

/// How the members of a group share a topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each partition is owned by one member at a time; messages of one key
    /// run in order (the default).
    #[default]
    Ordered,
    /// Every member reads every partition (competing consumers), no order.
    Shared,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ordered" => Ok(Mode::Ordered),
            "shared" => Ok(Mode::Shared),
            other => Err(Error::invalid(
                "mode",
                format!("{other:?}: use ordered or shared"),
            )),
        }
    }
}

/// The id a group starts from when created at `start`: the last id it is
/// considered to have seen (`XGROUP CREATE ... <id>`).
pub(crate) fn start_id(start: &StartAt) -> String {
    match start {
        StartAt::Earliest => "0".into(),
        StartAt::Latest => "$".into(),
        StartAt::TimeMs(ms) => StreamId { ms: *ms, seq: 0 }.predecessor().to_string(),
        StartAt::Id(id) => id.predecessor().to_string(),
    }
}

/// Creates `group` on every partition lane of `topic` at `start` (no-op
/// where it exists) and registers it. Idempotent; the start position only
/// matters the first time.
pub(crate) async fn create_group(
    cat: &Catalog,
    topic: &str,
    group: &str,
    start: &StartAt,
) -> Result<()> {
    validate_name("group", group)?;
    let spec = cat.topic_cached(topic).await?;
    let id = start_id(start);
    // Each lane stream gets the group at `id`, and each partition the
    // group's own retry stream (retries, replays to the group). Then a
    // placeholder consumer whose idle time is the group's age: the trim
    // script counts a group as live for one retention period after
    // creation, even before any member reads (it is never reset).
    cat.store()
        .create_group(NewGroup {
            layout: spec.layout(),
            group,
            start_id: &id,
            placeholder: CREATED_CONSUMER,
        })
        .await
}

/// Pauses a group: its members stop taking new messages at their next
/// heartbeat (in-flight work finishes). Idempotent.
pub(crate) async fn pause_group(cat: &Catalog, topic: &str, group: &str) -> Result<()> {
    require_group(cat, topic, group).await?;
    cat.store().set_group_paused(topic, group, true).await
}

/// Resumes a paused group. Idempotent.
pub(crate) async fn resume_group(cat: &Catalog, topic: &str, group: &str) -> Result<()> {
    require_group(cat, topic, group).await?;
    cat.store().set_group_paused(topic, group, false).await
}

/// Whether a group is paused.
pub(crate) async fn is_group_paused(cat: &Catalog, topic: &str, group: &str) -> Result<bool> {
    require_group(cat, topic, group).await?;
    cat.store().group_paused(topic, group).await
}

/// Checks the group name, that the topic exists and that the group is
/// registered ([`Error::GroupNotFound`] if not).
pub(crate) async fn require_group(cat: &Catalog, topic: &str, group: &str) -> Result<()> {
    validate_name("group", group)?;
    cat.topic_cached(topic).await?;
    if cat.store().group_exists(topic, group).await? {
        Ok(())
    } else {
        Err(Error::GroupNotFound {
            topic: topic.to_string(),
            group: group.to_string(),
        })
    }
}

/// Names of a topic's groups, sorted.
pub(crate) async fn list_groups(cat: &Catalog, topic: &str) -> Result<Vec<String>> {
    cat.topic_cached(topic).await?;
    let mut names = cat.store().group_names(topic).await?;
    names.sort();
    Ok(names)
}

/// One member as `group describe` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MemberInfo {
    /// Member id (the instance id of a static member).
    pub id: String,
    /// Whether it is a static member.
    #[serde(rename = "static")]
    pub is_static: bool,
    /// When it joined (ms, Redis clock).
    pub joined_ms: u64,
    /// Its last heartbeat (ms, Redis clock).
    pub last_heartbeat_ms: u64,
    /// When its session expires without another heartbeat.
    pub session_deadline_ms: u64,
}

/// One partition as `group describe` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PartitionInfo {
    /// The partition.
    pub partition: u32,
    /// The member holding its lease (ordered mode), if any.
    pub owner: Option<String>,
    /// The member it is assigned to, if any.
    pub assigned: Option<String>,
    /// The lease epoch (fencing token).
    pub epoch: u64,
    /// Messages not yet delivered to the group, all lanes.
    pub lag: u64,
    /// Messages delivered but not acknowledged, all lanes.
    pub pending: u64,
}

/// What `group describe` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GroupInfo {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// Live members.
    pub members: Vec<MemberInfo>,
    /// Per partition: owner, lag, pending.
    pub partitions: Vec<PartitionInfo>,
    /// Total lag.
    pub lag: u64,
    /// Total pending.
    pub pending: u64,
    /// Whether the group is paused.
    pub paused: bool,
}

/// Members, owners, lag and pending of a group.
pub(crate) async fn describe_group(cat: &Catalog, topic: &str, group: &str) -> Result<GroupInfo> {
    validate_name("group", group)?;
    let spec = cat.topic_cached(topic).await?;
    let store = cat.store();
    if !store.group_exists(topic, group).await? {
        return Err(Error::GroupNotFound {
            topic: topic.to_string(),
            group: group.to_string(),
        });
    }
    let now = cat.redis_time_ms().await?;
    let live = store.live_members(topic, group, now).await?;
    let records = store.member_records(topic, group).await?;
    let members = live
        .into_iter()
        .map(|m| {
            let r = records.get(&m.id).copied().unwrap_or_default();
            MemberInfo {
                is_static: r.is_static,
                joined_ms: r.joined_ms,
                last_heartbeat_ms: r.last_heartbeat_ms,
                session_deadline_ms: m.deadline_ms,
                id: m.id,
            }
        })
        .collect();
    let assign = store.stored_assignment(topic, group).await?;

    let mut partitions = Vec::new();
    for (p, part) in (0..).zip(store.group_partitions(spec.layout(), group).await?) {
        // An expired lease has no owner.
        let owner = part.lease.owner.filter(|_| part.lease.expires_ms > now);
        let (mut lag, mut pending) = (0, 0);
        // A lane stream that never existed has no groups yet.
        for lane in part.lanes.iter().flatten() {
            if let Some((l, pe)) = lag::lane_counts(&lane.groups, &lane.stream, group) {
                lag += l;
                pending += pe;
            }
        }
        partitions.push(PartitionInfo {
            partition: p,
            owner,
            assigned: assign.get(&p).cloned(),
            epoch: part.lease.epoch,
            lag,
            pending,
        });
    }
    let paused = store.group_paused(topic, group).await?;
    Ok(GroupInfo {
        paused,
        topic: topic.to_string(),
        group: group.to_string(),
        lag: partitions.iter().map(|p| p.lag).sum(),
        pending: partitions.iter().map(|p| p.pending).sum(),
        members,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ids() {
        assert_eq!(start_id(&StartAt::Earliest), "0");
        assert_eq!(start_id(&StartAt::Latest), "$");
        assert_eq!(start_id(&StartAt::TimeMs(1000)), "999-18446744073709551615");
        assert_eq!(start_id(&StartAt::Id(StreamId { ms: 5, seq: 2 })), "5-1");
    }
}
