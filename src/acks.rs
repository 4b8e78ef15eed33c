//! When a write counts as done: [`Acks`].

use std::time::Duration;

use crate::error::{Error, Result};

/// How long [`Acks::parse`] waits for replicas when the spec names no
/// timeout.
pub const DEFAULT_ACKS_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// After the write, `WAITAOF 1 replicas timeout`: done once the
    /// primary has fsynced it to its append-only file and `replicas`
    /// replicas (0 for none) have fsynced it to theirs. Needs Redis 7.2 or
    /// later (or Valkey 8) with `appendonly yes`; fewer in `timeout` is
    /// [`Error::NotReplicated`](crate::Error::NotReplicated).
    Fsynced {
        /// How many replicas must fsync it too (0: the primary alone).
        replicas: u32,
        /// How long to wait.
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

    /// [`Acks::Fsynced`]: the primary and `replicas` replicas (0 for none)
    /// must fsync each write to their append-only files within `timeout`.
    pub fn fsynced(replicas: u32, timeout: Duration) -> Acks {
        Acks::Fsynced { replicas, timeout }
    }

    /// Parses `primary`, `replicas:N[:TIMEOUT]` (e.g. `replicas:1:500ms`)
    /// or `fsync:N[:TIMEOUT]` (without a timeout, [`DEFAULT_ACKS_TIMEOUT`]),
    /// as the CLI's `--acks` and the worker's `acks` take them.
    pub fn parse(spec: &str) -> Result<Acks> {
        let bad = |why: String| Error::invalid("acks", why);
        let mut parts = spec.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("primary"), None, None, None) => Ok(Acks::Primary),
            (Some(kind @ ("replicas" | "fsync")), Some(n), timeout, None) => {
                let least = u32::from(kind == "replicas");
                let replicas: u32 = n.parse().ok().filter(|n| *n >= least).ok_or_else(|| {
                    bad(format!(
                        "expected a number of replicas from {least} up in {spec:?}"
                    ))
                })?;
                let timeout = match timeout {
                    None => DEFAULT_ACKS_TIMEOUT,
                    Some(t) => crate::duration::parse_duration(t)
                        .ok()
                        .filter(|t| !t.is_zero())
                        .ok_or_else(|| {
                            bad(format!(
                                "expected a timeout such as 500ms or 2s in {spec:?}"
                            ))
                        })?,
                };
                Ok(if kind == "fsync" {
                    Acks::Fsynced { replicas, timeout }
                } else {
                    Acks::Replicas { replicas, timeout }
                })
            }
            _ => Err(bad(format!(
                "expected primary, replicas:N[:TIMEOUT] or fsync:N[:TIMEOUT]; got {spec:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_specs_parse() {
        assert_eq!(Acks::parse("primary").unwrap(), Acks::Primary);
        assert_eq!(
            Acks::parse("replicas:2").unwrap(),
            Acks::replicas(2, DEFAULT_ACKS_TIMEOUT)
        );
        assert_eq!(
            Acks::parse("replicas:1:250ms").unwrap(),
            Acks::replicas(1, Duration::from_millis(250))
        );
        assert_eq!(
            Acks::parse("fsync:0").unwrap(),
            Acks::fsynced(0, DEFAULT_ACKS_TIMEOUT)
        );
        assert_eq!(
            Acks::parse("fsync:2:3s").unwrap(),
            Acks::fsynced(2, Duration::from_secs(3))
        );
        for bad in [
            "",
            "all",
            "replicas",
            "replicas:0",
            "replicas:x",
            "replicas:1:0s",
            "replicas:1:soon",
            "primary:1",
            "replicas:1:1s:x",
        ] {
            let e = Acks::parse(bad).unwrap_err();
            assert!(e.is_invalid_input(), "{bad}: {e}");
            assert!(e.to_string().contains("acks"), "{bad}: {e}");
        }
    }
}
