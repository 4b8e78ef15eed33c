//! The state of a message in a group, from what the reads found: one row
//! per way a group can stand.

use super::*;

const NOW: u64 = 1_000_000;

fn id(ms: u64) -> StreamId {
    StreamId { ms, seq: 0 }
}

fn pending(member: &str, deliveries: u64) -> Option<PendingEntry> {
    Some(PendingEntry {
        member: member.into(),
        idle_ms: 250,
        deliveries,
    })
}

fn state(found: Found, facts: GroupFacts) -> GroupState {
    group_state("g", found, facts, NOW)
}

#[test]
fn each_way_a_group_can_stand() {
    let here = Found::Lane(id(500));
    // Not read: the group's position is before the message.
    let s = state(
        here,
        GroupFacts {
            last_delivered: Some(id(400)),
            ..GroupFacts::default()
        },
    );
    assert_eq!(s.state, MessageState::Unread);
    // No position at all: not read either.
    assert_eq!(
        state(here, GroupFacts::default()).state,
        MessageState::Unread
    );
    // Read and settled: done, whether or not the entry is still there.
    let past = GroupFacts {
        last_delivered: Some(id(500)),
        ..GroupFacts::default()
    };
    assert_eq!(state(here, past.clone()).state, MessageState::Done);
    assert_eq!(
        state(Found::Trimmed(id(500)), past).state,
        MessageState::Done
    );
    // Trimmed before the group got to it: gone.
    let behind = GroupFacts {
        last_delivered: Some(id(400)),
        ..GroupFacts::default()
    };
    assert_eq!(
        state(Found::Trimmed(id(500)), behind).state,
        MessageState::Gone
    );

    // Pending: in flight, with its member and attempt.
    let s = state(
        here,
        GroupFacts {
            last_delivered: Some(id(500)),
            pending: pending("m1", 2),
            ..GroupFacts::default()
        },
    );
    assert_eq!(
        (s.state, s.member.as_deref(), s.attempt, s.since_ms),
        (MessageState::InFlight, Some("m1"), Some(2), Some(NOW - 250))
    );
    // Pending with a failure not yet due (ordered): retrying.
    let failed = FailureRecord {
        n: 2,
        due: NOW + 5000,
        err: "upstream down".into(),
    };
    let s = state(
        here,
        GroupFacts {
            pending: pending("m1", 2),
            failure: Some(failed.clone()),
            ..GroupFacts::default()
        },
    );
    assert_eq!(
        (s.state, s.attempt, s.due_ms, s.error.as_deref()),
        (
            MessageState::Retrying,
            Some(3),
            Some(NOW + 5000),
            Some("upstream down")
        )
    );
    // Its due time passed: being tried again.
    let s = state(
        here,
        GroupFacts {
            pending: pending("m1", 3),
            failure: Some(FailureRecord {
                due: NOW - 1,
                ..failed
            }),
            ..GroupFacts::default()
        },
    );
    assert_eq!((s.state, s.attempt), (MessageState::InFlight, Some(3)));

    // Shared mode: parked in the retry set, or re-added and taken.
    let s = state(
        here,
        GroupFacts {
            last_delivered: Some(id(500)),
            parked: Some((2, NOW + 900)),
            ..GroupFacts::default()
        },
    );
    assert_eq!(
        (s.state, s.attempt, s.due_ms),
        (MessageState::Retrying, Some(2), Some(NOW + 900))
    );
    let s = state(
        here,
        GroupFacts {
            last_delivered: Some(id(500)),
            retry: Some((2, pending("m2", 1))),
            ..GroupFacts::default()
        },
    );
    assert_eq!(
        (s.state, s.member.as_deref(), s.attempt),
        (MessageState::InFlight, Some("m2"), Some(2))
    );
    let s = state(
        here,
        GroupFacts {
            retry: Some((2, None)),
            ..GroupFacts::default()
        },
    );
    assert_eq!(s.state, MessageState::Retrying);

    // Dead-lettered wins over everything else the reads may still see.
    let d = DeadLetter {
        partition: 1,
        id: "900-0".into(),
        attempts: 3,
        error: "bad invoice".into(),
        failed_at_ms: 900,
        ..DeadLetter::default()
    };
    let s = state(
        here,
        GroupFacts {
            last_delivered: Some(id(500)),
            pending: pending("m1", 3),
            dead_letter: Some(d),
            ..GroupFacts::default()
        },
    );
    assert_eq!(
        (
            s.state,
            s.attempt,
            s.error.as_deref(),
            s.dead_letter.as_deref(),
            s.failed_at_ms
        ),
        (
            MessageState::DeadLettered,
            Some(3),
            Some("bad invoice"),
            Some("1:900-0"),
            Some(900)
        )
    );

    // A delayed message not yet due: unread in every group, with its due time.
    let s = state(Found::Delayed(NOW + 60_000), GroupFacts::default());
    assert_eq!(
        (s.state, s.due_ms),
        (MessageState::Unread, Some(NOW + 60_000))
    );
}
