//! The dispatcher and each message's handling: key order, the concurrency
//! limit, panics, and what a failure leads to (the retry policy): a retry is
//! the discipline's ([`Discipline::retry`]): wait in place (ordered,
//! [`Rt::wait_in_place`]) or park in the group's retry set (shared,
//! [`Rt::park`]); giving up dead-letters.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::Instrument;

use super::discipline::{Discipline, Ordered, Shared};
use super::{AckReq, Delivery, Done, Rt};
use crate::consumer::dispatch::KeyOrder;
use crate::consumer::handler::{CANCEL_GRACE, Context, HEADER_TIMEOUT};
use crate::envelope::{Message, encode_headers, encode_retry};
use crate::error::Result;
use crate::reply::{NIL, Outcome as ReplyOutcome, ReplyTo, ReplyWire};
use crate::retry::{Decision, HEADER_MAX_ATTEMPTS, jitter_unit};
use crate::store::settle::{Answer, DeadLetter, FailedReply, Failure, RetryLater, Settled};
use crate::store::{Guarded, Holder};
use crate::telemetry;

/// How a message's handling ended.
pub(super) enum Outcome {
    Acked,
    /// Cancelled while waiting in place to retry (acked as cancelled).
    Cancelled,
    DeadLettered,
    /// Parked in the group's retry set (shared mode).
    Parked,
    /// Left pending for whoever owns the partition next.
    Abandoned,
}

/// The key whose messages `msg` must wait for: its key in ordered mode
/// ([`Discipline::KEY_ORDER`]), none otherwise.
fn order_key<D: Discipline>(msg: &Message) -> Option<String> {
    if D::KEY_ORDER { msg.key.clone() } else { None }
}

