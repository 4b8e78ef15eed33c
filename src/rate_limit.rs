//! A group's rate limit: at most N handler starts per window, shared by all
//! members of the group and counted in Redis (`lua/rate_take.lua`, a fixed
//! window: a burst of up to 2N can straddle a window boundary).
//!
//! Members take permits in small batches, so the limit costs one round trip
//! per batch, not per message.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::store::backend::Backend;
use crate::store::coordination::{RateAsk, RateGrant};

/// `permits` handler starts per `per`, e.g. `50/1s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Starts allowed per window.
    pub permits: u32,
    /// The window.
    pub per: Duration,
}

impl std::str::FromStr for RateLimit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "rate limit",
                format!("{s:?}: write N/DURATION, e.g. 100/1s"),
            )
        };
        let (n, per) = s.split_once('/').ok_or_else(bad)?;
        let permits: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = parse_duration(per.trim()).map_err(|_| bad())?;
        if permits == 0 || per.is_zero() {
            return Err(bad());
        }
        Ok(RateLimit { permits, per })
    }
}

/// Permits of one window held by a member and not used yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// Redis's number for the window the permits belong to.
    window: u64,
    /// Unused permits.
    left: u32,
    /// The window's end as seen locally, never later than the real end.
    until: Instant,
}

impl Held {
    fn none(now: Instant) -> Self {
        Held {
            window: 0,
            left: 0,
            until: now,
        }
    }

    /// Uses one held permit if the window has not ended.
    fn take(&mut self, now: Instant) -> bool {
        if self.left > 0 && now < self.until {
            self.left -= 1;
            true
        } else {
            false
        }
    }

    /// Records a grant of `granted` permits of `window` ending at `until`;
    /// returns whether the caller may start now (using one of them).
    ///
    /// A grant that arrives after its window ended, or that belongs to an
    /// older window than the permits held, is not used: starting on it would
    /// count against a window Redis has already handed out in full. Permits
    /// wasted that way only make the limit stricter.
    fn grant(&mut self, window: u64, granted: u32, until: Instant, now: Instant) -> bool {
        if granted == 0 || now >= until || (window < self.window && now < self.until) {
            return false;
        }
        if window == self.window && now < self.until {
            self.left += granted - 1;
            self.until = self.until.min(until);
        } else {
            *self = Held {
                window,
                left: granted - 1,
                until,
            };
        }
        true
    }
}

/// One member's view of the group's limit: permits taken from Redis and not
/// used yet in the current window.
pub(crate) struct RateGate {
    limit: RateLimit,
    topic: String,
    group: String,
    held: Mutex<Held>,
}

impl RateGate {
    pub(crate) fn new(limit: RateLimit, topic: &str, group: &str) -> Self {
        RateGate {
            limit,
            topic: topic.to_string(),
            group: group.to_string(),
            held: Mutex::new(Held::none(Instant::now())),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until this member may start one handler.
    pub(crate) async fn take(&self, backend: &Backend) -> Result<()> {
        loop {
            if self.held().take(Instant::now()) {
                return Ok(());
            }
            // A small share per request keeps members from hoarding.
            let want = (self.limit.permits / 10).clamp(1, 20);
            // The window's end is measured from the moment the request left,
            // less Redis's millisecond rounding: never later than the real end.
            let sent = Instant::now();
            let RateGrant {
                granted,
                left_ms,
                window,
            } = backend
                .store()
                .rate_take(
                    &self.topic,
                    &self.group,
                    RateAsk {
                        permits: self.limit.permits,
                        per: self.limit.per,
                        want,
                    },
                )
                .await?;
            let until = sent + Duration::from_millis(left_ms.saturating_sub(1));
            if self.held().grant(window, granted, until, Instant::now()) {
                return Ok(());
            }
            if granted == 0 {
                // Sleep past the real end (our estimate is early by design).
                tokio::time::sleep_until((until + Duration::from_millis(2)).into()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_n_per_duration() {
        assert_eq!(
            "50/1s".parse::<RateLimit>().unwrap(),
            RateLimit {
                permits: 50,
                per: Duration::from_secs(1)
            }
        );
        for bad in ["50", "0/1s", "x/1s", "5/0s", "5/soon"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn held_permits_never_outlive_their_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut h = Held::none(t0);
        assert!(!h.take(t0));
        // 5 permits of window 7, ending at t0+100ms: one used at once.
        assert!(h.grant(7, 5, t0 + ms(100), t0));
        for _ in 0..4 {
            assert!(h.take(t0 + ms(10)));
        }
        assert!(!h.take(t0 + ms(10)), "only 5 were granted");
        // More of the same window add up; once the window ends none is used.
        assert!(h.grant(7, 3, t0 + ms(100), t0 + ms(20)));
        assert!(h.take(t0 + ms(99)));
        assert!(!h.take(t0 + ms(100)), "the window has ended");
    }

    #[test]
    fn late_or_stale_grants_are_not_used() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut h = Held::none(t0);
        // Arrived after its window ended.
        assert!(!h.grant(3, 5, t0 + ms(10), t0 + ms(10)));
        // Window 4 held; a slow reply from window 3 must not start anything.
        assert!(h.grant(4, 2, t0 + ms(500), t0 + ms(20)));
        assert!(!h.grant(3, 5, t0 + ms(400), t0 + ms(21)));
        assert_eq!(h.left, 1);
        // A newer window replaces what is held.
        assert!(h.grant(5, 2, t0 + ms(900), t0 + ms(600)));
        assert_eq!((h.window, h.left), (5, 1));
    }
}
