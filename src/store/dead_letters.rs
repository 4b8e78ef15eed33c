//! Dead-letter streams: copying an entry back for another try
//! (`lua/dlq_replay.lua`, which deletes it from the DLQ in the same step).

use super::Store;
use crate::error::{Result, check};

/// Where a replayed dead letter goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplayTarget<'a> {
    /// The failing group's retry stream: only that group sees it again.
    Group(&'a str),
    /// Its lane stream: every group sees it again.
    Lane(u8),
}

/// One dead letter to replay.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replay<'a> {
    pub partition: u32,
    /// Its id in the partition's dead-letter stream.
    pub id: &'a str,
    pub to: ReplayTarget<'a>,
}

impl Store<'_> {
    /// Replays dead letters of `topic`, one step each (copy back, then
    /// delete from the DLQ). Returns how many were replayed (an entry
    /// already gone is not).
    pub(crate) async fn replay_dead_letters(
        &self,
        topic: &str,
        letters: &[Replay<'_>],
    ) -> Result<usize> {
        self.keys.require(topic)?;
        let cmds = letters
            .iter()
            .map(|d| {
                let (target, mode) = match d.to {
                    ReplayTarget::Group(g) => {
                        (self.keys.retry_stream(topic, d.partition, g), "group")
                    }
                    ReplayTarget::Lane(lane) => {
                        (self.keys.stream(topic, d.partition, lane), "topic")
                    }
                };
                let cmd = self.scripts.dlq_replay.cmd(
                    &[self.keys.dlq(topic, d.partition), target],
                    &[d.id, mode][..],
                );
                (d.partition, cmd)
            })
            .collect();
        let mut replayed = 0;
        for v in self.query_per_partition(cmds).await? {
            if !matches!(check(v)?, redis::Value::Int(0)) {
                replayed += 1;
            }
        }
        Ok(replayed)
    }
}
