//! When a write counts as done: [`Acks`].

use std::time::Duration;

/// When a write counts as done: once the primary has it, or once replicas
/// confirm it too (Kafka's `acks=all` with `min.insync.replicas`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acks {
    /// The primary's reply is enough (the default). A failover right after
    /// may lose what was acknowledged and not yet replicated.
    #[default]
    Primary,
    /// After the write, `WAIT replicas timeout`: done once `replicas`
    /// replicas have it; fewer in `timeout` is
    /// [`Error::NotReplicated`](crate::Error::NotReplicated) (the outcome is unknown: publish again with
    /// the same dedup id).
    Replicas {
        /// How many replicas must confirm (at least 1).
        replicas: u32,
        /// How long to wait for them.
        timeout: Duration,
    },
}

impl Acks {
    /// [`Acks::Replicas`]: `replicas` (at least 1) must confirm each write
    /// within `timeout`.
    pub fn replicas(replicas: u32, timeout: Duration) -> Acks {
        Acks::Replicas {
            replicas: replicas.max(1),
            timeout,
        }
    }
}
