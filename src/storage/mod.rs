//! The storage engine: durable, ordered partition logs on direct I/O.
//!
//! ```text
//! log.rs        PartitionLog: append (validate, assign offsets, queue), read, offsets
//! validate.rs   the topic's policy on a batch: timestamp bounds, compression.type
//! writer.rs     group commit: one DMA write + one fdatasync per round of appends
//! segment.rs    a segment file: naming, scanning, reading whole batches
//! index.rs      sparse offset and time indexes
//! producer_state.rs idempotent producers' sequences (duplicates, gaps, fencing), open transactions
//! txn_log.rs    transaction markers, the last stable offset, read_committed views
//! txn_index.rs  the aborted-transaction index (Kafka's .txnindex), one file per log
//! replay.rs     reading an internal log's records back at startup
//! recovery.rs   open: torn-tail recovery, lazy index load/rebuild, log start checkpoint
//! retention.rs  deleting closed segments by age / size / log start
//! recycle.rs    a deleted segment's file kept and reused as the next segment's
//! cleaner/      compaction (cleanup.policy=compact): the per-shard log cleaner
//! clean_state.rs a log's first dirty offset, gapped segments, cleaner counters
//! batch_cache.rs per-shard LRU cache of recent batches for tailing readers
//! send_read.rs read_for_send: cache hits in memory, cold reads as file regions
//! timestamp_lookup.rs ListOffsets by time and by max timestamp
//! send_plan.rs  finding a zero-copy region's batch boundaries from the index
//! clean_shutdown.rs marker that lets a cleanly closed log skip the tail scan
//! write_buffer.rs aligned, pooled DMA buffers for the writer's rounds
//! disk.rs       the disk interface: O_DIRECT files via glommio, or the simulated disk;
//!               atomic small files, directory listing and sync, fault injection
//! memory_disk.rs the simulated disk: tears, failed and slow syncs, full disk, crashes
//! config.rs     per-log config (topic configs) and storage limits
//! offset.rs     Offset, LogStartOffset, HighWatermark, LogEndOffset
//! clock.rs      wall clock behind a trait
//! error.rs      StorageError, AppendError, ReadError
//! ```
//!
//! A log belongs to one shard and is used only there (`Rc`, not `Send`).

pub mod batch_cache;
pub mod clean_shutdown;
pub mod clean_state;
pub mod cleaner;
pub mod clock;
pub mod config;
pub mod disk;
pub mod error;
pub mod index;
pub mod leader_epoch;
pub mod log;
pub mod memory_disk;
pub mod offset;
pub mod partition_identity;
pub mod producer_state;
pub mod recovery;
pub mod recycle;
pub mod replay;
pub mod retention;
pub mod segment;
pub mod send_plan;
pub mod send_read;
pub mod timestamp_lookup;
pub mod truncate;
pub mod txn_index;
pub mod txn_log;
pub mod validate;
pub mod write_buffer;
mod writer;

pub use crate::protocol::record_chunk::{FileRegion, RecordChunk};
pub use cleaner::{spawn_cleaner_task, CleanReport, CleanerConfig, DirtyView};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CompressionPolicy, FlushPolicy, LogConfig, SyncMode, TimestampType};
pub use disk::{Disk, DiskOp, FaultInjector, SimulatedDisk, StorageEnv};
pub use error::{AppendError, ReadError, StorageError};
pub use log::{AppendInfo, Isolation, LogRead, PartitionLog, PendingAppend, PreparedEntry, TimestampMatch};
pub use memory_disk::{MemoryDisk, MemoryFaults, MemorySession, SeededRng};
pub use offset::{HighWatermark, LogEndOffset, LogOffsets, LogStartOffset, Offset};
pub use retention::{spawn_retention_task, RetentionReport};
pub use send_read::SendRead;
pub use txn_log::{StableView, TxnMarker};
pub use writer::wrote_within;
