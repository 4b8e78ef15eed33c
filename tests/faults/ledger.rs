//! The ledger: an HTTP endpoint the workers' `http` handlers post to. It
//! records every request (which worker process, group, partition, message,
//! epoch, when it started and ended, how it was answered) for the verdicts.
//!
//! It trusts nothing millrace says: the partition is computed from the key
//! (Kafka's partitioner, written in the suite), the key header must match
//! the body, and a missing or malformed header is a protocol error. It is a
//! resource fenced by the lease epoch, as docs/guarantees.md tells users to
//! build one: a request with a lower epoch than one already seen for its
//! group and partition is refused at its start, and one overtaken by a
//! higher epoch while it ran is refused at its end (its effect is not kept).
//! Both are answered 409, a permanent failure: the stale member then tries
//! to dead-letter the message, which the lease must refuse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use crate::kafka::partition_of;
use crate::verdict::{Handling, Outcome};

/// How the endpoint answers.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Time spent per message; 0 to 4 ms more, varied by message, is added
    /// so overlapping owners are seen whenever they happen.
    pub work: Duration,
    /// Messages whose seq is a multiple of this fail (503) on attempt 1.
    pub fail_first_attempt_every: Option<u32>,
    /// The first request for each of these messages takes this long.
    pub slow: Vec<((u32, u32), Duration)>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            work: Duration::from_millis(1),
            fail_first_attempt_every: None,
            slow: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Books {
    log: Vec<Handling>,
    /// (group, partition) -> the highest lease epoch seen.
    epochs: HashMap<(String, u32), u64>,
    protocol_errors: Vec<String>,
    /// Requests running now, by ticket.
    in_flight: HashMap<u64, Handling>,
    next_ticket: u64,
    /// Messages (per group) whose first request was seen.
    requested: std::collections::HashSet<(String, u32, u32)>,
}

/// Shared by the endpoint and the checks.
#[derive(Clone)]
pub struct Ledger {
    books: Arc<Mutex<Books>>,
    behaviour: Arc<Mutex<Behaviour>>,
    partitions: u32,
}

/// Ends a request when dropped: also when a worker dies mid-request and the
/// server drops it, which is then logged as `Dropped`.
struct Running {
    ledger: Ledger,
    ticket: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.ledger.end(self.ticket, Outcome::Dropped);
    }
}

