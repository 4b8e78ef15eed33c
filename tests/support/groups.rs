//! Shared pieces of the consumer-group tests (single server and cluster):
//! a ledger of what handlers saw, a recording worker, and the fan-out and
//! key-order scenarios.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace::WorkerBuilder;
use millrace::{Client, HandlerError, Record, StartAt, TopicSpec, Worker};

/// Publishes `keys` × `per_key` messages `(key, seq)` keyed by `k<key>`,
/// interleaved so every key's sequence is in publish order.
pub async fn publish_sequenced(c: &Client, topic: &str, keys: u32, per_key: u32) {
    let records: Vec<Record> = (0..per_key)
        .flat_map(|seq| (0..keys).map(move |k| (k, seq)))
        .map(|(k, seq)| Record::encode(&(k, seq)).unwrap().key(format!("k{k}")))
        .collect();
    for chunk in records.chunks(5_000) {
        let results = c.publish_batch(topic, chunk.to_vec()).await.unwrap();
        assert!(results.iter().all(Result::is_ok));
    }
}

/// What handlers saw: every (key, seq) handling, per member, with overlap
/// detection per partition (exclusivity) and across keys (concurrency).
#[derive(Default)]
pub struct Ledger {
    pub handled: Mutex<Vec<(u32, u32, String)>>,
    /// partition -> member -> handlers running now.
    pub active: Mutex<HashMap<u32, HashMap<String, usize>>>,
    pub violations: Mutex<Vec<String>>,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
}

impl Ledger {
    pub fn start(&self, partition: u32, member: &str) {
        let mut active = self.active.lock().unwrap();
        let on_p = active.entry(partition).or_default();
        if let Some((other, _)) = on_p.iter().find(|(m, n)| m.as_str() != member && **n > 0) {
            self.violations.lock().unwrap().push(format!(
                "partition {partition}: {member} started while {other} runs"
            ));
        }
        *on_p.entry(member.to_string()).or_default() += 1;
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
    }

    pub fn end(&self, partition: u32, member: &str, key: u32, seq: u32) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        let mut active = self.active.lock().unwrap();
        if let Some(n) = active.get_mut(&partition).and_then(|m| m.get_mut(member)) {
            *n -= 1;
        }
        self.handled
            .lock()
            .unwrap()
            .push((key, seq, member.to_string()));
    }

    pub fn distinct(&self) -> usize {
        let h = self.handled.lock().unwrap();
        h.iter()
            .map(|(k, s, _)| (*k, *s))
            .collect::<HashSet<_>>()
            .len()
    }

    pub fn total(&self) -> usize {
        self.handled.lock().unwrap().len()
    }

    /// For each key, the sequence numbers in order of first handling.
    pub fn first_handling_order(&self) -> BTreeMap<u32, Vec<u32>> {
        let h = self.handled.lock().unwrap();
        let mut seen = HashSet::new();
        let mut out: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (k, s, _) in h.iter() {
            if seen.insert((*k, *s)) {
                out.entry(*k).or_default().push(*s);
            }
        }
        out
    }
}

/// A worker whose handler records into `ledger`, pausing `work` plus 1 to
/// 4 ms (varied by message) per message, so two members handling one
/// partition at once overlap visibly whenever it happens.
pub fn recording_worker(
    c: &Client,
    topic: &str,
    group: &str,
    ledger: Arc<Ledger>,
    work: Duration,
) -> WorkerBuilder {
    Worker::builder(c, group)
        .start_at(StartAt::Earliest)
        .session_timeout(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(100))
        .block(Duration::from_millis(100))
        .handle_raw(topic, move |msg, ctx| {
            let ledger = ledger.clone();
            async move {
                let (key, seq): (u32, u32) = msg.decode().map_err(HandlerError::permanent)?;
                ledger.start(ctx.partition, &ctx.member);
                let varied = Duration::from_millis(1 + u64::from((key * 7 + seq * 13) % 4));
                tokio::time::sleep(work + varied).await;
                ledger.end(ctx.partition, &ctx.member, key, seq);
                Ok(())
            }
        })
}

pub async fn wait_for(ledger: &Arc<Ledger>, distinct: usize, within: Duration) {
    let l = ledger.clone();
    super::wait_until(within, &format!("{distinct} messages handled"), || {
        let l = l.clone();
        async move { l.distinct() >= distinct }
    })
    .await;
}

