//! The Kafka error codes of storage failures, shared by the APIs that touch partition
//! logs (Produce, Fetch, ListOffsets, DeleteRecords).

use kafka_protocol::error::ResponseError;

use crate::protocol::record_batch::BatchError;
use crate::storage::StorageError;

/// A closed log is a partition being deleted or a broker shutting down: the client
/// should refresh its metadata. Every other failure is a storage error.
pub fn storage_error_code(error: &StorageError) -> i16 {
    match error {
        StorageError::Closed => ResponseError::NotLeaderOrFollower.code(),
        _ => ResponseError::KafkaStorageError.code(),
    }
}

/// A refused batch, as Kafka reports it.
pub fn batch_error_code(error: &BatchError) -> i16 {
    match error {
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge.code(),
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat.code(),
        BatchError::RecordCountMismatch { .. } => ResponseError::InvalidRecord.code(),
        // More bytes than the batch declares: a second batch in one partition's records,
        // which Produce v3+ forbids (Kafka answers INVALID_RECORD).
        BatchError::LengthMismatch { declared, available } if (*declared as usize) < *available => {
            ResponseError::InvalidRecord.code()
        }
        _ => ResponseError::CorruptMessage.code(),
    }
}
