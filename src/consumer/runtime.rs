//! One topic's share of a running worker: four tasks around a small state.
//!
//! - The coordinator heartbeats, keeps the group's target assignment up to
//!   date (sticky, compare-and-set), and in ordered mode acquires, renews,
//!   drains and releases partition leases. A lease whose renewal did not
//!   succeed in time is dropped locally before it can expire in Redis.
//! - The fetcher reads owned partitions (lane 0 first; blocking only when
//!   idle), first taking over a newly owned partition's pending entries, and
//!   hands messages to the dispatcher. It never reads a partition being
//!   drained, and a partition is released only when no read that included
//!   it is in progress and nothing of it is in flight.
//! - The dispatcher runs handlers under the worker's concurrency limit,
//!   keeping messages of one key in order (ordered mode).
//! - The acker acks in batches: through the fenced `ack` script in ordered
//!   mode, plain `XACK` in shared mode.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dispatch::KeyOrder;
use super::handler::{Context, RawHandler};
use super::read::{Source, claim, read_new};
use super::{WorkerSettings, WorkerStats};
use crate::client::{Client, check};
use crate::envelope::{Message, StreamId};
use crate::error::Result;
use crate::group::assignment::{partitions_of, rebalance};
use crate::group::{Lease, Mode};
use crate::topic::TopicSpec;

/// A partition this member owns (or, in shared mode, reads).
#[derive(Debug)]
struct Owned {
    epoch: u64,
    /// Stop handling after this instant unless a renewal succeeds first.
    valid_until: Instant,
    /// Assigned elsewhere now: no more reads; release once idle.
    draining: bool,
    /// Pending entries taken over since the lease was acquired.
    claimed: bool,
    /// Messages delivered and not yet acked or abandoned.
    in_flight: usize,
    /// Reads in progress that include this partition.
    reading: usize,
}

#[derive(Debug, Default)]
struct State {
    owned: BTreeMap<u32, Owned>,
    /// (partition, lane, id, epoch) of every message delivered and not yet
    /// done. The epoch is part of it: after a partition comes back with a
    /// new epoch, its pending entries must be delivered again even if stale
    /// copies still wait in the dispatcher (they will be dropped there).
    in_flight_ids: HashSet<(u32, u8, StreamId, u64)>,
    shutting_down: bool,
}

/// A partition and the lease epoch it is held at.
type Held = (u32, u64);

/// Ids to ack, per (partition, lane, epoch).
type AckGroup = ((u32, u8, u64), Vec<StreamId>);

struct Delivery {
    msg: Message,
    epoch: u64,
}

struct Done {
    partition: u32,
    key: Option<String>,
}

struct AckReq {
    partition: u32,
    lane: u8,
    epoch: u64,
    id: StreamId,
}

struct Rt {
    client: Client,
    spec: Arc<TopicSpec>,
    s: Arc<WorkerSettings>,
    handler: RawHandler,
    workers: Arc<Semaphore>,
    stats: Arc<WorkerStats>,
    state: Mutex<State>,
    /// Ownership changed (the fetcher re-plans).
    changed: Notify,
    /// Messages delivered and not yet done, over all partitions.
    in_flight: AtomicUsize,
    idle: Notify,
    /// Messages fetched and not yet finished by a handler (read backpressure).
    buffered: AtomicUsize,
    space: Notify,
    stop_reading: CancellationToken,
    stop_coord: CancellationToken,
    killed: CancellationToken,
}

/// A topic's runtime inside a worker.
pub(crate) struct TopicRuntime {
    rt: Arc<Rt>,
    coordinator: JoinHandle<()>,
    fetcher: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
    acker: JoinHandle<()>,
}

