//! Per-shard probes: counters and histograms each shard thread bumps without contention
//! (relaxed atomics owned by that thread), plus a snapshot of its partitions, cache and
//! committed offsets that the shard publishes every second. All are registered in one
//! process-wide list, so the admin endpoint (`http`) merges every shard's values at scrape
//! time without touching the shards.
//!
//! - [`histogram`]: fixed-bucket latency histograms.
//! - [`prometheus`]: the text exposition.
//! - [`http`]: `/metrics` and `/health` on `--admin-listen`.
//!
//! The per-shard task that publishes the snapshots and watches event-loop lag lives with
//! the shard (`shard::metrics_publisher`): metrics sit below every other module.

pub mod histogram;
pub mod http;
pub mod prometheus;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use histogram::{Histogram, HistogramSnapshot};

/// API keys we keep counters for (Kafka's are below this).
pub const API_KEYS: usize = 100;

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

/// One partition's offsets and size, as last published by its shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionGauge {
    pub topic: String,
    pub partition: i32,
    pub log_start: i64,
    pub high_watermark: i64,
    pub log_end: i64,
    pub size_bytes: u64,
    /// Set for compacted (cleanup.policy=compact) partitions only.
    pub cleaner: Option<CleanerGauge>,
}

/// A compacted partition's cleaner state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanerGauge {
    /// Dirty bytes over cleanable bytes, 0..=1.
    pub dirty_ratio: f64,
    pub dirty_bytes: u64,
    pub first_dirty_offset: i64,
    pub passes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    /// Wall-clock ms when the last pass started (0: never).
    pub last_run_ms: i64,
    pub last_duration_ms: u64,
}

/// A committed offset of a group coordinated by the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedGauge {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The batch cache's counters since the shard started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub bytes: usize,
    pub batches: usize,
    pub budget_bytes: usize,
}

/// What a shard publishes every second.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub shard: Option<usize>,
    pub partitions: Vec<PartitionGauge>,
    pub committed: Vec<CommittedGauge>,
    pub cache: CacheStats,
    pub tasks_executed: u64,
    pub task_runtime_seconds: f64,
}

