//! The coordinator: heartbeat, target assignment, and in ordered mode the
//! partition leases (acquire, renew, drain, release).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Owned, Rt};
use crate::error::Result;
use crate::group::assignment::{partitions_of, rebalance};
use crate::group::{Lease, Mode};
use crate::store::Guarded;
use crate::store::membership::Beat;

impl Rt {
    fn lease_margin(&self) -> Duration {
        // Stop a little before Redis would expire the lease, so two members
        // never handle a partition at once even with some clock-rate drift.
        self.s.session_timeout / 5
    }

    /// One heartbeat: membership, assignment, leases.
    pub(super) async fn coordinate(&self) -> Result<()> {
        let (topic, group, me) = (&self.spec.name, &self.s.group, &self.s.member);
        let hb = self
            .client
            .store()
            .heartbeat(self.member(), self.s.session_timeout, Beat::Alive)
            .await?;
        let was = self.paused.swap(hb.paused, Ordering::SeqCst);
        if was != hb.paused {
            tracing::info!(topic = %topic, group = %group, member = %me, paused = hb.paused,
                "group {}", if hb.paused { "paused" } else { "resumed" });
            self.changed.notify_waiters();
        }
        if self.s.mode == Mode::Shared {
            return Ok(());
        }
        let mut assignment = hb.assignment.clone();
        let target = rebalance(self.spec.partitions, &hb.members, &hb.assignment);
        if target != hb.assignment
            && self
                .client
                .store()
                .assign(topic, group, hb.version, &target)
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
                .store()
                .lease_renew(self.leases(), ttl, &renew)
                .await?;
            let mut st = self.lock();
            for (p, renewed) in results {
                let ok = renewed == Guarded::Done(());
                let epoch = renew.iter().find(|r| r.0 == p).map(|r| r.1);
                if let Some(o) = st.owned.get_mut(&p)
                    && Some(o.epoch) == epoch
                {
                    if ok && o.valid_until > Instant::now() {
                        o.valid_until = sent + ttl - self.lease_margin();
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
            self.client
                .store()
                .lease_release(self.leases(), &release)
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
            self.changed.notify_waiters();
        }
        Ok(())
    }

    pub(super) async fn coordinator_loop(self: Arc<Self>) {
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
}
