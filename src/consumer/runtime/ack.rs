//! The acker: acks handled messages in batches, one pipeline per flush
//! (fenced by the lease in ordered mode), and clears recorded failures of
//! messages that finally succeeded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::discipline::Discipline;
use super::state::DeliveryId;
use super::{AckReq, Rt};
use crate::duration::Doubling;
use crate::envelope::StreamId;
use crate::error::Result;
use crate::id::MessageId;
use crate::store::Guarded;
use crate::store::publish::wait_for_replicas;
use crate::store::settle::{AckBatch, AckOf, Answer, Settled};

/// The stream (a partition's lane or retry stream) and epoch a group of
/// acks is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct AckKey {
    partition: u32,
    src: u8,
    epoch: u64,
}

/// An id to ack, whether failures were recorded for it, and the result
/// to keep with it.
#[derive(Clone, Debug)]
struct ToAck {
    id: StreamId,
    clear_attempts: bool,
    answer: Option<Arc<Answer>>,
}

/// The ids to ack of one stream at one epoch.
#[derive(Clone, Debug)]
struct AckGroup {
    key: AckKey,
    ids: Vec<ToAck>,
}

impl AckGroup {
    /// The in-flight delivery each id of the group is.
    fn deliveries(&self) -> impl Iterator<Item = DeliveryId> + '_ {
        self.ids.iter().map(|a| DeliveryId {
            partition: self.key.partition,
            src: self.key.src,
            id: a.id,
            epoch: self.key.epoch,
        })
    }
}

impl<D: Discipline> Rt<D> {
    /// With [`Acks::Replicas`](crate::Acks::Replicas) or `Fsynced`: wait for the
    /// replicas to have the `count` settles (acks or a dead-lettering) just
    /// written. They stand on the primary either way; fewer replicas in
    /// time is a warning and a count, since a failover now may hand those
    /// messages back to be handled again.
    pub(super) async fn wait_replicated(&self, what: &'static str, count: usize) {
        if self.s.acks == crate::acks::Acks::Primary {
            return;
        }
        let mut conn = self.catalog.connection();
        if let Err(e) = wait_for_replicas(&mut conn, self.s.acks).await {
            if matches!(e, crate::error::Error::NotReplicated { .. }) {
                // Possibly the wrong side of a partition: behind Sentinel,
                // ask the sentinels again.
                conn.suspect_primary();
            }
            self.stats
                .unreplicated
                .fetch_add(count as u64, Ordering::Relaxed);
            tracing::warn!(topic = %self.spec.name, group = %self.s.group, count, error = %e,
                "{what} not confirmed by replicas: a failover now may hand these messages back");
        }
    }

    pub(super) async fn ack_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<AckReq>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 1000 {
                match rx.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            let mut groups: HashMap<AckKey, Vec<ToAck>, foldhash::fast::RandomState> =
                HashMap::default();
            for a in batch {
                let d = a.delivery;
                let key = AckKey {
                    partition: d.partition,
                    src: d.src,
                    epoch: d.epoch,
                };
                groups.entry(key).or_default().push(ToAck {
                    id: d.id,
                    clear_attempts: a.clear_attempts,
                    answer: a.answer.map(|b| Arc::new(*b)),
                });
            }
            let all: Vec<AckGroup> = groups
                .into_iter()
                .map(|(key, ids)| AckGroup { key, ids })
                .collect();
            let mut pending: Vec<AckGroup> = all.clone();
            let mut delay = Doubling::new(Duration::from_millis(20), Duration::from_secs(2));
            while !pending.is_empty() {
                match self.ack(&pending).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(topic = %self.spec.name, group = %self.s.group, error = %e,
                            "ack failed; retrying");
                        if self.stop.killed.is_cancelled() {
                            break;
                        }
                        tokio::time::sleep(delay.next_wait()).await;
                        // Give up on partitions that are no longer ours: the
                        // new owner handles those messages again.
                        pending.retain(|g| D::keeps_acking(&self, g.key.partition, g.key.epoch));
                    }
                }
            }
            for g in &all {
                for d in g.deliveries() {
                    self.done(d);
                }
            }
        }
    }

    /// Acks each group of ids.
    async fn ack(&self, groups: &[AckGroup]) -> Result<()> {
        let (topic, group) = (&self.spec.name, &self.s.group);
        let ids: Vec<Vec<StreamId>> = groups
            .iter()
            .map(|g| {
                g.ids
                    .iter()
                    .filter(|a| a.answer.is_none())
                    .map(|a| a.id)
                    .collect()
            })
            .collect();
        let answers: Vec<Vec<&Answer>> = groups
            .iter()
            .map(|g| g.ids.iter().filter_map(|a| a.answer.as_deref()).collect())
            .collect();
        let batches: Vec<AckBatch> = groups
            .iter()
            .zip(&ids)
            .zip(&answers)
            .map(|((g, ids), answers)| AckBatch {
                partition: g.key.partition,
                source: Self::source(g.key.src),
                epoch: g.key.epoch,
                ids,
                answers,
            })
            .collect();
        let of = AckOf {
            topic,
            group,
            member: &self.s.member,
            fenced: D::FENCED,
        };
        // Ordered mode on one server, no results to keep, no replicas to
        // wait for: fenced by a WATCH of the leases rather than the script.
        let watched = D::FENCED
            && !self.catalog.is_cluster()
            && self.s.acks == crate::acks::Acks::Primary
            && batches.iter().all(|b| b.answers.is_empty());
        let by_watch = if watched {
            let mut acker = self.conns.acker.lock().await;
            acker.ack(&self.catalog, of, &batches).await?
        } else {
            None
        };
        let results = match by_watch {
            Some(r) => r,
            None => self.catalog.store().ack(of, &batches).await?,
        };
        let written: usize = batches.iter().map(|b| b.ids.len() + b.answers.len()).sum();
        self.wait_replicated("acks", written).await;
        let mut clear: Vec<(u32, Vec<String>)> = Vec::new();
        let mut carried_out: Vec<MessageId> = Vec::new();
        for (g, result) in groups.iter().zip(results) {
            let (p, epoch, ids) = (g.key.partition, g.key.epoch, &g.ids);
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
                    carried_out.extend(ids.iter().filter_map(|a| {
                        let a = a.answer.as_deref()?;
                        (a.status == Settled::Cancelled)
                            .then(|| MessageId::read(p, a.lane, a.origin.clone()))
                    }));
                    let failed: Vec<String> = ids
                        .iter()
                        .filter(|a| a.clear_attempts)
                        .map(|a| a.id.to_string())
                        .collect();
                    if !failed.is_empty() {
                        clear.push((p, failed));
                    }
                }
            }
        }
        if !carried_out.is_empty() {
            for id in &carried_out {
                self.cancels.done(id);
            }
            let ids: Vec<String> = carried_out.iter().map(ToString::to_string).collect();
            self.catalog
                .store()
                .forget_cancels(topic, group, &ids)
                .await?;
        }
        if !clear.is_empty() {
            self.catalog
                .store()
                .clear_attempts(topic, group, clear)
                .await?;
        }
        Ok(())
    }
}
