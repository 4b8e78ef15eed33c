//! Request-reply: [`Client::request`](crate::Client::request) publishes a message that names its
//! requester, a correlation number and the group that answers; that group's
//! worker keeps the handler's result with the ack and publishes the reply
//! to the requester's channel in the same script (`lua/ack.lua`, or
//! `lua/dead_letter.lua` for a failure).
//!
//! One `Requester` per [`Client`](crate::Client) (its clones share it): one Pub/Sub
//! connection subscribed to `<prefix>:reply:<requester id>` and a map of
//! the requests in flight, however many there are. Publishing goes through
//! the client's shared producer (the multiplexed connection), so a thousand
//! requests in flight use two connections. A reply lost while the
//! subscription was down is read back from the kept result when the
//! subscription is back, and once more at the timeout. A request given up
//! (timed out, or its future dropped) leaves nothing behind in the process;
//! in Redis its kept result expires with the group's `result_ttl`.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::duration::Doubling;
use crate::error::{Error, Result};
use crate::id::MessageId;
use crate::producer::{Producer, Record};
use crate::reply::{HEADER_CORRELATION, HEADER_REPLY_GROUP, HEADER_REPLY_TO, Outcome, ReplyWire};
use crate::store::keys::validate_name;
use crate::store::results::ResultOf;
use crate::topic::Catalog;

/// How long a request waits for its reply by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a group found alive is trusted without asking again.
const LIVE_FOR: Duration = Duration::from_secs(1);

/// How often an idle reply connection is checked.
const PING_EVERY: Duration = Duration::from_secs(5);

/// A request being built; `.await` it to send it and wait for the reply.
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn run(client: millrace::Client) -> millrace::Result<()> {
/// let reply: millrace::Reply<u64> = client
///     .request("shop.v1.price.quote", &serde_json::json!({"sku": "A-1"}))
///     .group("pricing")
///     .timeout(Duration::from_secs(5))
///     .await?;
/// println!("{} cents (message {})", reply.value, reply.message_id);
/// # Ok(()) }
/// ```
#[must_use = "a request does nothing until it is awaited"]
pub struct Request<T> {
    catalog: Catalog,
    producer: Producer,
    requester: Arc<Requester>,
    topic: String,
    record: Result<Record>,
    group: Option<String>,
    timeout: Duration,
    _reply: PhantomData<fn() -> T>,
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Reply<T> {
    /// What the group's handler returned.
    pub value: T,
    /// The request's message id.
    pub message_id: MessageId,
    /// The group that answered.
    pub group: String,
}

impl<T> Request<T> {
    pub(crate) fn new(
        (catalog, producer, requester): (Catalog, Producer, Arc<Requester>),
        topic: &str,
        record: Result<Record>,
    ) -> Self {
        Request {
            catalog,
            producer,
            requester,
            topic: topic.to_string(),
            record,
            group: None,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            _reply: PhantomData,
        }
    }

    /// The group whose handler answers (required).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// How long to wait for the reply (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The partition key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.record = self.record.map(|r| r.key(key));
        self
    }

    /// A header for the handler.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.record = self.record.map(|r| r.header(name, value));
        self
    }

    /// The lane (priority) of the request.
    pub fn priority(mut self, lane: u8) -> Self {
        self.record = self.record.map(|r| r.priority(lane));
        self
    }
}

impl<T: DeserializeOwned + Send + 'static> Request<T> {
    async fn send(self) -> Result<Reply<T>> {
        let group = self.group.ok_or_else(|| {
            Error::invalid(
                "request",
                "no group: name the group that answers with .group()",
            )
        })?;
        validate_name("group", &group)?;
        let record = self.record?;
        let (message_id, value) = self
            .requester
            .ask(
                (&self.catalog, &self.producer),
                &self.topic,
                &group,
                record,
                self.timeout,
            )
            .await?;
        let value = rmp_serde::from_slice(&value)
            .map_err(|e| Error::Decode(format!("the reply to message {message_id}: {e}")))?;
        Ok(Reply {
            value,
            message_id,
            group,
        })
    }
}

impl<T: DeserializeOwned + Send + 'static> IntoFuture for Request<T> {
    type Output = Result<Reply<T>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Reply<T>>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// The reply a kept result stands for: the value decoded as `T`, or the
