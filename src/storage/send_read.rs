//! Reads for the network: [`PartitionLog::read_for_send`] answers a fetch with record
//! chunks that are either batches from the shard's batch cache (memory) or a region of a
//! segment file the connection sends with sendfile(2), so cold reads never copy record
//! bytes through user space. The range rules are those of [`PartitionLog::read`] (see
//! `send_plan`).

use super::error::{ReadError, StorageError};
use super::log::{PartitionLog, ReadStart};
use super::offset::{LogOffsets, Offset};
use super::segment::{self, SegmentReadError, LOG_SUFFIX};
use super::send_plan::{boundary_before, find_batch_holding};
use crate::protocol::record_chunk::{open_for_send, FileRegion, RecordChunk};

/// What [`PartitionLog::read_for_send`] returns.
#[derive(Debug)]
pub struct SendRead {
    /// Whole batches, back to back.
    pub chunks: Vec<RecordChunk>,
    pub offsets: LogOffsets,
}

impl SendRead {
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(RecordChunk::len).sum()
    }
}

enum PlanError {
    Storage(StorageError),
    Corrupt(String),
}

impl PartitionLog {
    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one batch,
    /// KIP-74), below the high watermark: from the batch cache when it holds `offset`,
    /// otherwise as one region of the segment holding it.
    pub async fn read_for_send(&self, offset: Offset, max_bytes: usize) -> Result<SendRead, ReadError> {
        if self.shared.env.disk.is_memory() {
            // The simulated disk has no file descriptors to sendfile from: copy.
            let read = self.read(offset, max_bytes).await?;
            return Ok(SendRead {
                chunks: read.records.into_iter().map(RecordChunk::Memory).collect(),
                offsets: read.offsets,
            });
        }
        let (segment_base, high_watermark, offsets) = match self.start_read(offset, max_bytes)? {
            ReadStart::Done(records, offsets) => {
                return Ok(SendRead { chunks: records.into_iter().map(RecordChunk::Memory).collect(), offsets })
            }
            ReadStart::Segment { base, high_watermark, offsets } => (base, high_watermark, offsets),
        };
        let mut rebuilt = false;
        loop {
            let problem = match self.plan_region(segment_base, offset, high_watermark, max_bytes).await {
                Ok(Some(region)) => return Ok(SendRead { chunks: vec![RecordChunk::File(region)], offsets }),
                Ok(None) => format!("segment {segment_base} has no batch for offset {offset} below its end"),
                Err(PlanError::Storage(error)) => return Err(error.into()),
                Err(PlanError::Corrupt(problem)) => problem,
            };
            self.recover_from_bad_read(segment_base, problem, rebuilt).await?;
            rebuilt = true;
        }
    }

    async fn plan_region(
        &self,
        segment_base: Offset,
        offset: Offset,
        limit: Offset,
        max_bytes: usize,
    ) -> Result<Option<FileRegion>, PlanError> {
        let (file, hint, end) = self.prepare_segment_read(segment_base, offset).await.map_err(PlanError::Storage)?;
        let corrupt = |error: SegmentReadError| match error {
            SegmentReadError::Io(cause) => PlanError::Storage(StorageError::io(file.path(), cause)),
            SegmentReadError::Corrupt { position, reason } => {
                PlanError::Corrupt(format!("segment {segment_base} is corrupt at position {position}: {reason}"))
            }
        };
        let Some(first) = find_batch_holding(&file, hint, end, offset, limit).await.map_err(corrupt)? else {
            return Ok(None);
        };
        let first_end = first.position + first.total_bytes;
        let target_end = first.position + max_bytes as u64;
        let stop = if first_end >= target_end {
            first_end
        } else {
            let relative_limit = (limit.value() - segment_base.value()).clamp(0, i64::from(u32::MAX)) as u32;
            let entry = self
                .with_segment(segment_base, |s| {
                    s.index.as_ref().and_then(|i| i.last_entry_within(target_end, relative_limit))
                })
                .map_err(PlanError::Storage)?;
            let from = entry.map_or(0, |(_, position)| u64::from(position)).max(first_end);
            boundary_before(&file, from, end, target_end, limit).await.map_err(corrupt)?
        };
        let send_file = self.segment_send_file(segment_base).map_err(PlanError::Storage)?;
        Ok(Some(FileRegion { file: send_file, position: first.position, len: (stop - first.position) as usize }))
    }

    /// The segment's buffered descriptor for sendfile, opened on first use.
    fn segment_send_file(&self, segment_base: Offset) -> Result<std::sync::Arc<std::fs::File>, StorageError> {
        if let Some(file) = self.with_segment(segment_base, |s| s.send_file.clone())? {
            return Ok(file);
        }
        let path = segment::segment_path(&self.shared.dir, segment_base, LOG_SUFFIX);
        let file = open_for_send(&path).map_err(|e| StorageError::io(&path, e))?;
        self.with_segment_mut(segment_base, |s| s.send_file.get_or_insert(file).clone())
    }
}