impl<D: Discipline> Rt<D> {
    pub(super) async fn dispatch_loop(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Vec<Delivery>>,
        ack_tx: mpsc::UnboundedSender<AckReq>,
    ) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut order: KeyOrder<Delivery> = KeyOrder::default();
        let mut ready: VecDeque<Delivery> = VecDeque::new();
        let mut running = 0usize;
        let mut open = true;
        loop {
            // Fast path, without awaiting: take every finished handler, then
            // start as many ready messages as there are free permits. Only
            // when nothing can move does the loop wait below.
            while let Ok(done) = done_rx.try_recv() {
                running -= 1;
                self.next_of_key(&mut order, &mut ready, done);
            }
            // A paused group starts nothing new (what runs finishes).
            let paused =
                self.gates.paused.load(Ordering::SeqCst) && !self.stop.reading.is_cancelled();
            while !paused && !ready.is_empty() {
                let Ok(permit) = self.gates.workers.clone().try_acquire_owned() else {
                    break;
                };
                if let Some(d) = ready.pop_front() {
                    running += 1;
                    self.start(d, permit, &done_tx, &ack_tx);
                }
            }
            if !open && running == 0 && ready.is_empty() {
                return;
            }
            tokio::select! {
                batch = rx.recv(), if open => match batch {
                    Some(batch) => {
                        for d in batch {
                            let key = order_key::<D>(&d.msg);
                            if let Some(d) = order.offer(d.msg.partition, key.as_deref(), d) {
                                ready.push_back(d);
                            }
                        }
                    }
                    None => open = false,
                },
                Some(done) = done_rx.recv() => {
                    running -= 1;
                    self.next_of_key(&mut order, &mut ready, done);
                },
                _ = self.wake.changed.notified(), if paused => {}
                permit = self.gates.workers.clone().acquire_owned(), if !ready.is_empty() && !paused => {
                    let Ok(permit) = permit else { return };
                    if let Some(d) = ready.pop_front() {
                        running += 1;
                        self.start(d, permit, &done_tx, &ack_tx);
                    }
                },
            }
        }
    }

    /// A message of a key finished: queue the key's next one, dropping any
    /// whose partition is no longer ours (it stays pending).
    fn next_of_key(
        &self,
        order: &mut KeyOrder<Delivery>,
        ready: &mut VecDeque<Delivery>,
        done: Done,
    ) {
        while let Some(next) = order.finish(done.partition, done.key.as_deref()) {
            if self.may_start(&next) {
                ready.push_back(next);
                break;
            }
            self.abandon(&next);
        }
    }

    /// Spawns the handling of `d`, or, if it may no longer start, leaves it
    /// pending and reports it done at once.
    fn start(
        self: &Arc<Self>,
        d: Delivery,
        permit: OwnedSemaphorePermit,
        done_tx: &mpsc::UnboundedSender<Done>,
        ack_tx: &mpsc::UnboundedSender<AckReq>,
    ) {
        if !self.may_start(&d) {
            self.abandon(&d);
            let key = order_key::<D>(&d.msg);
            let _ = done_tx.send(Done {
                partition: d.msg.partition,
                key,
            });
            return;
        }
        // Boxed: the handling future is large, and tokio moves a task's
        // future a few times on spawn; moving a pointer is cheaper.
        tokio::spawn(Box::pin(self.clone().handle(
            d,
            permit,
            done_tx.clone(),
            ack_tx.clone(),
        )));
    }

    /// Whether a delivery may start now: its partition is still ours at its
    /// epoch and the worker is not stopping (on shutdown, what has not
    /// started stays pending, in order, for the next owner).
    fn may_start(&self, d: &Delivery) -> bool {
        self.is_current(d.msg.partition, d.epoch)
            && !self.stop.killed.is_cancelled()
            && !self.stop.reading.is_cancelled()
    }

    fn abandon(&self, d: &Delivery) {
        tracing::debug!(topic = %self.spec.name, member = %self.s.member, partition = d.msg.partition,
            id = %d.msg.id, epoch = d.epoch, "abandoned (left pending)");
        self.done(d.id());
        self.unbuffer();
    }

    async fn handle(
        self: Arc<Self>,
        d: Delivery,
        permit: OwnedSemaphorePermit,
        done_tx: mpsc::UnboundedSender<Done>,
        ack_tx: mpsc::UnboundedSender<AckReq>,
    ) {
        let key = order_key::<D>(&d.msg);
        let (partition, id) = (d.msg.partition, d.id());
        let outcome = self.attempts(&d, permit, &ack_tx).await;
        self.unbuffer();
        match outcome {
            // Done when the ack is flushed.
            Outcome::Acked | Outcome::Cancelled => {}
            Outcome::DeadLettered | Outcome::Parked | Outcome::Abandoned => {
                self.done(id);
            }
        }
        let _ = done_tx.send(Done { partition, key });
    }

    /// Runs the handler until it succeeds, the policy gives up, or the
    /// partition is no longer ours.
    async fn attempts(
        &self,
        d: &Delivery,
        permit: OwnedSemaphorePermit,
        ack_tx: &mpsc::UnboundedSender<AckReq>,
    ) -> Outcome {
        let mut permit = Some(permit);
        let msg = &d.msg;
        let mut attempt = d.attempt;
        let policy = &self.s.retry;
        // A message taken over mid-retry waits out its recorded delay.
        if let Some(due) = d.due_ms
            && let Ok(now) = self.catalog.redis_time_ms().await
            && due > now
        {
            drop(permit.take());
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(due - now)) => {}
                _ = self.stop.killed.cancelled() => return Outcome::Abandoned,
            }
            if !self.is_current(msg.partition, d.epoch) {
                return Outcome::Abandoned;
            }
            match self.gates.workers.clone().acquire_owned().await {
                Ok(p) => permit = Some(p),
                Err(_) => return Outcome::Abandoned,
            }
        }
        // Delivered more often than it may be tried: its handler keeps
        // crashing the process (or it was retried elsewhere). Dead-letter it.
        if attempt > policy.max_attempts {
            let error = match &d.last_error {
                Some(e) => format!("{e} (then delivered {attempt} times without completing)"),
                None => format!("delivered {attempt} times without completing (poison message?)"),
            };
            return self.dead_letter(d, attempt - 1, &error).await;
        }
        loop {
            // Cancelled by a request for this message: it is skipped,
            // stopped, or its wait to retry ends.
            if self.cancels.is_requested(&msg.message_id) {
                return self.ack_cancelled(d, attempt, ack_tx);
            }
            if let Some(rate) = &self.gates.rate {
                tokio::select! {
                    r = rate.take(&self.catalog) => {
                        if let Err(e) = r {
                            tracing::warn!(topic = %self.spec.name, error = %e, "rate limit check failed");
                        }
                    }
                    _ = self.stop.killed.cancelled() => return Outcome::Abandoned,
                }
            }
            // Checked again as late as possible: the task may have waited
            // (for a thread, a permit, the rate limit, or in a paused
            // process) since the dispatcher let it start.
            if !self.may_start(d) {
                return Outcome::Abandoned;
            }
            let timeout = own_timeout(msg).or(self.s.handler_timeout);
            // The attempt's signal to its handler: a cancel request or the
            // timeout fires it.
            let signal = tokio_util::sync::CancellationToken::new();
            let ctx = Context {
                topic: self.names.topic.clone(),
                group: self.names.group.clone(),
                member: self.names.member.clone(),
                partition: msg.partition,
                lane: msg.lane,
                message_id: msg.message_id.clone(),
                id: msg.id,
                key: msg.key.clone(),
                headers: msg.headers.clone(),
                attempt,
                epoch: d.epoch,
                schema_version: msg
                    .headers
                    .get(crate::schema::HEADER_SCHEMA_VERSION)
                    .and_then(|v| v.parse().ok()),
                cancel: signal.clone(),
                timeout,
                progress: Some(self.progress.clone()),
            };
            let span = telemetry::process_span(&telemetry::Processing {
                topic: &self.names.topic,
                group: &self.names.group,
                member: &self.names.member,
                partition: msg.partition,
                message_id: &msg.message_id,
                key: msg.key.as_deref(),
                attempt,
            });
            telemetry::relate(&span, &msg.headers, self.s.trace_relation);
            // The handler is called inside the caught future, so a panic
            // while it builds its future is caught too.
            let handler = &self.handler;
            let m = msg.clone();
            let fut =
                std::panic::AssertUnwindSafe(async move { handler(m, ctx).await }).catch_unwind();
            let started = std::time::Instant::now();
            if attempt == 1 {
                self.stats.record_end_to_end(msg.published_at_ms());
            }
            let ran = tokio::select! {
                r = guarded(
                    fut.instrument(span.clone()),
                    self.cancels.requested(&msg.message_id),
                    &signal,
                    timeout,
                ) => r,
                _ = self.stop.killed.cancelled() => return Outcome::Abandoned,
            };
            self.stats.latency.record(started.elapsed());
            let whose = crate::consumer::progress::Whose {
                topic: &self.names.topic,
                group: &self.names.group,
                member: &self.names.member,
                message_id: &msg.message_id,
                epoch: D::FENCED.then_some(d.epoch),
            };
            if let Err(e) = self.progress.finish(&whose).await {
                tracing::warn!(topic = %self.spec.name, message_id = %msg.message_id, error = %e,
                    "writing the last progress failed");
            }
            let outcome = match ran {
                Ran::Done(r) => r,
                Ran::Cancelled => {
                    let _settle = self.settle(&span, "cancelled");
                    return self.ack_cancelled(d, attempt, ack_tx);
                }
                Ran::TimedOut(t) => Ok(Err(crate::consumer::HandlerError::retry(format!(
                    "handler timed out after {}",
                    crate::duration::format_duration(t)
                )))),
            };
            let error = match outcome {
                Ok(Ok(output)) => {
                    self.stats.handled.fetch_add(1, Ordering::Relaxed);
                    let _settle = self.settle(&span, "ack");
                    let _ = ack_tx.send(AckReq {
                        delivery: d.id(),
                        clear_attempts: attempt > d.attempt || d.last_error.is_some(),
                        answer: self.answer(msg, output),
                    });
                    return Outcome::Acked;
                }
                Ok(Err(e)) => e,
                Err(panic) => {
                    self.stats.panicked.fetch_add(1, Ordering::Relaxed);
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    crate::consumer::HandlerError::retry(format!("handler panicked: {what}"))
                }
            };
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            let text = error.to_string();
            let decision = policy.decide(attempt, &error, jitter_unit(), attempts_cap(msg));
            tracing::warn!(topic = %self.spec.name, group = %self.s.group, partition = msg.partition,
                message_id = %msg.message_id, id = %msg.id, attempt, permanent = error.is_permanent(), error = %text,
                next = ?decision, "handler failed");
            let wait = match decision {
                // A dead-letter view's entries are dead letters already:
                // dead-lettering one again would write it into the very
                // stream the group reads, to be read and fail again
                // without end. Giving up acks it for this group; it stays
                // in the dead-letter stream.
                Decision::DeadLetter if self.spec.is_dead_letter_view() => {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = %self.spec.name, group = %self.s.group,
                        partition = msg.partition, message_id = %msg.message_id, id = %msg.id, attempts = attempt, error = %text,
                        "gave up on a dead letter: acked for this group, it stays in the dead-letter stream");
                    let _settle = self.settle(&span, "ack");
                    let _ = ack_tx.send(AckReq {
                        delivery: d.id(),
                        clear_attempts: attempt > d.attempt || d.last_error.is_some(),
                        answer: None,
                    });
                    return Outcome::Acked;
                }
                Decision::DeadLetter => {
                    let settle = telemetry::settle_span(&span, &self.names.topic, "dead_letter");
                    return self.dead_letter(d, attempt, &text).instrument(settle).await;
                }
                Decision::Retry(wait) => wait,
            };
            self.stats.retried.fetch_add(1, Ordering::Relaxed);
            drop(self.settle(&span, "retry"));
            // A wait in place (ordered) ends when the message is cancelled;
            // parking (shared) is one step and runs to its end.
            let retried = tokio::select! {
                flow = D::retry(self, d, &mut permit, attempt, wait, &text) => flow,
                _ = self.cancels.requested(&msg.message_id), if D::RECORDS_FAILURES => {
                    ControlFlow::Break(Outcome::Cancelled)
                }
            };
            match retried {
                ControlFlow::Continue(()) => attempt += 1,
                ControlFlow::Break(Outcome::Cancelled) => {
                    return self.ack_cancelled(d, attempt, ack_tx);
                }
                ControlFlow::Break(outcome) => return outcome,
            }
        }
    }

    /// The settle span of an attempt's `outcome`, entered (a moment: the
    /// outcome is handed on, not waited for).
    fn settle(&self, process: &tracing::Span, outcome: &'static str) -> tracing::span::EnteredSpan {
        telemetry::settle_span(process, &self.names.topic, outcome).entered()
    }

    /// Where the reply to `msg` goes, if it is a request to this group.
    fn reply_to(&self, msg: &Message) -> Option<ReplyTo> {
        ReplyTo::of(&msg.headers).filter(|r| r.group == self.s.group)
    }

    /// The requester of `msg` and the reply telling it `outcome`, if it is
    /// a request to this group (else none, and an empty reply).
    fn reply(&self, msg: &Message, outcome: ReplyOutcome) -> (Option<String>, Vec<u8>) {
        match self.reply_to(msg) {
            Some(r) => {
                let wire = ReplyWire {
                    correlation: r.correlation,
                    group: self.s.group.clone(),
                    message_id: msg.message_id.to_string(),
                    outcome,
                };
                (Some(r.requester), wire.encode())
            }
            None => (None, Vec::new()),
        }
    }

    /// What to keep with the ack of a message whose handler returned
    /// `output`: its result (unless the group keeps none), and for a
    /// request to this group, the reply.
    fn answer(&self, msg: &Message, output: Option<Vec<u8>>) -> Option<Box<Answer>> {
        let ttl_ms = ms(self.s.result_ttl);
        let is_request = self.reply_to(msg).is_some();
        if !is_request && (output.is_none() || ttl_ms == 0) {
            return None;
        }
        let value = output.unwrap_or_else(|| NIL.to_vec());
        let (requester, reply) = self.reply(msg, ReplyOutcome::Ok(value.clone()));
        Some(Box::new(Answer {
            id: msg.id,
            lane: msg.lane,
            origin: msg.message_id.first().to_string(),
            ttl_ms,
            status: Settled::Ok,
            value,
            requester,
            reply,
        }))
    }

    /// Acks a message that was cancelled (before it started, while it ran,
    /// or while it waited to retry in place), keeping `cancelled` as its
    /// result and answering a request to this group with that.
    fn ack_cancelled(
        &self,
        d: &Delivery,
        attempts: u32,
        ack_tx: &mpsc::UnboundedSender<AckReq>,
    ) -> Outcome {
        let msg = &d.msg;
        self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        tracing::info!(topic = %self.spec.name, group = %self.s.group, partition = msg.partition,
            message_id = %msg.message_id, attempt = attempts, "cancelled");
        let (requester, reply) =
            self.reply(msg, ReplyOutcome::Failed(CANCELLED.to_string(), attempts));
        let _ = ack_tx.send(AckReq {
            delivery: d.id(),
            clear_attempts: true,
            answer: Some(Box::new(Answer {
                id: msg.id,
                lane: msg.lane,
                origin: msg.message_id.first().to_string(),
                ttl_ms: ms(kept_at_least(self.s.result_ttl)),
                status: Settled::Cancelled,
                value: Vec::new(),
                requester,
                reply,
            })),
        });
        Outcome::Acked
    }

    /// Moves the message to the dead-letter queue with its ack.
    async fn dead_letter(&self, d: &Delivery, attempts: u32, error: &str) -> Outcome {
        let (topic, group) = (&self.spec.name, &self.s.group);
        let p = d.msg.partition;
        let headers = encode_headers(&d.msg.headers).unwrap_or_default();
        let holder = D::FENCED.then_some(Holder {
            member: &self.s.member,
            epoch: d.epoch,
        });
        let origin = d.msg.message_id.first();
        let (requester, wire) =
            self.reply(&d.msg, ReplyOutcome::Failed(error.to_string(), attempts));
        let failed_reply = requester.as_deref().map(|requester| FailedReply {
            ttl_ms: ms(self.s.result_ttl),
            requester,
            reply: &wire,
        });
        let r = self
            .catalog
            .store()
            .dead_letter(DeadLetter {
                topic,
                group,
                partition: p,
                source: Self::source(d.src),
                holder,
                id: d.msg.id,
                key: d.msg.key.as_deref().unwrap_or("").as_bytes(),
                headers: &headers,
                payload: &d.msg.payload,
                lane: d.msg.lane,
                origin,
                attempts,
                error,
                reply: failed_reply,
            })
            .await;
        match r {
            Ok(Guarded::LeaseLost) => {
                self.stats.stale_acks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %topic, group = %group, partition = p, id = %d.msg.id,
                    epoch = d.epoch, "dead-lettering refused: the partition's lease moved on; the new owner will handle it again");
                Outcome::Abandoned
            }
            Ok(Guarded::Done(_)) => {
                self.wait_replicated("dead-lettering", 1).await;
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %topic, group = %group, partition = p, id = %d.msg.id,
                    attempts, error = %error, "dead-lettered");
                Outcome::DeadLettered
            }
            Err(e) => {
                tracing::warn!(topic = %topic, group = %group, error = %e, "dead-lettering failed");
                Outcome::Abandoned
            }
        }
    }
}