/// failure (a dead letter's error, or `cancelled`) as
/// [`Error::RequestFailed`].
pub(crate) fn reply_from_kept<T: DeserializeOwned>(
    topic: &str,
    group: &str,
    id: &MessageId,
    kept: crate::reply::KeptResult,
) -> Result<Reply<T>> {
    match kept.outcome {
        Ok(value) => Ok(Reply {
            value: rmp_serde::from_slice(&value)
                .map_err(|e| Error::Decode(format!("the reply to message {id}: {e}")))?,
            message_id: id.clone(),
            group: group.to_string(),
        }),
        Err(error) => Err(Error::RequestFailed {
            topic: topic.to_string(),
            group: group.to_string(),
            message_id: id.to_string(),
            attempts: kept.attempts,
            error,
        }),
    }
}

/// A request's payload as a record (MessagePack of `payload`).
pub(crate) fn record_of<P: Serialize + ?Sized>(payload: &P) -> Result<Record> {
    Record::encode(payload)
}

/// Whether the reply channel is subscribed.
#[derive(Clone, Debug)]
enum Listening {
    Not,
    Yes,
    Failed(String),
}

/// A request in flight.
struct Waiter {
    tx: oneshot::Sender<Outcome>,
    /// Where its result is kept, once it is published.
    kept: Option<Kept>,
}

/// A published request's result key, owned.
#[derive(Clone, Debug)]
struct Kept {
    topic: String,
    group: String,
    message_id: MessageId,
}

impl Kept {
    fn of(&self) -> ResultOf<'_> {
        ResultOf {
            topic: &self.topic,
            partition: self.message_id.partition(),
            group: &self.group,
            lane: self.message_id.lane(),
            first: self.message_id.first(),
        }
    }
}

/// A client's requests in flight and the connection their replies come on.
pub(crate) struct Requester {
    id: String,
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiter>>,
    /// (topic, group) → when it was last seen with live members.
    live: Mutex<HashMap<(String, String), Instant>>,
    state: watch::Sender<Listening>,
    started: AtomicBool,
}

impl Default for Requester {
    fn default() -> Self {
        Requester {
            id: requester_id(),
            next: AtomicU64::new(1),
            waiting: Mutex::default(),
            live: Mutex::default(),
            state: watch::Sender::new(Listening::Not),
            started: AtomicBool::new(false),
        }
    }
}

/// A process-unique requester id (valid as a name: it goes in a header).
fn requester_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "r{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes a request's waiter however its wait ends.
struct Forget<'a> {
    requester: &'a Requester,
    correlation: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.requester.lock().remove(&self.correlation);
    }
}

