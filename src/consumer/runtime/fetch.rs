//! The fetcher: reads the partitions this member owns (lanes in priority
//! order, then the group's retry stream), takes over pending entries with
//! their attempt counts, and hands deliveries to the dispatcher.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Delivery, Held, RETRY_SRC, Rt};
use crate::consumer::read::{
    FencedPart, Fetched, Source, claim, deliveries, own_pending, read_fenced, read_new,
    wait_for_new,
};
use crate::duration::Doubling;
use crate::envelope::{StreamId, meta};
use crate::error::Result;
use crate::group::Mode;

/// A failure recorded in the group's attempts hash (ordered mode).
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
pub(super) struct Recorded {
    /// Failed attempts so far.
    pub n: u32,
    /// Not before this Redis time (ms).
    pub due: u64,
    /// The last error.
    pub err: String,
}

/// Attempt metadata of a message taken over from another (or an earlier)
/// consumer.
#[derive(Debug, Default)]
struct Resumed {
    attempt: u32,
    due_ms: Option<u64>,
    last_error: Option<String>,
}

impl Rt {
    /// The streams of `partitions`: every lane, then the group's retry stream.
    pub(super) fn sources(&self, partitions: &[u32]) -> Vec<Source> {
        let keys = self.client.keys();
        let mut out = Vec::new();
        for lane in 0..self.spec.lanes {
            for &p in partitions {
                out.push(Source {
                    partition: p,
                    lane,
                    key: keys.stream(&self.spec.name, p, lane),
                    retry: false,
                });
            }
        }
        for &p in partitions {
            out.push(Source {
                partition: p,
                lane: 0,
                key: keys.retry_stream(&self.spec.name, p, &self.s.group),
                retry: true,
            });
        }
        out
    }

    /// Marks partitions as being read; returns readable ones, those whose
    /// pending entries must be claimed first, and those (among the readable)
    /// whose own pending entries must be read again first.
    fn begin_read(&self) -> (Vec<Held>, Vec<Held>, Vec<Held>) {
        let now = Instant::now();
        let mut st = self.lock();
        let mut read = Vec::new();
        let mut to_claim = Vec::new();
        let mut to_resync = Vec::new();
        for (p, o) in st.owned.iter_mut() {
            if o.draining || o.valid_until <= now {
                continue;
            }
            o.reading += 1;
            if !o.claimed {
                to_claim.push((*p, o.epoch));
                continue;
            }
            if o.resync {
                to_resync.push((*p, o.epoch));
            }
            read.push((*p, o.epoch));
        }
        (read, to_claim, to_resync)
    }

    /// After a failed read: the partitions it covered must re-read their own
    /// pending entries before reading new ones.
    fn mark_resync(&self, parts: &[Held]) {
        let mut st = self.lock();
        for (p, epoch) in parts {
            if let Some(o) = st.owned.get_mut(p)
                && o.epoch == *epoch
            {
                o.resync = true;
            }
        }
    }

    fn end_read(&self, parts: &[Held]) {
        let mut st = self.lock();
        for (p, epoch) in parts {
            if let Some(o) = st.owned.get_mut(p)
                && o.epoch == *epoch
            {
                o.reading -= 1;
            }
        }
    }

