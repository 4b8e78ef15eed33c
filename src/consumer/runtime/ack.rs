//! The acker: acks handled messages in batches, one pipeline per flush
//! (fenced by the lease in ordered mode), and clears recorded failures of
//! messages that finally succeeded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{AckReq, Rt};
use crate::client::check;
use crate::envelope::StreamId;
use crate::error::Result;
use crate::group::Mode;

/// Ids to ack, per (partition, src, epoch), and which of them had recorded
/// failures.
type AckGroup = ((u32, u8, u64), Vec<(StreamId, bool)>);

/// A batch of acks by (partition, src, epoch).
type AckGroups = HashMap<(u32, u8, u64), Vec<(StreamId, bool)>, foldhash::fast::RandomState>;

impl Rt {
    pub(super) async fn ack_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<AckReq>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 1000 {
                match rx.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            let mut groups: AckGroups = HashMap::default();
            for a in batch {
                groups
                    .entry((a.partition, a.src, a.epoch))
                    .or_default()
                    .push((a.id, a.clear_attempts));
            }
            let all: Vec<AckGroup> = groups.into_iter().collect();
            let mut pending: Vec<AckGroup> = all.clone();
            let mut delay = Duration::from_millis(20);
            while !pending.is_empty() {
                match self.ack(&pending).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(topic = %self.spec.name, group = %self.s.group, error = %e,
                            "ack failed; retrying");
                        if self.killed.is_cancelled() {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                        // Give up on partitions that are no longer ours: the
                        // new owner handles those messages again.
                        pending.retain(|((p, _, epoch), _)| {
                            self.s.mode == Mode::Shared
                                || self.lock().owned.get(p).is_some_and(|o| o.epoch == *epoch)
                        });
                    }
                }
            }
            for ((p, src, epoch), ids) in &all {
                for (id, _) in ids {
                    self.done(*p, *src, *id, *epoch);
                }
            }
        }
    }

    /// Acks each (partition, src, epoch) group of ids.
    async fn ack(&self, groups: &[AckGroup]) -> Result<()> {
        let keys = self.client.keys();
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let mut per_partition: BTreeMap<u32, Vec<redis::Cmd>> = BTreeMap::new();
        for ((p, src, epoch), ids) in groups {
            let stream = self.stream_of(*p, *src);
            let mut cmd = match self.s.mode {
                Mode::Ordered => {
                    let lease = keys.lease(topic, *p, group);
                    let mut cmd = self
                        .client
                        .inner
                        .scripts
                        .ack
                        .cmd(&[&lease, &stream], &[group.as_str(), me.as_str()][..]);
                    cmd.arg(*epoch);
                    cmd
                }
                Mode::Shared => {
                    let mut cmd = redis::cmd("XACK");
                    cmd.arg(&stream).arg(group);
                    cmd
                }
            };
            for (id, _) in ids {
                cmd.arg(id);
            }
            per_partition.entry(*p).or_default().push(cmd);
        }
        let order: Vec<u32> = per_partition.keys().copied().collect();
        let cmds: Vec<Vec<redis::Cmd>> = per_partition.into_values().collect();
        let replies = self.client.query_grouped(cmds).await?;
        // Replies come back per partition, in `groups` order within each.
        let mut by_partition: BTreeMap<u32, VecDeque<redis::Value>> = order
            .into_iter()
            .zip(replies.into_iter().map(VecDeque::from))
            .collect();
        let mut clear: Vec<(u32, Vec<String>)> = Vec::new();
        for ((p, _, epoch), ids) in groups {
            let v = by_partition.get_mut(p).and_then(VecDeque::pop_front);
            let n: i64 = match v.map(check).transpose()? {
                Some(v) => redis::from_redis_value(v).unwrap_or(0),
                None => 0,
            };
            if n < 0 {
                self.stats
                    .stale_acks
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
                tracing::warn!(topic = %topic, group = %group, partition = p, epoch,
                    count = ids.len(),
                    "ack refused: the partition's lease moved on; the new owner will handle these again");
            } else {
                self.stats.acked.fetch_add(n as u64, Ordering::Relaxed);
                let failed: Vec<String> = ids
                    .iter()
                    .filter(|(_, had)| *had)
                    .map(|(id, _)| id.to_string())
                    .collect();
                if !failed.is_empty() {
                    clear.push((*p, failed));
                }
            }
        }
        if !clear.is_empty() {
            let cmds = clear
                .into_iter()
                .map(|(p, ids)| {
                    vec![
                        redis::cmd("HDEL")
                            .arg(keys.attempts(topic, p, group))
                            .arg(ids)
                            .clone(),
                    ]
                })
                .collect();
            self.client.query_grouped(cmds).await?;
        }
        Ok(())
    }
}
