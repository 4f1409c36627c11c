//! The most recent batches of one log, kept in memory so tailing consumers are served
//! without touching the disk. Holds the same `Bytes` the writer wrote (no copy), bounded
//! by a byte budget; the oldest batches are evicted first.

use std::collections::VecDeque;

use bytes::Bytes;

use super::offset::Offset;

#[derive(Debug, Clone)]
pub struct CachedBatch {
    pub base_offset: Offset,
    /// The offset after this batch's last record.
    pub next_offset: Offset,
    pub bytes: Bytes,
}

#[derive(Debug)]
pub struct TailCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
    budget_bytes: usize,
}

impl TailCache {
    pub fn new(budget_bytes: usize) -> TailCache {
        TailCache { batches: VecDeque::new(), bytes: 0, budget_bytes }
    }

    pub fn set_budget(&mut self, budget_bytes: usize) {
        self.budget_bytes = budget_bytes;
        self.evict();
    }

    /// Adds the newest batch; it must follow the previous one.
    pub fn push(&mut self, batch: CachedBatch) {
        if let Some(last) = self.batches.back() {
            assert_eq!(last.next_offset, batch.base_offset, "tail cache batches must be contiguous");
        }
        self.bytes += batch.bytes.len();
        self.batches.push_back(batch);
        self.evict();
    }

    fn evict(&mut self) {
        // Always keep the newest batch, even when it alone is over budget.
        while self.bytes > self.budget_bytes && self.batches.len() > 1 {
            if let Some(old) = self.batches.pop_front() {
                self.bytes -= old.bytes.len();
            }
        }
        if self.budget_bytes == 0 {
            self.clear();
        }
    }

    /// Whole batches starting with the one that holds `offset`, below `limit`, up to
    /// `max_bytes` (at least one batch). `None` when the cache does not hold `offset`.
    pub fn read(&self, offset: Offset, limit: Offset, max_bytes: usize) -> Option<Vec<Bytes>> {
        let first = self.batches.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = self.batches.partition_point(|batch| batch.next_offset <= offset);
        if start == self.batches.len() {
            return None;
        }
        let mut out = Vec::new();
        let mut total = 0usize;
        for batch in self.batches.range(start..) {
            if batch.base_offset >= limit || (!out.is_empty() && total + batch.bytes.len() > max_bytes) {
                break;
            }
            total += batch.bytes.len();
            out.push(batch.bytes.clone());
        }
        Some(out)
    }

    /// Forgets batches at or after `offset` (an unacknowledged tail that was rolled back).
    pub fn truncate_from(&mut self, offset: Offset) {
        while self.batches.back().is_some_and(|batch| batch.base_offset >= offset) {
            if let Some(batch) = self.batches.pop_back() {
                self.bytes -= batch.bytes.len();
            }
        }
    }

    /// Forgets batches wholly below `offset` (the log start moved).
    pub fn drop_before(&mut self, offset: Offset) {
        while self.batches.front().is_some_and(|batch| batch.next_offset <= offset) {
            if let Some(batch) = self.batches.pop_front() {
                self.bytes -= batch.bytes.len();
            }
        }
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, count: i64, len: usize) -> CachedBatch {
        CachedBatch { base_offset: Offset(base), next_offset: Offset(base + count), bytes: Bytes::from(vec![0u8; len]) }
    }

    #[test]
    fn serves_from_the_batch_holding_the_offset_and_respects_limits() {
        let mut cache = TailCache::new(1000);
        cache.push(batch(0, 5, 100));
        cache.push(batch(5, 5, 100));
        cache.push(batch(10, 5, 100));
        assert_eq!(cache.read(Offset(7), Offset(15), 1000).map(|b| b.len()), Some(2));
        assert_eq!(cache.read(Offset(7), Offset(10), 1000).map(|b| b.len()), Some(1), "limit excludes batch 10");
        assert_eq!(cache.read(Offset(0), Offset(15), 150).map(|b| b.len()), Some(1), "max bytes, at least one");
        assert_eq!(cache.read(Offset(15), Offset(15), 1000), None);
    }

    #[test]
    fn evicts_oldest_over_budget_and_rolls_back() {
        let mut cache = TailCache::new(250);
        cache.push(batch(0, 1, 100));
        cache.push(batch(1, 1, 100));
        cache.push(batch(2, 1, 100));
        assert_eq!(cache.read(Offset(0), Offset(3), 1000), None, "batch 0 evicted");
        assert_eq!(cache.bytes(), 200);
        cache.truncate_from(Offset(2));
        assert_eq!(cache.bytes(), 100);
        cache.drop_before(Offset(2));
        assert_eq!(cache.bytes(), 0);
    }
}
