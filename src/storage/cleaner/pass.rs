//! One cleaning pass over one log (Kafka's `Cleaner.clean`):
//!
//! 1. **Measure.** The dirty part runs from the first dirty offset (cleaner checkpoint)
//!    to the first segment that may not be cleaned yet: the active segment, a segment
//!    not yet sealed or not wholly below the high watermark, or one holding a record
//!    newer than min.compaction.lag.ms.
//! 2. **Map.** Every key of the dirty part is mapped to the offset of its latest record,
//!    until the map's memory budget is used (then the pass covers less, and the next one
//!    goes on from there).
//! 3. **Rewrite.** Every closed segment wholly below the end of the mapped range is
//!    rewritten, grouped so that a group's segments together fit segment.bytes. A record
//!    is kept when its key's latest record is not older; a tombstone is kept, in
//!    addition, only until delete.retention.ms after its timestamp (and always in the
//!    pass that first sees it); a keyless record is dropped, as Kafka does. Control
//!    batches (transaction markers) are kept whole. Batches of aborted transactions are
//!    neither mapped (an aborted value never hides a committed one) nor kept. Batches
//!    keep their offsets (`batch_filter`). Nothing at or past the last stable offset is
//!    cleaned.
//! 4. **Swap.** Each group's cleaned segment replaces it on disk (`swap`), then in memory.
//! 5. **Checkpoint.** The first dirty offset moves to the end of the mapped range.

use std::rc::Rc;

use crate::protocol::batch_filter::{filter_batch, for_each_record, Filtered, RecordMeta};
use crate::protocol::record_batch::BatchHeader;

use super::super::config::DECOMPRESSED_SECTION_BYTES_MAX;
use super::super::disk::{remove_file, write_file_atomic, SegmentFile};
use super::super::error::StorageError;
use super::super::log::PartitionLog;
use super::super::offset::Offset;
use super::super::segment::{segment_path, Segment, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX};
use super::key_map::KeyOffsetMap;
use super::segment_io::{BatchReader, CleanedSegmentWriter};
use super::swap::{cleaned_path, swap_in, SwapIntent};
use super::throttle::IoThrottle;
use super::CleanerConfig;

/// The dirty part of a log and how it compares to the clean part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirtyView {
    pub first_dirty: Offset,
    /// Offset after the last segment the cleaner may clean now.
    pub cleanable_end: Offset,
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// The newest timestamp of the first dirty segment (for max.compaction.lag.ms).
    pub first_dirty_max_timestamp: Option<i64>,
}

impl DirtyView {
    /// dirty / (clean + dirty), in parts per million.
    pub fn ratio_ppm(&self) -> u32 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            return 0;
        }
        (u128::from(self.dirty_bytes) * 1_000_000 / u128::from(total)) as u32
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Cleaned segments swapped in (one per group).
    pub groups_rewritten: usize,
    /// Old segments they replaced.
    pub segments_replaced: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub keys_mapped: usize,
    /// The first dirty offset after the pass.
    pub first_dirty: Offset,
}

/// The segments of one group, with what the swap needs to know of them.
#[derive(Debug, Clone)]
struct Group {
    bases: Vec<Offset>,
    sizes: Vec<u64>,
    next_offset: Offset,
    modified_ms: i64,
}

impl Group {
    fn base(&self) -> Offset {
        self.bases[0]
    }

    fn bytes(&self) -> u64 {
        self.sizes.iter().sum()
    }
}

/// How a record is judged during a rewrite.
struct KeepRules<'a> {
    map: &'a KeyOffsetMap,
    /// Transactions aborted in this log.
    aborted: &'a AbortedBatches,
    /// Tombstones at or after this offset are seen by the cleaner for the first time.
    pass_first_dirty: i64,
    now_ms: i64,
    delete_retention_ms: i64,
    /// Records dropped because they have no key.
    keyless: u64,
}

/// Which batches belong to aborted transactions (from the log's aborted index): per
/// producer, the offset ranges `first..marker` of its aborted transactions.
#[derive(Debug, Default)]
struct AbortedBatches(std::collections::HashMap<i64, Vec<(i64, i64)>>);

impl AbortedBatches {
    fn new(aborted: Vec<crate::storage::txn_index::AbortedTxn>) -> AbortedBatches {
        let mut by_producer: std::collections::HashMap<i64, Vec<(i64, i64)>> = std::collections::HashMap::new();
        for a in aborted {
            by_producer.entry(a.producer_id).or_default().push((a.first_offset.value(), a.last_offset.value()));
        }
        AbortedBatches(by_producer)
    }