impl Requester {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests waiting for a reply now (for tests and metrics).
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().len()
    }

    /// Publishes `record` as a request to `group` and waits for its reply:
    /// the message id and the handler's result (MessagePack).
    async fn ask(
        self: &Arc<Self>,
        (catalog, producer): (&Catalog, &Producer),
        topic: &str,
        group: &str,
        record: Record,
        timeout: Duration,
    ) -> Result<(MessageId, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        catalog.topic_cached(topic).await?;
        self.check_responders(catalog, topic, group).await?;
        self.listen(catalog, deadline, topic, group, timeout)
            .await?;
        let correlation = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(correlation, Waiter { tx, kept: None });
        let _forget = Forget {
            requester: self,
            correlation,
        };
        let record = record
            .header(HEADER_REPLY_TO, &self.id)
            .header(HEADER_CORRELATION, correlation.to_string())
            .header(HEADER_REPLY_GROUP, group);
        let receipt = producer.publish(topic, record).await?;
        let kept = Kept {
            topic: topic.to_string(),
            group: group.to_string(),
            message_id: receipt.message_id.clone(),
        };
        if let Some(w) = self.lock().get_mut(&correlation) {
            w.kept = Some(kept.clone());
        }
        let outcome = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(outcome)) => outcome,
            // Timed out: a reply lost with a dropped connection may still be
            // kept. Look once more.
            _ => match catalog.store().kept_result(kept.of()).await? {
                Some(k) => Outcome::from(k),
                None => {
                    return Err(Error::RequestTimeout {
                        topic: topic.to_string(),
                        group: group.to_string(),
                        timeout,
                        message_id: Some(receipt.message_id.to_string()),
                    });
                }
            },
        };
        match outcome {
            Outcome::Ok(value) => Ok((receipt.message_id, value)),
            Outcome::Failed(error, attempts) => Err(Error::RequestFailed {
                topic: topic.to_string(),
                group: group.to_string(),
                message_id: receipt.message_id.to_string(),
                attempts,
                error,
            }),
        }
    }

    /// Fails with [`Error::NoResponders`] unless `group` has a live member
    /// (a group found alive is trusted for a second).
    async fn check_responders(&self, catalog: &Catalog, topic: &str, group: &str) -> Result<()> {
        let key = (topic.to_string(), group.to_string());
        let fresh = |seen: &Instant| seen.elapsed() < LIVE_FOR;
        if self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(fresh)
        {
            return Ok(());
        }
        let store = catalog.store();
        if store.responders(topic, group).await? > 0 {
            self.live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, Instant::now());
            return Ok(());
        }
        let reason = if store.group_exists(topic, group).await? {
            format!("group {group} has no live member")
        } else {
            format!("group {group} does not exist")
        };
        Err(Error::NoResponders {
            topic: topic.to_string(),
            group: group.to_string(),
            reason,
        })
    }

    /// Starts the reply listener on first use and waits until it is
    /// subscribed (at most until `deadline`).
    async fn listen(
        self: &Arc<Self>,
        catalog: &Catalog,
        deadline: Instant,
        topic: &str,
        group: &str,
        timeout: Duration,
    ) -> Result<()> {
        if !self.started.swap(true, Ordering::SeqCst) {
            let channel = catalog.keys().reply_channel(&self.id);
            tokio::spawn(listen(Arc::downgrade(self), catalog.clone(), channel));
        }
        let mut state = self.state.subscribe();
        loop {
            match &*state.borrow_and_update() {
                Listening::Yes => return Ok(()),
                Listening::Failed(why) => {
                    return Err(Error::from(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        format!("cannot subscribe for replies: {why}"),
                    ))));
                }
                Listening::Not => {}
            }
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(Error::RequestTimeout {
                        topic: topic.to_string(),
                        group: group.to_string(),
                        timeout,
                        message_id: None,
                    });
                }
            }
        }
    }

    /// Hands a reply to its request, if it is still waiting.
    fn deliver(&self, payload: &[u8]) {
        let reply = match ReplyWire::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an undecodable reply");
                return;
            }
        };
        if let Some(w) = self.lock().remove(&reply.correlation) {
            let _ = w.tx.send(reply.outcome);
        }
    }

    /// After the subscription was down: answers every request whose result
    /// was kept meanwhile.
    async fn recheck(&self, catalog: &Catalog) {
        let pending: Vec<(u64, Kept)> = self
            .lock()
            .iter()
            .filter_map(|(c, w)| Some((*c, w.kept.clone()?)))
            .collect();
        for (correlation, kept) in pending {
            if let Ok(Some(k)) = catalog.store().kept_result(kept.of()).await
                && let Some(w) = self.lock().remove(&correlation)
            {
                let _ = w.tx.send(Outcome::from(k));
            }
        }
    }
}

/// The reply listener: subscribes to the requester's channel, hands each
/// reply to its request, and subscribes again after a lost connection. Ends
/// when the requester is dropped (with the last clone of its client).
async fn listen(requester: Weak<Requester>, catalog: Catalog, channel: String) {
    let mut backoff = Doubling::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut reconnected = false;
    loop {
        let Some(me) = requester.upgrade() else {
            return;
        };
        let (mut sink, mut stream) = match catalog.subscribe(&channel).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "subscribing for replies failed; retrying");
                me.state.send_replace(Listening::Failed(e.to_string()));
                drop(me);
                tokio::time::sleep(backoff.next_wait()).await;
                continue;
            }
        };
        backoff = Doubling::new(Duration::from_millis(50), Duration::from_secs(2));
        me.state.send_replace(Listening::Yes);
        if reconnected {
            me.recheck(&catalog).await;
        }
        reconnected = true;
        drop(me);
        loop {
            tokio::select! {
                m = stream.next() => match m {
                    Some(m) => match requester.upgrade() {
                        Some(me) => me.deliver(m.get_payload_bytes()),
                        None => return,
                    },
                    None => break,
                },
                _ = tokio::time::sleep(PING_EVERY) => {
                    if requester.strong_count() == 0 {
                        return;
                    }
                    let ping = sink.ping::<redis::Value>();
                    match tokio::time::timeout(catalog.config().response_timeout, ping).await {
                        Ok(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
        }
        tracing::warn!("the reply connection was lost; subscribing again");
        if let Some(me) = requester.upgrade() {
            me.state.send_replace(Listening::Not);
        }
    }
}
