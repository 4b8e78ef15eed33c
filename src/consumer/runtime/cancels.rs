//! Cancellation on the member's side: the group's cancel requests, read
//! again whenever the heartbeat says their count moved, and a token per
//! message being handled (or waiting to retry in place), cancelled when a
//! request for it arrives or its handler times out.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// The group's cancel requests as this member last read them, and the
/// messages it is handling now.
#[derive(Default)]
pub(super) struct Cancels {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The request count the requests were read at.
    seen: u64,
    requested: HashSet<String>,
    running: HashMap<String, CancellationToken>,
}

/// A message's token while it is handled; unregisters it when dropped.
pub(super) struct Watch<'a> {
    cancels: &'a Cancels,
    id: String,
    pub token: CancellationToken,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.cancels.lock().running.remove(&self.id);
    }
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the group's request count moved since the last read.
    pub(super) fn stale(&self, count: u64) -> bool {
        self.lock().seen != count
    }

    /// The requests as read at `count`: tokens of running messages now
    /// requested are cancelled.
    pub(super) fn update(&self, count: u64, requested: HashSet<String>) {
        let mut inner = self.lock();
        for (id, token) in &inner.running {
            if requested.contains(id) {
                token.cancel();
            }
        }
        inner.seen = count;
        inner.requested = requested;
    }

    /// A request carried out: not acted on again.
    pub(super) fn done(&self, id: &str) {
        self.lock().requested.remove(id);
    }

    /// A token for message `id` while it is handled (cancelled already if a
    /// request for it is known).
    pub(super) fn watch(&self, id: String) -> Watch<'_> {
        let token = CancellationToken::new();
        let mut inner = self.lock();
        if inner.requested.contains(&id) {
            token.cancel();
        }
        inner.running.insert(id.clone(), token.clone());
        drop(inner);
        Watch {
            cancels: self,
            id,
            token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_cancels_the_running_message_and_only_it() {
        let c = Cancels::default();
        let a = c.watch("0:0:1-0".into());
        let b = c.watch("0:0:2-0".into());
        assert!(c.stale(1));
        c.update(1, HashSet::from(["0:0:1-0".to_string()]));
        assert!(!c.stale(1));
        assert!(a.token.is_cancelled());
        assert!(!b.token.is_cancelled());
        // A message requested before it starts gets a cancelled token.
        c.update(2, HashSet::from(["0:0:3-0".to_string()]));
        assert!(c.watch("0:0:3-0".into()).token.is_cancelled());
        // Carried out: a later delivery of it is not cancelled again.
        c.done("0:0:3-0");
        assert!(!c.watch("0:0:3-0".into()).token.is_cancelled());
        drop(a);
        assert!(!c.lock().running.contains_key("0:0:1-0"));
    }
}
