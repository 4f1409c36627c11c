//! Reading a small internal log back at startup (`__consumer_offsets`,
//! `__transaction_state`): every record up to the high watermark, in order, as key and
//! value. The internal logs hold uncompressed batches of keyed records.

use crate::protocol::record_batch::{iter_batches, records};

use super::error::{ReadError, StorageError};
use super::log::PartitionLog;
use super::offset::Offset;

impl PartitionLog {
    /// Calls `apply(key, value)` for every record from the log start to the high
    /// watermark (control batches and records of compressed batches are skipped).
    pub async fn replay_records(
        &self,
        mut apply: impl FnMut(Option<&[u8]>, Option<&[u8]>),
    ) -> Result<(), StorageError> {
        let mut position = self.offsets().log_start.offset();
        loop {
            let read = self.read(position, 1 << 20).await.map_err(|e| match e {
                ReadError::Storage(storage) => storage,
                other => StorageError::InvalidConfig { reason: other.to_string() },
            })?;
            if read.records.is_empty() {
                return Ok(());
            }
            for chunk in &read.records {
                for (header, range) in iter_batches(chunk) {
                    if !header.is_control() {
                        for record in records(&chunk[range], &header).unwrap_or_default() {
                            apply(record.key, record.value);
                        }
                    }
                    position = Offset(header.next_offset());
                }
            }
        }
    }
}
