//! The fetcher: reads the partitions this member owns (lanes in priority
//! order, then the group's retry stream), takes over pending entries with
//! their attempt counts, and hands deliveries to the dispatcher.
//!
//! A read pass is the discipline's ([`Discipline::read`]): fenced reads of
//! leased partitions that wait on their streams when idle (ordered,
//! [`Rt::read_owned`]), or plain group reads of every partition (shared,
//! [`Rt::read_shared`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::discipline::{Discipline, Ordered, Shared};
use super::state::{DeliveryId, Held};
use super::takeover::Resumed;
use super::{Delivery, RETRY_SRC, Rt};
use crate::duration::Doubling;
use crate::envelope::meta;
use crate::error::Result;
use crate::store::group_reads::{FencedPart, Fetched, Source, read_fenced, read_new, wait_for_new};
use crate::store::watched::WaitRead;

/// The partitions one pass of the fetcher covers, each marked as being
/// read until the pass ends.
#[derive(Debug, Default)]
struct ReadPlan {
    /// Partitions to read new messages of.
    read: Vec<Held>,
    /// Newly owned partitions whose pending entries must be taken over
    /// first (not read this pass).
    to_claim: Vec<Held>,
    /// Among `read`, those whose own pending entries must be read again
    /// first (a read's reply was lost).
    to_resync: Vec<Held>,
}

impl ReadPlan {
    /// Every partition the pass marked as being read.
    fn all(&self) -> Vec<Held> {
        self.read.iter().chain(&self.to_claim).copied().collect()
    }
}

impl<D: Discipline> Rt<D> {
    /// The streams of `partitions`: every lane, then the group's retry stream.
    pub(super) fn sources(&self, partitions: &[u32]) -> Vec<Source> {
        self.catalog
            .group_sources(&self.spec.name, &self.s.group, self.spec.lanes, partitions)
    }

    /// Marks the partitions of the next pass as being read.
    fn begin_read(&self) -> ReadPlan {
        let now = Instant::now();
        let mut st = self.lock();
        let mut plan = ReadPlan::default();
        for (p, o) in st.owned.iter_mut() {
            if o.lease.draining || o.lease.valid_until <= now {
                continue;
            }
            o.activity.reading += 1;
            let held = o.held(*p);
            if !o.catch_up.claimed {
                plan.to_claim.push(held);
                continue;
            }
            if o.catch_up.resync {
                plan.to_resync.push(held);
            }
            plan.read.push(held);
        }
        plan
    }

    /// After a failed read: the partitions it covered must re-read their own
    /// pending entries before reading new ones.
    fn mark_resync(&self, parts: &[Held]) {
        let mut st = self.lock();
        for h in parts {
            if let Some(o) = st.owned.get_mut(&h.partition)
                && o.epoch == h.epoch
            {
                o.catch_up.resync = true;
            }
        }
    }

    fn end_read(&self, parts: &[Held]) {
        let mut st = self.lock();
        for h in parts {
            if let Some(o) = st.owned.get_mut(&h.partition)
                && o.epoch == h.epoch
            {
                o.activity.reading -= 1;
            }
        }
    }

