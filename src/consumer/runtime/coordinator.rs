//! The coordinator: heartbeat (membership, pause), and in ordered mode the
//! group's target assignment and the partition leases (acquire, renew,
//! drain, release).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Rt;
use super::discipline::{Discipline, Ordered};
use super::state::Owned;
use crate::error::Result;
use crate::group::assignment::{partitions_of, rebalance};
use crate::store::Guarded;
use crate::store::lease::{Held, Lease};
use crate::store::membership::{Beat, Heartbeat};

/// What one lease round does, as the store takes it: `(partition, epoch)`
/// pairs (epoch 0 to acquire).
#[derive(Debug, Default)]
struct LeasePlan {
    /// Held and still ours: keep.
    renew: Vec<Held>,
    /// Drained (assigned elsewhere) and idle: give back.
    release: Vec<Held>,
    /// Assigned to us and not held: take.
    acquire: Vec<Held>,
    /// Run out locally before a renewal succeeded: already dropped.
    lost: Vec<u32>,
}

impl<D: Discipline> Rt<D> {
    /// One heartbeat: membership, pause, and the discipline's assignment
    /// and leases.
    pub(super) async fn coordinate(&self) -> Result<()> {
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let hb = self
            .catalog
            .store()
            .heartbeat(self.member(), self.s.session_timeout, Beat::Alive)
            .await?;
        let was = self.gates.paused.swap(hb.paused, Ordering::SeqCst);
        if was != hb.paused {
            tracing::info!(topic = %topic, group = %group, member = %me, paused = hb.paused,
                "group {}", if hb.paused { "paused" } else { "resumed" });
            self.wake.changed.notify_waiters();
        }
        if self.cancels.stale(hb.cancels) {
            self.read_cancels(hb.cancels).await?;
        }
        D::manage_leases(self, &hb).await
    }

    /// Reads the group's cancel requests (the heartbeat saw their count
    /// move): running messages now requested are signalled. Requests older
    /// than the topic's retention name messages that are gone: forgotten.
    async fn read_cancels(&self, count: u64) -> Result<()> {
        let (topic, group) = (&self.spec.name, &self.s.group);
        let store = self.catalog.store();
        let requests = store.cancel_requests(topic, group).await?;
        let now = self.catalog.redis_time_ms().await?;
        let retention = u64::try_from(self.spec.retention.as_millis()).unwrap_or(u64::MAX);
        let mut old = Vec::new();
        let mut live = Vec::new();
        for (id, at) in requests {
            match crate::id::MessageId::parse(&id) {
                Ok(m) if now.saturating_sub(at) <= retention => live.push(m),
                _ => old.push(id),
            }
        }
        store.forget_cancels(topic, group, &old).await?;
        tracing::debug!(topic = %topic, group = %group, requests = live.len(), "cancel requests read");
        self.cancels.update(count, live);
        Ok(())
    }

    pub(super) async fn coordinator_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.stop.coord.cancelled() => return,
                _ = self.stop.killed.cancelled() => return,
                _ = tokio::time::sleep(self.s.heartbeat_interval) => {}
            }
            if let Err(e) = self.coordinate().await {
                tracing::warn!(topic = %self.spec.name, group = %self.s.group, error = %e, "heartbeat failed");
                // Without renewals, leases run out locally all the same.
                let now = Instant::now();
                let mut st = self.lock();
                let before = st.owned.len();
                st.owned.retain(|_, o| o.lease.valid_until > now);
                if st.owned.len() != before {
                    drop(st);
                    self.wake.changed.notify_waiters();
                }
            }
        }
    }
}

impl Rt<Ordered> {
    fn lease_margin(&self) -> Duration {
        // Stop a little before Redis would expire the lease, so two members
        // never handle a partition at once even with some clock-rate drift.
        self.s.session_timeout / 5
    }

