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

/// A partition and the lease epoch it is held at (0: not held yet, or
/// shared mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub partition: u32,
    pub epoch: u64,
}

/// Leases of one group on some partitions of a topic, for one member.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Leases<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub member: &'a str,
}

impl Store<'_> {
    /// Tries to take (or keep) the lease of each partition (at the epoch
    /// held, or 0) for `ttl`. A partition whose lease changes hands gets a
    /// new epoch.
    pub(crate) async fn lease_acquire(
        &self,
        of: Leases<'_>,
        ttl: Duration,
        partitions: &[Held],
    ) -> Result<Vec<(u32, Result<Lease>)>> {
        self.keys.require(of.topic)?;
        let ttl = ttl.as_millis().to_string();
        let s = &self.scripts.lease_acquire;
        let cmds = partitions
            .iter()
            .map(|h| {
                let lease = self.keys.lease(of.topic, h.partition, of.group);
                vec![s.cmd(&[&lease], &[of.member, &ttl, &h.epoch.to_string()][..])]
            })
            .collect();
        let replies = self.query_grouped(cmds).await?;
        Ok(partitions
            .iter()
            .zip(replies.into_iter().flatten())
            .map(|(h, v)| (h.partition, parse_lease(v)))
            .collect())
    }

    /// Renews each held partition for `ttl`; an expired lease is
    /// not renewed, even if nobody took it.
    pub(crate) async fn lease_renew(
        &self,
        of: Leases<'_>,
        ttl: Duration,
        held: &[Held],
    ) -> Result<Vec<(u32, Guarded<()>)>> {
        self.keys.require(of.topic)?;
        let ttl = ttl.as_millis().to_string();
        let s = &self.scripts.lease_renew;
        let cmds = held
            .iter()
            .map(|h| {
                let lease = self.keys.lease(of.topic, h.partition, of.group);
                vec![s.cmd(&[&lease], &[of.member, &h.epoch.to_string(), &ttl][..])]
            })
            .collect();
        let replies = self.query_grouped(cmds).await?;
        held.iter()
            .zip(replies.into_iter().flatten())
            .map(|(h, v)| {
                let renewed = int(&check(v)?)? == 1;
                Ok((
                    h.partition,
                    if renewed {
                        Guarded::Done(())
                    } else {
                        Guarded::LeaseLost
                    },
                ))
            })
            .collect()
    }

    /// Gives each held partition back at once, keeping the epoch
    /// so the next holder's is higher.
    pub(crate) async fn lease_release(&self, of: Leases<'_>, held: &[Held]) -> Result<()> {
        self.keys.require(of.topic)?;
        let s = &self.scripts.lease_release;
        let cmds = held
            .iter()
            .map(|h| {
                let lease = self.keys.lease(of.topic, h.partition, of.group);
                vec![s.cmd(&[&lease], &[of.member, &h.epoch.to_string()][..])]
            })
            .collect();
        for v in self.query_grouped(cmds).await?.into_iter().flatten() {
            check(v)?;
        }
        Ok(())
    }

    /// Writes a fresh `fence` value into the lease of `partition` and
    /// returns it: a fenced read sent before (under a `WATCH` of the lease,
    /// or carrying the fence it last saw) then reads nothing.
    pub(crate) async fn lease_fence(&self, of: Leases<'_>, partition: u32) -> Result<String> {
        self.keys.require(of.topic)?;
        let lease = self.keys.lease(of.topic, partition, of.group);
        let fence = super::publish::unique_nonce().to_string();
        let _: i64 = redis::cmd("HSET")
            .arg(lease)
            .arg("fence")
            .arg(&fence)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(fence)
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