    pub(super) async fn fetch_loop(self: Arc<Self>, tx: mpsc::Sender<Vec<Delivery>>) {
        let high_water = self.s.concurrency + self.s.batch;
        let sweep_every = match self.s.mode {
            Mode::Shared => self.s.visibility_timeout / 2,
            Mode::Ordered => (self.s.session_timeout * 2).max(self.s.visibility_timeout),
        };
        let mut last_sweep = Instant::now();
        let mut backoff = Doubling::new(Duration::from_millis(50), Duration::from_secs(2));
        // Partitions a wait saw new entries on: the next read covers only
        // them, so a message arriving on an idle member is read at once.
        let mut woken: Option<Vec<u32>> = None;
        loop {
            if self.stop_reading.is_cancelled() || self.killed.is_cancelled() {
                return;
            }
            // Backpressure: wait for room before reading more.
            while self.buffered.load(Ordering::SeqCst) >= high_water {
                let space = self.space.notified();
                if self.buffered.load(Ordering::SeqCst) < high_water {
                    break;
                }
                tokio::select! {
                    _ = space => {}
                    _ = self.stop_reading.cancelled() => return,
                    _ = tokio::time::sleep(self.s.block) => {}
                }
            }
            let changed = self.changed.notified();
            if self.paused.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = changed => {}
                    _ = self.stop_reading.cancelled() => return,
                    _ = tokio::time::sleep(self.s.block) => {}
                }
                continue;
            }
            let (read, to_claim, to_resync) = self.begin_read();
            let all: Vec<Held> = read.iter().chain(&to_claim).copied().collect();
            if all.is_empty() {
                tokio::select! {
                    _ = changed => {}
                    _ = self.stop_reading.cancelled() => return,
                    _ = tokio::time::sleep(self.s.block) => {}
                }
                continue;
            }
            let sweep = last_sweep.elapsed() >= sweep_every;
            let result = self
                .fetch_once(&tx, &read, &to_claim, &to_resync, sweep, woken.take())
                .await;
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
                    self.mark_resync(&read);
                    tokio::select! {
                        _ = self.stop_reading.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                }
            }
        }
    }

    async fn fetch_once(
        &self,
        tx: &mpsc::Sender<Vec<Delivery>>,
        read: &[Held],
        to_claim: &[Held],
        to_resync: &[Held],
        sweep: bool,
        woken: Option<Vec<u32>>,
    ) -> Result<Option<Vec<u32>>> {
        // A new owner first takes over the partition's pending entries.
        for &(p, epoch) in to_claim {
            let mut got = Vec::new();
            for src in self.sources(&[p]) {
                got.extend(self.take_over(&src, Duration::ZERO, usize::MAX).await?);
            }
            {
                let mut st = self.lock();
                match st.owned.get_mut(&p) {
                    Some(o) if o.epoch == epoch => o.claimed = true,
                    _ => continue,
                }
            }
            self.send(tx, got, &[(p, epoch)]).await;
        }
        // After a lost reply, what we were delivered unseen comes first.
        for &(p, epoch) in to_resync {
            self.fence_stale_reads(p, epoch).await?;
            let mut got = Vec::new();
            for src in self.sources(&[p]) {
                got.extend(self.recover_own(&src, epoch).await?);
            }
            {
                let mut st = self.lock();
                match st.owned.get_mut(&p) {
                    Some(o) if o.epoch == epoch => o.resync = false,
                    _ => continue,
                }
            }
            if !got.is_empty() {
                tracing::info!(topic = %self.spec.name, group = %self.s.group, partition = p,
                    count = got.len(), "re-read entries delivered by a read whose reply was lost");
            }
            self.send(tx, got, &[(p, epoch)]).await;
        }
        let parts: Vec<u32> = read.iter().map(|r| r.0).collect();
        if parts.is_empty() {
            return Ok(None);
        }
        // Safety net: entries stranded in a pending list (a read that raced a
        // lease change) or, in shared mode, held past the visibility timeout
        // by a member that died.
        if sweep {
            let idle = match self.s.mode {
                Mode::Shared => self.s.visibility_timeout,
                Mode::Ordered => (self.s.session_timeout * 2).max(self.s.visibility_timeout),
            };
            for src in self.sources(&parts) {
                let got = self.take_over(&src, idle, 1000).await?;
                if !got.is_empty() {
                    self.send(tx, got, read).await;
                }
            }
        }
        match self.s.mode {
            Mode::Ordered => match woken {
                Some(w) => {
                    let only: Vec<Held> = read
                        .iter()
                        .filter(|(p, _)| w.contains(p))
                        .copied()
                        .collect();
                    self.read_owned(tx, &only).await
                }
                None => self.read_owned(tx, read).await,
            },
            Mode::Shared => self.read_shared(tx, read, &parts).await.map(|()| None),
        }
    }

    /// Ordered mode: new messages of the partitions we own, each read fenced
    /// by its lease; when there is nothing, a wait for anything newer, which
    /// returns the partitions it saw new entries on.
    async fn read_owned(
        &self,
        tx: &mpsc::Sender<Vec<Delivery>>,
        read: &[Held],
    ) -> Result<Option<Vec<u32>>> {
        if read.is_empty() {
            return Ok(None);
        }
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let keys = self.client.keys();
        let sources: Vec<Vec<Source>> = read.iter().map(|(p, _)| self.sources(&[*p])).collect();
        let cluster = self.client.connection().is_cluster();
        // Only the cluster's script read carries the fence (on a single
        // server a WATCH of the lease does that job).
        let parts: Vec<FencedPart<'_>> = {
            let st = cluster.then(|| self.lock());
            read.iter()
                .zip(&sources)
                .map(|((p, epoch), srcs)| FencedPart {
                    partition: *p,
                    epoch: *epoch,
                    fence: st
                        .as_ref()
                        .and_then(|st| st.owned.get(p))
                        .map(|o| o.fence.clone())
                        .unwrap_or_default(),
                    lease: keys.lease(topic, *p, group),
                    sources: srcs.iter().collect(),
                })
                .collect()
        };
        let got = if cluster {
            read_fenced(&self.client, topic, group, me, &parts, self.s.batch).await?
        } else {
            let mut reader = self.watched.lock().await;
            reader
                .read(&self.client, topic, group, me, &parts, self.s.batch)
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
                    &self.client,
                    &got.idle,
                    &partition_of,
                    self.s.block,
                    &self.held_conns,
                )
                .await?
            } else {
                let mut reader = self.watched.lock().await;
                reader.wait(&self.client, &got.idle, self.s.block).await?
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
                o.valid_until = o.valid_until.min(now);
            }
        }
        drop(st);
        tracing::warn!(topic = %self.spec.name, group = %self.s.group, ?partitions,
            "a read was refused: the partition's lease moved on");
        self.changed.notify_waiters();
    }

    /// Shared mode: every member reads every partition; no lease to fence by.
    async fn read_shared(
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
                    &self.client,
                    topic,
                    group,
                    me,
                    &srcs,
                    count,
                    None,
                    &self.held_conns,
                )
                .await?,
            );
            if got.len() >= count {
                break;
            }
        }
        if got.is_empty() {
            got = read_new(
                &self.client,
                topic,
                group,
                me,
                &sources,
                count,
                Some(self.s.block),
                &self.held_conns,
            )
            .await?;
        }
        if !got.is_empty() {
            let got = got.into_iter().map(|f| (f, Resumed::default())).collect();
            self.send(tx, got, read).await;
        }
        Ok(())
    }

    /// Claims pending entries of `src` idle at least `min_idle`, with their
    /// attempt counts (delivery counts, and recorded failures in ordered mode).
    async fn take_over(
        &self,
        src: &Source,
        min_idle: Duration,
        limit: usize,
    ) -> Result<Vec<(Fetched, Resumed)>> {
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let claimed = claim(&self.client, topic, group, me, src, min_idle, limit).await?;
        self.note_trimmed(claimed.trimmed, src.partition);
        if claimed.messages.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<StreamId> = claimed.messages.iter().map(|f| f.msg.id).collect();
        let delivered = deliveries(&self.client, group, me, src, &ids).await?;
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

    /// Before re-reading our pending entries after a failed read: a read
    /// that timed out may still be on its way to Redis (its bytes sent on a
    /// connection we gave up on), and would deliver entries after we looked.
    /// Our fenced reads run under a `WATCH` of the lease taken before they
    /// were sent, so writing the lease now (a counter beside owner and
    /// epoch, a fresh value each time) makes such a read's `EXEC` do nothing if it comes later; if it
    /// came sooner, the re-read (after this write, on the same connection)
    /// sees what it delivered. On a cluster the read is a script that
    /// carries the fence we last wrote, so such a read finds a newer one and
    /// reads nothing.
    async fn fence_stale_reads(&self, p: u32, epoch: u64) -> Result<()> {
        if self.s.mode != Mode::Ordered {
            return Ok(());
        }
        let lease = self.client.keys().lease(&self.spec.name, p, &self.s.group);
        let fence = crate::store::publish::unique_nonce().to_string();
        let _: i64 = redis::cmd("HSET")
            .arg(lease)
            .arg("fence")
            .arg(&fence)
            .query_async(&mut self.client.connection())
            .await?;
        if let Some(o) = self.lock().owned.get_mut(&p)
            && o.epoch == epoch
        {
            o.fence = fence;
        }
        Ok(())
    }

    /// Our own pending entries of `src` not in flight here at `epoch`: ones a
    /// read delivered whose reply was lost. Reading them does not count as a
    /// delivery, so their attempt is what it was.
    async fn recover_own(&self, src: &Source, epoch: u64) -> Result<Vec<(Fetched, Resumed)>> {
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let code = if src.retry { RETRY_SRC } else { src.lane };
        let known: std::collections::HashSet<StreamId> = self
            .lock()
            .in_flight_ids
            .iter()
            .filter(|(p, s, _, e)| *p == src.partition && *s == code && *e == epoch)
            .map(|(_, _, id, _)| *id)
            .collect();
        let (got, trimmed) = own_pending(&self.client, topic, group, me, src, |id| {
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
    ) -> Result<HashMap<StreamId, Recorded>> {
        if self.s.mode != Mode::Ordered || src.retry || ids.is_empty() {
            return Ok(HashMap::new());
        }
        let key = self
            .client
            .keys()
            .attempts(&self.spec.name, src.partition, &self.s.group);
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&key)
            .arg(ids.iter().map(ToString::to_string).collect::<Vec<_>>())
            .query_async(&mut self.client.connection())
            .await?;
        Ok(ids
            .iter()
            .zip(raw)
            .filter_map(|(id, r)| Some((*id, serde_json::from_str(&r?).ok()?)))
            .collect())
    }

    fn note_trimmed(&self, n: usize, partition: u32) {
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
                let Some(&(_, epoch)) = epochs.iter().find(|(p, _)| *p == msg.partition) else {
                    continue;
                };
                let ours = st
                    .owned
                    .get(&msg.partition)
                    .is_some_and(|o| o.epoch == epoch);
                let src = if retry { RETRY_SRC } else { msg.lane };
                if !ours || !st.in_flight_ids.insert((msg.partition, src, msg.id, epoch)) {
                    continue;
                }
                if let Some(o) = st.owned.get_mut(&msg.partition) {
                    o.in_flight += 1;
                }
                let mut attempt = resumed.attempt.max(1);
                let mut origin = None;
                if retry {
                    // Retry-stream entries say which attempt they are and
                    // where they came from; the handler sees the message as
                    // it was published.
                    let take = |m: &mut crate::envelope::Message, h: &str| m.headers.remove(h);
                    if let Some(l) = take(&mut msg, meta::LANE).and_then(|l| l.parse().ok()) {
                        msg.lane = l;
                    }
                    if let Some(a) =
                        take(&mut msg, meta::ATTEMPTS).and_then(|a| a.parse::<u32>().ok())
                    {
                        attempt = a + resumed.attempt.saturating_sub(1);
                    }
                    origin = take(&mut msg, meta::ORIGIN_ID).filter(|o| !o.is_empty());
                }
                out.push(Delivery {
                    msg,
                    epoch,
                    src,
                    attempt,
                    origin,
                    due_ms: resumed.due_ms,
                    last_error: resumed.last_error,
                });
            }
            out
        };
        self.in_flight.fetch_add(batch.len(), Ordering::SeqCst);
        self.buffered.fetch_add(batch.len(), Ordering::SeqCst);
        if batch.is_empty() {
            return;
        }
        if let Err(mpsc::error::SendError(batch)) = tx.send(batch).await {
            for d in batch {
                self.done(d.msg.partition, d.src, d.msg.id, d.epoch);
                self.unbuffer();
            }
        }
    }
}
