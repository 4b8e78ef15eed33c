//! Retry policy (pure logic): how many attempts a message gets in a group,
//! how long to wait between them, and when it goes to the dead-letter queue.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// How the wait between attempts grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backoff {
    /// The same delay every time.
    Fixed,
    /// `delay × 2^(attempt-1)`, capped at `max_delay` (the default).
    #[default]
    Exponential,
}

impl std::str::FromStr for Backoff {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fixed" => Ok(Backoff::Fixed),
            "exponential" => Ok(Backoff::Exponential),
            other => Err(Error::invalid(
                "backoff",
                format!("{other:?}: use fixed or exponential"),
            )),
        }
    }
}

/// A group's retry policy.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in total, the first included (default 3); at least 1.
    pub max_attempts: u32,
    /// Fixed or exponential.
    pub backoff: Backoff,
    /// The first wait (default 1 s).
    pub delay: Duration,
    /// The longest wait (default 1 min).
    pub max_delay: Duration,
    /// Random spread of each wait, as a fraction: 0.2 means ±20 % (default 0.2).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

/// Header capping a message's attempts below its group's `max_attempts`
/// (a positive integer; see
/// [`PublishOptions::max_attempts`](crate::PublishOptions::max_attempts)).
pub const HEADER_MAX_ATTEMPTS: &str = "millrace-max-attempts";

/// The value of a [`HEADER_MAX_ATTEMPTS`] header: a positive integer.
pub(crate) fn attempts_cap(value: &str) -> Result<u32> {
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::invalid(
            HEADER_MAX_ATTEMPTS,
            format!("{value:?}: must be a whole number of attempts, at least 1"),
        )),
    }
}

/// What happens to a message after a failed attempt.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Decision {
    /// Try again after this wait.
    Retry(Duration),
    /// Give up: to the dead-letter queue.
    DeadLetter,
}

impl RetryPolicy {
    /// A policy with `max_attempts` attempts and the default backoff.
    pub fn attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts,
            ..RetryPolicy::default()
        }
    }

    /// The same wait, `delay`, before every retry (no growth, no cap
    /// beyond it).
    #[must_use]
    pub fn fixed(mut self, delay: Duration) -> Self {
        self.backoff = Backoff::Fixed;
        self.delay = delay;
        self.max_delay = delay;
        self
    }

    /// Waits that double from `delay` up to `max_delay`.
    #[must_use]
    pub fn exponential(mut self, delay: Duration, max_delay: Duration) -> Self {
        self.backoff = Backoff::Exponential;
        self.delay = delay;
        self.max_delay = max_delay;
        self
    }

    /// The random spread of each wait, as a fraction (0.2 = ±20 %).
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::invalid("max_attempts", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid("jitter", "must be between 0 and 1"));
        }
        if self.max_delay < self.delay {
            return Err(Error::invalid("max_delay", "must not be less than delay"));
        }
        Ok(())
    }

    /// The wait before attempt `attempt + 1`, after attempt `attempt` (from
    /// 1) failed, with `unit` a random number in [0, 1) for the jitter.
    pub fn backoff_after(&self, attempt: u32, unit: f64) -> Duration {
        let base = match self.backoff {
            Backoff::Fixed => self.delay,
            Backoff::Exponential => {
                let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
                self.delay.saturating_mul(factor)
            }
        }
        .min(self.max_delay);
        let spread = (unit.clamp(0.0, 1.0) * 2.0 - 1.0) * self.jitter;
        base.mul_f64((1.0 + spread).max(0.0)).min(self.max_delay)
    }

    /// What to do after attempt `attempt` failed with `error`, for a
    /// message whose own cap (its `millrace-max-attempts` header) is `cap`:
    /// the fewer of the cap and `max_attempts` wins.
    pub(crate) fn decide(
        &self,
        attempt: u32,
        error: &HandlerError,
        unit: f64,
        cap: Option<u32>,
    ) -> Decision {
        let max = cap.map_or(self.max_attempts, |c| c.min(self.max_attempts));
        if error.is_permanent() || attempt >= max {
            return Decision::DeadLetter;
        }
        match error.retry_delay() {
            Some(d) => Decision::Retry(d),
            None => Decision::Retry(self.backoff_after(attempt, unit)),
        }
    }
}

/// What went wrong in a handler, and what should happen next.
///
/// `?` on any error converts it into a retryable `HandlerError`; say
/// [`HandlerError::permanent`] when retrying cannot help. (It deliberately
/// does not implement `std::error::Error`, so that blanket conversion works,
/// as with `anyhow::Error`.)
pub struct HandlerError {
    kind: Kind,
    error: Box<dyn std::error::Error + Send + Sync>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Retry,
    RetryAfter(Duration),
    Permanent,
}

