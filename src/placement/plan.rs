//! Choosing a balanced topic's hash tags: each partition's tag is
//! `T:p.n`, with the smallest `n` whose slot a chosen primary serves, and
//! the primaries are chosen so that each holds ⌊P/S⌋ or ⌈P/S⌉ of the
//! topic's partitions, the extra ones going to the primaries that hold the
//! fewest partitions of all topics so far.

use super::slot::tag_slot;

/// Most suffixes tried for one partition before giving up: a primary that
/// serves a single slot needs 16384 tries on average.
const MAX_TRIES: u32 = 1 << 24;

/// The slots one primary serves, as inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSlots {
    /// The primary's address (`host:port`).
    pub node: String,
    /// Inclusive slot ranges.
    pub ranges: Vec<(u16, u16)>,
}

impl ShardSlots {
    /// Whether the primary serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }

    /// How many slots the primary serves.
    pub fn slot_count(&self) -> u32 {
        self.ranges
            .iter()
            .map(|&(a, b)| u32::from(b.saturating_sub(a)) + 1)
            .sum()
    }
}

/// The hash tag of partition `p` of a balanced topic with suffix `n`.
pub fn balanced_tag(topic: &str, p: u32, n: u32) -> String {
    format!("{topic}:{p}.{n}")
}

/// Why no balanced placement could be found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The cluster reported no primary serving slots.
    NoPrimaries,
    /// No suffix up to the limit put the partition on its primary.
    NoSuffix {
        /// The partition.
        partition: u32,
        /// The primary it was meant for.
        node: String,
    },
}

/// For each primary of `shards`, the index of the shard each of `partitions`
/// partitions goes to: ⌊P/S⌋ each, and the P mod S extra ones to the
/// primaries with the lowest `totals` (partitions of all topics they hold
/// now; ties by order). Partitions take the primaries in turn, so
/// neighbouring partitions land on different primaries.
pub fn assign(partitions: u32, totals: &[u64]) -> Vec<usize> {
    let s = totals.len();
    if s == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..s).collect();
    order.sort_by_key(|&i| (totals[i], i));
    let base = partitions as usize / s;
    let extra = partitions as usize % s;
    let mut quota = vec![base; s];
    for &i in order.iter().take(extra) {
        quota[i] += 1;
    }
    let mut out = Vec::with_capacity(partitions as usize);
    while out.len() < partitions as usize {
        for &i in &order {
            if quota[i] > 0 {
                quota[i] -= 1;
                out.push(i);
            }
        }
    }
    out
}

/// The suffix of each partition of `topic` (see [`balanced_tag`]), so that
/// the partitions spread over `shards` as [`assign`] says, given `totals`
/// (one per shard).
pub fn plan(
    topic: &str,
    partitions: u32,
    shards: &[ShardSlots],
    totals: &[u64],
) -> Result<Vec<u32>, PlanError> {
    let shards_with_slots: Vec<usize> = (0..shards.len())
        .filter(|&i| shards[i].slot_count() > 0 && !shards[i].ranges.is_empty())
        .collect();
    if shards_with_slots.is_empty() {
        return Err(PlanError::NoPrimaries);
    }
    let live_totals: Vec<u64> = shards_with_slots
        .iter()
        .map(|&i| totals.get(i).copied().unwrap_or(0))
        .collect();
    assign(partitions, &live_totals)
        .into_iter()
        .zip(0u32..)
        .map(|(k, p)| {
            let shard = &shards[shards_with_slots[k]];
            (0..MAX_TRIES)
                .find(|&n| shard.serves(tag_slot(&balanced_tag(topic, p, n))))
                .ok_or_else(|| PlanError::NoSuffix {
                    partition: p,
                    node: shard.node.clone(),
                })
        })
        .collect()
}

/// How many of `slots` each shard serves (a slot no shard serves counts
/// nowhere).
pub fn counts(slots: &[u16], shards: &[ShardSlots]) -> Vec<u64> {
    let mut out = vec![0; shards.len()];
    for &slot in slots {
        if let Some(i) = shards.iter().position(|s| s.serves(slot)) {
            out[i] += 1;
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `n` primaries with equal contiguous ranges, as `redis-cli --cluster
    /// create` makes them.
    pub(crate) fn equal_shards(n: u16) -> Vec<ShardSlots> {
        let per = 16384.0 / f64::from(n);
        let (mut first, mut cursor) = (0u16, 0.0f64);
        (0..n)
            .map(|i| {
                let mut last = (cursor + per - 1.0).round() as u16;
                if i + 1 == n {
                    last = 16383;
                }
                let range = (first, last);
                first = last + 1;
                cursor += per;
                ShardSlots {
                    node: format!("127.0.0.1:{}", 7000 + i),
                    ranges: vec![range],
                }
            })
            .collect()
    }

    fn slots_of(topic: &str, suffixes: &[u32]) -> Vec<u16> {
        suffixes
            .iter()
            .zip(0u32..)
            .map(|(&n, p)| tag_slot(&balanced_tag(topic, p, n)))
            .collect()
    }

    #[test]
    fn twelve_partitions_over_three_equal_primaries_land_four_each() {
        let shards = equal_shards(3);
        let suffixes = plan("erp.v1.invoice.created", 12, &shards, &[0, 0, 0]).unwrap();
        let c = counts(&slots_of("erp.v1.invoice.created", &suffixes), &shards);
        assert_eq!(c, vec![4, 4, 4]);
        // The negative control: the hash scheme lands unevenly.
        let hashed: Vec<u16> = (0..12)
            .map(|p| tag_slot(&format!("erp.v1.invoice.created:{p}")))
            .collect();
        assert_eq!(counts(&hashed, &shards), vec![2, 6, 4]);
    }

    #[test]
    fn a_second_topic_keeps_the_totals_within_one() {
        let shards = equal_shards(3);
        let mut totals = vec![0u64; 3];
        for (topic, p) in [("a", 12), ("b", 8), ("c", 5), ("d", 1), ("e", 7)] {
            let s = plan(topic, p, &shards, &totals).unwrap();
            let c = counts(&slots_of(topic, &s), &shards);
            let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(hi - lo <= 1, "{topic}: {c:?}");
            for (t, n) in totals.iter_mut().zip(&c) {
                *t += n;
            }
            let (lo, hi) = (totals.iter().min().unwrap(), totals.iter().max().unwrap());
            assert!(hi - lo <= 1, "after {topic}: {totals:?}");
        }
        assert_eq!(totals.iter().sum::<u64>(), 33);
    }

    #[test]
    fn unequal_ranges_and_split_ranges_still_balance() {
        let shards = vec![
            ShardSlots {
                node: "a".into(),
                ranges: vec![(0, 15000)],
            },
            ShardSlots {
                node: "b".into(),
                ranges: vec![(15001, 15001)],
            },
            ShardSlots {
                node: "c".into(),
                ranges: vec![(15002, 15500), (16000, 16383)],
            },
        ];
        let s = plan("t", 9, &shards, &[0, 0, 0]).unwrap();
        assert_eq!(counts(&slots_of("t", &s), &shards), vec![3, 3, 3]);
    }

    #[test]
    fn the_extra_partitions_go_to_the_least_loaded_primaries() {
        assert_eq!(assign(4, &[5, 3, 4]), vec![1, 2, 0, 1]);
        assert_eq!(assign(0, &[1, 2]), Vec::<usize>::new());
        assert!(assign(3, &[]).is_empty());
    }

    #[test]
    fn no_primaries_is_an_error() {
        assert_eq!(plan("t", 2, &[], &[]), Err(PlanError::NoPrimaries));
    }
}
