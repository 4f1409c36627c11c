//! The per-shard batch cache: recently appended batches of every log on the shard, kept
//! in memory so tailing consumers are served without touching the disk. One byte budget
//! per shard (`--batch-cache-bytes`), least-recently-used batches evicted first, hit and
//! miss counters for the metrics.
//!
//! Batches are the same `Bytes` the writer writes (no copy). A log talks to the cache
//! through its [`LogCache`] handle, which drops the log's batches when the log goes away.
//! Reads return whole, contiguous batches starting with the one holding the offset;
//! eviction can leave gaps, and a read stops at a gap (the rest comes from the segment
//! on the next fetch).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use bytes::Bytes;

use super::offset::Offset;

/// Default per-shard budget.
pub const DEFAULT_BATCH_CACHE_BYTES: usize = 64 << 20;

#[derive(Debug)]
struct Entry {
    next_offset: Offset,
    bytes: Bytes,
    /// Position in the LRU order (higher is more recent).
    tick: u64,
}

pub use crate::metrics::CacheStats;

#[derive(Debug)]
pub struct BatchCache {
    logs: HashMap<u64, BTreeMap<Offset, Entry>>,
    /// tick -> (log, base offset): the LRU order.
    lru: BTreeMap<u64, (u64, Offset)>,
    next_tick: u64,
    next_log_id: u64,
    bytes: usize,
    budget_bytes: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
}

pub type SharedBatchCache = Rc<RefCell<BatchCache>>;

impl BatchCache {
    pub fn new(budget_bytes: usize) -> BatchCache {
        BatchCache {
            logs: HashMap::new(),
            lru: BTreeMap::new(),
            next_tick: 0,
            next_log_id: 0,
            bytes: 0,
            budget_bytes,
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    pub fn shared(budget_bytes: usize) -> SharedBatchCache {
        Rc::new(RefCell::new(BatchCache::new(budget_bytes)))
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            evictions: self.evictions,
            bytes: self.bytes,
            batches: self.lru.len(),
            budget_bytes: self.budget_bytes,
        }
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    fn insert(&mut self, log: u64, base_offset: Offset, next_offset: Offset, bytes: Bytes) {
        if bytes.len() > self.budget_bytes {
            return;
        }
        let tick = self.tick();
        self.bytes += bytes.len();
        if let Some(old) = self.logs.entry(log).or_default().insert(base_offset, Entry { next_offset, bytes, tick }) {
            self.bytes -= old.bytes.len();
            self.lru.remove(&old.tick);
        }
        self.lru.insert(tick, (log, base_offset));
        while self.bytes > self.budget_bytes {
            let Some((_, (victim_log, victim_base))) = self.lru.pop_first() else { break };
            if let Some(entry) = self.logs.get_mut(&victim_log).and_then(|batches| batches.remove(&victim_base)) {
                self.bytes -= entry.bytes.len();
                self.evictions += 1;
            }
        }
    }

    fn read(&mut self, log: u64, offset: Offset, limit: Offset, max_bytes: usize) -> Option<Vec<Bytes>> {
        let found = self.lookup(log, offset, limit, max_bytes);
        match &found {
            Some(hits) => {
                self.hits += 1;
                for base in hits.iter().map(|(base, _)| *base).collect::<Vec<_>>() {
                    self.touch(log, base);
                }
            }
            None => self.misses += 1,
        }
        found.map(|hits| hits.into_iter().map(|(_, bytes)| bytes).collect())
    }

    fn lookup(&self, log: u64, offset: Offset, limit: Offset, max_bytes: usize) -> Option<Vec<(Offset, Bytes)>> {
        let batches = self.logs.get(&log)?;
        let (&first_base, first) = batches.range(..=offset).next_back()?;
        if first.next_offset <= offset || first_base >= limit {
            return None;
        }
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut expected = first_base;
        for (&base, entry) in batches.range(first_base..) {
            if base != expected || base >= limit || (!out.is_empty() && total + entry.bytes.len() > max_bytes) {
                break;
            }
            total += entry.bytes.len();
            expected = entry.next_offset;
            out.push((base, entry.bytes.clone()));
        }
        Some(out)
    }

    fn touch(&mut self, log: u64, base: Offset) {
        let tick = self.tick();
        if let Some(entry) = self.logs.get_mut(&log).and_then(|batches| batches.get_mut(&base)) {
            self.lru.remove(&entry.tick);
            entry.tick = tick;
            self.lru.insert(tick, (log, base));
        }
    }

    /// Removes the log's batches for which `doomed(base, next)` holds.
    fn remove_where(&mut self, log: u64, doomed: impl Fn(Offset, Offset) -> bool) {
        let Some(batches) = self.logs.get_mut(&log) else { return };
        let bases: Vec<Offset> =
            batches.iter().filter(|(base, entry)| doomed(**base, entry.next_offset)).map(|(base, _)| *base).collect();
        for base in bases {
            if let Some(entry) = batches.remove(&base) {
                self.bytes -= entry.bytes.len();
                self.lru.remove(&entry.tick);
            }
        }
    }
}

/// One log's handle on its shard's cache.
#[derive(Debug)]
pub struct LogCache {
    shared: SharedBatchCache,
    id: u64,
    /// False for logs that should always read from their segments (tests, tools).
    enabled: bool,
}

impl LogCache {
    pub fn new(shared: SharedBatchCache, enabled: bool) -> LogCache {
        let id = {
            let mut cache = shared.borrow_mut();
            cache.next_log_id += 1;
            cache.next_log_id
        };
        LogCache { shared, id, enabled }
    }

    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
        if !enabled {
            self.clear();
        }
    }

    /// Adds the newest batch of the log.
    pub fn push(&mut self, base_offset: Offset, next_offset: Offset, bytes: Bytes) {
        if self.enabled {
            self.shared.borrow_mut().insert(self.id, base_offset, next_offset, bytes);
        }
    }

    /// Whole batches starting with the one that holds `offset`, below `limit`, up to
    /// `max_bytes` (at least one batch). `None` (a miss) when the cache does not hold
    /// `offset`.
    pub fn read(&self, offset: Offset, limit: Offset, max_bytes: usize) -> Option<Vec<Bytes>> {
        if !self.enabled {
            return None;
        }
        self.shared.borrow_mut().read(self.id, offset, limit, max_bytes)
    }

    /// Forgets batches at or after `offset` (an unacknowledged tail that was rolled back).
    pub fn truncate_from(&mut self, offset: Offset) {
        self.shared.borrow_mut().remove_where(self.id, |base, _| base >= offset);
    }

    /// Forgets batches wholly below `offset` (the log start moved).
    pub fn drop_before(&mut self, offset: Offset) {
        self.shared.borrow_mut().remove_where(self.id, |_, next| next <= offset);
    }

    pub fn clear(&mut self) {
        let mut cache = self.shared.borrow_mut();
        cache.remove_where(self.id, |_, _| true);
        cache.logs.remove(&self.id);
    }
}

impl Drop for LogCache {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[test]
    fn serves_from_the_batch_holding_the_offset_and_respects_limits() {
        let shared = BatchCache::shared(1000);
        let mut cache = LogCache::new(shared.clone(), true);
        cache.push(Offset(0), Offset(5), bytes(100));
        cache.push(Offset(5), Offset(10), bytes(100));
        cache.push(Offset(10), Offset(15), bytes(100));
        assert_eq!(cache.read(Offset(7), Offset(15), 1000).map(|b| b.len()), Some(2));
        assert_eq!(cache.read(Offset(7), Offset(10), 1000).map(|b| b.len()), Some(1), "limit excludes batch 10");
        assert_eq!(cache.read(Offset(0), Offset(15), 150).map(|b| b.len()), Some(1), "max bytes, at least one");
        assert_eq!(cache.read(Offset(15), Offset(15), 1000), None);
        let stats = shared.borrow().stats();
        assert_eq!((stats.hits, stats.misses, stats.bytes, stats.batches), (3, 1, 300, 3));
    }