    fn contains(&self, header: &BatchHeader) -> bool {
        header.is_transactional()
            && self.0.get(&header.producer_id).is_some_and(|ranges| {
                ranges.iter().any(|&(first, marker)| first <= header.base_offset && header.base_offset < marker)
            })
    }
}

impl KeepRules<'_> {
    fn keep(&mut self, record: &RecordMeta<'_>) -> bool {
        let Some(key) = record.key else {
            self.keyless += 1;
            return false;
        };
        if self.map.latest(key).is_some_and(|latest| record.offset < latest) {
            return false;
        }
        if !record.tombstone || record.offset >= self.pass_first_dirty || record.timestamp < 0 {
            return true;
        }
        self.now_ms.saturating_sub(record.timestamp) <= self.delete_retention_ms
    }
}

impl PartitionLog {
    /// The dirty part of the log as of now (from memory; a closed segment whose index is
    /// not loaded counts as old enough only when min.compaction.lag.ms is 0).
    pub fn dirty_view(&self) -> DirtyView {
        let now_ms = self.shared.env.clock.now_ms();
        let state = self.shared.state.borrow();
        // Never past the last stable offset: a record of an open transaction must not
        // replace an older value of its key (the transaction may yet abort).
        let high_watermark =
            super::super::log::last_stable_offset(&state).min(state.clean_limit.unwrap_or(Offset(i64::MAX)));
        let min_lag = state.config.min_compaction_lag_ms;
        let first_base = state.segments.front().map_or(Offset(0), |s| s.base_offset);
        let first_dirty = state.clean.checkpoint.first_dirty.max(first_base);
        let mut view = DirtyView { first_dirty, cleanable_end: first_dirty, ..DirtyView::default() };
        for segment in &state.segments {
            if segment.next_offset <= first_dirty {
                view.clean_bytes += segment.size;
                continue;
            }
            let old_enough =
                min_lag == 0 || segment.max_timestamp().is_some_and(|newest| now_ms.saturating_sub(newest) >= min_lag);
            if !segment.closed || segment.next_offset > high_watermark || !old_enough {
                break;
            }
            if view.dirty_bytes == 0 {
                view.first_dirty_max_timestamp = segment.max_timestamp();
            }
            view.dirty_bytes += segment.size;
            view.cleanable_end = segment.next_offset;
        }
        view
    }

    /// Loads the indexes of the dirty segments, whose timestamps min.compaction.lag.ms
    /// and max.compaction.lag.ms need.
    pub async fn load_dirty_indexes(&self) -> Result<(), StorageError> {
        let bases: Vec<Offset> = {
            let state = self.shared.state.borrow();
            let first_dirty = state.clean.checkpoint.first_dirty;
            state
                .segments
                .iter()
                .filter(|s| s.closed && s.next_offset > first_dirty && s.index.is_none())
                .map(|s| s.base_offset)
                .collect()
        };
        for base in bases {
            self.ensure_index(base).await?;
        }
        Ok(())
    }