impl Rt<Ordered> {
    /// Ordered mode, after a failed attempt to retry after `wait`: records
    /// the failure (a new owner continues the count), then waits holding
    /// back only this key, without a worker permit. `Continue` to try again
    /// (the permit held again).
    pub(super) async fn wait_in_place(
        &self,
        d: &Delivery,
        permit: &mut Option<OwnedSemaphorePermit>,
        attempt: u32,
        wait: Duration,
        error: &str,
    ) -> ControlFlow<Outcome> {
        match self.record_failure(d, attempt, wait, error).await {
            Ok(true) => {}
            Ok(false) => return ControlFlow::Break(Outcome::Abandoned),
            Err(e) => {
                tracing::warn!(topic = %self.spec.name, error = %e, "recording a failure failed");
            }
        }
        drop(permit.take());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.stop.killed.cancelled() => return ControlFlow::Break(Outcome::Abandoned),
        }
        if !self.is_current(d.msg.partition, d.epoch) || self.stop.reading.is_cancelled() {
            return ControlFlow::Break(Outcome::Abandoned);
        }
        match self.gates.workers.clone().acquire_owned().await {
            Ok(p) => *permit = Some(p),
            Err(_) => return ControlFlow::Break(Outcome::Abandoned),
        }
        ControlFlow::Continue(())
    }

    /// Ordered mode: writes the failure to the group's attempts hash, fenced
    /// by the lease. `Ok(false)` when the lease moved on.
    async fn record_failure(
        &self,
        d: &Delivery,
        attempt: u32,
        wait: Duration,
        error: &str,
    ) -> Result<bool> {
        let (topic, group) = (&self.spec.name, &self.s.group);
        let outcome = self
            .catalog
            .store()
            .record_failure(Failure {
                topic,
                group,
                partition: d.msg.partition,
                holder: Holder {
                    member: &self.s.member,
                    epoch: d.epoch,
                },
                id: d.msg.id,
                failures: attempt,
                wait,
                error,
            })
            .await?;
        Ok(outcome == Guarded::Done(()))
    }
}

