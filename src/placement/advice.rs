//! How uneven a topic's placement has become after slots moved, and which
//! slot moves would even it again. Redis Cluster moves a slot with its
//! keys, so following the advice rebalances a topic without renaming a key.

use std::collections::BTreeMap;

/// One slot to move, with the partitions of the topic that live in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMove {
    /// The slot.
    pub slot: u16,
    /// The topic's partitions in that slot.
    pub partitions: Vec<u32>,
    /// Index of the primary that serves it now.
    pub from: usize,
    /// Index of the primary it should move to.
    pub to: usize,
}

/// The evenness of one topic over the primaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evenness {
    /// The topic's partitions on each primary.
    pub counts: Vec<u64>,
    /// The most any primary should hold: ⌈P/S⌉.
    pub ideal_max: u64,
    /// The most one primary holds.
    pub busiest: u64,
    /// The moves that would bring every primary to ⌊P/S⌋ or ⌈P/S⌉ (empty
    /// when it is so already).
    pub moves: Vec<SlotMove>,
}

/// Evenness of a topic whose partition `p` lives in `slots[p]`, on primaries
/// where `owner(slot)` is the index (below `primaries`) of the primary
/// serving a slot (`None`: served by none, counted nowhere and never moved).
pub fn evenness(slots: &[u16], primaries: usize, owner: impl Fn(u16) -> Option<usize>) -> Evenness {
    let mut counts = vec![0u64; primaries];
    // slot -> (its primary, the partitions in it)
    let mut by_slot: BTreeMap<u16, (usize, Vec<u32>)> = BTreeMap::new();
    for (&slot, p) in slots.iter().zip(0u32..) {
        if let Some(i) = owner(slot).filter(|&i| i < primaries) {
            counts[i] += 1;
            by_slot.entry(slot).or_insert((i, Vec::new())).1.push(p);
        }
    }
    let placed: u64 = counts.iter().sum();
    let s = primaries.max(1) as u64;
    let (floor, extra) = (placed / s, (placed % s) as usize);
    let ideal_max = floor + u64::from(extra > 0);
    let busiest = counts.iter().copied().max().unwrap_or(0);

    // Targets: the `extra` primaries holding most now keep ⌈P/S⌉.
    let mut order: Vec<usize> = (0..primaries).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(counts[i]), i));
    let mut target = vec![floor; primaries];
    for &i in order.iter().take(extra) {
        target[i] += 1;
    }
    let mut have = counts.clone();
    let mut moves = Vec::new();
    for &from in &order {
        let mut slots_here: Vec<(&u16, &Vec<u32>)> = by_slot
            .iter()
            .filter(|(_, (i, _))| *i == from)
            .map(|(slot, (_, ps))| (slot, ps))
            .collect();
        slots_here.sort_by_key(|(slot, ps)| (ps.len(), **slot));
        for (&slot, ps) in slots_here {
            let k = ps.len() as u64;
            if have[from] <= target[from] || have[from] - target[from] < k {
                continue;
            }
            let to = (0..primaries)
                .filter(|&j| j != from && target[j] >= have[j] + k)
                .max_by_key(|&j| (target[j] - have[j], std::cmp::Reverse(j)));
            if let Some(to) = to {
                have[from] -= k;
                have[to] += k;
                moves.push(SlotMove {
                    slot,
                    partitions: ps.clone(),
                    from,
                    to,
                });
            }
        }
    }
    Evenness {
        counts,
        ideal_max,
        busiest,
        moves,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_of(ranges: &[(u16, u16)]) -> impl Fn(u16) -> Option<usize> + '_ {
        |slot| ranges.iter().position(|&(a, b)| (a..=b).contains(&slot))
    }

    #[test]
    fn an_even_topic_needs_no_move() {
        let ranges = [(0, 99), (100, 199), (200, 299)];
        let e = evenness(&[1, 101, 201, 2, 102, 202], 3, owner_of(&ranges));
        assert_eq!(e.counts, vec![2, 2, 2]);
        assert_eq!((e.busiest, e.ideal_max), (2, 2));
        assert!(e.moves.is_empty());
    }

    #[test]
    fn after_a_reshard_the_moves_even_it_again() {
        // Slot 150 (partitions 4 and 5) moved to primary 0 in a reshard.
        let ranges = [(0, 150), (151, 199), (200, 299)];
        let slots = [1, 2, 101, 201, 150, 150, 202, 160];
        let e = evenness(&slots, 3, owner_of(&ranges));
        assert_eq!(e.counts, vec![5, 1, 2]);
        assert_eq!((e.busiest, e.ideal_max), (5, 3));
        // Apply the moves: every primary ends with 2 or 3.
        let mut have = e.counts.clone();
        for m in &e.moves {
            assert_eq!(m.from, 0);
            have[m.from] -= m.partitions.len() as u64;
            have[m.to] += m.partitions.len() as u64;
        }
        assert!(have.iter().all(|&n| (2..=3).contains(&n)), "{have:?}");
        assert_eq!(
            e.moves[0].slot, 1,
            "the smallest slot of one partition first"
        );
    }

    #[test]
    fn a_new_empty_primary_gets_its_share() {
        let ranges = [(0, 99), (100, 199), (200, 299), (300, 399)];
        let slots = [1, 101, 201, 2, 102, 202, 3, 103];
        let e = evenness(&slots, 4, owner_of(&ranges));
        assert_eq!(e.counts, vec![3, 3, 2, 0]);
        assert_eq!(e.moves.len(), 2);
        assert!(e.moves.iter().all(|m| m.to == 3));
    }
}
