//! Entries of a topic's dead-letter streams (one per partition): reading
//! them in pages or by id, and deleting them. (Replaying them is a script
//! step, in [`super::dead_letters`].)

use std::collections::BTreeMap;

use redis::Value;

use super::Store;
use crate::envelope::{Message, StreamId, parse_entries};
use crate::error::{Error, Result, check};

/// A page of one partition's dead-letter stream, oldest first.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeadLetterPage<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// Start after this id; `None` starts at the oldest entry.
    pub after: Option<StreamId>,
    /// Most entries read.
    pub count: usize,
}

impl Store<'_> {
    /// Reads a page of a partition's dead-letter stream (`XRANGE`), as
    /// messages of lane 0 whose headers say where and why each failed.
    pub(crate) async fn dead_letter_page(&self, page: DeadLetterPage<'_>) -> Result<Vec<Message>> {
        self.keys.require(page.topic)?;
        let start = match page.after {
            Some(id) => format!("({id}"),
            None => "-".to_string(),
        };
        let v: Value = redis::cmd("XRANGE")
            .arg(self.keys.dlq(page.topic, page.partition))
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(page.count)
            .query_async(&mut self.conn.clone())
            .await?;
        parse_entries(page.topic, page.partition, 0, v)
    }

    /// The entries with id `id` in a partition's dead-letter stream (none
    /// or one), as [`dead_letter_page`](Self::dead_letter_page) reads them.
    pub(crate) async fn dead_letters_with_id(
        &self,
        topic: &str,
        partition: u32,
        id: StreamId,
    ) -> Result<Vec<Message>> {
        self.keys.require(topic)?;
        let v: Value = redis::cmd("XRANGE")
            .arg(self.keys.dlq(topic, partition))
            .arg(id.to_string())
            .arg(id.to_string())
            .query_async(&mut self.conn.clone())
            .await?;
        parse_entries(topic, partition, 0, v)
    }

    /// Deletes entries from the dead-letter streams of `topic`, given by
    /// partition (one `XDEL` per partition, one pipeline per slot).
    /// Returns how many were deleted.
    pub(crate) async fn delete_dead_letters(
        &self,
        topic: &str,
        ids_by_partition: &BTreeMap<u32, Vec<String>>,
    ) -> Result<usize> {
        self.keys.require(topic)?;
        let cmds = ids_by_partition
            .iter()
            .map(|(p, ids)| {
                vec![
                    redis::cmd("XDEL")
                        .arg(self.keys.dlq(topic, *p))
                        .arg(ids)
                        .clone(),
                ]
            })
            .collect();
        let mut deleted = 0;
        for v in self.query_grouped(cmds).await?.into_iter().flatten() {
            deleted += redis::from_redis_value::<usize>(check(v)?)
                .map_err(|e| Error::Decode(e.to_string()))?;
        }
        Ok(deleted)
    }
}
