//! Sticky, balanced assignment of partitions to the live members of a group
//! (pure logic, no I/O).
//!
//! Every member computes the same target from the same inputs; the group's
//! stored assignment is replaced only through a versioned compare-and-set, so
//! concurrent members converge on one answer. The target is balanced (member
//! loads differ by at most one) and sticky: a partition keeps its owner unless
//! that owner left or holds more than its share, so a join or a leave moves
//! only the partitions that must move.

use std::collections::BTreeMap;

/// Partition → member.
pub type Assignment = BTreeMap<u32, String>;

/// The target assignment of `partitions` partitions over `members` (any
/// order, duplicates ignored), starting from `current`.
pub fn rebalance(partitions: u32, members: &[String], current: &Assignment) -> Assignment {
    let mut members: Vec<&String> = members.iter().collect();
    members.sort();
    members.dedup();
    if members.is_empty() || partitions == 0 {
        return Assignment::new();
    }
    let m = members.len();
    let base = partitions as usize / m;
    let extra = partitions as usize % m;

    // What each live member keeps from the current assignment.
    let mut held: BTreeMap<&String, Vec<u32>> =
        members.iter().map(|id| (*id, Vec::new())).collect();
    for (&p, owner) in current {
        if p < partitions
            && let Some(list) = held.get_mut(owner)
        {
            list.push(p);
        }
    }
    // The `extra` larger shares go to the members that already hold the most
    // (least movement), ties broken by id for determinism.
    let mut order: Vec<&String> = members.clone();
    order.sort_by(|a, b| held[b].len().cmp(&held[a].len()).then(a.cmp(b)));
    let quota: BTreeMap<&String, usize> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, base + usize::from(i < extra)))
        .collect();

    let mut target = Assignment::new();
    for (id, list) in &mut held {
        list.sort_unstable();
        // Keep the lowest-numbered partitions up to the quota; the rest move.
        list.truncate(quota[id]);
        for &p in list.iter() {
            target.insert(p, (*id).clone());
        }
    }
    // Hand the free partitions, in order, to members below quota, in order.
    let free: Vec<u32> = (0..partitions)
        .filter(|p| !target.contains_key(p))
        .collect();
    let mut free = free.into_iter();
    for id in &members {
        let have = held[id].len();
        for _ in have..quota[id] {
            match free.next() {
                Some(p) => {
                    target.insert(p, (*id).clone());
                }
                None => break,
            }
        }
    }
    target
}

/// The partitions assigned to `member`.
pub fn partitions_of(assignment: &Assignment, member: &str) -> Vec<u32> {
    assignment
        .iter()
        .filter(|(_, m)| m.as_str() == member)
        .map(|(p, _)| *p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn loads(a: &Assignment) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for m in a.values() {
            *out.entry(m.clone()).or_default() += 1;
        }
        out
    }

    fn moved(before: &Assignment, after: &Assignment) -> usize {
        after
            .iter()
            .filter(|(p, m)| before.get(p).is_some_and(|b| b != *m))
            .count()
    }

    fn check_balanced(a: &Assignment, partitions: u32, members: &[String]) {
        assert_eq!(a.len(), partitions as usize, "every partition assigned");
        let l = loads(a);
        let min = members
            .iter()
            .map(|m| l.get(m).copied().unwrap_or(0))
            .min()
            .unwrap();
        let max = members
            .iter()
            .map(|m| l.get(m).copied().unwrap_or(0))
            .max()
            .unwrap();
        assert!(max - min <= 1, "unbalanced: {l:?}");
        assert!(a.values().all(|m| members.contains(m)), "only live members");
    }

    #[test]
    fn first_assignment_is_balanced() {
        let a = rebalance(8, &ids(&["b", "a", "c"]), &Assignment::new());
        check_balanced(&a, 8, &ids(&["a", "b", "c"]));
        insta::assert_debug_snapshot!(a);
    }

    #[test]
    fn a_join_moves_only_what_it_must() {
        let members = ids(&["a", "b"]);
        let before = rebalance(12, &members, &Assignment::new());
        let joined = ids(&["a", "b", "c"]);
        let after = rebalance(12, &joined, &before);
        check_balanced(&after, 12, &joined);
        // c needs 4; exactly 4 move, all to c.
        assert_eq!(moved(&before, &after), 4);
        assert!(
            after
                .iter()
                .filter(|(p, m)| before[*p] != **m)
                .all(|(_, m)| m == "c")
        );
    }

    #[test]
    fn a_leave_moves_only_the_leavers_partitions() {
        let members = ids(&["a", "b", "c"]);
        let before = rebalance(9, &members, &Assignment::new());
        let left = ids(&["a", "c"]);
        let after = rebalance(9, &left, &before);
        check_balanced(&after, 9, &left);
        for (p, m) in &before {
            if m != "b" {
                assert_eq!(&after[p], m, "partition {p} of a survivor moved");
            }
        }
    }

    #[test]
    fn stable_and_deterministic() {
        let members = ids(&["x", "y", "z"]);
        let a = rebalance(10, &members, &Assignment::new());
        assert_eq!(
            rebalance(10, &members, &a),
            a,
            "a balanced assignment is kept"
        );
        let shuffled = ids(&["z", "x", "y", "x"]);
        assert_eq!(rebalance(10, &shuffled, &a), a);
    }

    #[test]
    fn more_members_than_partitions() {
        let members = ids(&["a", "b", "c", "d"]);
        let a = rebalance(2, &members, &Assignment::new());
        assert_eq!(a.len(), 2);
        assert!(rebalance(2, &[], &a).is_empty());
    }

    #[test]
    fn many_random_changes_stay_balanced_and_minimal() {
        // A small deterministic PRNG: no extra dependency for one test.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pool: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
        let mut current = Assignment::new();
        let mut live: Vec<String> = vec![pool[0].clone()];
        for _ in 0..500 {
            let partitions = 12;
            let who = pool[(next() % 8) as usize].clone();
            if live.contains(&who) && live.len() > 1 {
                live.retain(|m| m != &who);
            } else if !live.contains(&who) {
                live.push(who);
            }
            let after = rebalance(partitions, &live, &current);
            check_balanced(&after, partitions, &live);
            // Lower bound on moves: partitions whose owner left, plus what
            // over-quota survivors must shed.
            let lost = current.values().filter(|m| !live.contains(m)).count();
            let base = partitions as usize / live.len();
            let over: usize = live
                .iter()
                .map(|m| {
                    current
                        .values()
                        .filter(|o| *o == m)
                        .count()
                        .saturating_sub(base + 1)
                })
                .sum();
            let changed = moved(&current, &after);
            assert!(
                changed <= lost + over + live.len(),
                "moved {changed}, lower bound {lost}+{over}"
            );
            current = after;
        }
    }
}
