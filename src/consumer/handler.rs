//! What a handler gets (the message's [`Context`]) and what it returns
//! ([`HandlerError`] says what should happen next).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::envelope::{Headers, Message, StreamId};
use crate::id::MessageId;

/// Where a message came from and how often it was tried.
///
/// The names are shared (`Arc<str>`), so building a context per message
/// costs no allocation for them.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
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
    /// The message's identity within its topic (`<partition>:<lane>:<first
    /// id>`): the same on every attempt, after dead-lettering and after a
    /// replay. Deduplicate on this.
    pub message_id: MessageId,
    /// The stream id of this delivery: unique only within its partition
    /// lane, and new when a shared-mode retry or a replay re-adds the
    /// message (use `message_id` to name the message).
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
    /// The schema version its producer checked the payload against (the
    /// [`HEADER_SCHEMA_VERSION`](crate::HEADER_SCHEMA_VERSION) header), if
    /// it was checked.
    pub schema_version: Option<u32>,
    /// Cancelled when the handler should stop: the message was cancelled
    /// ([`Client::cancel`](crate::Client::cancel), `millrace message
    /// cancel`), or this attempt ran past its [`timeout`](Self::timeout).
    /// The handler then has [`CANCEL_GRACE`] to return before its future
    /// is dropped. See [`Context::cancelled`].
    pub cancel: CancellationToken,
    /// How long this attempt may run: the message's [`HEADER_TIMEOUT`]
    /// header, else the worker's
    /// [`handler_timeout`](crate::WorkerBuilder::handler_timeout); `None`
    /// for no limit.
    pub timeout: Option<Duration>,
    /// Where [`Context::progress`] writes (none in a context made by hand).
    pub(crate) progress: Option<Arc<crate::consumer::progress::Progress>>,
}

impl Context {
    /// Resolves when the handler should stop (see [`Context::cancel`]):
    /// `select!` on it beside the work, or poll
    /// [`is_cancelled`](Self::is_cancelled) between steps.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the handler should stop (see [`Context::cancel`]).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Reports how far the handler got (any `Serialize` value, kept as
    /// JSON): `millrace message show` shows the latest, and it stays with
    /// the result. At most one write per message per second reaches
    /// Redis; a value reported sooner waits (the latest wins) and is
    /// written at the latest when the handler returns. Fails with
    /// [`Error::NotOwner`](crate::Error::NotOwner) when this member's lease
    /// on the partition moved on (ordered mode): nothing is written.
    pub async fn progress<T: serde::Serialize + ?Sized>(&self, value: &T) -> crate::Result<()> {
        let Some(progress) = &self.progress else {
            return Ok(());
        };
        let json = serde_json::to_string(value).map_err(|e| crate::Error::Encode(e.to_string()))?;
        progress.report(&self.whose(), json).await
    }

    /// Whose progress this context reports.
    pub(crate) fn whose(&self) -> crate::consumer::progress::Whose<'_> {
        crate::consumer::progress::Whose {
            topic: &self.topic,
            group: &self.group,
            member: &self.member,
            message_id: &self.message_id,
            epoch: (self.epoch > 0).then_some(self.epoch),
        }
    }
}

/// Header with a message's own handler timeout (a duration: `500ms`, `30s`,
/// `5m`), which replaces the worker's for that message.
pub const HEADER_TIMEOUT: &str = "millrace-timeout";

/// How long a handler whose [`Context::cancel`] fired (cancelled, or timed
/// out) may still run before its future is dropped.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

pub use crate::retry::HandlerError;

/// What a raw handler returns on success: its result as MessagePack, kept
/// with the ack for the group's `result_ttl` and sent to a requester, or
/// `None` for no result.
pub type HandlerOutput = Option<Vec<u8>>;

/// A handler's future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<HandlerOutput, HandlerError>> + Send>>;

/// A handler of raw messages, as the worker stores them.
pub type RawHandler = Arc<dyn Fn(Message, Context) -> HandlerFuture + Send + Sync>;
