//! Cancellation on the member's side: the group's cancel requests, read
//! again whenever the heartbeat says their count moved. Nothing is
//! registered per message (the common case, no request at all, costs an
//! atomic load): an attempt or a wait to retry watches for the set to
//! change and then looks for its own message in it.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::watch;

use crate::id::MessageId;

type Set = HashSet<MessageId, foldhash::fast::RandomState>;

/// The group's cancel requests as this member last read them.
pub(super) struct Cancels {
    requested: Mutex<Set>,
    /// Whether `requested` holds anything (checked without the lock).
    any: AtomicBool,
    /// The request count the set was read at.
    seen: AtomicU64,
    /// Bumped whenever the set changes.
    changed: watch::Sender<u64>,
}

impl Default for Cancels {
    fn default() -> Self {
        Cancels {
            requested: Mutex::default(),
            any: AtomicBool::new(false),
            seen: AtomicU64::new(0),
            changed: watch::Sender::new(0),
        }
    }
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, Set> {
        self.requested.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the group's request count moved since the last read.
    pub(super) fn stale(&self, count: u64) -> bool {
        self.seen.load(Ordering::Acquire) != count
    }

    /// The requests as read at `count`; whoever watches is told.
    pub(super) fn update(&self, count: u64, requested: impl IntoIterator<Item = MessageId>) {
        let set: Set = requested.into_iter().collect();
        self.any.store(!set.is_empty(), Ordering::Release);
        *self.lock() = set;
        self.seen.store(count, Ordering::Release);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Whether message `id` was asked to be cancelled.
    pub(super) fn is_requested(&self, id: &MessageId) -> bool {
        self.any.load(Ordering::Acquire) && self.lock().contains(id)
    }

    /// A request carried out: not acted on again.
    pub(super) fn done(&self, id: &MessageId) {
        let mut set = self.lock();
        set.remove(id);
        self.any.store(!set.is_empty(), Ordering::Release);
    }

    /// Resolves once message `id` is asked to be cancelled (never, if it
    /// is not).
    pub(super) async fn requested(&self, id: &MessageId) {
        let mut changes = self.changed.subscribe();
        loop {
            if self.is_requested(id) {
                return;
            }
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> MessageId {
        MessageId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_request_reaches_the_waiting_message_and_only_it() {
        let c = Cancels::default();
        assert!(c.stale(1));
        let (a, b) = (id("0:0:1-0"), id("0:0:2-0"));
        let waiting_a = c.requested(&a);
        let waiting_b = c.requested(&b);
        tokio::pin!(waiting_a, waiting_b);
        c.update(1, [a.clone()]);
        assert!(!c.stale(1));
        tokio::time::timeout(std::time::Duration::from_secs(1), &mut waiting_a)
            .await
            .expect("a is told");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut waiting_b)
                .await
                .is_err(),
            "b is not"
        );
        assert!(c.is_requested(&a) && !c.is_requested(&b));
        // Carried out: not acted on again.
        c.done(&a);
        assert!(!c.is_requested(&a));
    }
}
