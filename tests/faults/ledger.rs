//! The ledger: an HTTP endpoint the workers' `http` handlers post to. It
//! records every handling (which worker process, group, partition, message)
//! and watches, per group and partition, how many worker processes are
//! handling at the same moment: more than one breaks exclusivity.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

/// One finished handling (the handler answered 2xx).
#[derive(Clone, Debug)]
pub struct Handling {
    pub group: String,
    pub partition: u32,
    pub key: u32,
    pub seq: u32,
    /// The worker process (incarnation) that handled it.
    pub worker: usize,
    pub attempt: u32,
    pub start: Instant,
}

/// How the endpoint answers.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Time spent per message.
    pub work: Duration,
    /// Messages whose seq is a multiple of this fail (503) on attempt 1.
    pub fail_first_attempt_every: Option<u32>,
    /// The message `(key, seq)` takes this long (a slow handler).
    pub slow: Option<((u32, u32), Duration)>,
}

#[derive(Default)]
struct State_ {
    done: Vec<Handling>,
    /// (group, partition) -> worker -> handlers running now.
    active: HashMap<(String, u32), HashMap<usize, usize>>,
    max_owners: usize,
    overlaps: Vec<String>,
    /// (group, partition) -> the highest lease epoch seen: the ledger is a
    /// resource fenced by the epoch, as docs/guarantees.md tells users to
    /// build one.
    epochs: HashMap<(String, u32), u64>,
    /// Handler starts refused for a lower epoch than one already seen.
    fenced: Vec<String>,
    /// Handlings in progress right now: (worker, group, seq, key).
    in_flight: HashMap<u64, (usize, String, u32, u32, u32)>,
    next_ticket: u64,
    /// Requests the endpoint answered with a failure on purpose.
    failed_on_purpose: usize,
}

/// Shared by the endpoint and the checks.
#[derive(Clone, Default)]
pub struct Ledger {
    state: Arc<Mutex<State_>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

/// Ends a handling when dropped: also when a worker dies mid-request and the
/// server drops the request.
struct Running {
    ledger: Ledger,
    key: (String, u32),
    worker: usize,
    ticket: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut s = self.ledger.lock();
        s.in_flight.remove(&self.ticket);
        if let Some(n) = s
            .active
            .get_mut(&self.key)
            .and_then(|m| m.get_mut(&self.worker))
        {
            *n -= 1;
        }
    }
}

fn header<T: std::str::FromStr>(h: &HeaderMap, name: &str) -> Option<T> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Distinct messages `(key, seq)` handled by `group`.
    pub fn distinct(&self, group: &str) -> HashSet<(u32, u32)> {
        self.lock()
            .done
            .iter()
            .filter(|h| h.group == group)
            .map(|h| (h.key, h.seq))
            .collect()
    }

    /// Finished handlings of `group`, duplicates included.
    pub fn total(&self, group: &str) -> usize {
        self.lock().done.iter().filter(|h| h.group == group).count()
    }

    pub fn handlings(&self) -> Vec<Handling> {
        self.lock().done.clone()
    }

    pub fn max_owners(&self) -> usize {
        self.lock().max_owners
    }

    pub fn overlaps(&self) -> Vec<String> {
        self.lock().overlaps.clone()
    }

    /// Handler starts refused because a later epoch had been seen.
    pub fn fenced(&self) -> Vec<String> {
        self.lock().fenced.clone()
    }

    pub fn failed_on_purpose(&self) -> usize {
        self.lock().failed_on_purpose
    }

    /// The worker (and partition) handling message `(key, seq)` of `group`
    /// right now, if any.
    pub fn handling_now(&self, group: &str, key: u32, seq: u32) -> Option<(usize, u32)> {
        self.lock()
            .in_flight
            .values()
            .find(|(_, g, s, k, _)| g == group && *s == seq && *k == key)
            .map(|(w, _, _, _, p)| (*w, *p))
    }

    /// Per group and key, the seqs in order of first handling.
    pub fn first_handling_order(&self) -> BTreeMap<(String, u32), Vec<u32>> {
        let s = self.lock();
        let mut seen = HashSet::new();
        let mut out: BTreeMap<(String, u32), Vec<u32>> = BTreeMap::new();
        for h in &s.done {
            if seen.insert((h.group.clone(), h.key, h.seq)) {
                out.entry((h.group.clone(), h.key)).or_default().push(h.seq);
            }
        }
        out
    }
}

async fn handle(
    State(ledger): State<Ledger>,
    Path(worker): Path<usize>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let Some(group) = header::<String>(&headers, "x-millrace-group") else {
        return StatusCode::BAD_REQUEST;
    };
    let partition: u32 = header(&headers, "x-millrace-partition").unwrap_or(u32::MAX);
    let attempt: u32 = header(&headers, "x-millrace-attempt").unwrap_or(0);
    let epoch: u64 = header(&headers, "x-millrace-epoch").unwrap_or(0);
    let Ok((key, seq)) = serde_json::from_str::<(u32, u32)>(&body) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    let behaviour = ledger.behaviour.lock().unwrap().clone();
    let start = Instant::now();
    let running = {
        let mut s = ledger.lock();
        let k = (group.clone(), partition);
        let top = s.epochs.get(&k).copied().unwrap_or(0);
        if epoch < top {
            s.fenced.push(format!(
                "group {group} partition {partition}: worker {worker} at epoch {epoch} after {top} (seq {seq})"
            ));
            return StatusCode::CONFLICT;
        }
        s.epochs.insert(k.clone(), epoch);
        let on_p = s.active.entry(k.clone()).or_default();
        *on_p.entry(worker).or_default() += 1;
        let owners = on_p.values().filter(|n| **n > 0).count();
        if owners > 1 {
            let who: Vec<usize> = on_p
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(w, _)| *w)
                .collect();
            s.overlaps.push(format!(
                "group {group} partition {partition}: workers {who:?} at once (seq {seq})"
            ));
        }
        s.max_owners = s.max_owners.max(owners);
        s.next_ticket += 1;
        let ticket = s.next_ticket;
        s.in_flight
            .insert(ticket, (worker, group.clone(), seq, key, partition));
        Running {
            ledger: ledger.clone(),
            key: k,
            worker,
            ticket,
        }
    };
    let pause = match behaviour.slow {
        Some((m, d)) if m == (key, seq) => d,
        _ => behaviour.work,
    };
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    let fail = behaviour
        .fail_first_attempt_every
        .is_some_and(|n| attempt == 1 && seq % n == 0);
    let mut s = ledger.lock();
    if fail {
        s.failed_on_purpose += 1;
        drop(s);
        drop(running);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    s.done.push(Handling {
        group,
        partition,
        key,
        seq,
        worker,
        attempt,
        start,
    });
    drop(s);
    drop(running);
    StatusCode::NO_CONTENT
}
