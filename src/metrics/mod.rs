//! Per-shard probes: counters each shard thread bumps without contention (relaxed atomics
//! owned by that thread), registered in one process-wide list so a scrape can read every
//! shard's values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one shard (one thread).
#[derive(Debug, Default)]
pub struct ShardProbes {
    /// The thread's name (`tern-shard-N`), for labels.
    pub thread: String,
    /// Record bytes read from segments into memory by the copying read path.
    pub segment_bytes_read: Counter,
    /// Bytes read from segments only to find batch boundaries for zero-copy sends.
    pub segment_header_bytes_read: Counter,
    /// Record bytes sent with sendfile(2) (never in user space).
    pub sendfile_bytes: Counter,
    /// sendfile(2) calls made for those bytes.
    pub sendfile_calls: Counter,
    /// Record bytes fetches got from the batch cache (memory).
    pub batch_cache_bytes_served: Counter,
}

fn registry() -> &'static Mutex<Vec<Arc<ShardProbes>>> {
    static REGISTRY: OnceLock<Mutex<Vec<Arc<ShardProbes>>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

thread_local! {
    static PROBES: Arc<ShardProbes> = {
        let probes = Arc::new(ShardProbes {
            thread: std::thread::current().name().unwrap_or("unnamed").to_string(),
            ..ShardProbes::default()
        });
        registry().lock().expect("probe registry").push(probes.clone());
        probes
    };
}

/// This thread's probes.
pub fn probes() -> Arc<ShardProbes> {
    PROBES.with(Arc::clone)
}

/// Every thread's probes (for scrapes and shutdown summaries).
pub fn all_probes() -> Vec<Arc<ShardProbes>> {
    registry().lock().expect("probe registry").clone()
}
