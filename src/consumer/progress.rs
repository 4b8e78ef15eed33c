//! Progress a running handler reports (`Context::progress`): kept in the
//! message's result hash for the group (fields `p`, `pt`), fenced like an
//! ack, and rate-limited per message: at most one write per
//! [`PROGRESS_EVERY`]; a value reported sooner waits, the latest one wins,
//! and what still waits when the handler returns is written then.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::id::MessageId;
use crate::store::Guarded;
use crate::store::Holder;
use crate::store::results::ResultOf;
use crate::topic::Catalog;

/// At most one progress write per message this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Whose progress: the message and the member handling it.
#[derive(Clone, Debug)]
pub(crate) struct Whose<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub member: &'a str,
    pub message_id: &'a MessageId,
    /// Ordered mode: the lease epoch (writes are fenced); shared: none.
    pub epoch: Option<u64>,
}

/// One message's reporting.
struct Slot {
    last: Instant,
    waiting: Option<String>,
}

/// A worker topic's progress writer.
pub(crate) struct Progress {
    catalog: Catalog,
    /// How long the hash is kept after each write.
    ttl_ms: u64,
    slots: Mutex<HashMap<MessageId, Slot>>,
    /// Whether `slots` may hold anything (checked without the lock: most
    /// handlers never report progress).
    any: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("ttl_ms", &self.ttl_ms)
            .finish()
    }
}

impl Progress {
    pub(crate) fn new(catalog: Catalog, ttl: Duration) -> Self {
        Progress {
            catalog,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            slots: Mutex::default(),
            any: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MessageId, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports `json`: written now, or, within [`PROGRESS_EVERY`] of the
    /// last write, kept to write later (replacing any value waiting).
    pub(crate) async fn report(&self, w: &Whose<'_>, json: String) -> Result<()> {
        let now = Instant::now();
        {
            let mut slots = self.lock();
            match slots.get_mut(w.message_id) {
                Some(s) if now.duration_since(s.last) < PROGRESS_EVERY => {
                    s.waiting = Some(json);
                    return Ok(());
                }
                Some(s) => {
                    s.last = now;
                    s.waiting = None;
                }
                None => {
                    self.any.store(true, std::sync::atomic::Ordering::Release);
                    slots.insert(
                        w.message_id.clone(),
                        Slot {
                            last: now,
                            waiting: None,
                        },
                    );
                }
            }
        }
        self.write(w, &json).await
    }

    /// The handler returned: writes the progress still waiting, if any.
    pub(crate) async fn finish(&self, w: &Whose<'_>) -> Result<()> {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let waiting = {
            let mut slots = self.lock();
            let waiting = slots.remove(w.message_id).and_then(|s| s.waiting);
            if slots.is_empty() {
                self.any.store(false, std::sync::atomic::Ordering::Release);
            }
            waiting
        };
        match waiting {
            Some(json) => self.write(w, &json).await,
            None => Ok(()),
        }
    }

    async fn write(&self, w: &Whose<'_>, json: &str) -> Result<()> {
        let id = w.message_id;
        let of = ResultOf {
            topic: w.topic,
            partition: id.partition(),
            group: w.group,
            lane: id.lane(),
            first: id.first(),
        };
        let holder = w.epoch.map(|epoch| Holder {
            member: w.member,
            epoch,
        });
        match self
            .catalog
            .store()
            .write_progress(of, holder, json, self.ttl_ms)
            .await?
        {
            Guarded::Done(()) => Ok(()),
            Guarded::LeaseLost => Err(Error::NotOwner {
                topic: w.topic.to_string(),
                partition: id.partition(),
            }),
        }
    }
}
