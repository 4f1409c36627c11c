//! Storage errors. Every failure a client can see maps to one Kafka error code at the
//! broker edge: `StorageError` -> KAFKA_STORAGE_ERROR, `BatchError` -> CORRUPT_MESSAGE /
//! MESSAGE_TOO_LARGE / INVALID_RECORD, `OffsetOutOfRange` -> OFFSET_OUT_OF_RANGE.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::protocol::record_batch::BatchError;

use super::offset::Offset;

/// A failure of the storage underneath a log. Cloneable because one failed write fails
/// every append waiting on it.
#[derive(Debug, Error, Clone)]
pub enum StorageError {
    /// A write or fsync failed: what is on disk is unknown, so the log accepts no more
    /// writes until it is reopened (fsyncgate: retrying a failed fsync can lie).
    #[error("log {dir} is poisoned after an i/o error ({cause}): restart the broker once the disk is healthy")]
    Poisoned { dir: PathBuf, cause: Arc<io::Error> },
    /// The disk is full. Nothing acknowledged was lost; appends work again once space
    /// is freed.
    #[error("disk full while writing {dir}: free space and retry ({cause})")]
    DiskFull { dir: PathBuf, cause: Arc<io::Error> },
    /// Data on disk failed validation outside the recoverable tail; the partition is offline.
    #[error("log {dir} is offline: {reason}")]
    Offline { dir: PathBuf, reason: String },
    /// The log was closed (broker shutting down, partition deleted).
    #[error("log is closed")]
    Closed,
    /// A configuration value the storage engine cannot honour.
    #[error("invalid log config: {reason}")]
    InvalidConfig { reason: String },
    /// Any other i/o failure that did not touch acknowledged state (opening, reading).
    #[error("i/o error on {path}: {cause}")]
    Io { path: PathBuf, cause: Arc<io::Error> },
}

impl StorageError {
    pub fn io(path: impl Into<PathBuf>, cause: io::Error) -> StorageError {
        StorageError::Io { path: path.into(), cause: Arc::new(cause) }
    }
}

/// Why an append failed.
#[derive(Debug, Error, Clone)]
pub enum AppendError {
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An idempotent producer retried a batch that is already in the log.
    #[error("duplicate of the batch at offsets {base_offset}..={last_offset}")]
    Duplicate { base_offset: Offset, last_offset: Offset },
    #[error("out of order sequence number: expected {expected}, received {received}")]
    OutOfOrderSequence { expected: i32, received: i32 },
    #[error("producer epoch is older than the current epoch {current_epoch}: fenced")]
    ProducerFenced { current_epoch: i16 },
    /// A transaction marker from a coordinator older than one whose marker is applied.
    #[error("transaction coordinator epoch is older than {current_epoch}: fenced")]
    CoordinatorFenced { current_epoch: i32 },
    /// A record timestamp outside the topic's message.timestamp.before/after.max.ms.
    #[error("record timestamp {timestamp} {reason}")]
    InvalidTimestamp { timestamp: i64, reason: String },
    /// A record the topic refuses (a compacted topic takes only keyed records).
    #[error("{reason}")]
    InvalidRecord { reason: String },
    /// The records section could not be decompressed or re-encoded for the topic's
    /// compression.type.
    #[error(transparent)]
    Compression(#[from] crate::protocol::compression::CompressionError),
}

/// Why a read failed.
#[derive(Debug, Error, Clone)]
pub enum ReadError {
    #[error("offset {requested} is outside the readable range {log_start}..={high_watermark}")]
    OffsetOutOfRange { requested: Offset, log_start: Offset, high_watermark: Offset },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// True when the error means "no space left" (ENOSPC or EDQUOT), which is recoverable.
pub fn is_disk_full(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        || matches!(error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