impl TopicRuntime {
    pub(crate) async fn start(
        client: Client,
        spec: Arc<TopicSpec>,
        s: Arc<WorkerSettings>,
        handler: RawHandler,
        workers: Arc<Semaphore>,
        stats: Arc<WorkerStats>,
        killed: CancellationToken,
    ) -> Result<TopicRuntime> {
        let mut state = State::default();
        if s.mode == Mode::Shared {
            let forever = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
            for p in 0..spec.partitions {
                state.owned.insert(
                    p,
                    Owned {
                        epoch: 0,
                        valid_until: forever,
                        draining: false,
                        claimed: true,
                        in_flight: 0,
                        reading: 0,
                    },
                );
            }
        }
        let rt = Arc::new(Rt {
            client,
            spec,
            s,
            handler,
            workers,
            stats,
            state: Mutex::new(state),
            changed: Notify::new(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            buffered: AtomicUsize::new(0),
            space: Notify::new(),
            stop_reading: CancellationToken::new(),
            stop_coord: CancellationToken::new(),
            killed,
        });
        // Join before returning, so the caller knows it is a member.
        rt.coordinate().await?;
        let (deliver_tx, deliver_rx) = mpsc::channel(16);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        Ok(TopicRuntime {
            coordinator: tokio::spawn(rt.clone().coordinator_loop()),
            fetcher: tokio::spawn(rt.clone().fetch_loop(deliver_tx)),
            dispatcher: tokio::spawn(rt.clone().dispatch_loop(deliver_rx, ack_tx)),
            acker: tokio::spawn(rt.clone().ack_loop(ack_rx)),
            rt,
        })
    }

    pub(crate) fn topic(&self) -> &str {
        &self.rt.spec.name
    }

    pub(crate) fn owned(&self) -> Vec<u32> {
        self.rt.lock().owned.keys().copied().collect()
    }

    pub(crate) fn stop_reading(&self) {
        self.rt.lock().shutting_down = true;
        self.rt.stop_reading.cancel();
        self.rt.space.notify_waiters();
    }

    /// Waits until nothing is in flight, or the deadline.
    pub(crate) async fn drain(&self, deadline: tokio::time::Instant) {
        loop {
            let idle = self.rt.idle.notified();
            if self.rt.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Ends the tasks in order, releases leases and leaves the group.
    pub(crate) async fn finish(self) -> Result<()> {
        let rt = self.rt;
        if rt.in_flight.load(Ordering::SeqCst) > 0 {
            tracing::warn!(
                topic = %rt.spec.name,
                in_flight = rt.in_flight.load(Ordering::SeqCst),
                "drain timeout: abandoning in-flight messages (they stay pending)"
            );
            rt.killed.cancel();
        }
        let _ = self.fetcher.await;
        let _ = self.dispatcher.await;
        let _ = self.acker.await;
        rt.stop_coord.cancel();
        let _ = self.coordinator.await;
        let held: Vec<(u32, u64)> = rt.lock().owned.iter().map(|(p, o)| (*p, o.epoch)).collect();
        if rt.s.mode == Mode::Ordered && !held.is_empty() {
            rt.client
                .lease_release(&rt.spec.name, &rt.s.group, &rt.s.member, &held)
                .await?;
            tracing::info!(topic = %rt.spec.name, group = %rt.s.group, released = ?held.iter().map(|h| h.0).collect::<Vec<_>>(), "released partitions");
        }
        rt.lock().owned.clear();
        rt.client
            .group_heartbeat(
                &rt.spec.name,
                &rt.s.group,
                &rt.s.member,
                rt.s.session_timeout,
                rt.s.is_static,
                true,
            )
            .await?;
        Ok(())
    }

    pub(crate) fn abort(self) {
        self.rt.killed.cancel();
        self.coordinator.abort();
        self.fetcher.abort();
        self.dispatcher.abort();
        self.acker.abort();
    }
}

impl Rt {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock is a bug in this module; the
        // state stays usable (every update is a few assignments).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease_margin(&self) -> Duration {
        // Stop a little before Redis would expire the lease, so two members
        // never handle a partition at once even with some clock-rate drift.
        self.s.session_timeout / 5
    }

    /// One heartbeat: membership, assignment, leases.
    async fn coordinate(&self) -> Result<()> {
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let hb = self
            .client
            .group_heartbeat(
                topic,
                group,
                me,
                self.s.session_timeout,
                self.s.is_static,
                false,
            )
            .await?;
        if self.s.mode == Mode::Shared {
            return Ok(());
        }
        let mut assignment = hb.assignment.clone();
        let target = rebalance(self.spec.partitions, &hb.members, &hb.assignment);
        if target != hb.assignment
            && self
                .client
                .group_assign(topic, group, hb.version, &target)
                .await?
                .is_some()
        {
            assignment = target;
        }
        let mine: BTreeSet<u32> = partitions_of(&assignment, me).into_iter().collect();

        let now = Instant::now();
        let (renew, release, acquire, lost) = {
            let mut st = self.lock();
            let lost: Vec<u32> = st
                .owned
                .iter()
                .filter(|(_, o)| o.valid_until <= now)
                .map(|(p, _)| *p)
                .collect();
            for p in &lost {
                st.owned.remove(p);
            }
            for (p, o) in st.owned.iter_mut() {
                if !mine.contains(p) && !o.draining {
                    tracing::debug!(topic = %topic, member = %me, partition = p, "draining");
                    o.draining = true;
                }
            }
            let release: Vec<(u32, u64)> = st
                .owned
                .iter()
                .filter(|(_, o)| o.draining && o.in_flight == 0 && o.reading == 0)
                .map(|(p, o)| (*p, o.epoch))
                .collect();
            let renew: Vec<(u32, u64)> = st
                .owned
                .iter()
                .filter(|(p, _)| !release.iter().any(|r| r.0 == **p))
                .map(|(p, o)| (*p, o.epoch))
                .collect();
            let acquire: Vec<(u32, u64)> = if st.shutting_down {
                Vec::new()
            } else {
                mine.iter()
                    .filter(|p| !st.owned.contains_key(p))
                    .map(|p| (*p, 0))
                    .collect()
            };
            (renew, release, acquire, lost)
        };
        if !lost.is_empty() {
            tracing::warn!(topic = %topic, group = %group, member = %me, partitions = ?lost,
                "lease not renewed in time: stopped handling these partitions");
        }
        let ttl = self.s.session_timeout;
        let sent = Instant::now();
        let mut gained = Vec::new();
        let mut dropped = lost.clone();
        if !renew.is_empty() {
            let results = self
                .client
                .lease_renew(topic, group, me, ttl, &renew)
                .await?;
            let mut st = self.lock();
            for (p, ok) in results {
                let epoch = renew.iter().find(|r| r.0 == p).map(|r| r.1);
                if let Some(o) = st.owned.get_mut(&p)
                    && Some(o.epoch) == epoch
                {
                    if ok {
                        o.valid_until = sent + ttl - self.lease_margin();
                    } else {
                        st.owned.remove(&p);
                        dropped.push(p);
                    }
                }
            }
        }
        if !release.is_empty() {
            self.client
                .lease_release(topic, group, me, &release)
                .await?;
            let mut st = self.lock();
            for (p, epoch) in &release {
                if st.owned.get(p).is_some_and(|o| o.epoch == *epoch) {
                    st.owned.remove(p);
                    dropped.push(*p);
                }
            }
        }
        if !acquire.is_empty() {
            let results = self
                .client
                .lease_acquire(topic, group, me, ttl, &acquire)
                .await?;
            let mut st = self.lock();
            for (p, r) in results {
                if let Ok(Lease::Held(epoch)) = r
                    && !st.shutting_down
                {
                    st.owned.insert(
                        p,
                        Owned {
                            epoch,
                            valid_until: sent + ttl - self.lease_margin(),
                            draining: false,
                            claimed: false,
                            in_flight: 0,
                            reading: 0,
                        },
                    );
                    gained.push(p);
                }
            }
        }
        if !gained.is_empty() || !dropped.is_empty() {
            self.stats
                .rebalances
                .fetch_add((gained.len() + dropped.len()) as u64, Ordering::Relaxed);
            let owned: Vec<u32> = self.lock().owned.keys().copied().collect();
            tracing::info!(topic = %topic, group = %group, member = %me,
                gained = ?gained, lost = ?dropped, owned = ?owned, "rebalance");
            self.changed.notify_waiters();
        }
        Ok(())
    }

    async fn coordinator_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.stop_coord.cancelled() => return,
                _ = self.killed.cancelled() => return,
                _ = tokio::time::sleep(self.s.heartbeat_interval) => {}
            }
            if let Err(e) = self.coordinate().await {
                tracing::warn!(topic = %self.spec.name, group = %self.s.group, error = %e, "heartbeat failed");
                // Without renewals, leases run out locally all the same.
                let now = Instant::now();
                let mut st = self.lock();
                let before = st.owned.len();
                st.owned.retain(|_, o| o.valid_until > now);
                if st.owned.len() != before {
                    drop(st);
                    self.changed.notify_waiters();
                }
            }
        }
    }

    fn sources(&self, partitions: &[u32]) -> Vec<Source> {
        let keys = self.client.keys();
        let mut out = Vec::new();
        for lane in 0..self.spec.lanes {
            for &p in partitions {
                out.push(Source {
                    partition: p,
                    lane,
                    key: keys.stream(&self.spec.name, p, lane),
                });
            }
        }
        out
    }

    /// Marks partitions as being read; returns (partition, epoch) of readable
    /// ones and of those whose pending entries must be claimed first.
    fn begin_read(&self) -> (Vec<Held>, Vec<Held>) {
        let now = Instant::now();
        let mut st = self.lock();
        let mut read = Vec::new();
        let mut to_claim = Vec::new();
        for (p, o) in st.owned.iter_mut() {
            if o.draining || o.valid_until <= now {
                continue;
            }
            o.reading += 1;
            if o.claimed {
                read.push((*p, o.epoch));
            } else {
                to_claim.push((*p, o.epoch));
            }
        }
        (read, to_claim)
    }

    fn end_read(&self, parts: &[(u32, u64)]) {
        let mut st = self.lock();
        for (p, epoch) in parts {
            if let Some(o) = st.owned.get_mut(p)
                && o.epoch == *epoch
            {
                o.reading -= 1;
            }
        }
    }

    /// Counts messages in flight (skipping ids already in flight here) and
    /// turns them into deliveries; messages of partitions no longer ours at
    /// that epoch are left pending for their new owner.
    fn admit(&self, msgs: Vec<Message>, epochs: &[(u32, u64)]) -> Vec<Delivery> {
        let mut st = self.lock();
        let mut out = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let Some(&(_, epoch)) = epochs.iter().find(|(p, _)| *p == msg.partition) else {
                continue;
            };
            let ours = st
                .owned
                .get(&msg.partition)
                .is_some_and(|o| o.epoch == epoch);
            if !ours
                || !st
                    .in_flight_ids
                    .insert((msg.partition, msg.lane, msg.id, epoch))
            {
                continue;
            }
            if let Some(o) = st.owned.get_mut(&msg.partition) {
                o.in_flight += 1;
            }
            out.push(Delivery { msg, epoch });
        }
        self.in_flight.fetch_add(out.len(), Ordering::SeqCst);
        self.buffered.fetch_add(out.len(), Ordering::SeqCst);
        out
    }

    /// A delivered message is done: acked, or abandoned.
    fn done(&self, partition: u32, lane: u8, id: StreamId, epoch: u64) {
        let mut st = self.lock();
        if st.in_flight_ids.remove(&(partition, lane, id, epoch)) {
            if let Some(o) = st.owned.get_mut(&partition)
                && o.epoch == epoch
            {
                o.in_flight = o.in_flight.saturating_sub(1);
            }
            drop(st);
            if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.idle.notify_waiters();
            }
        }
    }

    /// A handler finished (or a delivery was dropped): room for more reads.
    fn unbuffer(&self) {
        self.buffered.fetch_sub(1, Ordering::SeqCst);
        self.space.notify_one();
    }

    /// Whether messages of `partition` delivered at `epoch` may still be
    /// handled: ours at that epoch, not draining, and the lease not run out
    /// locally (checked here too, so a stalled coordinator cannot extend it).
    fn is_current(&self, partition: u32, epoch: u64) -> bool {
        let now = Instant::now();
        self.lock()
            .owned
            .get(&partition)
            .is_some_and(|o| o.epoch == epoch && !o.draining && o.valid_until > now)
            || (self.s.mode == Mode::Shared && !self.killed.is_cancelled())
    }

    async fn fetch_loop(self: Arc<Self>, tx: mpsc::Sender<Vec<Delivery>>) {
        let high_water = self.s.concurrency + self.s.batch;
        let sweep_every = match self.s.mode {
            Mode::Shared => self.s.visibility_timeout / 2,
            Mode::Ordered => (self.s.session_timeout * 2).max(self.s.visibility_timeout),
        };
        let mut last_sweep = Instant::now();
        let mut backoff = Duration::from_millis(50);
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
            let (read, to_claim) = self.begin_read();
            let all: Vec<(u32, u64)> = read.iter().chain(&to_claim).copied().collect();
            if all.is_empty() {
                tokio::select! {
                    _ = changed => {}
                    _ = self.stop_reading.cancelled() => return,
                    _ = tokio::time::sleep(self.s.block) => {}
                }
                continue;
            }
            let sweep = last_sweep.elapsed() >= sweep_every;
            let result = self.fetch_once(&tx, &read, &to_claim, sweep).await;
            self.end_read(&all);
            match result {
                Ok(()) => {
                    backoff = Duration::from_millis(50);
                    if sweep {
                        last_sweep = Instant::now();
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %self.spec.name, group = %self.s.group, error = %e, "read failed; retrying");
                    tokio::select! {
                        _ = self.stop_reading.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn fetch_once(
        &self,
        tx: &mpsc::Sender<Vec<Delivery>>,
        read: &[(u32, u64)],
        to_claim: &[(u32, u64)],
        sweep: bool,
    ) -> Result<()> {
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        // A new owner first takes over the partition's pending entries.
        for &(p, epoch) in to_claim {
            let mut msgs = Vec::new();
            for src in self.sources(&[p]) {
                let claimed = claim(
                    &self.client,
                    topic,
                    group,
                    me,
                    &src,
                    Duration::ZERO,
                    usize::MAX,
                )
                .await?;
                self.note_trimmed(claimed.trimmed, p);
                msgs.extend(claimed.messages);
            }
            {
                let mut st = self.lock();
                match st.owned.get_mut(&p) {
                    Some(o) if o.epoch == epoch => o.claimed = true,
                    _ => continue,
                }
            }
            self.send(tx, msgs, &[(p, epoch)]).await;
        }
        let parts: Vec<u32> = read.iter().map(|r| r.0).collect();
        if parts.is_empty() {
            return Ok(());
        }
        // Safety net: entries stranded in a PEL (a read that raced a lease
        // change) or, in shared mode, held past the visibility timeout by a
        // member that died.
        if sweep {
            let idle = match self.s.mode {
                Mode::Shared => self.s.visibility_timeout,
                Mode::Ordered => (self.s.session_timeout * 2).max(self.s.visibility_timeout),
            };
            for src in self.sources(&parts) {
                let claimed = claim(&self.client, topic, group, me, &src, idle, 1000).await?;
                self.note_trimmed(claimed.trimmed, src.partition);
                if !claimed.messages.is_empty() {
                    self.send(tx, claimed.messages, read).await;
                }
            }
        }
        // New messages, lane 0 first.
        let count = self.s.batch;
        let mut got = Vec::new();
        for lane in 0..self.spec.lanes {
            let srcs: Vec<Source> = self
                .sources(&parts)
                .into_iter()
                .filter(|s| s.lane == lane)
                .collect();
            got.extend(read_new(&self.client, topic, group, me, &srcs, count, None).await?);
            if got.len() >= count {
                break;
            }
        }
        if got.is_empty() {
            let srcs = self.sources(&parts);
            got = read_new(
                &self.client,
                topic,
                group,
                me,
                &srcs,
                count,
                Some(self.s.block),
            )
            .await?;
        }
        tracing::trace!(topic = %topic, member = %me, partitions = ?parts, got = got.len(), "read");
        if !got.is_empty() {
            self.send(tx, got, read).await;
        }
        Ok(())
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

    async fn send(
        &self,
        tx: &mpsc::Sender<Vec<Delivery>>,
        msgs: Vec<Message>,
        epochs: &[(u32, u64)],
    ) {
        let batch = self.admit(msgs, epochs);
        if batch.is_empty() {
            return;
        }
        if let Err(mpsc::error::SendError(batch)) = tx.send(batch).await {
            for d in batch {
                self.done(d.msg.partition, d.msg.lane, d.msg.id, d.epoch);
                self.unbuffer();
            }
        }
    }

    async fn dispatch_loop(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Vec<Delivery>>,
        ack_tx: mpsc::UnboundedSender<AckReq>,
    ) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut order: KeyOrder<Delivery> = KeyOrder::default();
        let mut ready: VecDeque<Delivery> = VecDeque::new();
        let mut running = 0usize;
        let mut open = true;
        let ordered = self.s.mode == Mode::Ordered;
        loop {
            if !open && running == 0 && ready.is_empty() {
                return;
            }
            tokio::select! {
                batch = rx.recv(), if open => match batch {
                    Some(batch) => {
                        for d in batch {
                            let key = if ordered { d.msg.key.clone() } else { None };
                            if let Some(d) = order.offer(d.msg.partition, key.as_deref(), d) {
                                ready.push_back(d);
                            }
                        }
                    }
                    None => open = false,
                },
                Some(done) = done_rx.recv() => {
                    running -= 1;
                    // Start the next of this key, dropping any whose
                    // partition is no longer ours (it stays pending).
                    while let Some(next) = order.finish(done.partition, done.key.as_deref()) {
                        if self.is_current(next.msg.partition, next.epoch) && !self.killed.is_cancelled() {
                            ready.push_back(next);
                            break;
                        }
                        self.abandon(&next);
                    }
                },
                permit = self.workers.clone().acquire_owned(), if !ready.is_empty() => {
                    let Ok(permit) = permit else { return };
                    let Some(d) = ready.pop_front() else { continue };
                    if !self.is_current(d.msg.partition, d.epoch) || self.killed.is_cancelled() {
                        self.abandon(&d);
                        let key = if ordered { d.msg.key.clone() } else { None };
                        running += 1;
                        let _ = done_tx.send(Done { partition: d.msg.partition, key });
                        continue;
                    }
                    running += 1;
                    tokio::spawn(self.clone().handle(d, permit, done_tx.clone(), ack_tx.clone()));
                },
            }
        }
    }

    fn abandon(&self, d: &Delivery) {
        tracing::debug!(topic = %self.spec.name, member = %self.s.member, partition = d.msg.partition,
            id = %d.msg.id, epoch = d.epoch, "abandoned (left pending)");
        self.done(d.msg.partition, d.msg.lane, d.msg.id, d.epoch);
        self.unbuffer();
    }

    async fn handle(
        self: Arc<Self>,
        d: Delivery,
        permit: OwnedSemaphorePermit,
        done_tx: mpsc::UnboundedSender<Done>,
        ack_tx: mpsc::UnboundedSender<AckReq>,
    ) {
        let mut permit = Some(permit);
        let msg = d.msg;
        let key = if self.s.mode == Mode::Ordered {
            msg.key.clone()
        } else {
            None
        };
        let (partition, lane, id) = (msg.partition, msg.lane, msg.id);
        let mut attempt = 1u32;
        let acked = loop {
            let ctx = Context {
                topic: self.spec.name.clone(),
                group: self.s.group.clone(),
                member: self.s.member.clone(),
                partition,
                lane,
                id,
                key: msg.key.clone(),
                headers: msg.headers.clone(),
                attempt,
            };
            let span = tracing::info_span!("message", topic = %self.spec.name, group = %self.s.group,
                partition, id = %id, attempt);
            // The handler is called inside the caught future, so a panic
            // while it builds its future is caught too.
            let handler = &self.handler;
            let m = msg.clone();
            let fut =
                std::panic::AssertUnwindSafe(async move { handler(m, ctx).await }).catch_unwind();
            let outcome = tokio::select! {
                r = fut.instrument(span) => r,
                _ = self.killed.cancelled() => break false,
            };
            match outcome {
                Ok(Ok(())) => {
                    self.stats.handled.fetch_add(1, Ordering::Relaxed);
                    let _ = ack_tx.send(AckReq {
                        partition,
                        lane,
                        epoch: d.epoch,
                        id,
                    });
                    break true;
                }
                Ok(Err(e)) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = %self.spec.name, group = %self.s.group, partition, id = %id,
                        attempt, permanent = e.is_permanent(), error = %e, "handler failed");
                }
                Err(panic) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    self.stats.panicked.fetch_add(1, Ordering::Relaxed);
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    tracing::error!(topic = %self.spec.name, group = %self.s.group, partition, id = %id,
                        attempt, panic = %what, "handler panicked");
                }
            }
            // Until retry policies: try again after a pause, holding back
            // only this key, for as long as the partition is ours.
            drop(permit.take());
            tokio::select! {
                _ = tokio::time::sleep(self.s.retry_delay) => {}
                _ = self.killed.cancelled() => break false,
            }
            if !self.is_current(partition, d.epoch) || self.stop_reading.is_cancelled() {
                break false;
            }
            match self.workers.clone().acquire_owned().await {
                Ok(p) => permit = Some(p),
                Err(_) => break false,
            }
            attempt += 1;
        };
        drop(permit);
        self.unbuffer();
        if !acked {
            // Left pending: redelivered to whoever owns the partition next.
            self.done(partition, lane, id, d.epoch);
        }
        let _ = done_tx.send(Done { partition, key });
    }

    async fn ack_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<AckReq>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 1000 {
                match rx.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            let mut groups: HashMap<(u32, u8, u64), Vec<StreamId>> = HashMap::new();
            for a in batch {
                groups
                    .entry((a.partition, a.lane, a.epoch))
                    .or_default()
                    .push(a.id);
            }
            let all: Vec<AckGroup> = groups.into_iter().collect();
            let mut pending: Vec<AckGroup> = all.clone();
            let mut delay = Duration::from_millis(20);
            while !pending.is_empty() {
                match self.ack(&pending).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(topic = %self.spec.name, group = %self.s.group, error = %e, "ack failed; retrying");
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
            for ((p, lane, epoch), ids) in &all {
                for id in ids {
                    self.done(*p, *lane, *id, *epoch);
                }
            }
        }
    }

    /// Acks each (partition, lane, epoch) group of ids.
    async fn ack(&self, groups: &[AckGroup]) -> Result<()> {
        let keys = self.client.keys();
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let mut per_partition: BTreeMap<u32, Vec<redis::Cmd>> = BTreeMap::new();
        for ((p, lane, epoch), ids) in groups {
            let stream = keys.stream(topic, *p, *lane);
            let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
            let cmd = match self.s.mode {
                Mode::Ordered => {
                    let lease = keys.lease(topic, *p, group);
                    let mut args: Vec<&str> = vec![group, me];
                    let epoch = epoch.to_string();
                    args.push(&epoch);
                    args.extend(ids.iter().map(String::as_str));
                    let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
                    self.client
                        .inner
                        .scripts
                        .ack
                        .cmd(&[&lease, &stream], &argv[..])
                }
                Mode::Shared => redis::cmd("XACK").arg(&stream).arg(group).arg(&ids).clone(),
            };
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
                    count = ids.len(), "ack refused: the partition's lease moved on; the new owner will handle these again");
            } else {
                self.stats.acked.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}
