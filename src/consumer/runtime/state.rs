//! The runtime's shared state: the partitions this member owns (or, in
//! shared mode, reads) and the messages in flight, behind one lock.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use crate::envelope::StreamId;

pub(super) use crate::store::lease::Held;

/// A delivered message as the runtime tracks it: its entry, and the epoch
/// it was delivered at. The epoch is part of it: after a partition comes
/// back with a new epoch, its pending entries must be delivered again even
/// if stale copies still wait in the dispatcher (they will be dropped
/// there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct DeliveryId {
    pub partition: u32,
    /// Its lane, or [`RETRY_SRC`](super::RETRY_SRC) when read from the
    /// group's retry stream.
    pub src: u8,
    pub id: StreamId,
    pub epoch: u64,
}

/// Ownership and what is in flight, behind [`Rt::lock`](super::Rt::lock).
#[derive(Debug, Default)]
pub(super) struct State {
    pub owned: BTreeMap<u32, Owned>,
    /// Every message delivered and not yet done.
    pub in_flight_ids: HashSet<DeliveryId, foldhash::fast::RandomState>,
    /// The worker is stopping: acquire no more leases.
    pub shutting_down: bool,
}

/// A partition this member owns (or, in shared mode, reads).
#[derive(Debug)]
pub(super) struct Owned {
    /// The lease epoch it is held at (0 in shared mode).
    pub epoch: u64,
    /// The lease as this member sees it.
    pub lease: LocalLease,
    /// What must be read before anything new.
    pub catch_up: CatchUp,
    /// Reads and messages of it in progress.
    pub activity: Activity,
}

/// A lease as this member sees it (in shared mode: valid forever, never
/// drained, no fence).
#[derive(Debug)]
pub(super) struct LocalLease {
    /// Stop handling after this instant unless a renewal succeeds first.
    pub valid_until: Instant,
    /// Assigned elsewhere now: no more reads; release once idle.
    pub draining: bool,
    /// The lease's `fence` value this member last wrote (empty since it took
    /// the lease): the cluster's fenced read carries it.
    pub fence: String,
}

/// What the fetcher must read of a partition before new messages.
#[derive(Debug)]
pub(super) struct CatchUp {
    /// Pending entries taken over since the lease was acquired.
    pub claimed: bool,
    /// A read's outcome is unknown (its reply was lost): entries it may have
    /// delivered are pending for us unseen, so read our own pending entries
    /// again before anything new (key order depends on it).
    pub resync: bool,
}

/// What of a partition is in progress; it is released only when idle.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Messages delivered and not yet acked or abandoned.
    pub in_flight: usize,
    /// Reads in progress that include this partition.
    pub reading: usize,
}

impl Activity {
    /// No read includes the partition and nothing of it is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.reading == 0
    }
}

impl Owned {
    /// A partition just acquired at `epoch` (or, in shared mode, always
    /// read: `claimed` then, since there is no handover to take over).
    pub fn new(epoch: u64, valid_until: Instant, claimed: bool) -> Self {
        Owned {
            epoch,
            lease: LocalLease {
                valid_until,
                draining: false,
                fence: String::new(),
            },
            catch_up: CatchUp {
                claimed,
                resync: false,
            },
            activity: Activity::default(),
        }
    }

    /// This partition at the epoch it is held at.
    pub fn held(&self, partition: u32) -> Held {
        Held {
            partition,
            epoch: self.epoch,
        }
    }
}
