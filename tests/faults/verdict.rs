//! The verdicts, as pure functions of a scenario's history.
//!
//! The history is built only from evidence millrace does not produce: what
//! Redis acknowledged to the publisher, what the streams hold (read with
//! plain `XRANGE`), what the ledger saw handlers do (with the partition
//! computed from the key), the exit status of every worker process, the
//! dead-letter streams and group positions read straight from Redis. Each
//! verdict has a negative control below: a known-bad history it must reject.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

/// A message: `(key, seq)`, published with the key `k<key>`.
pub type Msg = (u32, u32);

/// How the ledger answered one handler request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Handled (2xx).
    Done,
    /// Failed on purpose (503, retryable).
    FailedOnPurpose,
    /// Refused at its start: a later epoch had been seen for the partition.
    Fenced,
    /// Refused at its end: a later epoch was seen while it ran, so its
    /// effect was not kept (409).
    Voided,
    /// The worker went away before the answer (killed mid-request).
    Dropped,
}

/// One handler request as the ledger saw it.
#[derive(Clone, Debug)]
pub struct Handling {
    pub group: String,
    /// Computed from the key by the suite, not taken from millrace.
    pub partition: u32,
    pub key: u32,
    pub seq: u32,
    /// The worker process (incarnation) that sent it.
    pub worker: usize,
    pub attempt: u32,
    pub epoch: u64,
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
}

impl Handling {
    pub fn msg(&self) -> Msg {
        (self.key, self.seq)
    }
}

/// A fault the suite injected, from when it began to when it was healed.
#[derive(Clone, Debug)]
pub struct Fault {
    pub what: String,
    pub start: Instant,
    pub end: Instant,
}

/// Why a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The suite SIGKILLed it.
    Killed,
    /// The suite SIGTERMed it.
    Stopped,
    /// It had exited before the suite did anything to it.
    Died,
}

#[derive(Clone, Debug)]
pub struct Exit {
    pub worker: usize,
    pub cause: Cause,
    pub code: Option<i32>,
    pub status: String,
}

/// One entry of a dead-letter stream.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub group: String,
    pub partition: u32,
    /// The message, or why its payload could not be read.
    pub message: Result<Msg, String>,
}

/// Everything a scenario leaves behind.
#[derive(Clone, Debug)]
pub struct History {
    pub groups: Vec<String>,
    /// What Redis acknowledged to the publisher.
    pub acked: BTreeSet<Msg>,
    /// What the topic's streams hold after the faults (`None` when
    /// retention trims them, so absence proves nothing).
    pub stored: Option<BTreeSet<Msg>>,
    /// Stream entries whose fields or payload could not be read.
    pub undecodable: Vec<String>,
    pub handlings: Vec<Handling>,
    /// Requests with missing or wrong metadata (headers that disagree with
    /// the key or the body, a missing epoch).
    pub protocol_errors: Vec<String>,
    pub dead_letters: Vec<DeadLetter>,
    pub exits: Vec<Exit>,
    pub faults: Vec<Fault>,
    /// What Redis still showed pending or unread at the end.
    pub unsettled: Option<String>,
}

/// What a scenario allows.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// Redis may lose acknowledged writes (a power loss with `everysec`).
    pub redis_may_lose: bool,
    /// A worker was stopped past its lease: late starts and voided ends are
    /// expected, and must be refused by the fence.
    pub paused: bool,
    /// How long after a fault heals a repeat handling is still its effect
    /// (leases expiring, members rejoining).
    pub effect: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    NothingPublished,
    Lost,
    LostByRedis,
    Undecodable,
    Duplicate,
    TwoOwners,
    Order,
    StaleStart,
    Voided,
    Crash,
    DeadLetter,
    Unsettled,
    Protocol,
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub kind: Kind,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

/// Per group: what it handled, repeated and missed.
#[derive(Clone, Debug, Default)]
pub struct GroupFigures {
    pub group: String,
    pub handled: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub lost: Vec<Msg>,
}

impl History {
    /// The messages every group must handle: acknowledged, and still in
    /// Redis where that can be told.
    pub fn expected(&self) -> BTreeSet<Msg> {
        match &self.stored {
            Some(stored) => self.acked.intersection(stored).copied().collect(),
            None => self.acked.clone(),
        }
    }