    pub(super) async fn fetch_loop(self: Arc<Self>, tx: mpsc::Sender<Vec<Delivery>>) {
        // Read again while a read's worth is still buffered per partition
        // held: a read returns up to `batch` per stream, and the handlers
        // should not run dry while it is on its way (with 8 partitions,
        // waiting for the buffer to fall to one batch left them idle for
        // part of every read: ordered consume was about a quarter slower).
        let mut partitions_held = 1usize;
        let sweep_every = D::sweep(&self.s).every;
        let mut last_sweep = Instant::now();
        let mut backoff = Doubling::new(Duration::from_millis(50), Duration::from_secs(2));
        // Partitions a wait saw new entries on: the next read covers only
        // them, so a message arriving on an idle member is read at once.
        let mut woken: Option<Vec<u32>> = None;
        loop {
            if self.stop.reading.is_cancelled() || self.stop.killed.is_cancelled() {
                return;
            }
            // Backpressure: wait for room before reading more.
            let high_water = self.s.concurrency + self.s.batch * partitions_held;
            while self.flow.buffered.load(Ordering::SeqCst) >= high_water {
                let space = self.flow.space.notified();
                if self.flow.buffered.load(Ordering::SeqCst) < high_water {
                    break;
                }
                tokio::select! {
                    _ = space => {}
                    _ = self.stop.reading.cancelled() => return,
                    _ = tokio::time::sleep(self.s.block) => {}
                }
            }
            let changed = self.wake.changed.notified();
            if self.gates.paused.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = changed => {}
                    _ = self.stop.reading.cancelled() => return,
                    _ = tokio::time::sleep(self.s.block) => {}
                }
                continue;
            }
            let plan = self.begin_read();
            let all = plan.all();
            partitions_held = all.len().max(1);
            if all.is_empty() {
                tokio::select! {
                    _ = changed => {}
                    _ = self.stop.reading.cancelled() => return,
                    _ = tokio::time::sleep(self.s.block) => {}
                }
                continue;
            }
            let sweep = last_sweep.elapsed() >= sweep_every;
            let result = self.fetch_once(&tx, &plan, sweep, woken.take()).await;
            self.end_read(&all);
            match result {
                Ok(w) => {
                    woken = w;
                    backoff.reset();
                    if sweep {
                        last_sweep = Instant::now();
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %self.spec.name, group = %self.s.group, error = %e,
                        "read failed; retrying");
                    // Redis may have delivered entries whose reply never came.
                    self.mark_resync(&plan.read);
                    tokio::select! {
                        _ = self.stop.reading.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                }
            }
        }
    }

    async fn fetch_once(
        &self,
        tx: &mpsc::Sender<Vec<Delivery>>,
        plan: &ReadPlan,
        sweep: bool,
        woken: Option<Vec<u32>>,
    ) -> Result<Option<Vec<u32>>> {
        // A new owner first takes over the partition's pending entries.
        for &held in &plan.to_claim {
            let mut got = Vec::new();
            for src in self.sources(&[held.partition]) {
                got.extend(self.take_over(&src, Duration::ZERO, usize::MAX).await?);
            }
            {
                let mut st = self.lock();
                match st.owned.get_mut(&held.partition) {
                    Some(o) if o.epoch == held.epoch => o.catch_up.claimed = true,
                    _ => continue,
                }
            }
            self.send(tx, got, &[held]).await;
        }
        // After a lost reply, what we were delivered unseen comes first.
        for &held in &plan.to_resync {
            let p = held.partition;
            D::fence_stale_reads(self, held).await?;
            let mut got = Vec::new();
            for src in self.sources(&[p]) {
                got.extend(self.recover_own(&src, held.epoch).await?);
            }
            {
                let mut st = self.lock();
                match st.owned.get_mut(&p) {
                    Some(o) if o.epoch == held.epoch => o.catch_up.resync = false,
                    _ => continue,
                }
            }
            if !got.is_empty() {
                tracing::info!(topic = %self.spec.name, group = %self.s.group, partition = p,
                    count = got.len(), "re-read entries delivered by a read whose reply was lost");
            }
            self.send(tx, got, &[held]).await;
        }
        let read = &plan.read;
        let parts: Vec<u32> = read.iter().map(|h| h.partition).collect();
        if parts.is_empty() {
            return Ok(None);
        }
        // Safety net: entries stranded in a pending list (a read that raced a
        // lease change) or, in shared mode, held past the visibility timeout
        // by a member that died.
        if sweep {
            let idle = D::sweep(&self.s).min_idle;
            for src in self.sources(&parts) {
                let got = self.take_over(&src, idle, 1000).await?;
                if !got.is_empty() {
                    self.send(tx, got, read).await;
                }
            }
        }
        D::read(self, tx, read, &parts, woken).await
    }

    pub(super) fn note_trimmed(&self, n: usize, partition: u32) {
        if n > 0 {
            self.stats
                .trimmed_unhandled
                .fetch_add(n as u64, Ordering::Relaxed);
            tracing::warn!(topic = %self.spec.name, group = %self.s.group, partition, count = n,
                "pending messages were trimmed away before they were handled");
        }
    }

    /// Counts messages in flight (skipping ids already in flight here at this
    /// epoch) and sends them to the dispatcher; messages of partitions no
    /// longer ours at that epoch are left pending for their new owner.
    async fn send(
        &self,
        tx: &mpsc::Sender<Vec<Delivery>>,
        got: Vec<(Fetched, Resumed)>,
        epochs: &[Held],
    ) {
        let batch = {
            let mut st = self.lock();
            let mut out = Vec::with_capacity(got.len());
            for (f, resumed) in got {
                let Fetched { mut msg, retry } = f;
                let Some(&Held { epoch, .. }) =
                    epochs.iter().find(|h| h.partition == msg.partition)
                else {
                    continue;
                };
                let ours = st
                    .owned
                    .get(&msg.partition)
                    .is_some_and(|o| o.epoch == epoch);
                let src = if retry { RETRY_SRC } else { msg.lane };
                let id = DeliveryId {
                    partition: msg.partition,
                    src,
                    id: msg.id,
                    epoch,
                };
                if !ours || !st.in_flight_ids.insert(id) {
                    continue;
                }
                if let Some(o) = st.owned.get_mut(&msg.partition) {
                    o.activity.in_flight += 1;
                }
                let mut attempt = resumed.attempt.max(1);
                if retry {
                    // Retry-stream entries say which attempt they are (their
                    // lane and first id are in the message's identity); the
                    // handler sees the message as it was published.
                    if let Some(a) = msg
                        .headers
                        .remove(meta::ATTEMPTS)
                        .and_then(|a| a.parse::<u32>().ok())
                    {
                        attempt = a + resumed.attempt.saturating_sub(1);
                    }
                }
                out.push(Delivery {
                    msg,
                    epoch,
                    src,
                    attempt,
                    due_ms: resumed.due_ms,
                    last_error: resumed.last_error,
                });
            }
            out
        };
        self.flow.in_flight.fetch_add(batch.len(), Ordering::SeqCst);
        self.flow.buffered.fetch_add(batch.len(), Ordering::SeqCst);
        if batch.is_empty() {
            return;
        }
        drop(crate::telemetry::receive_span(
            &self.names.topic,
            &self.names.group,
            &self.names.member,
            batch.len(),
        ));
        if let Err(mpsc::error::SendError(batch)) = tx.send(batch).await {
            for d in batch {
                self.done(d.id());
                self.unbuffer();
            }
        }
    }
}

