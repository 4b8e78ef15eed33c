//! The cluster's slot map as the placement of topics needs it
//! (`CLUSTER SLOTS`, and `CLUSTER NODES` for primaries that serve no slot
//! yet), and the memory a partition's keys take (`MEMORY USAGE`).

use redis::Value;

use super::Store;
use crate::error::{Error, Result};

/// One primary of a cluster: its address, node id, slot ranges and
/// replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Primary {
    /// `host:port` as the cluster announces it.
    pub addr: String,
    /// The node id (what `CLUSTER SETSLOT ... NODE` takes).
    pub id: String,
    /// Inclusive slot ranges, lowest first.
    pub ranges: Vec<(u16, u16)>,
    /// Replicas' `host:port`.
    pub replicas: Vec<String>,
}

impl Store<'_> {
    /// The primaries serving slots, ordered by their first slot
    /// (`CLUSTER SLOTS`, merged by node), then those serving none (a
    /// primary just added, from `CLUSTER NODES`; left out when the user may
    /// not run it).
    pub(crate) async fn cluster_primaries(&self) -> Result<Vec<Primary>> {
        let reply: Vec<Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.conn.clone())
            .await?;
        let mut primaries = parse_cluster_slots(reply)?;
        let nodes: redis::RedisResult<String> = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.conn.clone())
            .await;
        match nodes.map_err(Error::from) {
            Ok(text) => {
                for (addr, id) in slotless_primaries(&text) {
                    if !primaries.iter().any(|p| p.id == id) {
                        primaries.push(Primary {
                            addr,
                            id,
                            ranges: Vec::new(),
                            replicas: Vec::new(),
                        });
                    }
                }
            }
            Err(e) if e.is_unreachable() && !matches!(e, Error::PermissionDenied { .. }) => {
                return Err(e);
            }
            Err(e) => {
                tracing::debug!(error = %e, "CLUSTER NODES refused: slotless primaries unknown")
            }
        }
        Ok(primaries)
    }

    /// Bytes each key takes (`MEMORY USAGE`, Redis's estimate), 0 for a key
    /// that does not exist; `None` when the server refuses the command
    /// (an ACL without `MEMORY`). One pipeline per group (a partition's
    /// slot).
    pub(crate) async fn memory_usage(&self, keys: Vec<Vec<String>>) -> Result<Option<Vec<u64>>> {
        let cmds = keys
            .iter()
            .map(|ks| {
                ks.iter()
                    .map(|k| redis::cmd("MEMORY").arg("USAGE").arg(k).clone())
                    .collect()
            })
            .collect();
        let replies = match self.query_grouped(cmds).await {
            Err(Error::PermissionDenied { .. }) => return Ok(None),
            other => other?,
        };
        let mut out = Vec::with_capacity(keys.len());
        for group in replies {
            let mut sum = 0u64;
            for v in group {
                match v {
                    Value::Int(n) => sum += n.max(0) as u64,
                    Value::Nil => {}
                    Value::ServerError(_) => return Ok(None),
                    other => {
                        return Err(Error::Decode(format!("MEMORY USAGE replied {other:?}")));
                    }
                }
            }
            out.push(sum);
        }
        Ok(Some(out))
    }
}

fn bad(what: &str) -> Error {
    Error::Decode(format!("CLUSTER SLOTS: {what}"))
}

