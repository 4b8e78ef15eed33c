//! One topic's share of a running worker: five tasks around a small state,
//! generic over the mode's [`Discipline`].
//!
//! The tasks:
//!
//! - [`coordinator`] heartbeats, and in ordered mode keeps the group's
//!   target assignment up to date (sticky, compare-and-set) and acquires,
//!   renews, drains and releases partition leases. A lease whose renewal
//!   did not succeed in time is dropped locally before it can expire in
//!   Redis.
//! - [`fetch`] reads owned partitions (lane 0 first, then the group's retry
//!   stream; blocking only when idle), first taking over a newly owned
//!   partition's pending entries with their attempt counts ([`takeover`]),
//!   and hands messages to the dispatcher. A partition is released only
//!   when no read that included it is in progress and nothing of it is in
//!   flight.
//! - [`handling`] runs handlers under the worker's concurrency limit,
//!   keeping messages of one key in order (ordered mode), and applies the
//!   retry policy: wait and try again holding back only the key (ordered),
//!   park in the group's retry set (shared), or dead-letter.
//! - [`ack`] acks in batches: through the fenced `ack` script in ordered
//!   mode, plain `XACK` in shared mode.
//! - [`promote`] moves due delayed messages (and, in shared mode, the group's
//!   due retries) of the partitions this member reads into their streams.
//!
//! What the modes do differently is one trait, [`Discipline`]
//! ([`discipline`]), with two zero-sized implementations, [`Ordered`] and
//! [`Shared`]: what is read from the start, whether a delivery is still
//! current, the sweep for stranded entries, the read pass, fencing, key
//! order, what a retried failure does, whether the promoter moves the
//! group's retries, and leases (kept, released). [`Rt<D>`](Rt) is generic
//! over it, so nothing is decided per message at run time; [`TopicRuntime`]
//! hides the type parameter behind an enum, and its `start` is the one
//! place the worker's `Mode` is looked at. Longer mode-specific steps stay
//! in their task's module, as methods of `Rt<Ordered>` or `Rt<Shared>`.
//!
//! [`Rt`] holds the worker's handles (catalog, topic, settings, handler,
//! stats) and its state in named parts: its [`Names`], the [`State`] behind
//! one lock (owned partitions and what is in flight, [`state`]), [`Flow`]
//! (in-flight and buffered counts: drain and read backpressure), [`Gates`]
//! (what lets a handler start: the worker's permits, pause, rate limit),
//! [`Wake`] (re-plan signals), [`Stop`] (cancellation) and [`ReadConns`]
//! (the fetcher's connections).

mod ack;
mod cancels;
mod coordinator;
mod discipline;
mod fetch;
mod handling;
pub(crate) mod promote;
mod state;
mod takeover;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::discipline::{Discipline, Ordered, Shared};
use self::state::{DeliveryId, State};
use super::handler::RawHandler;
use super::{WorkerSettings, WorkerStats};
use crate::envelope::Message;
use crate::error::Result;
use crate::group::Mode;
use crate::rate_limit::RateGate;
use crate::store::Source;
use crate::store::idempotent;
use crate::store::lease::{Held, Leases};
use crate::store::membership::{Beat, Member};
use crate::topic::Catalog;
use crate::topic::TopicSpec;

/// The `src` of a message read from the group's retry stream (lanes are
/// below 16).
pub(super) const RETRY_SRC: u8 = u8::MAX;

/// A message on its way to a handler.
struct Delivery {
    msg: Message,
    epoch: u64,
    /// Its lane, or [`RETRY_SRC`] when read from the group's retry stream.
    src: u8,
    /// The attempt this delivery is, from 1.
    attempt: u32,
    /// Do not start before this Redis time (a recorded retry wait).
    due_ms: Option<u64>,
    /// The error of the last recorded failure, if any.
    last_error: Option<String>,
}

impl Delivery {
    /// How the runtime tracks this delivery while it is in flight.
    fn id(&self) -> DeliveryId {
        DeliveryId {
            partition: self.msg.partition,
            src: self.src,
            id: self.msg.id,
            epoch: self.epoch,
        }
    }
}

/// A handler finished a message of `key` (ordered mode) in `partition`.
struct Done {
    partition: u32,
    key: Option<String>,
}

/// A handled message to ack.
struct AckReq {
    delivery: DeliveryId,
    /// Failed attempts were recorded for it: clear them once acked.
    clear_attempts: bool,
    /// The handler's result to keep with the ack (and a request's reply).
    answer: Option<Box<crate::store::settle::Answer>>,
}

/// Topic, group and member names, shared by every message's `Context`.
struct Names {
    topic: Arc<str>,
    group: Arc<str>,
    member: Arc<str>,
}

/// Counts of what is delivered and buffered, and their signals.
#[derive(Default)]
struct Flow {
    /// Messages delivered and not yet done, over all partitions.
    in_flight: AtomicUsize,
    /// Nothing is in flight any more.
    idle: Notify,
    /// Messages fetched and not yet finished by a handler (read backpressure).
    buffered: AtomicUsize,
    /// A buffered message finished: room for more reads.
    space: Notify,
}