impl Rt<Ordered> {
    /// Ordered mode: new messages of the partitions we own, each read fenced
    /// by its lease; when there is nothing, a wait for anything newer, which
    /// returns the partitions it saw new entries on.
    pub(super) async fn read_owned(
        &self,
        tx: &mpsc::Sender<Vec<Delivery>>,
        read: &[Held],
    ) -> Result<Option<Vec<u32>>> {
        if read.is_empty() {
            return Ok(None);
        }
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let sources: Vec<Vec<Source>> = read.iter().map(|h| self.sources(&[h.partition])).collect();
        let cluster = self.catalog.is_cluster();
        // Only the cluster's script read carries the fence (on a single
        // server a WATCH of the lease does that job).
        let parts: Vec<FencedPart<'_>> = {
            let st = cluster.then(|| self.lock());
            read.iter()
                .zip(&sources)
                .map(|(h, srcs)| {
                    let fence = st
                        .as_ref()
                        .and_then(|st| st.owned.get(&h.partition))
                        .map(|o| o.lease.fence.clone())
                        .unwrap_or_default();
                    FencedPart::new(
                        &self.catalog,
                        topic,
                        group,
                        *h,
                        fence,
                        srcs.iter().collect(),
                    )
                })
                .collect()
        };
        let got = if cluster {
            read_fenced(&self.catalog, topic, group, me, &parts, self.s.batch).await?
        } else {
            let mut reader = self.conns.watched.lock().await;
            reader
                .read(&self.catalog, topic, group, me, &parts, self.s.batch)
                .await?
        };
        if !got.lost.is_empty() {
            self.lease_lost(&got.lost);
        }
        if !got.messages.is_empty() {
            let got = got
                .messages
                .into_iter()
                .map(|f| (f, Resumed::default()))
                .collect();
            self.send(tx, got, read).await;
        } else if !got.idle.is_empty() {
            let partition_of = |key: &str| {
                sources
                    .iter()
                    .flatten()
                    .find(|s| s.key == key)
                    .map_or(0, |s| s.partition)
            };
            let keys = if cluster {
                wait_for_new(
                    &self.catalog,
                    &got.idle,
                    &partition_of,
                    self.s.block,
                    &self.conns.held,
                )
                .await?
            } else {
                // The wait and the read that follows it in one request.
                let mut reader = self.conns.watched.lock().await;
                let found = reader
                    .wait_then_read(
                        &self.catalog,
                        topic,
                        group,
                        me,
                        &got.idle,
                        &parts,
                        self.s.batch,
                        self.s.block,
                    )
                    .await?;
                drop(reader);
                match found {
                    WaitRead::Read(messages) => {
                        let got = messages
                            .into_iter()
                            .map(|f| (f, Resumed::default()))
                            .collect();
                        self.send(tx, got, read).await;
                        return Ok(None);
                    }
                    WaitRead::Woken(keys) => keys,
                }
            };
            if !keys.is_empty() {
                let mut parts: Vec<u32> = keys.iter().map(|k| partition_of(k)).collect();
                parts.sort_unstable();
                parts.dedup();
                return Ok(Some(parts));
            }
        }
        Ok(None)
    }

    /// The lease of `partitions` moved on without us noticing: stop handling
    /// them now; the coordinator sorts out the rest at its next heartbeat.
    fn lease_lost(&self, partitions: &[u32]) {
        let now = Instant::now();
        let mut st = self.lock();
        for p in partitions {
            if let Some(o) = st.owned.get_mut(p) {
                o.lease.valid_until = o.lease.valid_until.min(now);
            }
        }
        drop(st);
        tracing::warn!(topic = %self.spec.name, group = %self.s.group, ?partitions,
            "a read was refused: the partition's lease moved on");
        self.wake.changed.notify_waiters();
    }

    /// Before re-reading our pending entries after a failed read: a read
    /// that timed out may still be on its way to Redis (its bytes sent on a
    /// connection we gave up on), and would deliver entries after we looked.
    /// Our fenced reads run under a `WATCH` of the lease taken before they
    /// were sent, so writing the lease now (a counter beside owner and
    /// epoch, a fresh value each time) makes such a read's `EXEC` do nothing
    /// if it comes later; if it came sooner, the re-read (after this write,
    /// on the same connection) sees what it delivered. On a cluster the read
    /// is a script that carries the fence we last wrote, so such a read
    /// finds a newer one and reads nothing.
    pub(super) async fn fence_lease(&self, held: Held) -> Result<()> {
        let fence = self
            .catalog
            .store()
            .lease_fence(self.leases(), held.partition)
            .await?;
        if let Some(o) = self.lock().owned.get_mut(&held.partition)
            && o.epoch == held.epoch
        {
            o.lease.fence = fence;
        }
        Ok(())
    }
}