impl Rt<Shared> {
    /// Shared mode: ack the message and park it in the group's retry set.
    pub(super) async fn park(&self, d: &Delivery, attempt: u32, wait: Duration) -> Outcome {
        let (topic, group) = (&self.spec.name, &self.s.group);
        let p = d.msg.partition;
        let headers = encode_headers(&d.msg.headers).unwrap_or_default();
        let origin = d.msg.message_id.first();
        let member = encode_retry(
            crate::store::publish::unique_nonce(),
            &d.msg,
            &headers,
            attempt + 1,
            origin,
        );
        let r = self
            .catalog
            .store()
            .retry_later(RetryLater {
                topic,
                group,
                partition: p,
                source: Self::source(d.src),
                id: d.msg.id,
                wait,
                entry: &member,
            })
            .await;
        match r {
            Ok(_) => {
                self.wake.scheduled.notify_one();
                Outcome::Parked
            }
            Err(e) => {
                // Still pending: taken over after the visibility timeout.
                tracing::warn!(topic = %topic, group = %group, error = %e, "parking a retry failed");
                Outcome::Abandoned
            }
        }
    }
}

/// What a cancelled request's reply says, and a cancelled message's error.
pub(super) const CANCELLED: &str = "cancelled";

/// How a guarded handler run ended.
enum Ran<R> {
    /// The handler returned (or panicked): `R`.
    Done(R),
    /// The message was cancelled while it ran.
    Cancelled,
    /// The attempt ran past its timeout.
    TimedOut(Duration),
}