    #[test]
    fn one_budget_for_all_logs_evicts_the_least_recently_used() {
        let shared = BatchCache::shared(300);
        let mut a = LogCache::new(shared.clone(), true);
        let mut b = LogCache::new(shared.clone(), true);
        a.push(Offset(0), Offset(1), bytes(100));
        b.push(Offset(0), Offset(1), bytes(100));
        a.push(Offset(1), Offset(2), bytes(100));
        // Reading a's first batch makes b's the least recently used.
        assert!(a.read(Offset(0), Offset(2), 100).is_some());
        b.push(Offset(1), Offset(2), bytes(100));
        assert!(b.read(Offset(0), Offset(2), 1000).is_none(), "b's oldest batch was evicted");
        assert_eq!(a.read(Offset(0), Offset(2), 1000).map(|v| v.len()), Some(2));
        assert_eq!(shared.borrow().stats().evictions, 1);
        assert_eq!(shared.borrow().stats().bytes, 300);
        // A gap stops a read: evict a's first batch, read from 0 misses, from 1 hits.
        drop(b);
        assert_eq!(shared.borrow().stats().bytes, 200, "a dropped log's batches leave the cache");
    }

    #[test]
    fn rollback_and_log_start_moves_forget_batches() {
        let shared = BatchCache::shared(1000);
        let mut cache = LogCache::new(shared.clone(), true);
        for n in 0..3 {
            cache.push(Offset(n), Offset(n + 1), bytes(100));
        }
        cache.truncate_from(Offset(2));
        assert_eq!(shared.borrow().stats().bytes, 200);
        cache.drop_before(Offset(1));
        assert_eq!(shared.borrow().stats().bytes, 100);
        assert!(cache.read(Offset(0), Offset(3), 1000).is_none());
        assert!(cache.read(Offset(1), Offset(3), 1000).is_some());
        // A batch larger than the whole budget is not cached at all.
        cache.push(Offset(2), Offset(3), bytes(2000));
        assert_eq!(shared.borrow().stats().bytes, 100);
        let mut off = LogCache::new(shared.clone(), false);
        off.push(Offset(0), Offset(1), bytes(10));
        assert!(off.read(Offset(0), Offset(1), 10).is_none());
    }
}