    /// Drops leases run out locally, marks partitions assigned elsewhere as
    /// draining, and plans this round: renew what is held, release what
    /// drained and is idle, acquire what `mine` adds.
    fn lease_plan(&self, mine: &BTreeSet<u32>) -> LeasePlan {
        let (topic, me) = (&self.spec.name, &self.s.member);
        let now = Instant::now();
        let mut st = self.lock();
        let lost: Vec<u32> = st
            .owned
            .iter()
            .filter(|(_, o)| o.lease.valid_until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &lost {
            st.owned.remove(p);
        }
        for (p, o) in st.owned.iter_mut() {
            if !mine.contains(p) && !o.lease.draining {
                tracing::debug!(topic = %topic, member = %me, partition = p, "draining");
                o.lease.draining = true;
            }
        }
        let release: Vec<Held> = st
            .owned
            .iter()
            .filter(|(_, o)| o.lease.draining && o.activity.is_idle())
            .map(|(p, o)| Held {
                partition: *p,
                epoch: o.epoch,
            })
            .collect();
        let renew: Vec<Held> = st
            .owned
            .iter()
            .filter(|(p, _)| !release.iter().any(|r| r.partition == **p))
            .map(|(p, o)| Held {
                partition: *p,
                epoch: o.epoch,
            })
            .collect();
        let acquire: Vec<Held> = if st.shutting_down {
            Vec::new()
        } else {
            mine.iter()
                .filter(|p| !st.owned.contains_key(p))
                .map(|p| Held {
                    partition: *p,
                    epoch: 0,
                })
                .collect()
        };
        LeasePlan {
            renew,
            release,
            acquire,
            lost,
        }
    }

    /// After a heartbeat `hb`: moves the group's target assignment on if it
    /// should, then renews, releases (drained) and acquires leases to match.
    pub(super) async fn lease_round(&self, hb: &Heartbeat) -> Result<()> {
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let mut assignment = hb.assignment.clone();
        let target = rebalance(self.spec.partitions, &hb.members, &hb.assignment);
        if target != hb.assignment
            && self
                .catalog
                .store()
                .assign(topic, group, hb.version, &target)
                .await?
                .is_some()
        {
            assignment = target;
        }
        let mine: BTreeSet<u32> = partitions_of(&assignment, me).into_iter().collect();

        let LeasePlan {
            renew,
            release,
            acquire,
            lost,
        } = self.lease_plan(&mine);
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
                .catalog
                .store()
                .lease_renew(self.leases(), ttl, &renew)
                .await?;
            let mut st = self.lock();
            for (p, renewed) in results {
                let ok = renewed == Guarded::Done(());
                let epoch = renew.iter().find(|r| r.partition == p).map(|r| r.epoch);
                if let Some(o) = st.owned.get_mut(&p)
                    && Some(o.epoch) == epoch
                {
                    if ok && o.lease.valid_until > Instant::now() {
                        o.lease.valid_until = sent + ttl - self.lease_margin();
                    } else {
                        // Refused, or renewed only after our own deadline
                        // had passed: meanwhile deliveries of this partition
                        // were left pending unhandled (they may not start
                        // past the deadline), and carrying on at this epoch
                        // would run later entries of their keys first.
                        // Drop it; taking it again (a new epoch) claims every
                        // pending entry, in order.
                        st.owned.remove(&p);
                        dropped.push(p);
                    }
                }
            }
        }
        if !release.is_empty() {
            self.catalog
                .store()
                .lease_release(self.leases(), &release)
                .await?;
            let mut st = self.lock();
            for h in &release {
                if st
                    .owned
                    .get(&h.partition)
                    .is_some_and(|o| o.epoch == h.epoch)
                {
                    st.owned.remove(&h.partition);
                    dropped.push(h.partition);
                }
            }
        }
        if !acquire.is_empty() {
            let results = self
                .catalog
                .store()
                .lease_acquire(self.leases(), ttl, &acquire)
                .await?;
            let mut st = self.lock();
            for (p, r) in results {
                if let Ok(Lease::Held(epoch)) = r
                    && !st.shutting_down
                {
                    st.owned.insert(
                        p,
                        Owned::new(epoch, sent + ttl - self.lease_margin(), false),
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
            self.wake.changed.notify_waiters();
        }
        Ok(())
    }
}
