//! Per-log configuration (the topic configs the storage engine honours) and the storage
//! limits, named with units last.

use std::time::Duration;

use crate::protocol::compression::Codec;

/// Direct I/O block size. Writes start and end on this boundary; the device's logical
/// block (often 512) divides it.
pub const BLOCK_BYTES: u64 = 4096;
/// One sparse offset-index and time-index entry per this many bytes of log (Kafka's
/// index.interval.bytes).
pub const INDEX_INTERVAL_BYTES: u64 = 4096;
/// Segment files grow by fallocate in steps, so appends rarely change file metadata that
/// fdatasync would have to write. A step is the file's size so far (the file doubles),
/// at least `PREALLOCATE_STEP_MIN_BYTES` and at most `PREALLOCATE_STEP_BYTES`: a busy
/// segment soon grows 32 MiB at a time, while an idle partition's segment holds 1 MiB
/// (5,000 partitions with a record each held 160 GB with a fixed 32 MiB step).
pub const PREALLOCATE_STEP_BYTES: u64 = 32 << 20;
pub const PREALLOCATE_STEP_MIN_BYTES: u64 = 1 << 20;
/// The smallest segment.bytes accepted (Kafka's minimum is 14 bytes; one block keeps the
/// index arithmetic simple and a test can still roll every few batches).
pub const SEGMENT_BYTES_MIN: u64 = BLOCK_BYTES;
/// Positions inside a segment are stored as u32 in the offset index.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Largest single DMA write issued by the group-commit writer.
pub const WRITE_BYTES_MAX: usize = 8 << 20;
/// Reads of segment files are issued in chunks of this size while scanning headers.
pub const SCAN_CHUNK_BYTES: usize = 1 << 20;

const _: () = assert!(INDEX_INTERVAL_BYTES <= SEGMENT_BYTES_MIN);
const _: () = assert!(BLOCK_BYTES.is_power_of_two());
const _: () = assert!(PREALLOCATE_STEP_BYTES % BLOCK_BYTES == 0);
const _: () = assert!(PREALLOCATE_STEP_MIN_BYTES % BLOCK_BYTES == 0);

pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;
pub const DEFAULT_SEGMENT_MS: i64 = 7 * 24 * 60 * 60 * 1000;
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's default delete.retention.ms (one day).
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// Kafka's default message.max.bytes (1 MiB plus record-batch overhead).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;
/// Kafka's default segment.index.bytes (10 MiB per index file).
pub const DEFAULT_SEGMENT_INDEX_BYTES: u64 = 10 << 20;
/// Bytes of one time-index entry, the larger of the two index entries: a segment rolls
/// before either index outgrows segment.index.bytes.
pub const INDEX_ENTRY_BYTES_MAX: u64 = 12;
/// Largest records section a batch may decompress to when the broker has to look inside
/// it (recompression to the topic's codec, per-record timestamp checks).
pub const DECOMPRESSED_SECTION_BYTES_MAX: usize = 64 << 20;

/// What the log does with a batch's compression (Kafka's compression.type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionPolicy {
    /// `producer`: keep the batch as the producer compressed it (the default; no CPU).
    Producer,
    /// Store every batch with this codec, re-encoding batches that use another one;
    /// `level` is compression.<codec>.level (`None`: the codec's default).
    Codec { codec: Codec, level: Option<i32> },
}

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Acknowledge after the data is written and fdatasync has returned (the default).
    Durable,
    /// Acknowledge once the write has completed; fdatasync at most every `interval` or
    /// every `bytes`, whichever comes first (Kafka's flush.ms / flush.messages,
    /// Redpanda's write caching). A machine crash can lose the unsynced window.
    Interval { interval: Duration, bytes: u64 },
}

/// How the durable flush policy makes a write durable (`tern serve --sync-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// The active segment is opened with O_DSYNC: a write completes once durable, with
    /// the cache flush done by the kernel in the write's completion (the default).
    #[default]
    WriteThrough,
    /// Plain O_DIRECT writes, then an fdatasync per log that covers every completed
    /// write (group commit with write and sync overlapping).
    Fdatasync,
}

