//! Partition leases of a group: take, renew and give back, one script call
//! per partition (`lua/lease_acquire.lua`, `lease_renew.lua`,
//! `lease_release.lua`), pipelined per partition's slot.

use std::time::Duration;

use redis::Value;

use super::{Guarded, Store, int, text};
use crate::error::{Error, Result, check};

/// The outcome of trying to take a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lease {
    /// We hold it with this epoch.
    Held(u64),
    /// Another member holds it until this Redis time.
    Taken { owner: String, expires_ms: u64 },
}

/// Leases of one group on some partitions of a topic, for one member.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Leases<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub member: &'a str,
}

impl Store<'_> {
    /// Tries to take (or keep) the lease of each `(partition, epoch held or
    /// 0)` for `ttl`. A partition whose lease changes hands gets a new epoch.
    pub(crate) async fn lease_acquire(
        &self,
        of: Leases<'_>,
        ttl: Duration,
        partitions: &[(u32, u64)],
    ) -> Result<Vec<(u32, Result<Lease>)>> {
        let ttl = ttl.as_millis().to_string();
        let s = &self.scripts.lease_acquire;
        let cmds = partitions
            .iter()
            .map(|(p, epoch)| {
                let lease = self.keys.lease(of.topic, *p, of.group);
                vec![s.cmd(&[&lease], &[of.member, &ttl, &epoch.to_string()][..])]
            })
            .collect();
        let replies = self.query_grouped(cmds).await?;
        Ok(partitions
            .iter()
            .zip(replies.into_iter().flatten())
            .map(|((p, _), v)| (*p, parse_lease(v)))
            .collect())
    }

    /// Renews each held `(partition, epoch)` for `ttl`; an expired lease is
    /// not renewed, even if nobody took it.
    pub(crate) async fn lease_renew(
        &self,
        of: Leases<'_>,
        ttl: Duration,
        held: &[(u32, u64)],
    ) -> Result<Vec<(u32, Guarded<()>)>> {
        let ttl = ttl.as_millis().to_string();
        let s = &self.scripts.lease_renew;
        let cmds = held
            .iter()
            .map(|(p, epoch)| {
                let lease = self.keys.lease(of.topic, *p, of.group);
                vec![s.cmd(&[&lease], &[of.member, &epoch.to_string(), &ttl][..])]
            })
            .collect();
        let replies = self.query_grouped(cmds).await?;
        held.iter()
            .zip(replies.into_iter().flatten())
            .map(|((p, _), v)| {
                let renewed = int(&check(v)?)? == 1;
                Ok((
                    *p,
                    if renewed {
                        Guarded::Done(())
                    } else {
                        Guarded::LeaseLost
                    },
                ))
            })
            .collect()
    }

    /// Gives each held `(partition, epoch)` back at once, keeping the epoch
    /// so the next holder's is higher.
    pub(crate) async fn lease_release(&self, of: Leases<'_>, held: &[(u32, u64)]) -> Result<()> {
        let s = &self.scripts.lease_release;
        let cmds = held
            .iter()
            .map(|(p, epoch)| {
                let lease = self.keys.lease(of.topic, *p, of.group);
                vec![s.cmd(&[&lease], &[of.member, &epoch.to_string()][..])]
            })
            .collect();
        for v in self.query_grouped(cmds).await?.into_iter().flatten() {
            check(v)?;
        }
        Ok(())
    }
}

fn parse_lease(v: Value) -> Result<Lease> {
    let Value::Array(parts) = check(v)? else {
        return Err(Error::Decode("lease reply is not an array".into()));
    };
    match parts.as_slice() {
        [ok, epoch] if int(ok)? == 1 => Ok(Lease::Held(int(epoch)? as u64)),
        [_, owner, expires] => Ok(Lease::Taken {
            owner: text(owner)?,
            expires_ms: int(expires)? as u64,
        }),
        _ => Err(Error::Decode("lease reply has the wrong shape".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_replies_read_as_held_or_taken() {
        let held = Value::Array(vec![Value::Int(1), Value::Int(42)]);
        assert_eq!(parse_lease(held).unwrap(), Lease::Held(42));
        let taken = Value::Array(vec![
            Value::Int(0),
            Value::BulkString(b"m2".to_vec()),
            Value::Int(1000),
        ]);
        assert_eq!(
            parse_lease(taken).unwrap(),
            Lease::Taken {
                owner: "m2".into(),
                expires_ms: 1000
            }
        );
        assert!(parse_lease(Value::Int(1)).is_err());
        assert!(parse_lease(Value::Array(vec![Value::Int(1)])).is_err());
    }
}
