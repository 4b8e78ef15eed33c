//! A group's membership: heartbeats (`lua/group_heartbeat.lua`) and the
//! stored target assignment (`lua/group_assign.lua`).

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Value;

use super::{Store, int};
use crate::error::{Error, Result};

/// A target assignment: partition → member (the same type as
/// `group::assignment::Assignment`, named here so the store does not reach
/// up into `group`).
pub(crate) type Assignment = BTreeMap<u32, String>;

/// What a heartbeat sees.
#[derive(Clone, Debug)]
pub(crate) struct Heartbeat {
    /// Live members, sorted.
    pub members: Vec<String>,
    /// Version of the stored assignment.
    pub version: u64,
    /// The stored target assignment.
    pub assignment: Assignment,
    /// Whether the group is paused.
    pub paused: bool,
    /// How many cancel requests the group has had: when it moves, the
    /// member reads them ([`Store::cancel_requests`]).
    pub cancels: u64,
}

/// One member of a topic's group.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub id: &'a str,
    /// A static member keeps its partitions across a restart within the
    /// session timeout.
    pub is_static: bool,
}

/// A heartbeat says the member is alive, or that it leaves now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    Alive,
    Leave,
}

impl Store<'_> {
    /// Refreshes (or, leaving, removes) the member, expires dead members,
    /// and reads the live members and the stored assignment.
    pub(crate) async fn heartbeat(
        &self,
        m: Member<'_>,
        session: Duration,
        beat: Beat,
    ) -> Result<Heartbeat> {
        let session_ms = session.as_millis().to_string();
        let reply = self
            .eval(
                &self.scripts.group_heartbeat,
                &[
                    &self.keys.members(m.topic, m.group),
                    &self.keys.member_info(m.topic, m.group),
                    &self.keys.assign(m.topic, m.group),
                    &self.keys.paused(m.topic, m.group),
                    &self.keys.cancels(m.topic, m.group),
                ],
                &[
                    m.id.as_bytes(),
                    session_ms.as_bytes(),
                    if m.is_static { b"1" } else { b"0" },
                    if beat == Beat::Leave { b"leave" } else { b"" },
                ],
            )
            .await?;
        parse_heartbeat(reply)
    }

    /// Writes a new target assignment if the stored one is still
    /// `version`. Returns the new version, or `None` when someone else
    /// wrote first.
    pub(crate) async fn assign(
        &self,
        topic: &str,
        group: &str,
        version: u64,
        assignment: &Assignment,
    ) -> Result<Option<u64>> {
        let mut args: Vec<String> = vec![version.to_string()];
        for (p, m) in assignment {
            args.push(p.to_string());
            args.push(m.clone());
        }
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let reply = self
            .eval(
                &self.scripts.group_assign,
                &[&self.keys.assign(topic, group)],
                &argv,
            )
            .await?;
        let (ok, v): (i64, u64) =
            redis::from_redis_value(reply).map_err(|e| Error::Decode(e.to_string()))?;
        Ok((ok == 1).then_some(v))
    }
}

fn parse_heartbeat(reply: Value) -> Result<Heartbeat> {
    let Value::Array(parts) = reply else {
        return Err(Error::Decode("heartbeat reply is not an array".into()));
    };
    let [_now, live, version, assign, paused, cancels] = parts.as_slice() else {
        return Err(Error::Decode("heartbeat reply has the wrong length".into()));
    };
    let members: Vec<String> =
        redis::from_redis_value_ref(live).map_err(|e| Error::Decode(e.to_string()))?;
    let flat: Vec<String> =
        redis::from_redis_value_ref(assign).map_err(|e| Error::Decode(e.to_string()))?;
    let mut assignment = Assignment::new();
    for pair in flat.chunks(2) {
        if let [p, m] = pair
            && let Ok(p) = p.parse()
        {
            assignment.insert(p, m.clone());
        }
    }
    Ok(Heartbeat {
        paused: int(paused)? == 1,
        members,
        version: int(version)? as u64,
        assignment,
        cancels: int(cancels)?.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_reply_reads_as_members_and_assignment() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Int(1),
            Value::Array(vec![bulk("a"), bulk("b")]),
            Value::Int(7),
            Value::Array(vec![bulk("0"), bulk("a"), bulk("1"), bulk("b")]),
            Value::Int(1),
            Value::Int(3),
        ]);
        let hb = parse_heartbeat(reply).unwrap();
        assert_eq!(hb.cancels, 3);
        assert_eq!(hb.members, ["a", "b"]);
        assert_eq!(hb.version, 7);
        assert_eq!(hb.assignment.get(&1).map(String::as_str), Some("b"));
        assert!(hb.paused);
        assert!(parse_heartbeat(Value::Array(vec![Value::Int(1)])).is_err());
        assert!(parse_heartbeat(Value::Int(1)).is_err());
    }
}
