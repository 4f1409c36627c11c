//! The cleaner's map from each key to the offset of its latest record in the range
//! being cleaned. Keys are stored whole (not hashed, as Kafka's MD5-keyed map does), so
//! two keys can never be confused and a record is never dropped for a collision; the
//! price is memory, bounded by a budget (`--log-cleaner-dedupe-buffer-size`).

use std::collections::HashMap;

/// Estimated bytes per entry besides the key itself: the boxed slice's pointer and
/// length, the offset, and the hash table's control byte and spare capacity.
const ENTRY_OVERHEAD_BYTES: usize = 48;

#[derive(Debug)]
pub struct KeyOffsetMap {
    latest: HashMap<Box<[u8]>, i64>,
    bytes: usize,
    budget_bytes: usize,
}

impl KeyOffsetMap {
    pub fn new(budget_bytes: usize) -> KeyOffsetMap {
        KeyOffsetMap { latest: HashMap::new(), bytes: 0, budget_bytes }
    }

    /// Records that `key`'s latest record (so far) is at `offset`.
    pub fn put(&mut self, key: &[u8], offset: i64) {
        match self.latest.get_mut(key) {
            Some(latest) => *latest = (*latest).max(offset),
            None => {
                self.bytes += key.len() + ENTRY_OVERHEAD_BYTES;
                self.latest.insert(key.into(), offset);
            }
        }
    }

    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(key).copied()
    }

    /// The map has used its budget: stop adding segments.
    pub fn is_full(&self) -> bool {
        self.bytes >= self.budget_bytes
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_offset_wins_and_the_budget_fills() {
        let mut map = KeyOffsetMap::new(3 * (ENTRY_OVERHEAD_BYTES + 1));
        map.put(b"a", 5);
        map.put(b"a", 3);
        map.put(b"b", 7);
        assert_eq!(map.latest(b"a"), Some(5));
        assert_eq!(map.latest(b"c"), None);
        assert!(!map.is_full());
        map.put(b"c", 9);
        assert!(map.is_full());
        assert_eq!(map.len(), 3);
    }
}