impl Ledger {
    pub fn new(partitions: u32) -> Ledger {
        Ledger {
            books: Arc::default(),
            behaviour: Arc::default(),
            partitions,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    /// Serves on a free loopback port; returns the base URL
    /// (`http://127.0.0.1:PORT`); workers post to `BASE/w/<worker>`.
    pub async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route("/w/{worker}", axum::routing::post(handle))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    /// Every request that ended, in the order they ended.
    pub fn handlings(&self) -> Vec<Handling> {
        self.lock().log.clone()
    }

    /// Messages of `group` handled (answered 2xx).
    pub fn distinct_done(&self, group: &str) -> std::collections::HashSet<(u32, u32)> {
        self.lock()
            .log
            .iter()
            .filter(|h| h.group == group && h.outcome == Outcome::Done)
            .map(Handling::msg)
            .collect()
    }

    pub fn protocol_errors(&self) -> Vec<String> {
        self.lock().protocol_errors.clone()
    }

    /// The worker (and partition) handling message `(key, seq)` of `group`
    /// right now, if any.
    pub fn handling_now(&self, group: &str, key: u32, seq: u32) -> Option<(usize, u32)> {
        self.lock()
            .in_flight
            .values()
            .find(|h| h.group == group && h.msg() == (key, seq))
            .map(|h| (h.worker, h.partition))
    }

    /// Logs the request `ticket` as ended with `outcome` (once).
    fn end(&self, ticket: u64, outcome: Outcome) {
        let mut b = self.lock();
        if let Some(mut h) = b.in_flight.remove(&ticket) {
            h.end = Instant::now();
            h.outcome = outcome;
            b.log.push(h);
        }
    }

    fn protocol_error(&self, worker: usize, what: String) -> StatusCode {
        self.lock()
            .protocol_errors
            .push(format!("worker {worker}: {what}"));
        StatusCode::BAD_REQUEST
    }
}

/// A required header, parsed.
fn header<T: std::str::FromStr>(h: &HeaderMap, name: &str) -> Result<T, String> {
    let v = h.get(name).ok_or_else(|| format!("no {name} header"))?;
    let s = v
        .to_str()
        .map_err(|_| format!("{name} header is not text: {v:?}"))?;
    s.parse()
        .map_err(|_| format!("{name} header is malformed: {s:?}"))
}

/// The request's metadata, checked against the body and the key.
struct Meta {
    group: String,
    partition: u32,
    key: u32,
    seq: u32,
    attempt: u32,
    epoch: u64,
}

fn meta(ledger: &Ledger, headers: &HeaderMap, body: &str) -> Result<Meta, String> {
    let (key, seq) = serde_json::from_str::<(u32, u32)>(body)
        .map_err(|e| format!("body {body:?} is not [key, seq]: {e}"))?;
    let group: String = header(headers, "x-millrace-group")?;
    let claimed: u32 = header(headers, "x-millrace-partition")?;
    let attempt: u32 = header(headers, "x-millrace-attempt")?;
    let epoch: u64 = header(headers, "x-millrace-epoch")?;
    let key_header: String = header(headers, "x-millrace-key")?;
    let id: millrace::MessageId = header(headers, "x-millrace-id")?;
    if id.partition() != claimed {
        return Err(format!("message id {id} for partition header {claimed}"));
    }
    let want_key = format!("k{key}");
    if key_header != want_key {
        return Err(format!("key header {key_header:?} for body key {want_key}"));
    }
    let partition = partition_of(&want_key, ledger.partitions);
    if claimed != partition {
        return Err(format!(
            "partition header {claimed} for key {want_key}, which Kafka's partitioner puts on {partition}"
        ));
    }
    if attempt == 0 {
        return Err("attempt 0".into());
    }
    // Every scenario is ordered: a lease epoch is never 0.
    if epoch == 0 {
        return Err(format!("epoch 0 in ordered mode (group {group})"));
    }
    Ok(Meta {
        group,
        partition,
        key,
        seq,
        attempt,
        epoch,
    })
}

async fn handle(
    State(ledger): State<Ledger>,
    Path(worker): Path<usize>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let m = match meta(&ledger, &headers, &body) {
        Ok(m) => m,
        Err(e) => return ledger.protocol_error(worker, e),
    };
    let behaviour = ledger.behaviour.lock().unwrap().clone();
    let start = Instant::now();
    let fence = (m.group.clone(), m.partition);
    let handling = Handling {
        group: m.group.clone(),
        partition: m.partition,
        key: m.key,
        seq: m.seq,
        worker,
        attempt: m.attempt,
        epoch: m.epoch,
        start,
        end: start,
        outcome: Outcome::Dropped,
    };
    let (running, first_request) = {
        let mut b = ledger.lock();
        let top = b.epochs.get(&fence).copied().unwrap_or(0);
        if m.epoch < top {
            b.log.push(Handling {
                outcome: Outcome::Fenced,
                ..handling
            });
            return StatusCode::CONFLICT;
        }
        b.epochs.insert(fence.clone(), m.epoch);
        b.next_ticket += 1;
        let ticket = b.next_ticket;
        b.in_flight.insert(ticket, handling);
        let first = b.requested.insert((m.group.clone(), m.key, m.seq));
        (
            Running {
                ledger: ledger.clone(),
                ticket,
            },
            first,
        )
    };
    let varied = Duration::from_millis(u64::from((m.key * 7 + m.seq * 13) % 5));
    let pause = behaviour
        .slow
        .iter()
        .find(|(msg, _)| first_request && *msg == (m.key, m.seq))
        .map(|(_, d)| *d)
        .unwrap_or(behaviour.work + varied);
    tokio::time::sleep(pause).await;
    let overtaken = ledger
        .lock()
        .epochs
        .get(&fence)
        .is_some_and(|top| *top > m.epoch);
    let fail = behaviour
        .fail_first_attempt_every
        .is_some_and(|n| m.attempt == 1 && m.seq % n == 0);
    let (outcome, status) = if overtaken {
        (Outcome::Voided, StatusCode::CONFLICT)
    } else if fail {
        (Outcome::FailedOnPurpose, StatusCode::SERVICE_UNAVAILABLE)
    } else {
        (Outcome::Done, StatusCode::NO_CONTENT)
    };
    ledger.end(running.ticket, outcome);
    drop(running);
    status
}