pub fn assert_in_order(ledger: &Ledger, keys: u32, per_key: u32) {
    let order = ledger.first_handling_order();
    assert_eq!(order.len(), keys as usize);
    for (k, seqs) in order {
        if seqs != (0..per_key).collect::<Vec<_>>() {
            let h = ledger.handled.lock().unwrap();
            let mine: Vec<_> = h.iter().filter(|(kk, _, _)| *kk == k).collect();
            eprintln!("{mine:?}");
        }
        assert_eq!(
            seqs,
            (0..per_key).collect::<Vec<_>>(),
            "key k{k} out of order"
        );
    }
}

/// Fan-out: 3 groups × 10 000 messages on 6 partitions, each group handles
/// every message exactly once.
pub async fn fan_out(c: &Client) {
    let c = c.clone();
    c.create_topic(&TopicSpec::new("erp.v1.invoice.created", 6).unwrap())
        .await
        .unwrap();
    let groups = ["notification", "pdf-report", "audit"];
    let mut ledgers = Vec::new();
    let mut handles = Vec::new();
    for g in groups {
        let ledger = Arc::new(Ledger::default());
        let w = recording_worker(
            &c,
            "erp.v1.invoice.created",
            g,
            ledger.clone(),
            Duration::ZERO,
        )
        .concurrency(32)
        .build()
        .unwrap();
        handles.push(w.start().await.unwrap());
        ledgers.push(ledger);
    }
    publish_sequenced(&c, "erp.v1.invoice.created", 100, 100).await;
    for l in &ledgers {
        wait_for(l, 10_000, Duration::from_secs(60)).await;
    }
    for h in handles {
        h.shutdown().await.unwrap();
    }
    for (g, l) in groups.iter().zip(&ledgers) {
        assert_eq!(l.total(), 10_000, "group {g} handled some message twice");
        assert!(l.violations.lock().unwrap().is_empty());
        let info = c.describe_group("erp.v1.invoice.created", g).await.unwrap();
        assert_eq!((info.lag, info.pending), (0, 0), "group {g}");
    }
    assert_eq!(
        c.list_groups("erp.v1.invoice.created").await.unwrap(),
        vec!["audit", "notification", "pdf-report"]
    );
}

/// Order: 40 keys × 250 sequenced messages, 3 members with concurrency 16:
/// per key, first-handling order is publish order; keys overlap in time.
pub async fn key_order(c: &Client) {
    let c = c.clone();
    c.create_topic(&TopicSpec::new("orders", 4).unwrap())
        .await
        .unwrap();
    let ledger = Arc::new(Ledger::default());
    let mut handles = Vec::new();
    for _ in 0..3 {
        let w = recording_worker(
            &c,
            "orders",
            "fulfilment",
            ledger.clone(),
            Duration::from_millis(1),
        )
        .concurrency(16)
        .build()
        .unwrap();
        handles.push(w.start().await.unwrap());
    }
    publish_sequenced(&c, "orders", 40, 250).await;
    wait_for(&ledger, 10_000, Duration::from_secs(120)).await;
    for h in handles {
        h.shutdown().await.unwrap();
    }
    assert_in_order(&ledger, 40, 250);
    assert!(ledger.violations.lock().unwrap().is_empty());
    let overlap = ledger.max_running.load(Ordering::SeqCst);
    assert!(overlap > 1, "different keys never ran at the same time");
}

/// Negative controls for the ledger's checks: each sees its known-bad case.
#[cfg(test)]
mod controls {
    use super::*;

    #[test]
    fn the_ledger_sees_two_members_on_one_partition_at_once() {
        let l = Ledger::default();
        l.start(0, "a");
        l.start(1, "b");
        assert!(l.violations.lock().unwrap().is_empty());
        l.start(0, "b");
        assert_eq!(l.violations.lock().unwrap().len(), 1);
        // One after the other is fine.
        let l = Ledger::default();
        l.start(0, "a");
        l.end(0, "a", 1, 0);
        l.start(0, "b");
        assert!(l.violations.lock().unwrap().is_empty());
    }

    #[test]
    fn the_ledger_sees_a_key_out_of_order() {
        let l = Ledger::default();
        for seq in [0, 2, 1] {
            l.start(0, "a");
            l.end(0, "a", 7, seq);
        }
        assert_eq!(l.first_handling_order()[&7], vec![0, 2, 1]);
        let caught = std::panic::catch_unwind(|| assert_in_order(&l, 1, 3));
        assert!(caught.is_err(), "assert_in_order accepted 0, 2, 1");
    }
}