/// The counters of one shard (one thread).
#[derive(Debug)]
pub struct ShardProbes {
    /// The thread's name (`tern-shard-N`), for labels.
    pub thread: String,
    /// Requests received, by API key.
    pub requests: [Counter; API_KEYS],
    /// Requests that failed as a whole (malformed, unsupported, handler error), by API key.
    pub request_errors: [Counter; API_KEYS],
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    /// Connections that sent their first bytes and are being served.
    pub connections_opened: Counter,
    pub connections_closed: Counter,
    /// Connections the listener accepted (each takes a descriptor), opened or not.
    pub connections_accepted: Counter,
    /// Connections closed at accept: max.connections or max.connections.per.ip reached.
    pub connections_refused: Counter,
    /// Connections closed for idleness or a request that stopped arriving.
    pub connections_timed_out: Counter,
    /// Connections closed for bad input (malformed frames, refused requests).
    pub connections_bad: Counter,
    /// Accepts that waited for max.connection.creation.rate.
    pub connection_creation_throttled: Counter,
    /// Requests that waited for the shard's request-bytes budget (backpressure).
    pub request_budget_waits: Counter,
    /// Request to response-ready time of Produce and Fetch (Fetch includes long polls).
    pub produce_latency: Histogram,
    pub fetch_latency: Histogram,
    /// fdatasync durations of the shard's logs.
    pub fsync_latency: Histogram,
    /// Produce stages inside the storage engine (see perf/README.md): how long the
    /// oldest append of a write round waited for the writer, the round's write (for a
    /// write-through file this includes the flush), and how long written data waited
    /// for the fdatasync that covers it (files that are not write-through).
    pub log_queue_wait: Histogram,
    pub log_write: Histogram,
    pub log_sync_wait: Histogram,
    /// From a produce response being ready to its last byte handed to the socket
    /// (waiting behind earlier responses of the connection included).
    pub produce_response_write: Histogram,
    /// Replication: an acks=all batch from its proposal at the leader to its commit (a
    /// majority has it on disk); a follower's append from its arrival to its
    /// acknowledgement leaving (its write included).
    pub replication_commit: Histogram,
    pub replication_follower_ack: Histogram,
    /// Requests this shard sent to other shards.
    pub cross_shard_calls: Counter,
    /// How late the shard's 10 ms watchdog timer fired (time other tasks held the core).
    pub event_loop_lag: Histogram,
    /// Watchdog wakeups later than the stall threshold (each is also logged).
    pub event_loop_stalls: Counter,
    /// Record bytes read from segments into memory by the copying read path.
    pub segment_bytes_read: Counter,
    /// Segments started in a retention-deleted segment's file (`storage::recycle`).
    pub segments_recycled: Counter,
    /// Bytes read from segments only to find batch boundaries for zero-copy sends.
    pub segment_header_bytes_read: Counter,
    /// Record bytes sent with sendfile(2) (never in user space).
    pub sendfile_bytes: Counter,
    /// sendfile(2) calls made for those bytes.
    pub sendfile_calls: Counter,
    /// Of those bytes, the ones sent by paced jobs (cold reads while the broker wrote).
    pub paced_read_bytes: Counter,
    /// Paced jobs that waited for the cold-read budget (`--cold-read-budget-mb`).
    pub cold_read_budget_waits: Counter,
    /// Record bytes fetches got from the batch cache (memory).
    pub batch_cache_bytes_served: Counter,
    /// The log cleaner: passes run, bytes it read and wrote, records it removed.
    pub cleaner_passes: Counter,
    pub cleaner_bytes_read: Counter,
    pub cleaner_bytes_written: Counter,
    pub cleaner_records_removed: Counter,
    /// Published by the shard every second.
    pub snapshot: Mutex<ShardSnapshot>,
}

impl ShardProbes {
    fn new(thread: String) -> ShardProbes {
        ShardProbes {
            thread,
            requests: std::array::from_fn(|_| Counter::default()),
            request_errors: std::array::from_fn(|_| Counter::default()),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            connections_opened: Counter::default(),
            connections_accepted: Counter::default(),
            connections_closed: Counter::default(),
            connections_refused: Counter::default(),
            connections_timed_out: Counter::default(),
            connections_bad: Counter::default(),
            connection_creation_throttled: Counter::default(),
            request_budget_waits: Counter::default(),
            produce_latency: Histogram::default(),
            fetch_latency: Histogram::default(),
            fsync_latency: Histogram::default(),
            log_queue_wait: Histogram::default(),
            log_write: Histogram::default(),
            log_sync_wait: Histogram::default(),
            produce_response_write: Histogram::default(),
            replication_commit: Histogram::default(),
            replication_follower_ack: Histogram::default(),
            cross_shard_calls: Counter::default(),
            event_loop_lag: Histogram::default(),
            event_loop_stalls: Counter::default(),
            segment_bytes_read: Counter::default(),
            segments_recycled: Counter::default(),
            segment_header_bytes_read: Counter::default(),
            sendfile_bytes: Counter::default(),
            sendfile_calls: Counter::default(),
            paced_read_bytes: Counter::default(),
            cold_read_budget_waits: Counter::default(),
            batch_cache_bytes_served: Counter::default(),
            cleaner_passes: Counter::default(),
            cleaner_bytes_read: Counter::default(),
            cleaner_bytes_written: Counter::default(),
            cleaner_records_removed: Counter::default(),
            snapshot: Mutex::default(),
        }
    }

    /// Counts a request of API `key`.
    pub fn count_request(&self, key: i16) {
        if let Some(counter) = usize::try_from(key).ok().and_then(|k| self.requests.get(k)) {
            counter.add(1);
        }
    }

