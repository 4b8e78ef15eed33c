//! One topic's share of a running worker: five tasks around a small state.
//!
//! - [`coordinator`] heartbeats, keeps the group's target assignment up to
//!   date (sticky, compare-and-set), and in ordered mode acquires, renews,
//!   drains and releases partition leases. A lease whose renewal did not
//!   succeed in time is dropped locally before it can expire in Redis.
//! - [`fetch`] reads owned partitions (lane 0 first, then the group's retry
//!   stream; blocking only when idle), first taking over a newly owned
//!   partition's pending entries with their attempt counts, and hands
//!   messages to the dispatcher. A partition is released only when no read
//!   that included it is in progress and nothing of it is in flight.
//! - [`handling`] runs handlers under the worker's concurrency limit,
//!   keeping messages of one key in order (ordered mode), and applies the
//!   retry policy: wait and try again holding back only the key (ordered),
//!   park in the group's retry set (shared), or dead-letter.
//! - [`ack`] acks in batches: through the fenced `ack` script in ordered
//!   mode, plain `XACK` in shared mode.
//! - [`promote`] moves due delayed messages (and, in shared mode, the group's
//!   due retries) of the partitions this member reads into their streams.

mod ack;
mod coordinator;
mod fetch;
mod handling;
pub(crate) mod promote;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::handler::RawHandler;
use super::{WorkerSettings, WorkerStats};
use crate::client::{Client, idempotent};
use crate::envelope::{Message, StreamId};
use crate::error::Result;
use crate::group::Mode;
use crate::rate_limit::RateGate;
use crate::store::Source;
use crate::store::lease::Leases;
use crate::store::membership::{Beat, Member};
use crate::topic::TopicSpec;

/// The `src` of a message read from the group's retry stream (lanes are
/// below 16).
pub(super) const RETRY_SRC: u8 = u8::MAX;

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
    /// A read's outcome is unknown (its reply was lost): entries it may have
    /// delivered are pending for us unseen, so read our own pending entries
    /// again before anything new (key order depends on it).
    resync: bool,
    /// Messages delivered and not yet acked or abandoned.
    in_flight: usize,
    /// Reads in progress that include this partition.
    reading: usize,
    /// The lease's `fence` value this member last wrote (empty since it took
    /// the lease): the cluster's fenced read carries it.
    fence: String,
}

