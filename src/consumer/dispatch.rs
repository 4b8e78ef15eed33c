//! Key-ordered dispatch (pure logic): within a partition, messages of one
//! key run one after another in stream order; messages of other keys and
//! keyless ones may start at once.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

/// Tracks which keys have a message running and queues the rest.
///
/// Keys are tracked by a 64-bit hash (no allocation per message): two keys
/// whose hashes collide are merely run one after the other, which keeps
/// every guarantee.
#[derive(Debug)]
pub(crate) struct KeyOrder<T> {
    /// (partition, key hash) of each running message, with what waits
    /// behind it.
    busy: HashMap<(u32, u64), VecDeque<T>, foldhash::fast::RandomState>,
    hasher: std::collections::hash_map::RandomState,
    queued: usize,
}

impl<T> Default for KeyOrder<T> {
    fn default() -> Self {
        KeyOrder {
            busy: HashMap::default(),
            hasher: std::collections::hash_map::RandomState::new(),
            queued: 0,
        }
    }
}

impl<T> KeyOrder<T> {
    fn slot(&self, partition: u32, key: &str) -> (u32, u64) {
        let mut h = self.hasher.build_hasher();
        h.write(key.as_bytes());
        (partition, h.finish())
    }

    /// Returns the item if it may start now, or queues it behind its key.
    pub fn offer(&mut self, partition: u32, key: Option<&str>, item: T) -> Option<T> {
        let Some(key) = key else { return Some(item) };
        let slot = self.slot(partition, key);
        match self.busy.get_mut(&slot) {
            Some(waiting) => {
                waiting.push_back(item);
                self.queued += 1;
                None
            }
            None => {
                self.busy.insert(slot, VecDeque::new());
                Some(item)
            }
        }
    }

    /// The running message of this key finished: the next one of the key,
    /// which is now running, if any.
    pub fn finish(&mut self, partition: u32, key: Option<&str>) -> Option<T> {
        let key = self.slot(partition, key?);
        let waiting = self.busy.get_mut(&key)?;
        match waiting.pop_front() {
            Some(next) => {
                self.queued -= 1;
                Some(next)
            }
            None => {
                self.busy.remove(&key);
                None
            }
        }
    }

    /// Messages waiting behind a running one of their key.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_runs_in_order_other_keys_run_at_once() {
        let mut k = KeyOrder::default();
        assert_eq!(k.offer(0, Some("a"), 1), Some(1));
        assert_eq!(k.offer(0, Some("a"), 2), None);
        assert_eq!(k.offer(0, Some("b"), 3), Some(3));
        assert_eq!(k.offer(0, None, 4), Some(4));
        assert_eq!(k.offer(0, Some("a"), 5), None);
        // Same key in another partition is another key.
        assert_eq!(k.offer(1, Some("a"), 6), Some(6));
        assert_eq!(k.queued(), 2);
        assert_eq!(k.finish(0, Some("a")), Some(2));
        assert_eq!(k.finish(0, Some("a")), Some(5));
        assert_eq!(k.finish(0, Some("a")), None);
        assert_eq!(k.offer(0, Some("a"), 7), Some(7));
        assert_eq!(k.finish(0, None), None);
        assert_eq!(k.queued(), 0);
    }
}
