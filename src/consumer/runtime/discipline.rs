//! What ordered and shared mode do differently, as two implementations of
//! one interface: [`Ordered`] and [`Shared`].
//!
//! The runtime ([`Rt`]) is generic over its [`Discipline`]: every decision
//! that depends on the mode is a constant or a method here, resolved at
//! compile time (no dynamic dispatch on the hot path). The mode is turned
//! into a discipline once, in [`TopicRuntime::start`](super::TopicRuntime::start).
//! Longer mode-specific steps live beside the task they belong to, as
//! methods of `Rt<Ordered>` or `Rt<Shared>` (so their log lines keep their
//! module's target); the methods here only point at them.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::handling::Outcome;
use super::state::{Held, Owned};
use super::{Delivery, Rt};
use crate::consumer::WorkerSettings;
use crate::error::Result;
use crate::store::membership::Heartbeat;

/// Ordered mode: partitions are leased (with epochs) to one member at a
/// time; reads, acks and failure records are fenced by the lease; messages
/// of one key are handled in order; a failed message waits in place.
pub(super) struct Ordered;

/// Shared mode: every member reads every partition; plain `XACK`; a failed
/// message is parked in the group's retry set.
pub(super) struct Shared;

/// How often the fetcher sweeps its partitions' pending entries for
/// stranded ones, and how long one must have been idle to be taken over.
pub(super) struct Sweep {
    pub every: Duration,
    pub min_idle: Duration,
}

/// The decisions in which ordered and shared mode differ.
pub(super) trait Discipline: Send + Sync + Sized + 'static {
    /// Acks and dead-lettering are fenced by the partition's lease: refused
    /// once it moved on to another member or epoch.
    const FENCED: bool;
    /// Messages of one key are handled one at a time, in order.
    const KEY_ORDER: bool;
    /// A failure is recorded in the group's attempts hash (and read back when
    /// a message is taken over); otherwise a retry entry carries its count.
    const RECORDS_FAILURES: bool;
    /// The promoter also moves the group's due retries into its retry
    /// streams.
    const PROMOTES_RETRIES: bool;

    /// The partitions read from the start, before any heartbeat.
    fn initially_owned(partitions: u32) -> BTreeMap<u32, Owned>;

    /// The fetcher's sweep for stranded pending entries.
    fn sweep(s: &WorkerSettings) -> Sweep;

    /// Whether messages of `partition` delivered at `epoch` may still be
    /// handled.
    fn is_current(rt: &Rt<Self>, partition: u32, epoch: u64) -> bool;

    /// After a failed ack: whether to try the acks of `partition` at `epoch`
    /// again (rather than leave those messages to the partition's new owner).
    fn keeps_acking(rt: &Rt<Self>, partition: u32, epoch: u64) -> bool;

    /// One read of new messages of `read` (whose partitions are `parts`),
    /// sent to the dispatcher. `woken`: the partitions the last read's wait
    /// saw new entries on. Returns the partitions this read's wait saw new
    /// entries on, if it waited and saw any.
    fn read(
        rt: &Rt<Self>,
        tx: &mpsc::Sender<Vec<Delivery>>,
        read: &[Held],
        parts: &[u32],
        woken: Option<Vec<u32>>,
    ) -> impl Future<Output = Result<Option<Vec<u32>>>> + Send;

    /// Before re-reading our own pending entries of `held` after a read whose
    /// reply was lost: makes sure such a read, if still on its way, delivers
    /// nothing after we look.
    fn fence_stale_reads(rt: &Rt<Self>, held: Held) -> impl Future<Output = Result<()>> + Send;

    /// What a failed attempt that the policy retries after `wait` leads to:
    /// `Continue` to try again here (`permit` held again), or `Break` with
    /// how the message's handling ended.
    fn retry(
        rt: &Rt<Self>,
        d: &Delivery,
        permit: &mut Option<OwnedSemaphorePermit>,
        attempt: u32,
        wait: Duration,
        error: &str,
    ) -> impl Future<Output = ControlFlow<Outcome>> + Send;

    /// After each heartbeat: the group's target assignment and this
    /// member's leases.
    fn manage_leases(rt: &Rt<Self>, hb: &Heartbeat) -> impl Future<Output = Result<()>> + Send;

    /// At shutdown, once every task has ended: gives up what this member
    /// holds.
    fn release(rt: &Rt<Self>) -> impl Future<Output = Result<()>> + Send;
}

impl Discipline for Ordered {
    const FENCED: bool = true;
    const KEY_ORDER: bool = true;
    const RECORDS_FAILURES: bool = true;
    const PROMOTES_RETRIES: bool = false;

    /// None: partitions are read once their lease is acquired.
    fn initially_owned(_partitions: u32) -> BTreeMap<u32, Owned> {
        BTreeMap::new()
    }

