//! Reads for the network: [`PartitionLog::read_for_send`] answers a fetch with record
//! chunks that are either batches from the shard's batch cache (memory) or a region of a
//! segment file the connection sends with sendfile(2), so cold reads never copy record
//! bytes through user space. The range rules are those of [`PartitionLog::read`] (see
//! `send_plan`).

use super::error::{ReadError, StorageError};
use std::rc::Rc;

use super::disk::SegmentFile;
use super::log::{is_segment_gone, GapStep, Isolation, PartitionLog, ReadStart, SEGMENT_GONE_RESTARTS};
use super::offset::{LogOffsets, Offset};
use super::segment::{self, OffsetRule, SegmentReadError, LOG_SUFFIX};
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

/// What planning a region in one segment found.
enum Planned {
    Region(FileRegion),
    /// No batch at or after the offset below the limit (with the segment's offset rule).
    NoBatch(OffsetRule),
}

enum PlanError {
    Storage(StorageError),
    Corrupt(String),
}

impl PartitionLog {
    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one batch,
    /// KIP-74), below the high watermark: from the batch cache when it holds `offset`,
    /// otherwise as one region of the segment holding it.
    /// With `Isolation::ReadCommitted` the limit is the last stable offset instead.
    pub async fn read_for_send(
        &self,
        offset: Offset,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<SendRead, ReadError> {
        if self.shared.env.disk.is_memory() {
            // The simulated disk has no file descriptors to sendfile from: copy.
            let read = self.read_isolated(offset, max_bytes, isolation).await?;
            return Ok(SendRead {
                chunks: read.records.into_iter().map(RecordChunk::Memory).collect(),
                offsets: read.offsets,
            });
        }
        let mut restarts = 0;
        'restart: loop {
            let (mut segment_base, high_watermark, offsets) = match self.start_read(offset, max_bytes, isolation)? {
                ReadStart::Done(records, offsets) => {
                    return Ok(SendRead { chunks: records.into_iter().map(RecordChunk::Memory).collect(), offsets })
                }
                ReadStart::Segment { base, high_watermark, offsets } => (base, high_watermark, offsets),
            };
            let mut from = offset;
            let mut rebuilt = false;
            loop {
                let problem = match self.plan_region(segment_base, from, high_watermark, max_bytes).await {
                    Ok(Planned::Region(region)) => {
                        return Ok(SendRead { chunks: vec![RecordChunk::File(region)], offsets })
                    }
                    Ok(Planned::NoBatch(rule)) => match self.after_gap(segment_base, rule, high_watermark) {
                        GapStep::Next(next) => {
                            (segment_base, from, rebuilt) = (next, from.max(next), false);
                            continue;
                        }
                        GapStep::Nothing => return Ok(SendRead { chunks: Vec::new(), offsets }),
                        GapStep::Missing => {
                            format!("segment {segment_base} has no batch for offset {from} below its end")
                        }
                    },
                    Err(PlanError::Storage(error)) if is_segment_gone(&error) && restarts < SEGMENT_GONE_RESTARTS => {
                        restarts += 1;
                        continue 'restart;
                    }
                    Err(PlanError::Storage(error)) => return Err(error.into()),
                    Err(PlanError::Corrupt(problem)) => problem,
                };
                self.recover_from_bad_read(segment_base, problem, rebuilt).await?;
                rebuilt = true;
            }
        }
    }

    async fn plan_region(
        &self,
        segment_base: Offset,
        offset: Offset,
        limit: Offset,
        max_bytes: usize,
    ) -> Result<Planned, PlanError> {
        let plan = self.prepare_segment_read(segment_base, offset).await.map_err(PlanError::Storage)?;
        let (file, hint, end, rule) = (plan.file, plan.position, plan.end, plan.rule);
        let corrupt = |error: SegmentReadError| match error {
            SegmentReadError::Io(cause) => PlanError::Storage(StorageError::io(file.path(), cause)),
            SegmentReadError::Corrupt { position, reason } => {
                PlanError::Corrupt(format!("segment {segment_base} is corrupt at position {position}: {reason}"))
            }
        };
        let Some(first) = find_batch_holding(&file, hint, end, offset, limit, rule).await.map_err(corrupt)? else {
            return Ok(Planned::NoBatch(rule));
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
        let send_file = self.segment_send_file(segment_base, &file).map_err(PlanError::Storage)?;
        Ok(Planned::Region(FileRegion {
            file: send_file,
            position: first.position,
            len: (stop - first.position) as usize,
        }))
    }

    /// The segment's buffered descriptor for sendfile, opened on first use. The region
    /// was planned on `planned`: if the cleaner has replaced the segment's file since,
    /// the segment counts as gone and the read starts over.
    fn segment_send_file(
        &self,
        segment_base: Offset,
        planned: &Rc<SegmentFile>,
    ) -> Result<std::sync::Arc<std::fs::File>, StorageError> {
        let (current, cached) = self.with_segment(segment_base, |s| (s.file.clone(), s.send_file.clone()))?;
        if !current.is_some_and(|current| Rc::ptr_eq(&current, planned)) {
            return Err(self.gone(segment_base));
        }
        if let Some(file) = cached {
            return Ok(file);
        }
        // No await between the check above and the open: the path is still this file.
        let path = segment::segment_path(&self.shared.dir, segment_base, LOG_SUFFIX);
        let file = open_for_send(&path).map_err(|e| StorageError::io(&path, e))?;
        self.with_segment_mut(segment_base, |s| s.send_file.get_or_insert(file).clone())
    }
}