    pub fn count_request_error(&self, key: i16) {
        if let Some(counter) = usize::try_from(key).ok().and_then(|k| self.request_errors.get(k)) {
            counter.add(1);
        }
    }
}

fn registry() -> &'static Mutex<Vec<Arc<ShardProbes>>> {
    static REGISTRY: OnceLock<Mutex<Vec<Arc<ShardProbes>>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

thread_local! {
    static PROBES: Arc<ShardProbes> = {
        let probes = Arc::new(ShardProbes::new(std::thread::current().name().unwrap_or("unnamed").to_string()));
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

static SHARDS_TOTAL: AtomicUsize = AtomicUsize::new(usize::MAX);
static SHARDS_READY: AtomicUsize = AtomicUsize::new(0);

/// Called once at startup with the number of shards.
pub fn expect_shards(total: usize) {
    SHARDS_TOTAL.store(total, Ordering::SeqCst);
}

/// Called by a shard once its logs are recovered and it accepts connections.
pub fn shard_ready() {
    SHARDS_READY.fetch_add(1, Ordering::SeqCst);
}

/// Node-level figures of the metadata quorum (cluster mode only; set by the quorum on
/// shard 0).
#[derive(Debug, Default)]
pub struct ClusterGauges {
    /// Set once the node runs in cluster mode (the gauges are shown only then).
    pub enabled: AtomicBool,
    /// The controller's node id, -1 while there is none.
    pub controller_id: AtomicI64,
    pub is_controller: AtomicU64,
    pub brokers_live: AtomicU64,
    pub brokers_fenced: AtomicU64,
    pub applied_index: AtomicU64,
    pub leader_changes: AtomicU64,
}

/// Partition replication figures of this node (cluster mode): each shard's replica driver
/// sets its slot of the gauges; the counters only grow.
#[derive(Debug, Default)]
pub struct ReplicationGauges {
    pub per_shard: std::sync::Mutex<Vec<ShardGroupCounts>>,
    pub leader_changes: AtomicU64,
    pub truncations: AtomicU64,
    pub catch_ups: AtomicU64,
    pub catch_up_bytes: AtomicU64,
}

impl ReplicationGauges {
    pub fn set_shard(&self, shard: usize, counts: ShardGroupCounts) {
        let mut slots = self.per_shard.lock().expect("replication gauges");
        if slots.len() <= shard {
            slots.resize(shard + 1, ShardGroupCounts::default());
        }
        slots[shard] = counts;
    }

    /// Sums over the shards.
    pub fn totals(&self) -> ShardGroupCounts {
        let slots = self.per_shard.lock().expect("replication gauges");
        slots.iter().fold(ShardGroupCounts::default(), |acc, s| ShardGroupCounts {
            groups: acc.groups + s.groups,
            leaders: acc.leaders + s.leaders,
            under_replicated: acc.under_replicated + s.under_replicated,
            quiesced: acc.quiesced + s.quiesced,
        })
    }
}

/// One shard's replica groups, counted at its replica driver's last tick.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShardGroupCounts {
    pub groups: u64,
    /// Groups led here.
    pub leaders: u64,
    /// Led groups with fewer in-sync replicas than replicas.
    pub under_replicated: u64,
    /// Groups gone quiet (`shard::quiescence`).
    pub quiesced: u64,
}

pub fn replication_gauges() -> &'static ReplicationGauges {
    static GAUGES: OnceLock<ReplicationGauges> = OnceLock::new();
    GAUGES.get_or_init(ReplicationGauges::default)
}

pub fn cluster_gauges() -> &'static ClusterGauges {
    static GAUGES: OnceLock<ClusterGauges> = OnceLock::new();
    GAUGES.get_or_init(ClusterGauges::default)
}

/// (ready, total) shards.
pub fn readiness() -> (usize, usize) {
    (SHARDS_READY.load(Ordering::SeqCst), SHARDS_TOTAL.load(Ordering::SeqCst))
}
