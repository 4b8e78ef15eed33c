//! The schedules hashes: each schedule's spec as JSON (name → JSON) and the
//! time of its last published fire (name → ms). (Moving the last fire
//! forward is a script step, `mark_fired` in [`super::coordination`].)

use std::collections::HashMap;

use redis::AsyncCommands;

use super::Store;
use crate::error::{Error, Result, check};

/// One schedule as stored now, read for a fire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StoredSchedule {
    /// Its spec as stored (JSON); `None` when it was removed.
    pub json: Option<String>,
    /// Its last published fire (ms), if one is recorded and readable.
    pub last_ms: Option<u64>,
}

impl Store<'_> {
    /// The stored spec (JSON) of schedule `name`, if any.
    pub(crate) async fn schedule_json(&self, name: &str) -> Result<Option<String>> {
        Ok(self.conn.clone().hget(self.keys.schedules(), name).await?)
    }

    /// Every stored spec: name → JSON.
    pub(crate) async fn schedules_json(&self) -> Result<HashMap<String, String>> {
        Ok(self.conn.clone().hgetall(self.keys.schedules()).await?)
    }

    /// Stores the spec (JSON) of schedule `name`, replacing any.
    pub(crate) async fn put_schedule(&self, name: &str, json: &str) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .hset(self.keys.schedules(), name, json)
            .await?;
        Ok(())
    }

    /// Sets schedule `name`'s last fire to `fire_ms`, even backwards (a new
    /// timing starts from there).
    pub(crate) async fn set_schedule_last(&self, name: &str, fire_ms: u64) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .hset(self.keys.schedules_last(), name, fire_ms.to_string())
            .await?;
        Ok(())
    }

    /// Removes schedule `name`'s spec, then its last fire. Returns whether
    /// there was a spec.
    pub(crate) async fn remove_schedule(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let removed: u64 = conn.hdel(self.keys.schedules(), name).await?;
        let _: u64 = conn.hdel(self.keys.schedules_last(), name).await?;
        Ok(removed > 0)
    }

    /// Each schedule's last fire (ms); a value that is not a number is
    /// left out.
    pub(crate) async fn schedule_last_fires(&self) -> Result<HashMap<String, u64>> {
        let raw: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.keys.schedules_last())
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|(name, ms)| Some((name, ms.parse().ok()?)))
            .collect())
    }

    /// Schedule `name`'s spec and last fire as stored now (the two hashes
    /// are two slots on a cluster: one group each, in flight at once).
    pub(crate) async fn stored_schedule(&self, name: &str) -> Result<StoredSchedule> {
        let keys = self.keys;
        let replies = self
            .query_grouped(vec![
                vec![redis::cmd("HGET").arg(keys.schedules()).arg(name).clone()],
                vec![
                    redis::cmd("HGET")
                        .arg(keys.schedules_last())
                        .arg(name)
                        .clone(),
                ],
            ])
            .await?;
        let mut values = replies.into_iter().flatten().map(|v| {
            let v = check(v)?;
            redis::from_redis_value::<Option<String>>(v).map_err(|e| Error::Decode(e.to_string()))
        });
        let json = values.next().transpose()?.flatten();
        let last = values.next().transpose()?.flatten();
        Ok(StoredSchedule {
            json,
            last_ms: last.and_then(|l| l.parse().ok()),
        })
    }
}