/// Runs a handler until it returns, its message is cancelled (`cancelled`
/// resolves) or `timeout` passes; in the last two cases the attempt's
/// `signal` fires and the handler has [`CANCEL_GRACE`] to return before
/// its future is dropped.
async fn guarded<F: std::future::Future>(
    fut: F,
    cancelled: impl std::future::Future<Output = ()>,
    signal: &tokio_util::sync::CancellationToken,
    timeout: Option<Duration>,
) -> Ran<F::Output> {
    tokio::pin!(fut);
    let limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    // The handler first: one that finishes at its first poll costs no
    // watch on the cancel requests or the clock.
    let stopped = tokio::select! {
        biased;
        r = &mut fut => return Ran::Done(r),
        _ = cancelled => Ran::Cancelled,
        _ = limit => Ran::TimedOut(timeout.unwrap_or_default()),
    };
    signal.cancel();
    let _ = tokio::time::timeout(CANCEL_GRACE, &mut fut).await;
    stopped
}

/// A duration in milliseconds, as the scripts take it.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long what must outlive `result_ttl` 0 is kept (a cancellation, the
/// progress reported): the TTL, or the default when it is zero.
pub(super) fn kept_at_least(result_ttl: Duration) -> Duration {
    if result_ttl.is_zero() {
        crate::consumer::DEFAULT_RESULT_TTL
    } else {
        result_ttl
    }
}

/// A message's header `name` parsed by `parse`, if it has a valid one; an
/// invalid value (written by hand: publishing checks what it sets) is
/// ignored, with a warning naming `what`.
fn own_header<T, E: std::fmt::Display>(
    msg: &Message,
    name: &str,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Option<T> {
    let value = msg.headers.get(name)?;
    match parse(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(topic = %msg.topic, partition = msg.partition, id = %msg.id,
                error = %e, "ignoring the message's {what}");
            None
        }
    }
}

/// A message's own handler timeout (its `millrace-timeout` header).
fn own_timeout(msg: &Message) -> Option<Duration> {
    own_header(
        msg,
        HEADER_TIMEOUT,
        "timeout header",
        crate::duration::parse_duration,
    )
}

/// A message's own attempts cap (its `millrace-max-attempts` header).
fn attempts_cap(msg: &Message) -> Option<u32> {
    own_header(
        msg,
        HEADER_MAX_ATTEMPTS,
        "attempts cap",
        crate::retry::attempts_cap,
    )
}