/// What lets a handler start.
struct Gates {
    /// The worker's concurrency limit, over all topics.
    workers: Arc<Semaphore>,
    /// The group is paused: take nothing new.
    paused: AtomicBool,
    /// Most handler starts per window, for the whole group.
    rate: Option<RateGate>,
}

/// Signals that make tasks re-plan.
#[derive(Default)]
struct Wake {
    /// Ownership (or the pause) changed: the fetcher and promoter re-plan.
    changed: Notify,
    /// Something was scheduled locally: the promoter re-plans.
    scheduled: Notify,
}

/// Cancellation, in the order shutdown uses it.
struct Stop {
    /// Read nothing more (shutdown began).
    reading: CancellationToken,
    /// End the coordinator (every other task has ended).
    coord: CancellationToken,
    /// Abandon what is in flight (drain timeout, or abort); the worker's.
    killed: CancellationToken,
}

/// Connections the fetcher and the acker keep between their requests.
#[derive(Default)]
struct ReadConns {
    /// Blocking connections for group reads and waits.
    held: crate::store::conn::HeldConns,
    /// Ordered mode on a single server: the lease-watching read connection.
    watched: tokio::sync::Mutex<crate::store::watched::WatchedReader>,
    /// Ordered mode on a single server: the acker's lease-watching
    /// connection (acks without results, see `store::watched_acks`).
    acker: tokio::sync::Mutex<crate::store::watched::WatchedReader>,
}

/// A topic's runtime state, shared by its tasks; `D` is the mode.
struct Rt<D> {
    names: Names,
    catalog: Catalog,
    spec: Arc<TopicSpec>,
    s: Arc<WorkerSettings>,
    handler: RawHandler,
    stats: Arc<WorkerStats>,
    state: Mutex<State>,
    flow: Flow,
    gates: Gates,
    wake: Wake,
    stop: Stop,
    conns: ReadConns,
    cancels: cancels::Cancels,
    progress: Arc<crate::consumer::progress::Progress>,
    discipline: PhantomData<D>,
}

/// The five tasks of a topic's runtime.
struct Tasks {
    coordinator: JoinHandle<()>,
    fetcher: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
    acker: JoinHandle<()>,
    promoter: JoinHandle<()>,
}

impl Tasks {
    fn abort(self) {
        self.coordinator.abort();
        self.fetcher.abort();
        self.dispatcher.abort();
        self.acker.abort();
        self.promoter.abort();
    }
}

/// A runtime of either discipline (chosen once, at start).
enum AnyRt {
    Ordered(Arc<Rt<Ordered>>),
    Shared(Arc<Rt<Shared>>),
}

/// Evaluates `$body` with `$rt` bound to the runtime, whichever its
/// discipline.
macro_rules! with_rt {
    ($any:expr, $rt:ident => $body:expr) => {
        match $any {
            AnyRt::Ordered($rt) => $body,
            AnyRt::Shared($rt) => $body,
        }
    };
}

/// A topic's runtime inside a worker.
pub(crate) struct TopicRuntime {
    rt: AnyRt,
    tasks: Tasks,
}

impl TopicRuntime {
    /// Joins the group and starts the topic's tasks, in the worker's mode.
    pub(crate) async fn start(
        catalog: Catalog,
        spec: Arc<TopicSpec>,
        s: Arc<WorkerSettings>,
        handler: RawHandler,
        workers: Arc<Semaphore>,
        stats: Arc<WorkerStats>,
        killed: CancellationToken,
    ) -> Result<TopicRuntime> {
        Ok(match s.mode {
            Mode::Ordered => {
                let rt = Rt::<Ordered>::new(catalog, spec, s, handler, workers, stats, killed);
                let tasks = rt.clone().launch().await?;
                TopicRuntime {
                    rt: AnyRt::Ordered(rt),
                    tasks,
                }
            }
            Mode::Shared => {
                let rt = Rt::<Shared>::new(catalog, spec, s, handler, workers, stats, killed);
                let tasks = rt.clone().launch().await?;
                TopicRuntime {
                    rt: AnyRt::Shared(rt),
                    tasks,
                }
            }
        })
    }

    pub(crate) fn topic(&self) -> &str {
        with_rt!(&self.rt, rt => &rt.spec.name)
    }

    pub(crate) fn owned(&self) -> Vec<u32> {
        with_rt!(&self.rt, rt => rt.lock().owned.keys().copied().collect())
    }

    pub(crate) fn stop_reading(&self) {
        with_rt!(&self.rt, rt => rt.stop_reading())
    }

    /// Waits until nothing is in flight, or the deadline.
    pub(crate) async fn drain(&self, deadline: tokio::time::Instant) {
        with_rt!(&self.rt, rt => rt.drain(deadline).await)
    }

    /// Ends the tasks in order, releases leases and leaves the group.
    pub(crate) async fn finish(self) -> Result<()> {
        with_rt!(self.rt, rt => rt.finish(self.tasks).await)
    }

    pub(crate) fn abort(self) {
        with_rt!(&self.rt, rt => rt.stop.killed.cancel());
        self.tasks.abort();
    }
}