impl HandlerError {
    /// A failure worth retrying with the group's backoff.
    pub fn retry(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        HandlerError {
            kind: Kind::Retry,
            error: error.into(),
        }
    }

    /// A failure worth retrying after `delay`.
    pub fn retry_after(
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        delay: Duration,
    ) -> Self {
        HandlerError {
            kind: Kind::RetryAfter(delay),
            error: error.into(),
        }
    }

    /// A failure that retrying cannot fix (bad data): straight to the
    /// dead-letter queue.
    pub fn permanent(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        HandlerError {
            kind: Kind::Permanent,
            error: error.into(),
        }
    }

    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.kind == Kind::Permanent
    }

    /// The delay the handler asked for, if any.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self.kind {
            Kind::RetryAfter(d) => Some(d),
            _ => None,
        }
    }

    /// The underlying error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::retry(e)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("error", &self.error)
            .finish()
    }
}

/// A random number in [0, 1) for jitter (not for anything that needs
/// unpredictability).
pub(crate) fn jitter_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_the_backoff() {
        let f = RetryPolicy::attempts(4)
            .fixed(Duration::from_millis(20))
            .jitter(0.0);
        assert_eq!(
            (f.max_attempts, f.backoff, f.delay, f.max_delay, f.jitter),
            (
                4,
                Backoff::Fixed,
                Duration::from_millis(20),
                Duration::from_millis(20),
                0.0
            )
        );
        assert_eq!(f.backoff_after(3, 0.9), Duration::from_millis(20));
        let e = RetryPolicy::default().exponential(Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(e.jitter(0.0).backoff_after(4, 0.5), Duration::from_secs(5));
    }

    fn fails() -> Result<(), HandlerError> {
        let n: u32 = "x".parse()?;
        let _ = n;
        Ok(())
    }

    #[test]
    fn question_mark_means_retry() {
        let e = fails().unwrap_err();
        assert!(!e.is_permanent());
        assert_eq!(e.retry_delay(), None);
        assert_eq!(e.to_string(), "invalid digit found in string");
        let p = HandlerError::permanent("bad invoice");
        assert!(p.is_permanent());
        let later = HandlerError::retry_after("busy", Duration::from_secs(3));
        assert_eq!(later.retry_delay(), Some(Duration::from_secs(3)));
    }

    fn policy(backoff: Backoff) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            backoff,
            delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(3),
            jitter: 0.2,
        }
    }

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let p = policy(Backoff::Exponential);
        let waits: Vec<u64> = (1..=5)
            .map(|a| p.backoff_after(a, 0.5).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![500, 1000, 2000, 3000, 3000]);
        assert_eq!(p.backoff_after(40, 0.5), Duration::from_secs(3));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = policy(Backoff::Fixed);
        assert_eq!(p.backoff_after(1, 0.0), Duration::from_millis(400));
        assert_eq!(p.backoff_after(1, 1.0), Duration::from_millis(600));
        for _ in 0..100 {
            let w = p.backoff_after(3, jitter_unit());
            assert!(w >= Duration::from_millis(400) && w <= Duration::from_millis(600));
        }
    }

    #[test]
    fn decisions() {
        let p = policy(Backoff::Fixed);
        let retry = HandlerError::retry("flaky");
        assert_eq!(
            p.decide(1, &retry, 0.5, None),
            Decision::Retry(Duration::from_millis(500))
        );
        assert_eq!(p.decide(5, &retry, 0.5, None), Decision::DeadLetter);
        assert_eq!(
            p.decide(1, &HandlerError::permanent("bad"), 0.5, None),
            Decision::DeadLetter
        );
        let later = HandlerError::retry_after("busy", Duration::from_secs(7));
        assert_eq!(
            p.decide(2, &later, 0.5, None),
            Decision::Retry(Duration::from_secs(7))
        );
        // A message's own cap lowers the group's maximum, never raises it.
        assert_eq!(p.decide(2, &retry, 0.5, Some(2)), Decision::DeadLetter);
        assert_eq!(
            p.decide(1, &retry, 0.5, Some(2)),
            Decision::Retry(Duration::from_millis(500))
        );
        assert_eq!(p.decide(5, &retry, 0.5, Some(9)), Decision::DeadLetter);
        assert_eq!(
            p.decide(4, &retry, 0.5, Some(9)),
            Decision::Retry(Duration::from_millis(500))
        );
        assert!(RetryPolicy::attempts(0).validate().is_err());
        assert!(RetryPolicy::default().validate().is_ok());
    }
}
