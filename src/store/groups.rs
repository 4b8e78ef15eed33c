//! A group's keys outside the atomic steps: creating its Redis consumer
//! groups, the registry of a topic's groups, the pause flag, and what
//! `describe` reads of its members, assignment, leases and lanes. (Moving a
//! group is in [`super::group_positions`]; heartbeats and leases are script
//! steps.)

use std::collections::HashMap;

use redis::{AsyncCommands, Value};

use super::Store;
use super::membership::Assignment;
use super::topics::Layout;
use crate::error::{Error, Result, check};

/// A group to create on every partition lane of a topic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewGroup<'a> {
    /// The topic's streams.
    pub layout: Layout<'a>,
    /// The group name.
    pub group: &'a str,
    /// The id the group starts after on the lane streams, as `XGROUP
    /// CREATE` takes it (`0`, `$` or a stream id).
    pub start_id: &'a str,
    /// The placeholder consumer created on every lane stream.
    pub placeholder: &'a str,
}

/// A live member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LiveMember {
    /// The member id.
    pub id: String,
    /// When its session expires without another heartbeat (ms, Redis
    /// clock).
    pub deadline_ms: u64,
}

/// What the heartbeat script records of a member (`static|joined|last`);
/// all zero (and not static) where nothing readable is recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MemberRecord {
    /// Whether it is a static member.
    pub is_static: bool,
    /// When it joined (ms, Redis clock).
    pub joined_ms: u64,
    /// Its last heartbeat (ms, Redis clock).
    pub last_heartbeat_ms: u64,
}

/// A partition lease as stored; all zero (no owner) where none is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    /// The member that took it last, if any (it may have expired).
    pub owner: Option<String>,
    /// When it expires (ms, Redis clock).
    pub expires_ms: u64,
    /// Its epoch (fencing token).
    pub epoch: u64,
}

/// The `XINFO STREAM` and `XINFO GROUPS` replies of one lane stream, for
/// the group readers (`group::lag`, `group::reset`) to read.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LaneXinfo {
    /// The `XINFO STREAM` reply.
    pub stream: Value,
    /// The `XINFO GROUPS` reply.
    pub groups: Value,
}

/// One partition of a group as `describe` reads it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GroupPartition {
    /// The group's lease of the partition.
    pub lease: LeaseRecord,
    /// Per lane, lane 0 first: its `XINFO` replies (server errors already
    /// raised), or `None` where the lane stream does not exist.
    pub lanes: Vec<Option<LaneXinfo>>,
}