    /// Acknowledged publishes Redis no longer holds.
    pub fn lost_by_redis(&self) -> BTreeSet<Msg> {
        match &self.stored {
            Some(stored) => self.acked.difference(stored).copied().collect(),
            None => BTreeSet::new(),
        }
    }

    fn done(&self, group: &str) -> impl Iterator<Item = &Handling> {
        self.handlings
            .iter()
            .filter(move |h| h.group == group && h.outcome == Outcome::Done)
    }

    pub fn figures(&self) -> Vec<GroupFigures> {
        let expected = self.expected();
        self.groups
            .iter()
            .map(|g| {
                let mut count: BTreeMap<Msg, u64> = BTreeMap::new();
                for h in self.done(g) {
                    *count.entry(h.msg()).or_default() += 1;
                }
                GroupFigures {
                    group: g.clone(),
                    handled: expected.iter().filter(|m| count.contains_key(m)).count() as u64,
                    duplicates: count.values().map(|n| n - 1).sum(),
                    dead_lettered: self.dead_letters.iter().filter(|d| &d.group == g).count()
                        as u64,
                    lost: expected
                        .iter()
                        .filter(|m| !count.contains_key(m))
                        .copied()
                        .collect(),
                }
            })
            .collect()
    }

    /// The most workers seen handling one partition of one group at once
    /// (requests that were fenced off or voided do not count: the fence
    /// kept their effect out).
    pub fn max_owners(&self) -> (usize, Vec<String>) {
        let mut by: HashMap<(&str, u32), Vec<&Handling>> = HashMap::new();
        for h in &self.handlings {
            if matches!(
                h.outcome,
                Outcome::Done | Outcome::FailedOnPurpose | Outcome::Dropped
            ) {
                by.entry((h.group.as_str(), h.partition))
                    .or_default()
                    .push(h);
            }
        }
        let mut max = 0;
        let mut overlaps = Vec::new();
        for ((g, p), mut hs) in by {
            hs.sort_by_key(|h| h.start);
            // Requests still running at the current start, by end.
            let mut running: Vec<&Handling> = Vec::new();
            for h in hs {
                running.retain(|r| r.end > h.start);
                running.push(h);
                let workers: BTreeSet<usize> = running.iter().map(|r| r.worker).collect();
                if workers.len() > 1 {
                    overlaps.push(format!(
                        "group {g} partition {p}: workers {workers:?} at once (k{} seq {})",
                        h.key, h.seq
                    ));
                }
                max = max.max(workers.len());
            }
        }
        (max, overlaps)
    }

    /// Requests that started with a lower epoch than one already seen for
    /// their group and partition.
    pub fn stale_starts(&self) -> Vec<String> {
        let mut hs: Vec<&Handling> = self.handlings.iter().collect();
        hs.sort_by_key(|h| h.start);
        let mut top: HashMap<(&str, u32), u64> = HashMap::new();
        let mut out = Vec::new();
        for h in hs {
            let t = top.entry((h.group.as_str(), h.partition)).or_default();
            if h.epoch < *t {
                out.push(format!(
                    "group {} partition {}: worker {} at epoch {} after {} (k{} seq {}), {:?}",
                    h.group, h.partition, h.worker, h.epoch, t, h.key, h.seq, h.outcome
                ));
            }
            *t = (*t).max(h.epoch);
        }
        out
    }

