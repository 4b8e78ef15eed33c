//! What a handler gets (the message's [`Context`]) and what it returns
//! ([`HandlerError`] says what should happen next).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::envelope::{Headers, Message, StreamId};

/// Where a message came from and how often it was tried.
///
/// The names are shared (`Arc<str>`), so building a context per message
/// costs no allocation for them.
#[derive(Clone, Debug)]
pub struct Context {
    /// The topic.
    pub topic: Arc<str>,
    /// The consumer group handling it.
    pub group: Arc<str>,
    /// This member's id.
    pub member: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The lane (priority).
    pub lane: u8,
    /// The message id (stream id).
    pub id: StreamId,
    /// The partition key.
    pub key: Option<String>,
    /// The headers.
    pub headers: Headers,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// In ordered mode, the fencing token of the partition's lease: it grows
    /// every time the partition changes hands, so a resource that must see
    /// one member at a time can refuse a lower epoch than the highest it has
    /// seen for `(group, partition)` (a member paused after its lease ran
    /// out is then fenced off even if its handler already started). 0 in
    /// shared mode.
    pub epoch: u64,
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

/// A handler's future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A handler of raw messages, as the worker stores them.
pub type RawHandler = Arc<dyn Fn(Message, Context) -> HandlerFuture + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

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
}