    /// Entries a read left pending while a lease changed hands, rarely.
    fn sweep(s: &WorkerSettings) -> Sweep {
        let idle = (s.session_timeout * 2).max(s.visibility_timeout);
        Sweep {
            every: idle,
            min_idle: idle,
        }
    }

    /// Ours at that epoch, not draining, and the lease not run out locally
    /// (checked here too, so a stalled coordinator cannot extend it).
    fn is_current(rt: &Rt<Self>, partition: u32, epoch: u64) -> bool {
        let now = Instant::now();
        rt.lock()
            .owned
            .get(&partition)
            .is_some_and(|o| o.epoch == epoch && !o.lease.draining && o.lease.valid_until > now)
    }

    /// While the partition is still ours at that epoch.
    fn keeps_acking(rt: &Rt<Self>, partition: u32, epoch: u64) -> bool {
        rt.lock()
            .owned
            .get(&partition)
            .is_some_and(|o| o.epoch == epoch)
    }

    /// Fenced reads of the owned partitions (only those a wait saw new
    /// entries on, if it did).
    async fn read(
        rt: &Rt<Self>,
        tx: &mpsc::Sender<Vec<Delivery>>,
        read: &[Held],
        _parts: &[u32],
        woken: Option<Vec<u32>>,
    ) -> Result<Option<Vec<u32>>> {
        match woken {
            Some(w) => {
                let only: Vec<Held> = read
                    .iter()
                    .filter(|h| w.contains(&h.partition))
                    .copied()
                    .collect();
                rt.read_owned(tx, &only).await
            }
            None => rt.read_owned(tx, read).await,
        }
    }

    fn fence_stale_reads(rt: &Rt<Self>, held: Held) -> impl Future<Output = Result<()>> + Send {
        rt.fence_lease(held)
    }

    /// Records the failure, then waits in place, holding back only its key.
    fn retry(
        rt: &Rt<Self>,
        d: &Delivery,
        permit: &mut Option<OwnedSemaphorePermit>,
        attempt: u32,
        wait: Duration,
        error: &str,
    ) -> impl Future<Output = ControlFlow<Outcome>> + Send {
        rt.wait_in_place(d, permit, attempt, wait, error)
    }

    fn manage_leases(rt: &Rt<Self>, hb: &Heartbeat) -> impl Future<Output = Result<()>> + Send {
        rt.lease_round(hb)
    }

    /// Releases every lease still held.
    fn release(rt: &Rt<Self>) -> impl Future<Output = Result<()>> + Send {
        rt.release_all()
    }
}

impl Discipline for Shared {
    const FENCED: bool = false;
    const KEY_ORDER: bool = false;
    const RECORDS_FAILURES: bool = false;
    const PROMOTES_RETRIES: bool = true;

    /// Every partition, for good, with nothing to take over.
    fn initially_owned(partitions: u32) -> BTreeMap<u32, Owned> {
        let forever = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        (0..partitions)
            .map(|p| (p, Owned::new(0, forever, true)))
            .collect()
    }

    /// Messages held past the visibility timeout by a member that died.
    fn sweep(s: &WorkerSettings) -> Sweep {
        Sweep {
            every: s.visibility_timeout / 2,
            min_idle: s.visibility_timeout,
        }
    }

    /// Always, until the worker is killed.
    fn is_current(rt: &Rt<Self>, _partition: u32, _epoch: u64) -> bool {
        !rt.stop.killed.is_cancelled()
    }

    /// Always: no lease to lose.
    fn keeps_acking(_rt: &Rt<Self>, _partition: u32, _epoch: u64) -> bool {
        true
    }

    /// Plain group reads of every partition.
    async fn read(
        rt: &Rt<Self>,
        tx: &mpsc::Sender<Vec<Delivery>>,
        read: &[Held],
        parts: &[u32],
        _woken: Option<Vec<u32>>,
    ) -> Result<Option<Vec<u32>>> {
        rt.read_shared(tx, read, parts).await.map(|()| None)
    }

    /// Nothing: shared reads are not fenced.
    fn fence_stale_reads(_rt: &Rt<Self>, _held: Held) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// Acks the message and parks it in the group's retry set.
    async fn retry(
        rt: &Rt<Self>,
        d: &Delivery,
        _permit: &mut Option<OwnedSemaphorePermit>,
        attempt: u32,
        wait: Duration,
        _error: &str,
    ) -> ControlFlow<Outcome> {
        ControlFlow::Break(rt.park(d, attempt, wait).await)
    }

    /// Nothing: no leases, and no assignment to keep.
    fn manage_leases(_rt: &Rt<Self>, _hb: &Heartbeat) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// Nothing: no leases.
    fn release(_rt: &Rt<Self>) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}
