//! Promotion: due delayed messages move into their lane streams, and a
//! group's due retries (shared mode) into the group's retry stream.
//!
//! The promoter sleeps (a local timer) until the earliest due time and is
//! woken earlier by a new arrival: every delayed publish that becomes the
//! earliest of its partition pushes a token on the partition's wake list, on
//! which a companion task blocks (`BLPOP`). On a cluster, where one `BLPOP`
//! cannot span partitions, it polls every 100 ms instead. It never sleeps
//! more than a second, so a missed wake-up costs at most that.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Rt;
use super::discipline::Discipline;
use crate::client::Client;
use crate::error::Result;
use crate::store::promote::Promote;
use crate::topic::Catalog;
use crate::topic::TopicSpec;

/// Longest sleep between two promotion rounds.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Entries moved per script call.
const CHUNK: usize = 500;

/// Promotes what is due in `partitions` (and, with `group`, that group's
/// retries); returns the time until the next due entry, if any.
pub(crate) async fn promote_once(
    catalog: &Catalog,
    spec: &TopicSpec,
    group: Option<&str>,
    partitions: &[u32],
) -> Result<Option<Duration>> {
    let step = Promote {
        topic: &spec.name,
        lanes: spec.lanes,
        max_len: spec.max_len,
        retention: spec.retention,
        group,
        partitions,
        chunk: CHUNK,
    };
    loop {
        let round = catalog.store().promote(step).await?;
        if !round.full {
            return Ok(round.next);
        }
    }
}

/// Blocks on the partitions' wake lists (`BLPOP`, up to a second at a time)
/// and signals `wake` whenever a token arrives, until `stop`. On a cluster,
/// where one `BLPOP` cannot span partitions, it does nothing: the promoter
/// then polls every 100 ms. The due times themselves are kept with local
/// timers, which are more precise than Redis's blocking timeouts.
async fn waker(
    catalog: Catalog,
    topic: String,
    partitions: impl Fn() -> Vec<u32>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    if catalog.is_cluster() {
        return;
    }
    loop {
        let parts = partitions();
        if parts.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(MAX_WAIT) => continue,
                _ = stop.cancelled() => return,
            }
        }
        tokio::select! {
            r = catalog.wait_for_wake(&topic, &parts, Duration::from_secs(1)) => match r {
                Ok(false) => {}
                Ok(true) => wake.notify_one(),
                Err(e) => {
                    tracing::debug!(topic = %topic, error = %e, "wake wait failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// Promotes until `stop`: after each round, sleeps until the next due time
/// (at most a second; 100 ms on a cluster), or until woken.
async fn run_promoter(
    catalog: Catalog,
    spec: Arc<TopicSpec>,
    group: Option<String>,
    partitions: impl Fn() -> Vec<u32> + Clone + Send + 'static,
    extra: Arc<Notify>,
    stop: CancellationToken,
) {
    let wake = Arc::new(Notify::new());
    let cap = if catalog.is_cluster() {
        Duration::from_millis(100)
    } else {
        MAX_WAIT
    };
    let waker = tokio::spawn(waker(
        catalog.clone(),
        spec.name.clone(),
        partitions.clone(),
        wake.clone(),
        stop.clone(),
    ));
    loop {
        let woken = wake.notified();
        let poked = extra.notified();
        let parts = partitions();
        let wait = match promote_once(&catalog, &spec, group.as_deref(), &parts).await {
            Ok(next) => next.unwrap_or(cap).min(cap),
            Err(e) => {
                tracing::warn!(topic = %spec.name, error = %e, "promotion failed; retrying");
                MAX_WAIT
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = woken => {}
            _ = poked => {}
            _ = stop.cancelled() => break,
        }
    }
    waker.abort();
}

impl<D: Discipline> Rt<D> {
    pub(super) async fn promote_loop(self: Arc<Self>) {
        let group = D::PROMOTES_RETRIES.then(|| self.s.group.clone());
        let stop = CancellationToken::new();
        let rt = self.clone();
        let partitions = move || -> Vec<u32> {
            rt.lock()
                .owned
                .iter()
                .filter(|(_, o)| !o.lease.draining)
                .map(|(p, _)| *p)
                .collect()
        };
        // Ownership changes and local retries poke the promoter.
        let extra = Arc::new(Notify::new());
        let (e1, e2) = (extra.clone(), self.clone());
        let forward = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = e2.wake.changed.notified() => e1.notify_one(),
                    _ = e2.wake.scheduled.notified() => e1.notify_one(),
                }
            }
        });
        let runner = run_promoter(
            self.catalog.clone(),
            self.spec.clone(),
            group,
            partitions,
            extra,
            stop.clone(),
        );
        tokio::select! {
            _ = runner => {}
            _ = self.stop.reading.cancelled() => stop.cancel(),
            _ = self.stop.killed.cancelled() => stop.cancel(),
        }
        forward.abort();
    }
}

/// Promotes a topic's delayed messages on its own, without a worker (any
/// number may run; each move is atomic). Workers also promote the partitions
/// they read, so this is for topics nobody consumes yet, or to keep
/// promotion apart from handling.
pub struct Promoter {
    catalog: Catalog,
    topic: String,
}

impl Promoter {
    /// A promoter of every partition of `topic`.
    pub fn new(client: &Client, topic: &str) -> Self {
        Promoter {
            catalog: client.catalog().clone(),
            topic: topic.to_string(),
        }
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let spec = self.catalog.topic_cached(&self.topic).await?;
        let n = spec.partitions;
        let stop = CancellationToken::new();
        let runner = run_promoter(
            self.catalog.clone(),
            spec,
            None,
            move || (0..n).collect(),
            Arc::new(Notify::new()),
            stop.clone(),
        );
        tokio::select! {
            _ = runner => {}
            _ = shutdown => stop.cancel(),
        }
        Ok(())
    }
}