/// `host:port` and node id of a node entry `[ip, port, id, ...]`.
fn node(v: &Value) -> Result<(String, String)> {
    let Value::Array(parts) = v else {
        return Err(bad("a node is not an array"));
    };
    let text = |i: usize| -> Result<String> {
        match parts.get(i) {
            Some(Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
            Some(Value::SimpleString(s)) => Ok(s.clone()),
            Some(Value::Int(n)) => Ok(n.to_string()),
            _ => Err(bad("a node lacks a field")),
        }
    };
    let host = text(0)?;
    let port = text(1)?;
    let id = text(2).unwrap_or_default();
    Ok((format!("{host}:{port}"), id))
}

/// The primaries of a `CLUSTER SLOTS` reply, ranges merged per node and
/// nodes ordered by their first slot.
pub(crate) fn parse_cluster_slots(reply: Vec<Value>) -> Result<Vec<Primary>> {
    let mut out: Vec<Primary> = Vec::new();
    for entry in reply {
        let Value::Array(parts) = entry else {
            return Err(bad("an entry is not an array"));
        };
        let num = |i: usize| -> Result<u16> {
            match parts.get(i) {
                Some(Value::Int(n)) => u16::try_from(*n).map_err(|_| bad("slot out of range")),
                _ => Err(bad("a range lacks its bounds")),
            }
        };
        let (start, end) = (num(0)?, num(1)?);
        let (addr, id) = node(parts.get(2).ok_or_else(|| bad("a range lacks its node"))?)?;
        let replicas = parts
            .iter()
            .skip(3)
            .map(|r| node(r).map(|(a, _)| a))
            .collect::<Result<Vec<_>>>()?;
        let key = if id.is_empty() {
            addr.clone()
        } else {
            id.clone()
        };
        match out
            .iter_mut()
            .find(|p| (if p.id.is_empty() { &p.addr } else { &p.id }) == &key)
        {
            Some(p) => {
                p.ranges.push((start, end));
                for r in replicas {
                    if !p.replicas.contains(&r) {
                        p.replicas.push(r);
                    }
                }
            }
            None => out.push(Primary {
                addr,
                id,
                ranges: vec![(start, end)],
                replicas,
            }),
        }
    }
    for p in &mut out {
        p.ranges.sort_unstable();
        p.replicas.sort();
    }
    out.sort_by_key(|p| p.ranges.first().map_or(u16::MAX, |r| r.0));
    Ok(out)
}

/// `host:port` and id of each primary in a `CLUSTER NODES` reply that
/// serves no slot and is not failing or still joining.
pub(crate) fn slotless_primaries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (id, addr, flags) = (f.first()?, f.get(1)?, f.get(2)?);
            let flags: Vec<&str> = flags.split(',').collect();
            let usable = flags.contains(&"master")
                && !flags
                    .iter()
                    .any(|x| matches!(*x, "fail" | "fail?" | "handshake" | "noaddr"));
            // Fields 8 and on are slots (or slots being moved).
            if !usable || f.len() > 8 {
                return None;
            }
            let addr = addr.split(['@', ',']).next()?;
            Some((addr.to_string(), id.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn n(addr: &str, port: i64, id: &str) -> Value {
        Value::Array(vec![b(addr), Value::Int(port), b(id), Value::Array(vec![])])
    }

    #[test]
    fn ranges_merge_per_node_and_sort_by_first_slot() {
        let reply = vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                n("127.0.0.1", 7001, "b"),
                n("127.0.0.1", 7004, "e"),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                n("127.0.0.1", 7000, "a"),
            ]),
            Value::Array(vec![
                Value::Int(16000),
                Value::Int(16383),
                n("127.0.0.1", 7000, "a"),
            ]),
        ];
        let p = parse_cluster_slots(reply).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].addr, "127.0.0.1:7000");
        assert_eq!(p[0].ranges, vec![(0, 5460), (16000, 16383)]);
        assert_eq!(p[1].replicas, vec!["127.0.0.1:7004".to_string()]);
        assert!(parse_cluster_slots(vec![Value::Int(1)]).is_err());
    }

    #[test]
    fn slotless_primaries_are_found_in_cluster_nodes() {
        let text = "\
a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7001@17001,host-b master - 0 0 2 connected 5461-16383
c 127.0.0.1:7003@17003 master - 0 0 0 connected
d 127.0.0.1:7004@17004 slave a 0 0 1 connected
e 127.0.0.1:7005@17005 master,fail - 0 0 0 disconnected
";
        assert_eq!(
            slotless_primaries(text),
            vec![("127.0.0.1:7003".to_string(), "c".to_string())]
        );
    }
}