impl<D: Discipline> Rt<D> {
    fn new(
        catalog: Catalog,
        spec: Arc<TopicSpec>,
        s: Arc<WorkerSettings>,
        handler: RawHandler,
        workers: Arc<Semaphore>,
        stats: Arc<WorkerStats>,
        killed: CancellationToken,
    ) -> Arc<Self> {
        let state = State {
            owned: D::initially_owned(spec.partitions),
            ..State::default()
        };
        let rate = s.rate_limit.map(|l| RateGate::new(l, &spec.name, &s.group));
        let progress = Arc::new(crate::consumer::progress::Progress::new(
            catalog.clone(),
            handling::kept_at_least(s.result_ttl),
        ));
        Arc::new(Rt {
            names: Names {
                topic: Arc::from(spec.name.as_str()),
                group: Arc::from(s.group.as_str()),
                member: Arc::from(s.member.as_str()),
            },
            catalog,
            spec,
            s,
            handler,
            stats,
            state: Mutex::new(state),
            flow: Flow::default(),
            gates: Gates {
                workers,
                paused: AtomicBool::new(false),
                rate,
            },
            wake: Wake::default(),
            stop: Stop {
                reading: CancellationToken::new(),
                coord: CancellationToken::new(),
                killed,
            },
            conns: ReadConns::default(),
            cancels: cancels::Cancels::default(),
            progress,
            discipline: PhantomData,
        })
    }

    /// Joins the group (before returning, so the caller knows it is a
    /// member), then spawns the tasks.
    async fn launch(self: Arc<Self>) -> Result<Tasks> {
        self.coordinate().await?;
        let (deliver_tx, deliver_rx) = mpsc::channel(16);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        Ok(Tasks {
            coordinator: tokio::spawn(self.clone().coordinator_loop()),
            fetcher: tokio::spawn(self.clone().fetch_loop(deliver_tx)),
            dispatcher: tokio::spawn(self.clone().dispatch_loop(deliver_rx, ack_tx)),
            acker: tokio::spawn(self.clone().ack_loop(ack_rx)),
            promoter: tokio::spawn(self.promote_loop()),
        })
    }

    fn stop_reading(&self) {
        self.lock().shutting_down = true;
        self.stop.reading.cancel();
        self.flow.space.notify_waiters();
    }

    /// Waits until nothing is in flight, or the deadline.
    async fn drain(&self, deadline: tokio::time::Instant) {
        loop {
            let idle = self.flow.idle.notified();
            if self.flow.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Ends the tasks in order, releases leases and leaves the group.
    async fn finish(self: Arc<Self>, tasks: Tasks) -> Result<()> {
        let rt = self;
        if rt.flow.in_flight.load(Ordering::SeqCst) > 0 {
            tracing::warn!(
                topic = %rt.spec.name,
                in_flight = rt.flow.in_flight.load(Ordering::SeqCst),
                "drain timeout: abandoning in-flight messages (they stay pending)"
            );
            rt.stop.killed.cancel();
        }
        let _ = tasks.fetcher.await;
        let _ = tasks.dispatcher.await;
        let _ = tasks.acker.await;
        let _ = tasks.promoter.await;
        rt.stop.coord.cancel();
        let _ = tasks.coordinator.await;
        D::release(&rt).await?;
        rt.lock().owned.clear();
        idempotent(|| async {
            rt.catalog
                .store()
                .heartbeat(rt.member(), rt.s.session_timeout, Beat::Leave)
                .await
        })
        .await?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock is a bug in this module; the
        // state stays usable (every update is a few assignments).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

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
    /// handled (see [`Discipline::is_current`]).
    fn is_current(&self, partition: u32, epoch: u64) -> bool {
        D::is_current(self, partition, epoch)
    }

    /// A delivered message is done: acked, dead-lettered, or abandoned.
    fn done(&self, d: DeliveryId) {
        let mut st = self.lock();
        if st.in_flight_ids.remove(&d) {
            if let Some(o) = st.owned.get_mut(&d.partition)
                && o.epoch == d.epoch
            {
                o.activity.in_flight = o.activity.in_flight.saturating_sub(1);
            }
            drop(st);
            if self.flow.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.flow.idle.notify_waiters();
            }
        }
    }

    /// A handler finished (or a delivery was dropped): room for more reads.
    fn unbuffer(&self) {
        self.flow.buffered.fetch_sub(1, Ordering::SeqCst);
        self.flow.space.notify_one();
    }
}

impl Rt<Ordered> {
    /// Releases every lease still held (at shutdown).
    async fn release_all(&self) -> Result<()> {
        let held: Vec<Held> = self
            .lock()
            .owned
            .iter()
            .map(|(p, o)| Held {
                partition: *p,
                epoch: o.epoch,
            })
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        idempotent(|| async {
            self.catalog
                .store()
                .lease_release(self.leases(), &held)
                .await
        })
        .await?;
        tracing::info!(topic = %self.spec.name, group = %self.s.group,
            released = ?held.iter().map(|h| h.partition).collect::<Vec<_>>(), "released partitions");
        Ok(())
    }
}
