//! Taking over pending entries, with their attempt counts: a new owner's
//! claim of a partition's pending entries (and the fetcher's sweep for
//! stranded ones), and our own pending entries after a read whose reply was
//! lost.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::discipline::Discipline;
use super::{RETRY_SRC, Rt};
use crate::envelope::StreamId;
use crate::error::Result;
use crate::store::group_reads::{Fetched, Source, claim, deliveries, own_pending};
use crate::store::settle::FailureRecord;

/// Attempt metadata of a message taken over from another (or an earlier)
/// consumer.
#[derive(Debug, Default)]
pub(super) struct Resumed {
    pub attempt: u32,
    pub due_ms: Option<u64>,
    pub last_error: Option<String>,
}

impl<D: Discipline> Rt<D> {
    /// Claims pending entries of `src` idle at least `min_idle`, with their
    /// attempt counts (delivery counts, and recorded failures in ordered mode).
    pub(super) async fn take_over(
        &self,
        src: &Source,
        min_idle: Duration,
        limit: usize,
    ) -> Result<Vec<(Fetched, Resumed)>> {
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let claimed = claim(&self.catalog, topic, group, me, src, min_idle, limit).await?;
        self.note_trimmed(claimed.trimmed, src.partition);
        if claimed.messages.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<StreamId> = claimed.messages.iter().map(|f| f.msg.id).collect();
        let delivered = deliveries(&self.catalog, group, me, src, &ids).await?;
        let recorded = self.recorded_failures(src, &ids).await?;
        Ok(claimed
            .messages
            .into_iter()
            .map(|f| {
                // XAUTOCLAIM counted this claim as a delivery too.
                let times = delivered.get(&f.msg.id).copied().unwrap_or(1) as u32;
                let resumed = match recorded.get(&f.msg.id) {
                    Some(r) => Resumed {
                        attempt: (r.n + 1).max(times.saturating_sub(1)),
                        due_ms: Some(r.due),
                        last_error: Some(r.err.clone()),
                    },
                    None => Resumed {
                        attempt: times.max(1),
                        due_ms: None,
                        last_error: None,
                    },
                };
                (f, resumed)
            })
            .collect())
    }

    /// Our own pending entries of `src` not in flight here at `epoch`: ones a
    /// read delivered whose reply was lost. Reading them does not count as a
    /// delivery, so their attempt is what it was.
    pub(super) async fn recover_own(
        &self,
        src: &Source,
        epoch: u64,
    ) -> Result<Vec<(Fetched, Resumed)>> {
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let code = if src.retry { RETRY_SRC } else { src.lane };
        let known: HashSet<StreamId> = self
            .lock()
            .in_flight_ids
            .iter()
            .filter(|d| d.partition == src.partition && d.src == code && d.epoch == epoch)
            .map(|d| d.id)
            .collect();
        let (got, trimmed) = own_pending(&self.catalog, topic, group, me, src, |id| {
            known.contains(&id)
        })
        .await?;
        self.note_trimmed(trimmed, src.partition);
        if got.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<StreamId> = got.iter().map(|(f, _)| f.msg.id).collect();
        let recorded = self.recorded_failures(src, &ids).await?;
        Ok(got
            .into_iter()
            .map(|(f, times)| {
                let resumed = match recorded.get(&f.msg.id) {
                    Some(r) => Resumed {
                        attempt: r.n + 1,
                        due_ms: Some(r.due),
                        last_error: Some(r.err.clone()),
                    },
                    None => Resumed {
                        attempt: (times as u32).max(1),
                        due_ms: None,
                        last_error: None,
                    },
                };
                (f, resumed)
            })
            .collect())
    }

    /// Failures recorded for `ids` in the group's attempts hash (ordered
    /// mode, partition streams only).
    async fn recorded_failures(
        &self,
        src: &Source,
        ids: &[StreamId],
    ) -> Result<HashMap<StreamId, FailureRecord>> {
        if !D::RECORDS_FAILURES || src.retry || ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.catalog
            .store()
            .recorded_failures(&self.spec.name, &self.s.group, src.partition, ids)
            .await
    }
}