    /// Per group and key, first successful handlings must come in publish
    /// order (gaps where Redis lost a message are not disorder).
    pub fn order_violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for g in &self.groups {
            let mut done: Vec<&Handling> = self.done(g).collect();
            done.sort_by_key(|h| h.start);
            let mut seen = BTreeSet::new();
            let mut last: HashMap<u32, &Handling> = HashMap::new();
            for h in done {
                if !seen.insert(h.msg()) {
                    continue;
                }
                if let Some(prev) = last.get(&h.key)
                    && h.seq <= prev.seq
                {
                    out.push(format!(
                        "group {g} key k{}: seq {} first handled by worker {} after seq {} by worker {}",
                        h.key, h.seq, h.worker, prev.seq, prev.worker
                    ));
                }
                last.insert(h.key, h);
            }
        }
        out
    }

    /// Repeat handlings no fault explains: each repeat needs a fault that
    /// was under way (or whose effect was) between the previous handling
    /// and the repeat.
    pub fn unexplained_duplicates(&self, effect: Duration) -> Vec<String> {
        let mut out = Vec::new();
        for g in &self.groups {
            let mut by: BTreeMap<Msg, Vec<&Handling>> = BTreeMap::new();
            for h in self.done(g) {
                by.entry(h.msg()).or_default().push(h);
            }
            for (m, mut hs) in by {
                hs.sort_by_key(|h| h.start);
                for w in hs.windows(2) {
                    let (prev, repeat) = (w[0], w[1]);
                    let explained = self
                        .faults
                        .iter()
                        .any(|f| f.start <= repeat.start && f.end + effect >= prev.start);
                    if !explained {
                        out.push(format!(
                            "group {g} k{} seq {}: handled by worker {} and again by worker {} {:?} later, with no fault between",
                            m.0,
                            m.1,
                            prev.worker,
                            repeat.worker,
                            repeat.start - prev.start
                        ));
                    }
                }
            }
        }
        out
    }

    /// Every broken promise.
    pub fn judge(&self, e: &Expect) -> Vec<Violation> {
        let mut v = Vec::new();
        let mut add = |kind, detail: String| v.push(Violation { kind, detail });
        if self.acked.is_empty() {
            add(Kind::NothingPublished, "nothing was acknowledged".into());
        }
        let lost_by_redis = self.lost_by_redis();
        if !e.redis_may_lose && !lost_by_redis.is_empty() {
            add(
                Kind::LostByRedis,
                format!(
                    "{} acknowledged publishes are gone from Redis, e.g. {:?}",
                    lost_by_redis.len(),
                    lost_by_redis.iter().take(5).collect::<Vec<_>>()
                ),
            );
        }
        for u in &self.undecodable {
            add(Kind::Undecodable, u.clone());
        }
        for f in self.figures() {
            if !f.lost.is_empty() {
                add(
                    Kind::Lost,
                    format!(
                        "group {} never handled {} messages, e.g. {:?}",
                        f.group,
                        f.lost.len(),
                        &f.lost[..f.lost.len().min(5)]
                    ),
                );
            }
        }
        for d in self.unexplained_duplicates(e.effect) {
            add(Kind::Duplicate, d);
        }
        for o in self.max_owners().1 {
            add(Kind::TwoOwners, o);
        }
        for o in self.order_violations() {
            add(Kind::Order, o);
        }
        if !e.paused {
            for s in self.stale_starts() {
                add(Kind::StaleStart, s);
            }
            for h in self
                .handlings
                .iter()
                .filter(|h| h.outcome == Outcome::Voided)
            {
                add(
                    Kind::Voided,
                    format!(
                        "group {} partition {}: worker {} finished k{} seq {} after its epoch {} was overtaken",
                        h.group, h.partition, h.worker, h.key, h.seq, h.epoch
                    ),
                );
            }
        }
        for x in &self.exits {
            let bad = match x.cause {
                Cause::Died => true,
                Cause::Stopped => x.code != Some(0),
                Cause::Killed => false,
            };
            if bad {
                add(
                    Kind::Crash,
                    format!("worker {} {:?}: {}", x.worker, x.cause, x.status),
                );
            }
        }
        for d in &self.dead_letters {
            add(
                Kind::DeadLetter,
                format!(
                    "group {} partition {}: {:?}",
                    d.group, d.partition, d.message
                ),
            );
        }
        if let Some(u) = &self.unsettled {
            add(Kind::Unsettled, u.clone());
        }
        for p in &self.protocol_errors {
            add(Kind::Protocol, p.clone());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    //! Negative controls: a clean history passes, and each kind of damage
    //! to it is caught by its verdict.

    use super::*;

    const EFFECT: Duration = Duration::from_secs(6);

    fn expect() -> Expect {
        Expect {
            redis_may_lose: false,
            paused: false,
            effect: EFFECT,
        }
    }

    /// Two groups, 2 keys × 4 seqs on partitions 0 and 1, each group's
    /// handlings 10 ms apart by one worker per partition; workers stopped
    /// cleanly at the end.
    fn clean(t0: Instant) -> History {
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut handlings = Vec::new();
        let mut at = 0;
        for g in ["audit", "pdf"] {
            for seq in 0..4 {
                for key in 0..2 {
                    handlings.push(Handling {
                        group: g.into(),
                        partition: key,
                        key,
                        seq,
                        worker: key as usize + 1,
                        attempt: 1,
                        epoch: 100,
                        start: ms(at),
                        end: ms(at + 5),
                        outcome: Outcome::Done,
                    });
                    at += 10;
                }
            }
        }
        let acked: BTreeSet<Msg> = (0..2).flat_map(|k| (0..4).map(move |s| (k, s))).collect();
        History {
            groups: vec!["audit".into(), "pdf".into()],
            stored: Some(acked.clone()),
            acked,
            undecodable: vec![],
            handlings,
            protocol_errors: vec![],
            dead_letters: vec![],
            exits: vec![
                Exit {
                    worker: 1,
                    cause: Cause::Stopped,
                    code: Some(0),
                    status: "exit status: 0".into(),
                },
                Exit {
                    worker: 2,
                    cause: Cause::Killed,
                    code: None,
                    status: "signal: 9 (SIGKILL)".into(),
                },
            ],
            faults: vec![],
            unsettled: None,
        }
    }

    fn kinds(h: &History, e: &Expect) -> BTreeSet<Kind> {
        h.judge(e).into_iter().map(|v| v.kind).collect()
    }

    fn only(h: &History, kind: Kind) {
        let got = kinds(h, &expect());
        assert_eq!(got, BTreeSet::from([kind]), "{:?}", h.judge(&expect()));
    }

    #[test]
    fn a_clean_history_passes() {
        let h = clean(Instant::now());
        assert!(h.judge(&expect()).is_empty(), "{:?}", h.judge(&expect()));
        assert_eq!(h.max_owners().0, 1);
    }

    #[test]
    fn a_message_no_group_handled_is_lost() {
        let mut h = clean(Instant::now());
        h.handlings
            .retain(|x| !(x.group == "pdf" && x.msg() == (1, 2)));
        only(&h, Kind::Lost);
        assert_eq!(h.figures()[1].lost, vec![(1, 2)]);
    }

    #[test]
    fn a_failed_or_voided_request_does_not_count_as_handled() {
        let mut h = clean(Instant::now());
        for x in h.handlings.iter_mut().filter(|x| x.msg() == (0, 3)) {
            x.outcome = Outcome::FailedOnPurpose;
        }
        assert!(kinds(&h, &expect()).contains(&Kind::Lost));
    }

    #[test]
    fn a_dead_letter_is_not_a_delivery() {
        let mut h = clean(Instant::now());
        h.handlings
            .retain(|x| !(x.group == "audit" && x.msg() == (0, 1)));
        h.dead_letters.push(DeadLetter {
            group: "audit".into(),
            partition: 0,
            message: Ok((0, 1)),
        });
        assert_eq!(
            kinds(&h, &expect()),
            BTreeSet::from([Kind::Lost, Kind::DeadLetter])
        );
    }

    #[test]
    fn any_dead_letter_fails() {
        let mut h = clean(Instant::now());
        h.dead_letters.push(DeadLetter {
            group: "pdf".into(),
            partition: 1,
            message: Err("undecodable payload".into()),
        });
        only(&h, Kind::DeadLetter);
    }

    #[test]
    fn what_redis_lost_fails_unless_the_scenario_allows_it() {
        let mut h = clean(Instant::now());
        h.stored.as_mut().unwrap().remove(&(1, 3));
        // Not expected of the groups any more, but Redis lost it.
        only(&h, Kind::LostByRedis);
        let e = Expect {
            redis_may_lose: true,
            ..expect()
        };
        assert!(h.judge(&e).is_empty());
    }

    #[test]
    fn an_undecodable_stream_entry_fails() {
        let mut h = clean(Instant::now());
        h.undecodable.push("p0 lane 0 1-0: payload: bad".into());
        only(&h, Kind::Undecodable);
    }

    #[test]
    fn a_repeat_with_no_fault_between_fails_and_a_fault_explains_it() {
        let base = Instant::now();
        let t0 = base + Duration::from_secs(60);
        let mut h = clean(t0);
        let mut again = h.handlings[0].clone();
        again.start += Duration::from_secs(20);
        again.end += Duration::from_secs(20);
        h.handlings.push(again);
        only(&h, Kind::Duplicate);
        // A fault whose effect ended before the first handling explains
        // nothing; nor does one after the repeat.
        for at in [base, t0 + Duration::from_secs(30)] {
            h.faults.push(Fault {
                what: "kill".into(),
                start: at,
                end: at,
            });
        }
        only(&h, Kind::Duplicate);
        // One between the two does.
        h.faults.push(Fault {
            what: "stall".into(),
            start: t0 + Duration::from_secs(9),
            end: t0 + Duration::from_secs(10),
        });
        assert!(h.judge(&expect()).is_empty(), "{:?}", h.judge(&expect()));
    }

    #[test]
    fn two_workers_on_one_partition_at_once_fail() {
        let mut h = clean(Instant::now());
        // Worker 2 handles a partition-0 message while worker 1's runs.
        let mut other = h.handlings[2].clone();
        other.worker = 2;
        other.start += Duration::from_millis(2);
        other.end += Duration::from_millis(2);
        other.seq = 99;
        h.acked.insert((0, 99));
        h.stored.as_mut().unwrap().insert((0, 99));
        h.handlings.push(other);
        assert!(kinds(&h, &expect()).contains(&Kind::TwoOwners));
        assert_eq!(h.max_owners().0, 2);
        // The same overlap on different partitions is fine.
        h.handlings.last_mut().unwrap().partition = 5;
        assert_eq!(h.max_owners().0, 1);
    }

    #[test]
    fn a_request_the_fence_kept_out_is_not_an_owner() {
        let mut h = clean(Instant::now());
        let mut other = h.handlings[2].clone();
        other.worker = 7;
        other.end += Duration::from_secs(1);
        other.outcome = Outcome::Voided;
        h.handlings.push(other);
        assert_eq!(h.max_owners().0, 1);
        // ... but a voided end is a violation unless a worker was paused.
        only(&h, Kind::Voided);
    }

    #[test]
    fn keys_handled_out_of_order_fail() {
        let mut h = clean(Instant::now());
        // Swap the start times of (0, 1) and (0, 2) in group audit.
        let i = h
            .handlings
            .iter()
            .position(|x| x.group == "audit" && x.msg() == (0, 1))
            .unwrap();
        let j = h
            .handlings
            .iter()
            .position(|x| x.group == "audit" && x.msg() == (0, 2))
            .unwrap();
        let (a, b) = (h.handlings[i].start, h.handlings[j].start);
        h.handlings[i].start = b;
        h.handlings[j].start = a;
        only(&h, Kind::Order);
    }

    #[test]
    fn a_start_below_an_epoch_already_seen_fails_unless_paused() {
        let mut h = clean(Instant::now());
        let last = h
            .handlings
            .iter_mut()
            .rfind(|x| x.group == "pdf" && x.partition == 1)
            .unwrap();
        last.epoch = 99;
        only(&h, Kind::StaleStart);
        let e = Expect {
            paused: true,
            ..expect()
        };
        assert!(h.judge(&e).is_empty());
    }

    #[test]
    fn a_worker_that_died_by_itself_or_failed_on_sigterm_fails() {
        let mut h = clean(Instant::now());
        h.exits.push(Exit {
            worker: 3,
            cause: Cause::Died,
            code: Some(101),
            status: "exit status: 101".into(),
        });
        only(&h, Kind::Crash);
        let mut h = clean(Instant::now());
        h.exits[0].code = Some(3);
        only(&h, Kind::Crash);
    }

    #[test]
    fn groups_left_unsettled_fail() {
        let mut h = clean(Instant::now());
        h.unsettled = Some("group audit p0 lane 0: 3 pending".into());
        only(&h, Kind::Unsettled);
    }

    #[test]
    fn wrong_metadata_fails() {
        let mut h = clean(Instant::now());
        h.protocol_errors
            .push("partition header 3, key k1 is on 1".into());
        only(&h, Kind::Protocol);
    }

    #[test]
    fn a_scenario_that_published_nothing_fails() {
        let mut h = clean(Instant::now());
        h.acked.clear();
        h.stored = Some(BTreeSet::new());
        h.handlings.clear();
        only(&h, Kind::NothingPublished);
    }
}