impl Owned {
    /// A partition just acquired at `epoch` (or, in shared mode, always
    /// read: `claimed` then, since there is no handover to take over).
    fn new(epoch: u64, valid_until: Instant, claimed: bool) -> Self {
        Owned {
            epoch,
            valid_until,
            draining: false,
            claimed,
            resync: false,
            in_flight: 0,
            reading: 0,
            fence: String::new(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    owned: BTreeMap<u32, Owned>,
    /// (partition, src, id, epoch) of every message delivered and not yet
    /// done. The epoch is part of it: after a partition comes back with a
    /// new epoch, its pending entries must be delivered again even if stale
    /// copies still wait in the dispatcher (they will be dropped there).
    in_flight_ids: HashSet<(u32, u8, StreamId, u64), foldhash::fast::RandomState>,
    shutting_down: bool,
}

/// A partition and the lease epoch it is held at.
type Held = (u32, u64);

/// A message on its way to a handler.
struct Delivery {
    msg: Message,
    epoch: u64,
    /// Its lane, or [`RETRY_SRC`] when read from the group's retry stream.
    src: u8,
    /// The attempt this delivery is, from 1.
    attempt: u32,
    /// For a retried or replayed message, the id it had in its partition.
    origin: Option<String>,
    /// Do not start before this Redis time (a recorded retry wait).
    due_ms: Option<u64>,
    /// The error of the last recorded failure, if any.
    last_error: Option<String>,
}

struct Done {
    partition: u32,
    key: Option<String>,
}

struct AckReq {
    partition: u32,
    src: u8,
    epoch: u64,
    id: StreamId,
    /// Failed attempts were recorded for it: clear them once acked.
    clear_attempts: bool,
}

struct Rt {
    /// Topic, group and member names, shared by every message's `Context`.
    names: (Arc<str>, Arc<str>, Arc<str>),
    client: Client,
    spec: Arc<TopicSpec>,
    s: Arc<WorkerSettings>,
    handler: RawHandler,
    workers: Arc<Semaphore>,
    stats: Arc<WorkerStats>,
    state: Mutex<State>,
    /// Ownership changed (the fetcher and promoter re-plan).
    changed: Notify,
    /// Something was scheduled locally (the promoter re-plans).
    scheduled: Notify,
    /// Messages delivered and not yet done, over all partitions.
    in_flight: AtomicUsize,
    /// Blocking connections the fetcher keeps between its reads.
    held_conns: crate::conn::HeldConns,
    /// Ordered mode on a single server: the lease-watching read connection.
    watched: tokio::sync::Mutex<crate::consumer::watched::WatchedReader>,
    idle: Notify,
    /// Messages fetched and not yet finished by a handler (read backpressure).
    buffered: AtomicUsize,
    space: Notify,
    stop_reading: CancellationToken,
    stop_coord: CancellationToken,
    killed: CancellationToken,
    /// The group is paused: take nothing new.
    paused: AtomicBool,
    rate: Option<RateGate>,
}

/// A topic's runtime inside a worker.
pub(crate) struct TopicRuntime {
    rt: Arc<Rt>,
    coordinator: JoinHandle<()>,
    fetcher: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
    acker: JoinHandle<()>,
    promoter: JoinHandle<()>,
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
                state.owned.insert(p, Owned::new(0, forever, true));
            }
        }
        let rate = s.rate_limit.map(|l| RateGate::new(l, &spec.name, &s.group));
        let rt = Arc::new(Rt {
            names: (
                Arc::from(spec.name.as_str()),
                Arc::from(s.group.as_str()),
                Arc::from(s.member.as_str()),
            ),
            client,
            spec,
            s,
            handler,
            workers,
            stats,
            state: Mutex::new(state),
            changed: Notify::new(),
            scheduled: Notify::new(),
            in_flight: AtomicUsize::new(0),
            held_conns: crate::conn::HeldConns::default(),
            watched: Default::default(),
            idle: Notify::new(),
            buffered: AtomicUsize::new(0),
            space: Notify::new(),
            stop_reading: CancellationToken::new(),
            stop_coord: CancellationToken::new(),
            rate,
            paused: AtomicBool::new(false),
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
            promoter: tokio::spawn(rt.clone().promote_loop()),
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
        let _ = self.promoter.await;
        rt.stop_coord.cancel();
        let _ = self.coordinator.await;
        let held: Vec<Held> = rt.lock().owned.iter().map(|(p, o)| (*p, o.epoch)).collect();
        if rt.s.mode == Mode::Ordered && !held.is_empty() {
            idempotent(|| async { rt.client.store().lease_release(rt.leases(), &held).await })
                .await?;
            tracing::info!(topic = %rt.spec.name, group = %rt.s.group,
                released = ?held.iter().map(|h| h.0).collect::<Vec<_>>(), "released partitions");
        }
        rt.lock().owned.clear();
        idempotent(|| async {
            rt.client
                .store()
                .heartbeat(rt.member(), rt.s.session_timeout, Beat::Leave)
                .await
        })
        .await?;
        Ok(())
    }

    pub(crate) fn abort(self) {
        self.rt.killed.cancel();
        self.coordinator.abort();
        self.fetcher.abort();
        self.dispatcher.abort();
        self.acker.abort();
        self.promoter.abort();
    }
}

impl Rt {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock is a bug in this module; the
        // state stays usable (every update is a few assignments).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream a message of `partition` was read from.
    /// This member of the group.
    fn member(&self) -> Member<'_> {
        Member {
            topic: &self.spec.name,
            group: &self.s.group,
            id: &self.s.member,
            is_static: self.s.is_static,
        }
    }

    /// This member's leases of the group's partitions.
    fn leases(&self) -> Leases<'_> {
        Leases {
            topic: &self.spec.name,
            group: &self.s.group,
            member: &self.s.member,
        }
    }

    /// Where a delivery from `src` was read: a lane, or the retry stream.
    fn source(src: u8) -> Source {
        if src == RETRY_SRC {
            Source::Retry
        } else {
            Source::Lane(src)
        }
    }

    /// Whether messages of `partition` delivered at `epoch` may still be
    /// handled: ours at that epoch, not draining, and the lease not run out
    /// locally (checked here too, so a stalled coordinator cannot extend it).
    fn is_current(&self, partition: u32, epoch: u64) -> bool {
        if self.s.mode == Mode::Shared {
            return !self.killed.is_cancelled();
        }
        let now = Instant::now();
        self.lock()
            .owned
            .get(&partition)
            .is_some_and(|o| o.epoch == epoch && !o.draining && o.valid_until > now)
    }

    /// A delivered message is done: acked, dead-lettered, or abandoned.
    fn done(&self, partition: u32, src: u8, id: StreamId, epoch: u64) {
        let mut st = self.lock();
        if st.in_flight_ids.remove(&(partition, src, id, epoch)) {
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
}