    /// Runs one cleaning pass (see the module docs). Holds the log's maintenance gate,
    /// so retention does not delete segments under it.
    pub async fn clean(&self, config: &CleanerConfig) -> Result<CleanReport, StorageError> {
        let gate = self.shared.state.borrow().maintenance_gate.clone();
        let _permit = gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        self.check_not_closing()?;
        let started_ms = self.shared.env.clock.now_ms();
        let started = std::time::Instant::now();
        let throttle = IoThrottle::new(config.io_bytes_per_second);
        let result = self.clean_locked(config, &throttle).await;
        let mut state = self.shared.state.borrow_mut();
        let stats = &mut state.clean.stats;
        stats.passes += 1;
        stats.last_run_ms = Some(started_ms);
        stats.last_duration_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(report) => {
                stats.bytes_read += report.bytes_read;
                stats.bytes_written += report.bytes_written;
                stats.records_removed += report.records_removed;
                stats.last_error = None;
            }
            Err(error) => stats.last_error = Some(error.to_string()),
        }
        result
    }

    async fn clean_locked(&self, config: &CleanerConfig, throttle: &IoThrottle) -> Result<CleanReport, StorageError> {
        if self.config().min_compaction_lag_ms > 0 {
            self.load_dirty_indexes().await?;
        }
        let view = self.dirty_view();
        let mut report = CleanReport { first_dirty: view.first_dirty, ..CleanReport::default() };
        if view.dirty_bytes == 0 {
            return Ok(report);
        }
        let (map, map_end) = self.build_key_map(&view, config.map_bytes, throttle).await?;
        report.keys_mapped = map.len();
        let groups = self.plan_groups(map_end);
        let rewrite_end = groups.last().map_or(Offset(0), |g| g.next_offset);
        let (now_ms, delete_retention_ms) = (self.shared.env.clock.now_ms(), self.config().delete_retention_ms);
        let aborted = self.aborted_batches();
        let mut rules = KeepRules {
            map: &map,
            aborted: &aborted,
            pass_first_dirty: view.first_dirty.value(),
            now_ms,
            delete_retention_ms,
            keyless: 0,
        };
        for group in &groups {
            self.check_not_closing()?;
            report.bytes_before += group.bytes();
            match self.clean_group(group, &mut rules, throttle, rewrite_end, &mut report).await? {
                Some(size) => {
                    report.groups_rewritten += 1;
                    report.segments_replaced += group.bases.len();
                    report.bytes_after += size;
                }
                None => report.bytes_after += group.bytes(),
            }
        }
        if rules.keyless > 0 {
            tracing::warn!(dir = %self.dir().display(), records = rules.keyless, "the cleaner removed records without a key (a compacted topic keeps only keyed records)");
        }
        let first_dirty = map_end.max(view.first_dirty);
        let checkpoint = {
            let mut state = self.shared.state.borrow_mut();
            let checkpoint = &mut state.clean.checkpoint;
            checkpoint.first_dirty = checkpoint.first_dirty.max(first_dirty);
            checkpoint.gaps_below = checkpoint.gaps_below.max(rewrite_end);
            if rewrite_end > Offset(0) {
                state.cache.drop_before(rewrite_end);
            }
            state.clean.checkpoint
        };
        super::super::clean_state::write_checkpoint(self.dir(), checkpoint, &self.shared.env)
            .await
            .map_err(|e| StorageError::io(self.dir(), e))?;
        report.first_dirty = first_dirty;
        report.bytes_read = throttle.bytes_read();
        Ok(report)
    }

    /// Maps the keys of the dirty segments to their latest offsets. Returns the map and
    /// the offset after the last batch it covers.
    /// The aborted transactions of this log, as the cleaner checks batches against them.
    fn aborted_batches(&self) -> AbortedBatches {
        let state = self.shared.state.borrow();
        AbortedBatches::new(state.aborted.overlapping(Offset(0), Offset(i64::MAX)))
    }

    async fn build_key_map(
        &self,
        view: &DirtyView,
        budget_bytes: usize,
        throttle: &IoThrottle,
    ) -> Result<(KeyOffsetMap, Offset), StorageError> {
        let aborted = self.aborted_batches();
        let dirty: Vec<(Offset, u64, Offset)> = {
            let state = self.shared.state.borrow();
            state
                .segments
                .iter()
                .filter(|s| s.next_offset > view.first_dirty && s.next_offset <= view.cleanable_end)
                .map(|s| (s.base_offset, s.size, s.next_offset))
                .collect()
        };
        let mut map = KeyOffsetMap::new(budget_bytes);
        let mut map_end = view.first_dirty;
        let mut whole_segments = 0usize;
        'segments: for (base, size, next_offset) in dirty {
            let segment_start = map_end;
            let file = self.segment_file(base).await?;
            let mut reader = BatchReader::new(file.clone(), size);
            while let Some((header, batch)) = reader.next(throttle).await.map_err(|e| self.read_failure(&file, e))? {
                self.check_not_closing()?;
                if header.next_offset() <= map_end.value() {
                    continue;
                }
                if !header.is_control() && !aborted.contains(&header) {
                    let first_dirty = view.first_dirty.value();
                    let mapped = for_each_record(&batch, &header, DECOMPRESSED_SECTION_BYTES_MAX, |record| {
                        if let (Some(key), true) = (record.key, record.offset >= first_dirty) {
                            map.put(key, record.offset);
                        }
                    });
                    if let Err(error) = mapped {
                        tracing::warn!(dir = %self.dir().display(), offset = header.base_offset, %error, "the cleaner cannot read this batch's records; it is kept as it is");
                    }
                }
                map_end = Offset(header.next_offset());
                if map.is_full() {
                    // Stop at the start of this segment, so it is mapped whole by the next
                    // pass (keys mapped only in part would keep their duplicates below
                    // the new first dirty offset); unless it is the first, then go on
                    // from the middle so that every pass makes progress.
                    if whole_segments > 0 {
                        map_end = segment_start;
                    }
                    tracing::info!(dir = %self.dir().display(), keys = map.len(), %map_end, "cleaner key map is full; this pass cleans up to here");
                    break 'segments;
                }
            }
            map_end = map_end.max(next_offset);
            whole_segments += 1;
        }
        Ok((map, map_end))
    }

    /// Groups the closed segments wholly below `end` (and not wholly below the log
    /// start) so that each group's segments together fit segment.bytes and an offset
    /// span a segment can index.
    fn plan_groups(&self, end: Offset) -> Vec<Group> {
        let state = self.shared.state.borrow();
        let log_start = state.offsets.log_start();
        let segment_bytes = state.config.segment_bytes;
        let mut groups: Vec<Group> = Vec::new();
        for segment in state.segments.iter().filter(|s| s.closed && s.next_offset <= end && s.next_offset > log_start) {
            let fits = groups.last().is_some_and(|g: &Group| {
                g.next_offset == segment.base_offset
                    && g.bytes() + segment.size <= segment_bytes
                    && segment.next_offset.value() - g.base().value() <= i64::from(i32::MAX)
            });
            if fits {
                let group = groups.last_mut().expect("checked above");
                group.bases.push(segment.base_offset);
                group.sizes.push(segment.size);
                group.next_offset = segment.next_offset;
                group.modified_ms = group.modified_ms.max(segment.modified_ms);
            } else {
                groups.push(Group {
                    bases: vec![segment.base_offset],
                    sizes: vec![segment.size],
                    next_offset: segment.next_offset,
                    modified_ms: segment.modified_ms,
                });
            }
        }
        groups
    }

    /// Writes the cleaned copy of one group and swaps it in. `None` when the group is
    /// one segment and cleaning would change nothing.
    async fn clean_group(
        &self,
        group: &Group,
        rules: &mut KeepRules<'_>,
        throttle: &IoThrottle,
        rewrite_end: Offset,
        report: &mut CleanReport,
    ) -> Result<Option<u64>, StorageError> {
        let dir = self.dir().to_path_buf();
        let env = self.shared.env.clone();
        let io = |e| StorageError::io(&dir, e);
        let cleaned = cleaned_path(&dir, group.base(), LOG_SUFFIX);
        remove_file(&cleaned, &env).await.map_err(io)?;
        let interval = self.config().index_interval_bytes;
        let mut writer = CleanedSegmentWriter::create(&cleaned, group.base(), interval, &env).await.map_err(io)?;
        let copied = self.copy_kept(group, rules, throttle, &mut writer, report).await;
        let changed = match copied {
            Ok(changed) => changed,
            Err(error) => {
                let path = writer.abandon().await;
                remove_file(&path, &env).await.ok();
                return Err(error);
            }
        };
        if !changed && group.bases.len() == 1 {
            let path = writer.abandon().await;
            remove_file(&path, &env).await.map_err(io)?;
            return Ok(None);
        }
        let (_, size, index) = writer.finish(throttle).await.map_err(io)?;
        report.bytes_written += size;
        write_file_atomic(&cleaned_path(&dir, group.base(), OFFSET_INDEX_SUFFIX), &index.encode_offsets(), &env)
            .await
            .map_err(io)?;
        write_file_atomic(&cleaned_path(&dir, group.base(), TIME_INDEX_SUFFIX), &index.encode_times(), &env)
            .await
            .map_err(io)?;

        // Readers in flight keep the old files open; open every handle a reader could
        // still ask for by path before the paths change.
        for &base in &group.bases {
            self.segment_file(base).await?;
            self.ensure_index(base).await?;
            if !env.disk.is_memory() {
                let path = segment_path(&dir, base, LOG_SUFFIX);
                let send =
                    crate::protocol::record_chunk::open_for_send(&path).map_err(|e| StorageError::io(&path, e))?;
                self.with_segment_mut(base, |s| {
                    s.send_file.get_or_insert(send);
                })?;
            }
        }
        self.raise_gaps_below(rewrite_end).await?;
        self.check_not_closing()?;
        let intent = SwapIntent { base: group.base(), end: group.next_offset };
        if let Err(error) = swap_in(&dir, intent, &group.bases, &env).await {
            // The old segments may be partly gone on disk; the next open finishes the swap.
            return Err(self.take_offline(format!(
                "the cleaner's swap of segments {}..{} failed ({error}); restart the broker to finish it",
                intent.base, intent.end
            )));
        }
        let final_path = segment_path(&dir, group.base(), LOG_SUFFIX);
        let file = Rc::new(SegmentFile::open(&final_path, &env, false).await.map_err(io)?);
        let mut state = self.shared.state.borrow_mut();
        let at = state.segments.iter().position(|s| s.base_offset == group.base());
        let still_there = at.is_some_and(|at| {
            state.segments.len() >= at + group.bases.len()
                && state
                    .segments
                    .range(at..at + group.bases.len())
                    .map(|s| s.base_offset)
                    .eq(group.bases.iter().copied())
        });
        if !still_there {
            drop(state);
            return Err(self.take_offline("the cleaner's group changed under it; restart the broker".into()));
        }
        let at = at.expect("checked above");
        let mut cleaned_segment = Segment::new_closed(group.base(), group.next_offset, size, group.modified_ms);
        cleaned_segment.file = Some(file);
        cleaned_segment.index = Some(index);
        state.segments.drain(at..at + group.bases.len());
        state.segments.insert(at, cleaned_segment);
        Ok(Some(size))
    }

    /// Copies the records of a group that the rules keep into `writer`. Returns whether
    /// anything was left out.
    async fn copy_kept(
        &self,
        group: &Group,
        rules: &mut KeepRules<'_>,
        throttle: &IoThrottle,
        writer: &mut CleanedSegmentWriter,
        report: &mut CleanReport,
    ) -> Result<bool, StorageError> {
        let io = |e| StorageError::io(self.dir(), e);
        let mut changed = false;
        for (&base, &size) in group.bases.iter().zip(&group.sizes) {
            let file = self.segment_file(base).await?;
            let mut reader = BatchReader::new(file.clone(), size);
            while let Some((header, batch)) = reader.next(throttle).await.map_err(|e| self.read_failure(&file, e))? {
                self.check_not_closing()?;
                let filtered = if header.is_control() {
                    Ok(Filtered::Unchanged)
                } else if rules.aborted.contains(&header) {
                    Ok(Filtered::Empty)
                } else {
                    filter_batch(&batch, &header, DECOMPRESSED_SECTION_BYTES_MAX, |record| rules.keep(record))
                };
                match filtered {
                    Ok(Filtered::Unchanged) => writer.append(&header, &batch, throttle).await.map_err(io)?,
                    Ok(Filtered::Empty) => {
                        changed = true;
                        report.records_removed += header.record_count.max(0) as u64;
                    }
                    Ok(Filtered::Rewritten(rebuilt)) => {
                        changed = true;
                        let new_header = BatchHeader::parse(&rebuilt).expect("a rebuilt batch has a valid header");
                        report.records_removed += (header.record_count - new_header.record_count).max(0) as u64;
                        writer.append(&new_header, &rebuilt, throttle).await.map_err(io)?;
                    }
                    Err(error) => {
                        tracing::warn!(dir = %self.dir().display(), offset = header.base_offset, %error, "the cleaner cannot read this batch's records; it is kept as it is");
                        writer.append(&header, &batch, throttle).await.map_err(io)?;
                    }
                }
            }
        }
        Ok(changed)
    }

    /// Raises (and persists) the offset below which segments may have gaps, before a
    /// swap can put one there.
    async fn raise_gaps_below(&self, end: Offset) -> Result<(), StorageError> {
        let checkpoint = {
            let mut state = self.shared.state.borrow_mut();
            if state.clean.checkpoint.gaps_below >= end {
                return Ok(());
            }
            state.clean.checkpoint.gaps_below = end;
            state.clean.checkpoint
        };
        super::super::clean_state::write_checkpoint(self.dir(), checkpoint, &self.shared.env)
            .await
            .map_err(|e| StorageError::io(self.dir(), e))
    }

    /// A segment the cleaner reads failed its checks: corruption of acknowledged data
    /// takes the partition offline (as a read would); other i/o errors only fail the pass.
    fn read_failure(&self, file: &SegmentFile, error: std::io::Error) -> StorageError {
        if error.kind() == std::io::ErrorKind::InvalidData {
            return self.take_offline(error.to_string());
        }
        StorageError::io(file.path(), error)
    }
}
