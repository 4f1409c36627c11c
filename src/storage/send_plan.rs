//! Planning a zero-copy read: which byte range of a segment holds the whole batches a
//! fetch gets, found without reading the record bytes.
//!
//! The sparse offset index (an entry every ~4 KiB of log, each at a batch start) gives
//! batch boundaries near any offset or position; only the batch headers between an index
//! entry and the exact boundary are read (small O_DIRECT reads of a few KiB), never the
//! records. Rules match the copying read path: the range starts with the batch holding
//! the requested offset, holds only batches below the high watermark, and stays within
//! `max_bytes` except that the first batch is always whole (KIP-74).
//!
//! CRCs are not checked here (the bytes are never in memory); recovery and index
//! rebuilds check them, and consumers may too (librdkafka's `check.crcs`).

use super::disk::SegmentFile;
use super::offset::Offset;
use super::segment::{OffsetRule, SegmentReadError};
use crate::protocol::record_batch::{BatchHeader, BATCH_HEADER_BYTES};

/// Bytes read per header lookup (one or two blocks; holds many small batches' headers).
const HEADER_READ_BYTES: usize = 8 << 10;

/// A batch found by walking headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundBatch {
    pub position: u64,
    pub base_offset: i64,
    pub next_offset: i64,
    pub total_bytes: u64,
}

/// Walks batch headers from `position` (a batch start) to the batch that holds `offset`.
/// `None` when there is none below `limit` before `end`.
/// In a segment with gaps (`OffsetRule::Increasing`) that is the first batch after `offset`.
pub async fn find_batch_holding(
    file: &SegmentFile,
    mut position: u64,
    end: u64,
    offset: Offset,
    limit: Offset,
    rule: OffsetRule,
) -> Result<Option<FoundBatch>, SegmentReadError> {
    let mut headers = HeaderReader::default();
    let mut first = true;
    while position < end {
        let batch = headers.batch_at(file, position, end).await?;
        if batch.base_offset >= limit.value() {
            return Ok(None);
        }
        if batch.next_offset > offset.value() {
            if batch.base_offset > offset.value() && first && rule == OffsetRule::Contiguous {
                // An index entry pointed past the batch holding `offset`.
                return Err(SegmentReadError::Corrupt {
                    position: batch.position,
                    reason: format!("index points at offset {} past the requested {offset}", batch.base_offset),
                });
            }
            return Ok(Some(batch));
        }
        position += batch.total_bytes;
        first = false;
    }
    Ok(None)
}

/// Walks from `position` (a batch boundary) and returns the end of the last whole batch
/// that ends at or before `target_end` and `end` and starts below `limit`.
pub async fn boundary_before(
    file: &SegmentFile,
    mut position: u64,
    end: u64,
    target_end: u64,
    limit: Offset,
) -> Result<u64, SegmentReadError> {
    let mut headers = HeaderReader::default();
    while position + BATCH_HEADER_BYTES as u64 <= end.min(target_end) {
        let batch = headers.batch_at(file, position, end).await?;
        let batch_end = position + batch.total_bytes;
        if batch.base_offset >= limit.value() || batch_end > target_end {
            break;
        }
        position = batch_end;
    }
    Ok(position)
}

/// Reads headers in blocks, reusing the last block while the next header is in it.
#[derive(Default)]
struct HeaderReader {
    block_start: u64,
    block: Vec<u8>,
}

impl HeaderReader {
    async fn batch_at(&mut self, file: &SegmentFile, position: u64, end: u64) -> Result<FoundBatch, SegmentReadError> {
        let in_block = position >= self.block_start
            && position + BATCH_HEADER_BYTES as u64 <= self.block_start + self.block.len() as u64;
        if !in_block {
            let len = ((end - position) as usize).min(HEADER_READ_BYTES);
            if len < BATCH_HEADER_BYTES {
                return Err(SegmentReadError::Corrupt {
                    position,
                    reason: format!("{len} bytes before the segment end hold no batch header"),
                });
            }
            let read = file.read_at(position, len).await?;
            crate::metrics::probes().segment_header_bytes_read.add(read.len() as u64);
            self.block = read.to_vec();
            self.block_start = position;
        }
        let at = (position - self.block_start) as usize;
        let header = BatchHeader::parse(&self.block[at..])
            .map_err(|e| SegmentReadError::Corrupt { position, reason: e.to_string() })?;
        let total_bytes = header.total_bytes as u64;
        if position + total_bytes > end {
            return Err(SegmentReadError::Corrupt {
                position,
                reason: format!("batch of {total_bytes} bytes runs past the readable end {end}"),
            });
        }
        Ok(FoundBatch { position, base_offset: header.base_offset, next_offset: header.next_offset(), total_bytes })
    }
}
