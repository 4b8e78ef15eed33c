//! Kept results and who may answer a request: reading a group's result of
//! a message (written by `lua/ack.lua` and `lua/dead_letter.lua`), and
//! counting a group's live members (`lua/responders.lua`).

use std::collections::HashMap;

use super::{Store, int};
use crate::error::Result;
use crate::reply::KeptResult;

/// Which message's result, for which group.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResultOf<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub group: &'a str,
    pub lane: u8,
    /// The message's first stream id.
    pub first: &'a str,
}

impl Store<'_> {
    /// The group's kept result of a message, if it is still kept.
    pub(crate) async fn kept_result(&self, of: ResultOf<'_>) -> Result<Option<KeptResult>> {
        let key = self
            .keys
            .result(of.topic, of.partition, of.group, of.lane, of.first);
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(KeptResult::from_fields(&fields))
    }

    /// How many members of `group` have a heartbeat within their session.
    pub(crate) async fn responders(&self, topic: &str, group: &str) -> Result<u64> {
        let v = self
            .eval(
                &self.scripts.responders,
                &[&self.keys.members(topic, group)],
                &[],
            )
            .await?;
        Ok(int(&v)?.max(0) as u64)
    }
}