/// Which timestamp a batch keeps (Kafka's message.timestamp.type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The configuration one partition log runs with. Changes take effect on the next append
/// or retention pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// segment.bytes: roll the active segment before it would exceed this size.
    pub segment_bytes: u64,
    /// segment.ms: roll the active segment once it is this old.
    pub segment_ms: i64,
    /// retention.ms: delete closed segments whose newest record is older; -1 = forever.
    pub retention_ms: i64,
    /// retention.bytes: delete closed segments while the log is larger; -1 = unlimited.
    pub retention_bytes: i64,
    /// max.message.bytes: the largest batch accepted.
    pub max_message_bytes: usize,
    pub timestamp_type: TimestampType,
    /// message.timestamp.before.max.ms / after.max.ms: CreateTime batches with a record
    /// older than now - before or newer than now + after are refused (i64::MAX: off).
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// compression.type with its level.
    pub compression: CompressionPolicy,
    /// cleanup.policy includes `delete`: retention.ms / retention.bytes delete closed
    /// segments. A compact-only topic keeps its segments (Kafka's semantics).
    pub delete_by_retention: bool,
    /// cleanup.policy includes `compact`: the log cleaner keeps the latest record per key
    /// in closed segments (see `storage::cleaner`).
    pub compact: bool,
    /// min.cleanable.dirty.ratio in parts per million: a compacted log is cleaned once
    /// its dirty bytes are this share of its cleanable bytes.
    pub min_cleanable_dirty_ratio_ppm: u32,
    /// min.compaction.lag.ms: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: i64,
    /// max.compaction.lag.ms: a record is compacted within about this long, whatever
    /// the dirty ratio (i64::MAX: no bound).
    pub max_compaction_lag_ms: i64,
    /// delete.retention.ms: a tombstone is kept this long after its timestamp once it
    /// has been cleaned, so a reader from the start sees the deletion.
    pub delete_retention_ms: i64,
    /// index.interval.bytes: one index entry per this many bytes of log.
    pub index_interval_bytes: u64,
    /// segment.index.bytes: the active segment rolls before its index would outgrow this.
    pub segment_index_bytes: u64,
    /// segment.jitter.ms: each segment rolls up to this much before segment.ms, so that
    /// segments of many partitions do not all roll at once.
    pub segment_jitter_ms: i64,
    /// min.insync.replicas: not used by the log itself; the produce path refuses
    /// acks=all when fewer replicas are in sync (NOT_ENOUGH_REPLICAS).
    pub min_insync_replicas: i32,
    pub flush: FlushPolicy,
    /// Whether this log keeps its recent batches in the shard's batch cache (the budget
    /// is per shard, see `batch_cache`); off, every read goes to the segments.
    pub use_batch_cache: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: DEFAULT_SEGMENT_MS,
            retention_ms: DEFAULT_RETENTION_MS,
            retention_bytes: -1,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            compression: CompressionPolicy::Producer,
            delete_by_retention: true,
            compact: false,
            min_cleanable_dirty_ratio_ppm: 500_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            index_interval_bytes: INDEX_INTERVAL_BYTES,
            segment_index_bytes: DEFAULT_SEGMENT_INDEX_BYTES,
            segment_jitter_ms: 0,
            min_insync_replicas: 1,
            flush: FlushPolicy::Durable,
            use_batch_cache: true,
        }
    }
}

impl LogConfig {
    /// Checks that every value is in the range the engine supports; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(format!(
                "segment.bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                self.segment_bytes
            ));
        }
        if self.segment_ms <= 0 {
            return Err(format!("segment.ms {} must be positive", self.segment_ms));
        }
        if self.retention_ms < -1 || self.retention_bytes < -1 {
            return Err("retention.ms and retention.bytes must be -1 (unlimited) or non-negative".into());
        }
        if self.max_message_bytes < crate::protocol::record_batch::BATCH_HEADER_BYTES {
            return Err(format!("max.message.bytes {} is smaller than a batch header", self.max_message_bytes));
        }
        if self.timestamp_before_max_ms < 0 || self.timestamp_after_max_ms < 0 {
            return Err("message.timestamp.before.max.ms and after.max.ms must not be negative".into());
        }
        if self.index_interval_bytes == 0 || self.index_interval_bytes > i32::MAX as u64 {
            return Err(format!("index.interval.bytes {} must be 1..={}", self.index_interval_bytes, i32::MAX));
        }
        if self.segment_index_bytes < 4 * INDEX_ENTRY_BYTES_MAX {
            return Err(format!(
                "segment.index.bytes {} is too small: at least {}",
                self.segment_index_bytes,
                4 * INDEX_ENTRY_BYTES_MAX
            ));
        }
        if self.segment_jitter_ms < 0 {
            return Err(format!("segment.jitter.ms {} must not be negative", self.segment_jitter_ms));
        }
        if self.min_cleanable_dirty_ratio_ppm > 1_000_000 {
            return Err(format!(
                "min.cleanable.dirty.ratio {} must be within 0..=1",
                f64::from(self.min_cleanable_dirty_ratio_ppm) / 1e6
            ));
        }
        if self.min_compaction_lag_ms < 0 || self.delete_retention_ms < 0 {
            return Err("min.compaction.lag.ms and delete.retention.ms must not be negative".into());
        }
        if self.max_compaction_lag_ms < 1 {
            return Err(format!("max.compaction.lag.ms {} must be positive", self.max_compaction_lag_ms));
        }
        if self.max_compaction_lag_ms < self.min_compaction_lag_ms {
            return Err(format!(
                "max.compaction.lag.ms {} must not be below min.compaction.lag.ms {}",
                self.max_compaction_lag_ms, self.min_compaction_lag_ms
            ));
        }
        if self.min_insync_replicas < 1 {
            return Err(format!("min.insync.replicas {} must be at least 1", self.min_insync_replicas));
        }
        if let FlushPolicy::Interval { interval, bytes } = self.flush {
            if interval.is_zero() || bytes == 0 {
                return Err("flush interval and flush bytes must be positive".into());
            }
        }
        Ok(())
    }
}
