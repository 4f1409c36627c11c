//! Lookups by time: ListOffsets with a timestamp (the first record at or after it) and
//! with -3 (KIP-734, the record with the largest timestamp), using the time indexes and
//! reading only the batches near the answer.

use super::error::{ReadError, StorageError};
use super::log::{check_readable, PartitionLog, TimestampMatch};
use super::offset::Offset;
use super::segment::{read_batches, SegmentReadError};
use crate::protocol::record_batch::{self, BatchHeader};

impl PartitionLog {
    /// The first record whose timestamp is `>= timestamp` (ListOffsets by time), or
    /// `None` when every record is older.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampMatch>, StorageError> {
        let bases = {
            let state = self.shared.state.borrow();
            check_readable(&state.health).map_err(|e| match e {
                ReadError::Storage(error) => error,
                ReadError::OffsetOutOfRange { .. } => unreachable!("health checks never report a range"),
            })?;
            state.segments.iter().map(|s| s.base_offset).collect::<Vec<_>>()
        };
        for base in bases {
            self.ensure_index(base).await?;
            let (max_timestamp, start, end_position, high_watermark, log_start) = {
                let state = self.shared.state.borrow();
                let Some(segment) = state.segments.iter().find(|s| s.base_offset == base) else { continue };
                let index = segment.index.as_ref().expect("index loaded above");
                let start = Offset(base.value() + i64::from(index.relative_offset_for_timestamp(timestamp)));
                (
                    index.max_timestamp(),
                    start.max(state.offsets.log_start()),
                    segment.written_size,
                    state.offsets.high_watermark(),
                    state.offsets.log_start(),
                )
            };
            if max_timestamp < timestamp || start >= high_watermark || end_position == 0 {
                continue;
            }
            let mut offset = start.max(log_start);
            while offset < high_watermark {
                let plan = self.prepare_segment_read(base, offset).await?;
                if plan.position >= plan.end {
                    break;
                }
                let read =
                    read_batches(&plan.file, plan.position, plan.end, offset, high_watermark, 1 << 20, plan.rule);
                let chunk = read.await.map_err(|e| match e {
                    SegmentReadError::Io(error) => StorageError::io(plan.file.path(), error),
                    SegmentReadError::Corrupt { position, reason } => {
                        self.take_offline(format!("segment {base} is corrupt at position {position}: {reason}"))
                    }
                })?;
                if chunk.is_empty() {
                    break;
                }
                for (header, range) in record_batch::iter_batches(&chunk) {
                    if header.max_timestamp < timestamp || header.next_offset() <= offset.value() {
                        continue;
                    }
                    let exact = record_batch::first_record_at_or_after(&chunk[range], &header, timestamp);
                    let (found_offset, found_timestamp) = exact.unwrap_or((header.base_offset, header.max_timestamp));
                    return Ok(Some(TimestampMatch {
                        offset: Offset(found_offset.max(offset.value())),
                        timestamp: found_timestamp,
                    }));
                }
                let last = record_batch::iter_batches(&chunk).last().map(|(h, _): (BatchHeader, _)| h.next_offset());
                match last {
                    Some(next) if next > offset.value() => offset = Offset(next),
                    _ => break,
                }
                if self.with_segment(base, |s| s.next_offset)? <= offset {
                    break;
                }
            }
        }
        Ok(None)
    }

    /// The largest record timestamp in the log and the base offset of the batch holding
    /// it (ListOffsets with timestamp -3, KIP-734); `None` for an empty log.
    pub async fn max_timestamp(&self) -> Result<Option<(i64, Offset)>, StorageError> {
        let bases = self.segment_bases();
        let mut best: Option<(i64, Offset)> = None;
        for base in bases {
            self.ensure_index(base).await?;
            let candidate = self.with_segment(base, |segment| {
                let index = segment.index.as_ref().expect("index loaded above");
                let offset = Offset(base.value() + i64::from(index.relative_offset_of_max_timestamp()));
                (segment.size > 0).then_some((index.max_timestamp(), offset))
            });
            if let Ok(Some((timestamp, offset))) = candidate {
                if offset < self.offsets().high_watermark.offset() && best.is_none_or(|(t, _)| timestamp > t) {
                    best = Some((timestamp, offset));
                }
            }
        }
        Ok(best)
    }
}
