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
pub mod reset;

use redis::{AsyncCommands, Value};
use serde::Serialize;

use crate::envelope::StreamId;
use crate::error::check;
use crate::error::{Error, Result};
use crate::keys::validate_name;
use crate::reader::StartAt;
use crate::topic::Catalog;
use crate::topic::TopicSpec;

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

pub(crate) use crate::store::lease::Lease;

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
    let keys = cat.keys();
    let cmds: Vec<Vec<redis::Cmd>> = (0..spec.partitions)
        .map(|p| {
            let mut v: Vec<redis::Cmd> = (0..spec.lanes)
                .map(|lane| {
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(keys.stream(topic, p, lane))
                        .arg(group)
                        .arg(&id)
                        .arg("MKSTREAM")
                        .clone()
                })
                .collect();
            // The group's own retry stream (retries, replays to the group).
            v.push(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(keys.retry_stream(topic, p, group))
                    .arg(group)
                    .arg("0")
                    .arg("MKSTREAM")
                    .clone(),
            );
            v
        })
        .collect();
    for v in cat.query_grouped(cmds).await?.into_iter().flatten() {
        match v {
            Value::ServerError(e) if e.code() == "BUSYGROUP" => {}
            other => {
                check(other)?;
            }
        }
    }
    // A placeholder consumer whose idle time is the group's age: the
    // trim script counts a group as live for one retention period after
    // creation, even before any member reads (it is never reset).
    let placeholders: Vec<Vec<redis::Cmd>> = (0..spec.partitions)
        .map(|p| {
            (0..spec.lanes)
                .map(|lane| {
                    redis::cmd("XGROUP")
                        .arg("CREATECONSUMER")
                        .arg(keys.stream(topic, p, lane))
                        .arg(group)
                        .arg(CREATED_CONSUMER)
                        .clone()
                })
                .collect()
        })
        .collect();
    for v in cat.query_grouped(placeholders).await?.into_iter().flatten() {
        check(v)?;
    }
    let _: () = cat.connection().sadd(keys.groups(topic), group).await?;
    Ok(())
}

/// Pauses a group: its members stop taking new messages at their next
/// heartbeat (in-flight work finishes). Idempotent.
pub(crate) async fn pause_group(cat: &Catalog, topic: &str, group: &str) -> Result<()> {
    require_group(cat, topic, group).await?;
    let _: () = cat
        .connection()
        .set(cat.keys().paused(topic, group), "1")
        .await?;
    Ok(())
}

/// Resumes a paused group. Idempotent.
pub(crate) async fn resume_group(cat: &Catalog, topic: &str, group: &str) -> Result<()> {
    require_group(cat, topic, group).await?;
    let _: () = cat
        .connection()
        .del(cat.keys().paused(topic, group))
        .await?;
    Ok(())
}

/// Whether a group is paused.
pub(crate) async fn is_group_paused(cat: &Catalog, topic: &str, group: &str) -> Result<bool> {
    require_group(cat, topic, group).await?;
    Ok(cat
        .connection()
        .exists(cat.keys().paused(topic, group))
        .await?)
}

pub(crate) async fn require_group(cat: &Catalog, topic: &str, group: &str) -> Result<()> {
    validate_name("group", group)?;
    cat.topic_cached(topic).await?;
    let known: bool = cat
        .connection()
        .sismember(cat.keys().groups(topic), group)
        .await?;
    if known {
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
    let mut names: Vec<String> = cat.connection().smembers(cat.keys().groups(topic)).await?;
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
    let spec: std::sync::Arc<TopicSpec> = cat.topic_cached(topic).await?;
    let keys = cat.keys();
    let mut conn = cat.connection();
    let known: bool = conn.sismember(keys.groups(topic), group).await?;
    if !known {
        return Err(Error::GroupNotFound {
            topic: topic.to_string(),
            group: group.to_string(),
        });
    }
    let now = cat.redis_time_ms().await?;
    let deadlines: Vec<(String, u64)> = conn
        .zrangebyscore_withscores(keys.members(topic, group), now, "+inf")
        .await?;
    let info: std::collections::HashMap<String, String> =
        conn.hgetall(keys.member_info(topic, group)).await?;
    let members = deadlines
        .into_iter()
        .map(|(id, deadline)| {
            let parts: Vec<&str> = info
                .get(&id)
                .map(|s| s.split('|').collect())
                .unwrap_or_default();
            let num = |i: usize| parts.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
            MemberInfo {
                is_static: parts.first() == Some(&"1"),
                joined_ms: num(1),
                last_heartbeat_ms: num(2),
                session_deadline_ms: deadline,
                id,
            }
        })
        .collect();
    let assign: std::collections::HashMap<String, String> =
        conn.hgetall(keys.assign(topic, group)).await?;

    // Per partition: the lease, then XINFO GROUPS of each lane.
    let cmds: Vec<Vec<redis::Cmd>> = (0..spec.partitions)
        .map(|p| {
            let mut v = vec![
                redis::cmd("HGETALL")
                    .arg(keys.lease(topic, p, group))
                    .clone(),
            ];
            for lane in 0..spec.lanes {
                let stream = keys.stream(topic, p, lane);
                v.push(redis::cmd("XINFO").arg("GROUPS").arg(&stream).clone());
                v.push(redis::cmd("XINFO").arg("STREAM").arg(&stream).clone());
            }
            v
        })
        .collect();
    let replies = cat.query_grouped(cmds).await?;
    let mut partitions = Vec::new();
    for (p, mut vals) in replies.into_iter().enumerate() {
        let p = p as u32;
        let lease: std::collections::HashMap<String, String> =
            redis::from_redis_value(check(vals.remove(0))?)
                .map_err(|e| Error::Decode(e.to_string()))?;
        let expires: u64 = lease
            .get("expires")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let owner = lease
            .get("owner")
            .filter(|o| !o.is_empty() && expires > now)
            .cloned();
        let (mut lag, mut pending) = (0, 0);
        let mut lanes = vals.into_iter();
        while let (Some(groups), Some(stream)) = (lanes.next(), lanes.next()) {
            // A lane stream that never existed has no groups yet;
            // any other error is an error.
            let missing = |v: &Value| {
                matches!(v, Value::ServerError(e)
                    if e.details().is_some_and(|d| d.contains("no such key")))
            };
            if missing(&groups) || missing(&stream) {
                continue;
            }
            if let Some((l, pe)) = lag::lane_counts(&check(groups)?, &check(stream)?, group) {
                lag += l;
                pending += pe;
            }
        }
        partitions.push(PartitionInfo {
            partition: p,
            owner,
            assigned: assign.get(&p.to_string()).cloned(),
            epoch: lease.get("epoch").and_then(|v| v.parse().ok()).unwrap_or(0),
            lag,
            pending,
        });
    }
    let paused: bool = conn.exists(keys.paused(topic, group)).await?;
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
