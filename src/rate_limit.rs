//! A group's rate limit: at most N handler starts per window, shared by all
//! members of the group and counted in Redis (`lua/rate_take.lua`, a fixed
//! window: a burst of up to 2N can straddle a window boundary).
//!
//! Members take permits in small batches, so the limit costs one round trip
//! per batch, not per message.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::duration::parse_duration;
use crate::error::{Error, Result};

/// `permits` handler starts per `per`, e.g. `50/1s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// One member's view of the group's limit: permits taken from Redis and not
/// used yet in the current window.
pub(crate) struct RateGate {
    limit: RateLimit,
    key: String,
    local: Mutex<(u32, Instant)>,
}

impl RateGate {
    pub(crate) fn new(limit: RateLimit, key: String) -> Self {
        RateGate {
            limit,
            key,
            local: Mutex::new((0, Instant::now())),
        }
    }

    fn take_local(&self) -> bool {
        let mut l = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if l.0 > 0 && Instant::now() < l.1 {
            l.0 -= 1;
            true
        } else {
            false
        }
    }

    /// Waits until this member may start one handler.
    pub(crate) async fn take(&self, client: &Client) -> Result<()> {
        loop {
            if self.take_local() {
                return Ok(());
            }
            // A small share per request keeps members from hoarding.
            let want = (self.limit.permits / 10).clamp(1, 20);
            let args = [
                self.limit.permits.to_string(),
                (self.limit.per.as_millis() as u64).max(1).to_string(),
                want.to_string(),
            ];
            let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let v = client
                .connection()
                .eval(
                    &client.inner.scripts,
                    &client.inner.scripts.rate_take,
                    &[&self.key],
                    &argv,
                )
                .await?;
            let (granted, left_ms): (u32, u64) =
                redis::from_redis_value(v).map_err(|e| Error::Decode(e.to_string()))?;
            let window_end = Instant::now() + Duration::from_millis(left_ms);
            if granted > 0 {
                // Other tasks of this member may have taken permits of the
                // same window meanwhile: add, do not overwrite.
                let mut l = self.local.lock().unwrap_or_else(|e| e.into_inner());
                if Instant::now() < l.1 {
                    l.0 += granted - 1;
                } else {
                    *l = (granted - 1, window_end);
                }
                return Ok(());
            }
            tokio::time::sleep_until(window_end.into()).await;
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
}