impl Rt<Shared> {
    /// Shared mode: every member reads every partition; no lease to fence by.
    pub(super) async fn read_shared(
        &self,
        tx: &mpsc::Sender<Vec<Delivery>>,
        read: &[Held],
        parts: &[u32],
    ) -> Result<()> {
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let count = self.s.batch;
        let sources = self.sources(parts);
        // New messages: lane 0 first, then the next lanes, then retries;
        // the next tier only while fewer than `count` came.
        let tiers = (0..self.spec.lanes)
            .map(Some)
            .chain(std::iter::once(None::<u8>));
        let mut got = Vec::new();
        for tier in tiers {
            let srcs: Vec<Source> = sources
                .iter()
                .filter(|s| match tier {
                    Some(lane) => !s.retry && s.lane == lane,
                    None => s.retry,
                })
                .cloned()
                .collect();
            got.extend(
                read_new(
                    &self.catalog,
                    topic,
                    group,
                    me,
                    &srcs,
                    count,
                    None,
                    &self.conns.held,
                )
                .await?,
            );
            if got.len() >= count {
                break;
            }
        }
        if got.is_empty() {
            got = read_new(
                &self.catalog,
                topic,
                group,
                me,
                &sources,
                count,
                Some(self.s.block),
                &self.conns.held,
            )
            .await?;
        }
        if !got.is_empty() {
            let got = got.into_iter().map(|f| (f, Resumed::default())).collect();
            self.send(tx, got, read).await;
        }
        Ok(())
    }
}