impl Store<'_> {
    /// Creates `g.group` on every partition lane stream at `g.start_id` and
    /// on its retry stream of each partition at `0` (streams made where
    /// missing; where the group exists, left as it is), one pipeline per
    /// partition's slot; then the placeholder consumer on each lane stream;
    /// then adds the group to the topic's registry.
    pub(crate) async fn create_group(&self, g: NewGroup<'_>) -> Result<()> {
        self.keys.require(g.layout.topic)?;
        let (keys, t, group) = (self.keys, g.layout, g.group);
        let cmds: Vec<Vec<redis::Cmd>> = (0..t.partitions)
            .map(|p| {
                let mut v: Vec<redis::Cmd> = (0..t.lanes)
                    .map(|lane| {
                        redis::cmd("XGROUP")
                            .arg("CREATE")
                            .arg(keys.stream(t.topic, p, lane))
                            .arg(group)
                            .arg(g.start_id)
                            .arg("MKSTREAM")
                            .clone()
                    })
                    .collect();
                v.push(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(keys.retry_stream(t.topic, p, group))
                        .arg(group)
                        .arg("0")
                        .arg("MKSTREAM")
                        .clone(),
                );
                v
            })
            .collect();
        for v in self.query_grouped(cmds).await?.into_iter().flatten() {
            match v {
                Value::ServerError(e) if e.code() == "BUSYGROUP" => {}
                other => {
                    check(other)?;
                }
            }
        }
        let placeholders: Vec<Vec<redis::Cmd>> = (0..t.partitions)
            .map(|p| {
                (0..t.lanes)
                    .map(|lane| {
                        redis::cmd("XGROUP")
                            .arg("CREATECONSUMER")
                            .arg(keys.stream(t.topic, p, lane))
                            .arg(group)
                            .arg(g.placeholder)
                            .clone()
                    })
                    .collect()
            })
            .collect();
        for v in self
            .query_grouped(placeholders)
            .await?
            .into_iter()
            .flatten()
        {
            check(v)?;
        }
        let _: () = self.conn.clone().sadd(keys.groups(t.topic), group).await?;
        Ok(())
    }

    /// Whether `group` is in `topic`'s registry of groups.
    pub(crate) async fn group_exists(&self, topic: &str, group: &str) -> Result<bool> {
        Ok(self
            .conn
            .clone()
            .sismember(self.keys.groups(topic), group)
            .await?)
    }

    /// The names in `topic`'s registry of groups, unsorted.
    pub(crate) async fn group_names(&self, topic: &str) -> Result<Vec<String>> {
        Ok(self.conn.clone().smembers(self.keys.groups(topic)).await?)
    }

    /// Sets (`paused`) or clears a group's pause flag.
    pub(crate) async fn set_group_paused(
        &self,
        topic: &str,
        group: &str,
        paused: bool,
    ) -> Result<()> {
        let (mut conn, key) = (self.conn.clone(), self.keys.paused(topic, group));
        if paused {
            let _: () = conn.set(key, "1").await?;
        } else {
            let _: () = conn.del(key).await?;
        }
        Ok(())
    }

    /// Whether a group's pause flag is set.
    pub(crate) async fn group_paused(&self, topic: &str, group: &str) -> Result<bool> {
        Ok(self
            .conn
            .clone()
            .exists(self.keys.paused(topic, group))
            .await?)
    }

    /// The group's members whose session deadline is at or after `now_ms`,
    /// soonest deadline first.
    pub(crate) async fn live_members(
        &self,
        topic: &str,
        group: &str,
        now_ms: u64,
    ) -> Result<Vec<LiveMember>> {
        let deadlines: Vec<(String, u64)> = self
            .conn
            .clone()
            .zrangebyscore_withscores(self.keys.members(topic, group), now_ms, "+inf")
            .await?;
        Ok(deadlines
            .into_iter()
            .map(|(id, deadline_ms)| LiveMember { id, deadline_ms })
            .collect())
    }

    /// The ids of the group's members whose session deadline is at or after
    /// `now_ms`, soonest deadline first.
    pub(crate) async fn live_member_ids(
        &self,
        topic: &str,
        group: &str,
        now_ms: u64,
    ) -> Result<Vec<String>> {
        Ok(self
            .conn
            .clone()
            .zrangebyscore(self.keys.members(topic, group), now_ms, "+inf")
            .await?)
    }

    /// What is recorded of each member that ever joined (and has not been
    /// expired), by member id.
    pub(crate) async fn member_records(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<HashMap<String, MemberRecord>> {
        let info: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.keys.member_info(topic, group))
            .await?;
        Ok(info
            .into_iter()
            .map(|(id, text)| (id, member_record(&text)))
            .collect())
    }

    /// The stored target assignment (partition → member).
    pub(crate) async fn stored_assignment(&self, topic: &str, group: &str) -> Result<Assignment> {
        let stored: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.keys.assign(topic, group))
            .await?;
        Ok(stored
            .into_iter()
            .filter_map(|(p, member)| Some((p.parse().ok()?, member)))
            .collect())
    }

    /// Per partition, in order: the group's lease and each lane's `XINFO
    /// GROUPS` and `XINFO STREAM`, one pipeline per partition's slot.
    /// Errors are raised in that order (partition by partition: the lease,
    /// then each lane's groups and stream); a lane stream that does not
    /// exist is `None`.
    pub(crate) async fn group_partitions(
        &self,
        t: Layout<'_>,
        group: &str,
    ) -> Result<Vec<GroupPartition>> {
        self.keys.require(t.topic)?;
        let keys = self.keys;
        let cmds: Vec<Vec<redis::Cmd>> = (0..t.partitions)
            .map(|p| {
                let mut v = vec![
                    redis::cmd("HGETALL")
                        .arg(keys.lease(t.topic, p, group))
                        .clone(),
                ];
                for lane in 0..t.lanes {
                    let stream = keys.stream(t.topic, p, lane);
                    v.push(redis::cmd("XINFO").arg("GROUPS").arg(&stream).clone());
                    v.push(redis::cmd("XINFO").arg("STREAM").arg(&stream).clone());
                }
                v
            })
            .collect();
        let mut out = Vec::with_capacity(t.partitions as usize);
        for vals in self.query_grouped(cmds).await? {
            let mut vals = vals.into_iter();
            let lease: HashMap<String, String> =
                redis::from_redis_value(check(vals.next().unwrap_or(Value::Nil))?)
                    .map_err(|e| Error::Decode(e.to_string()))?;
            let mut lanes = Vec::with_capacity(t.lanes as usize);
            while let (Some(groups), Some(stream)) = (vals.next(), vals.next()) {
                if no_such_key(&groups) || no_such_key(&stream) {
                    lanes.push(None);
                    continue;
                }
                let groups = check(groups)?;
                let stream = check(stream)?;
                lanes.push(Some(LaneXinfo { stream, groups }));
            }
            out.push(GroupPartition {
                lease: lease_record(&lease),
                lanes,
            });
        }
        Ok(out)
    }
}

/// Whether a reply is Redis's "the stream does not exist" (a lane that
/// never had a message).
pub(crate) fn no_such_key(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.details().is_some_and(|d| d.contains("no such key")))
}

/// Reads a member's record as the heartbeat script writes it:
/// `static|joined|last`.
fn member_record(text: &str) -> MemberRecord {
    let parts: Vec<&str> = text.split('|').collect();
    let num = |i: usize| parts.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
    MemberRecord {
        is_static: parts.first() == Some(&"1"),
        joined_ms: num(1),
        last_heartbeat_ms: num(2),
    }
}

/// Reads a lease hash (`owner`, `expires`, `epoch`).
fn lease_record(lease: &HashMap<String, String>) -> LeaseRecord {
    let num = |f: &str| lease.get(f).and_then(|v| v.parse().ok()).unwrap_or(0);
    LeaseRecord {
        owner: lease.get("owner").filter(|o| !o.is_empty()).cloned(),
        expires_ms: num("expires"),
        epoch: num("epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_records_and_leases_read_as_written() {
        assert_eq!(
            member_record("1|100|250"),
            MemberRecord {
                is_static: true,
                joined_ms: 100,
                last_heartbeat_ms: 250,
            }
        );
        assert_eq!(member_record("0|x"), MemberRecord::default());
        let lease: HashMap<String, String> = [("owner", "m1"), ("expires", "9"), ("epoch", "4")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            lease_record(&lease),
            LeaseRecord {
                owner: Some("m1".into()),
                expires_ms: 9,
                epoch: 4,
            }
        );
        let empty: HashMap<String, String> = [("owner".to_string(), String::new())].into();
        assert_eq!(lease_record(&empty), LeaseRecord::default());
    }
}
