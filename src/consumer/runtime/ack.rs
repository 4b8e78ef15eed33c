//! The acker: acks handled messages in batches, one pipeline per flush
//! (fenced by the lease in ordered mode), and clears recorded failures of
//! messages that finally succeeded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{AckReq, Rt};
use crate::duration::Doubling;
use crate::envelope::StreamId;
use crate::error::Result;
use crate::group::Mode;
use crate::store::Guarded;
use crate::store::settle::{AckBatch, AckOf};

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
            let mut delay = Doubling::new(Duration::from_millis(20), Duration::from_secs(2));
            while !pending.is_empty() {
                match self.ack(&pending).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(topic = %self.spec.name, group = %self.s.group, error = %e,
                            "ack failed; retrying");
                        if self.killed.is_cancelled() {
                            break;
                        }
                        tokio::time::sleep(delay.next_wait()).await;
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
        let (topic, group) = (&self.spec.name, &self.s.group);
        let ids: Vec<Vec<StreamId>> = groups
            .iter()
            .map(|(_, ids)| ids.iter().map(|(id, _)| *id).collect())
            .collect();
        let batches: Vec<AckBatch> = groups
            .iter()
            .zip(&ids)
            .map(|(((p, src, epoch), _), ids)| AckBatch {
                partition: *p,
                source: Self::source(*src),
                epoch: *epoch,
                ids,
            })
            .collect();
        let of = AckOf {
            topic,
            group,
            member: &self.s.member,
            fenced: self.s.mode == Mode::Ordered,
        };
        let results = self.client.store().ack(of, &batches).await?;
        let mut clear: Vec<(u32, Vec<String>)> = Vec::new();
        for (((p, _, epoch), ids), result) in groups.iter().zip(results) {
            match result {
                Guarded::LeaseLost => {
                    self.stats
                        .stale_acks
                        .fetch_add(ids.len() as u64, Ordering::Relaxed);
                    tracing::warn!(topic = %topic, group = %group, partition = p, epoch,
                        count = ids.len(),
                        "ack refused: the partition's lease moved on; the new owner will handle these again");
                }
                Guarded::Done(n) => {
                    self.stats.acked.fetch_add(n, Ordering::Relaxed);
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
        }
        if !clear.is_empty() {
            self.client
                .store()
                .clear_attempts(topic, group, clear)
                .await?;
        }
        Ok(())
    }
}
