//! Opening a log: finding its segments, recovering the tail after a crash, and loading
//! (or rebuilding) a closed segment's indexes on first use.
//!
//! Recovery policy, written down:
//! - Only the last (active) segment can hold a torn write. It is scanned batch by batch
//!   (length, magic 2, CRC-32C, record count, offset contiguity); everything after the
//!   last valid batch is cut off and logged. Zeroed preallocated space is cut silently.
//! - Closed segments are not read at open (a log may have thousands). Their indexes are
//!   loaded on first use and checked; a missing or inconsistent index is rebuilt by
//!   scanning the segment. A closed segment that fails that scan is corruption of
//!   acknowledged data: the partition goes offline with the reason, other partitions
//!   are unaffected.
//! - After a clean close the tail is not scanned either: the clean-shutdown marker
//!   (`clean_shutdown`) carries its size, next offset and index, and is checked against
//!   the file. Producer state then comes from the snapshot written at the same close.
//! - The log start offset is the larger of the first segment's base and the
//!   `log-start-offset` checkpoint written by DeleteRecords and retention.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::batch_cache::LogCache;
use super::clean_shutdown::{TailSummary, CLEAN_SHUTDOWN_MARKER};
use super::clean_state::CleanState;
use super::config::LogConfig;
use super::disk::{
    align_down, align_up, create_dir_all, list_dir, prime_direct_io, read_small_file, remove_file, sync_dir,
    write_file_atomic, SegmentFile, StorageEnv,
};
use super::error::StorageError;
use super::index::SegmentIndex;
use super::log::{Health, LogShared, LogState, PartitionLog};
use super::offset::{Offset, OffsetTracker};
use super::producer_state::ProducerStates;
use super::segment::{
    self, parse_segment_name, scan, OffsetRule, Segment, TailWriter, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX,
};
use super::txn_index::{AbortedTxn, TxnIndex, ABORTED_TXNS_FILE};
use super::writer::WriterQueue;
use crate::protocol::control_batch::marker_outcome;
use crate::protocol::record_batch::{BatchHeader, BATCH_HEADER_BYTES};

/// File holding the log start offset moved by DeleteRecords (8 bytes BE + CRC-32C).
pub const LOG_START_CHECKPOINT: &str = "log-start-offset";
/// Idempotent producer state written on clean close (see `producer_state`).
pub const PRODUCER_SNAPSHOT: &str = "producer-state";
/// Producer state as of a segment's base, written (synced) when the segment was rolled
/// in: `producer-state-at-<base>`; the newest two are kept.
pub const ROLL_PRODUCER_SNAPSHOT_PREFIX: &str = "producer-state-at-";

/// Removes the roll snapshots older than the one before `newest`.
pub(crate) async fn remove_old_roll_snapshots(dir: &Path, newest: Offset, env: &StorageEnv) {
    let Ok(entries) = list_dir(dir, env) else { return };
    let mut bases: Vec<Offset> = entries
        .iter()
        .filter_map(|entry| entry.name.strip_prefix(ROLL_PRODUCER_SNAPSHOT_PREFIX)?.parse::<i64>().ok().map(Offset))
        .filter(|base| *base < newest)
        .collect();
    bases.sort_unstable();
    bases.pop(); // the one before the newest stays
    for base in bases {
        let _ = remove_file(&dir.join(roll_snapshot_name(base)), env).await;
    }
}

/// The file name of the roll snapshot as of `base`.
pub fn roll_snapshot_name(base: Offset) -> String {
    format!("{ROLL_PRODUCER_SNAPSHOT_PREFIX}{:020}", base.value())
}

struct FoundSegment {
    base: Offset,
    size: u64,
    modified_ms: i64,
}

pub(crate) async fn open(dir: &Path, config: LogConfig, env: StorageEnv) -> Result<PartitionLog, StorageError> {
    config.validate().map_err(|reason| StorageError::InvalidConfig { reason })?;
    create_dir_all(dir, &env).map_err(|e| StorageError::io(dir, e))?;
    prime_direct_io(dir, &env).await.map_err(|e| StorageError::io(dir, e))?;
    // A cleaner swap cut short by a crash is finished (or undone) before anything looks
    // at the segments.
    super::cleaner::swap::finish_interrupted(dir, &env).await.map_err(|e| StorageError::io(dir, e))?;
    let cleaner_checkpoint =
        super::clean_state::read_checkpoint(dir, &env).await.map_err(|e| StorageError::io(dir, e))?;
    let mut found = list_segments(dir, &env).await.map_err(|e| StorageError::io(dir, e))?;
    let checkpoint = read_log_start_checkpoint(dir, &env).await.map_err(|e| StorageError::io(dir, e))?;
    let now_ms = env.clock.now_ms();

    // Segments wholly below the checkpointed log start were being deleted by retention.
    if let Some(checkpoint) = checkpoint {
        while found.len() > 1 && found[1].base <= checkpoint {
            let doomed = found.remove(0);
            remove_segment_files(dir, doomed.base, &env).await.map_err(|e| StorageError::io(dir, e))?;
        }
    }

    let mut segments = VecDeque::with_capacity(found.len().max(1));
    let mut producers = ProducerStates::default();
    let mut scanned_aborts = Vec::new();
    let (log_end, high_watermark) = match found.last() {
        None => {
            let start = checkpoint.unwrap_or(Offset(0));
            segments.push_back(Segment::new_active(start, now_ms));
            (start, start)
        }
        Some(tail) => {
            for pair in found.windows(2) {
                segments.push_back(Segment::new_closed(pair[0].base, pair[1].base, pair[0].size, pair[0].modified_ms));
            }
            // The tail is scanned strictly (a torn write must not let stale bytes after it
            // through), unless it is a segment the cleaner rewrote: that happens only when
            // the segments after it are gone.
            let tail_rule =
                if tail.base < cleaner_checkpoint.gaps_below { OffsetRule::Increasing } else { OffsetRule::Contiguous };
            let marker = take_clean_shutdown_marker(dir, &env).await.map_err(|e| StorageError::io(dir, e))?;
            // The marker skips the scan that rebuilds producer state, so it is used only
            // together with the snapshot written at the same close.
            let snapshot_ends_at = read_small_file(&dir.join(PRODUCER_SNAPSHOT), &env)
                .await
                .map_err(|e| StorageError::io(dir, e))?
                .and_then(|bytes| ProducerStates::decode(&bytes).map(|(as_of, _)| as_of));
            let mut scan_state = producers_before_tail(dir, &found, &env, now_ms).await?;
            let active = match marker.filter(|m| snapshot_ends_at == Some(m.next_offset)) {
                Some(summary) => match reopen_clean_tail(dir, tail, &env, summary).await {
                    Ok(Some(segment)) => segment,
                    Ok(None) => recover_tail(dir, tail, &env, now_ms, &mut scan_state, tail_rule).await?,
                    Err(error) => return Err(StorageError::io(dir, error)),
                },
                None => recover_tail(dir, tail, &env, now_ms, &mut scan_state, tail_rule).await?,
            };
            producers = scan_state.producers;
            scanned_aborts = scan_state.aborted;
            let end = active.next_offset;
            segments.push_back(active);
            (end, end)
        }
    };
    // A snapshot from a clean close that ends exactly at the recovered log end covers
    // every producer; otherwise keep what the tail scan rebuilt.
    if let Some(bytes) =
        read_small_file(&dir.join(PRODUCER_SNAPSHOT), &env).await.map_err(|e| StorageError::io(dir, e))?
    {
        match ProducerStates::decode(&bytes) {
            Some((as_of, snapshot)) if as_of == log_end => producers = snapshot,
            Some(_) => {
                tracing::info!(dir = %dir.display(), "producer snapshot is stale; using the state rebuilt from the log")
            }
            None => {
                tracing::warn!(dir = %dir.display(), "producer snapshot is damaged; using the state rebuilt from the log")
            }
        }
    }
    let first_base = segments.front().map(|s| s.base_offset).unwrap_or_default();
    let mut log_start = checkpoint.map_or(first_base, |c| c.max(first_base));
    if log_start > high_watermark {
        tracing::warn!(dir = %dir.display(), %log_start, %high_watermark, "log start checkpoint is past the recovered log end; clamping");
        log_start = high_watermark;
    }
    let (aborted, aborted_changed) = load_aborted_index(dir, &env, log_end, scanned_aborts).await?;
    let kept_file = super::recycle::find_kept(dir, log_end, &env).await.map_err(|e| StorageError::io(dir, e))?;
    let state = LogState {
        kept_file,
        aborted,
        txn_index_gate: Rc::new(glommio::sync::Semaphore::new(1)),
        aborted_unsaved: false,
        transactional_gate: Rc::new(glommio::sync::Semaphore::new(1)),
        roll_snapshot: None,
        cache: LogCache::new(env.batch_cache.clone(), config.use_batch_cache),
        config,
        segments,
        offsets: OffsetTracker::recovered(log_start, log_end),
        health: Health::Healthy,
        writer: WriterQueue::new(log_end),
        roll_requested: false,
        producers,
        watchers: Vec::new(),
        next_watcher_id: 0,
        closing: false,
        checkpoint_gate: Rc::new(glommio::sync::Semaphore::new(1)),
        maintenance_gate: Rc::new(glommio::sync::Semaphore::new(1)),
        clean: CleanState { checkpoint: cleaner_checkpoint, ..CleanState::default() },
        clean_limit: None,
    };
    tracing::info!(dir = %dir.display(), %log_start, %log_end, segments = state.segments.len(), "log opened");
    let log = PartitionLog { shared: Rc::new(LogShared { dir: dir.to_path_buf(), env, state: RefCell::new(state) }) };
    if aborted_changed {
        log.persist_aborted_index().await?;
    }
    Ok(log)
}

/// Segment files in `dir` ordered by base offset; removes leftover temporary files.
async fn list_segments(dir: &Path, env: &StorageEnv) -> io::Result<Vec<FoundSegment>> {
    let mut found = Vec::new();
    let mut leftovers: Vec<PathBuf> = Vec::new();
    for entry in list_dir(dir, env)? {
        if entry.name.ends_with(".tmp") {
            leftovers.push(dir.join(&entry.name));
            continue;
        }
        if let Some(base) = parse_segment_name(&entry.name) {
            found.push(FoundSegment { base, size: entry.size, modified_ms: entry.modified_ms });
        }
    }
    for path in leftovers {
        remove_file(&path, env).await?;
    }
    found.sort_by_key(|s| s.base);
    Ok(found)
}

/// Reads and removes the clean-shutdown marker (removal is made durable before the log
/// can take writes, so a later crash never trusts it).
async fn take_clean_shutdown_marker(dir: &Path, env: &StorageEnv) -> io::Result<Option<TailSummary>> {
    let path = dir.join(CLEAN_SHUTDOWN_MARKER);
    let Some(bytes) = read_small_file(&path, env).await? else { return Ok(None) };
    remove_file(&path, env).await?;
    sync_dir(dir, env).await?;
    let summary = TailSummary::decode(&bytes);
    if summary.is_none() {
        tracing::warn!(path = %path.display(), "clean-shutdown marker is damaged; scanning the tail segment");
    }
    Ok(summary)
}

/// Reopens the tail segment from a clean-shutdown marker without scanning it; `None`
/// when the marker does not match the segment on disk (then the caller scans).
async fn reopen_clean_tail(
    dir: &Path,
    tail: &FoundSegment,
    env: &StorageEnv,
    summary: TailSummary,
) -> io::Result<Option<Segment>> {
    let path = segment::segment_path(dir, tail.base, LOG_SUFFIX);
    if summary.base != tail.base || summary.size != tail.size || summary.next_offset < tail.base {
        tracing::info!(path = %path.display(), "clean-shutdown marker does not match the tail segment; scanning");
        return Ok(None);
    }
    let relative_end = (summary.next_offset.value() - tail.base.value()) as u64;
    let Ok(mut index) =
        SegmentIndex::decode(&summary.offset_index, &summary.time_index, tail.size, relative_end.max(1))
    else {
        tracing::info!(path = %path.display(), "clean-shutdown index is inconsistent; scanning");
        return Ok(None);
    };
    index.restore_progress(&summary.progress);
    let file = Rc::new(SegmentFile::open(&path, env, false).await?);
    if !last_entry_matches(&file, tail.base, &index, tail.size).await? {
        tracing::info!(path = %path.display(), "clean-shutdown index does not match the segment; scanning");
        return Ok(None);
    }
    let valid = tail.size;
    let tail_start = align_down(valid);
    let tail_block = if valid > tail_start {
        file.read_at(tail_start, (valid - tail_start) as usize).await?.to_vec()
    } else {
        Vec::new()
    };
    let segment = active_tail(tail, summary.created_ms, summary.next_offset, valid, index, file, tail_block);
    tracing::debug!(path = %path.display(), next_offset = %summary.next_offset, "tail reopened from the clean-shutdown marker");
    Ok(Some(segment))
}

/// Scans the last segment, cuts a torn or corrupt tail and rebuilds its index in memory.
/// What the tail scan rebuilds besides the segment: producer state (starting from the
/// roll snapshot, when there is one) and the aborts its markers record.
struct TailProducers {
    producers: ProducerStates,
    aborted: Vec<AbortedTxn>,
}

/// The producer state as of the last segment's base: the newest roll snapshot at or
/// below it, plus a scan of the closed segments from that snapshot's base on (none when
/// the snapshot of the last segment itself survived; one when a crash came before it was
/// synced). Without any snapshot (a log older than them), empty: only the tail scan
/// rebuilds state.
async fn producers_before_tail(
    dir: &Path,
    found: &[FoundSegment],
    env: &StorageEnv,
    now_ms: i64,
) -> Result<TailProducers, StorageError> {
    let mut rebuilt = TailProducers { producers: ProducerStates::default(), aborted: Vec::new() };
    let Some(tail) = found.last() else { return Ok(rebuilt) };
    let mut snapshots: Vec<Offset> = list_dir(dir, env)
        .map_err(|e| StorageError::io(dir, e))?
        .iter()
        .filter_map(|entry| entry.name.strip_prefix(ROLL_PRODUCER_SNAPSHOT_PREFIX)?.parse::<i64>().ok().map(Offset))
        .filter(|base| *base <= tail.base)
        .collect();
    snapshots.sort_unstable_by(|a, b| b.cmp(a));
    for base in snapshots {
        let bytes = read_small_file(&dir.join(roll_snapshot_name(base)), env).await.ok().flatten();
        if let Some((as_of, states)) = bytes.and_then(|b| ProducerStates::decode(&b)) {
            if as_of == base && found.iter().any(|segment| segment.base == base) {
                rebuilt.producers = states;
                for segment in found.iter().filter(|segment| segment.base >= base && segment.base < tail.base) {
                    scan_closed_segment(dir, segment, env, now_ms, &mut rebuilt).await?;
                }
                return Ok(rebuilt);
            }
        }
    }
    Ok(rebuilt)
}

/// Applies a closed segment's batches to the producer state being rebuilt.
async fn scan_closed_segment(
    dir: &Path,
    segment: &FoundSegment,
    env: &StorageEnv,
    now_ms: i64,
    rebuilt: &mut TailProducers,
) -> Result<(), StorageError> {
    let path = segment::segment_path(dir, segment.base, LOG_SUFFIX);
    let io_error = |e| StorageError::io(&path, e);
    let file = Rc::new(SegmentFile::open(&path, env, false).await.map_err(io_error)?);
    scan(&file, segment.base, 0, segment.base, segment.size, OffsetRule::Increasing, |header, _, batch| {
        rebuilt.apply(header, batch, now_ms)
    })
    .await
    .map_err(io_error)?;
    Ok(())
}

impl TailProducers {
    /// One batch found by a scan: a marker closes its producer's transaction (an abort
    /// becomes an aborted-index entry), any other batch is recorded.
    fn apply(&mut self, header: &BatchHeader, batch: &[u8], now_ms: i64) {
        match marker_outcome(batch, header) {
            Some(committed) => {
                let coordinator_epoch =
                    crate::protocol::control_batch::marker_coordinator_epoch(batch, header).unwrap_or(-1);
                let done = self.producers.record_marker(
                    header,
                    committed,
                    Offset(header.base_offset),
                    coordinator_epoch,
                    now_ms,
                );
                if let Some(txn) = done.filter(|t| !t.committed) {
                    self.aborted.push(AbortedTxn {
                        producer_id: txn.producer_id,
                        first_offset: txn.first_offset,
                        last_offset: txn.last_offset,
                    });
                }
            }
            None => self.producers.record(header, Offset(header.base_offset), now_ms),
        }
    }
}

/// The aborted-transaction index: the file, plus aborts the tail scan found that the
/// file lacks, minus entries past the log end. Says whether it differs from the file.
async fn load_aborted_index(
    dir: &Path,
    env: &StorageEnv,
    log_end: Offset,
    scanned: Vec<AbortedTxn>,
) -> Result<(TxnIndex, bool), StorageError> {
    let path = dir.join(ABORTED_TXNS_FILE);
    let file = read_small_file(&path, env).await.map_err(|e| StorageError::io(&path, e))?;
    let mut index = match file.as_deref().map(TxnIndex::decode) {
        Some(Some(index)) => index,
        Some(None) => {
            return Err(StorageError::Offline {
                dir: dir.to_path_buf(),
                reason: format!("{} is damaged", path.display()),
            })
        }
        None => TxnIndex::default(),
    };
    let before = index.clone();
    for entry in scanned {
        index.push(entry);
    }
    index.forget_from(log_end);
    let changed = index != before;
    Ok((index, changed))
}

async fn recover_tail(
    dir: &Path,
    tail: &FoundSegment,
    env: &StorageEnv,
    now_ms: i64,
    rebuilt: &mut TailProducers,
    rule: OffsetRule,
) -> Result<Segment, StorageError> {
    let path = segment::segment_path(dir, tail.base, LOG_SUFFIX);
    let io_error = |e| StorageError::io(&path, e);
    let file = Rc::new(SegmentFile::open(&path, env, false).await.map_err(io_error)?);
    let file_size = file.size().await.map_err(io_error)?;
    let mut index = SegmentIndex::new();
    let mut first_timestamp = None;
    let outcome = scan(&file, tail.base, 0, tail.base, file_size, rule, |header, position, batch| {
        let relative = (header.base_offset - tail.base.value()) as u32;
        first_timestamp.get_or_insert(header.max_timestamp);
        rebuilt.apply(header, batch, now_ms);
        index.on_batch(relative, position as u32, header.total_bytes as u32, header.max_timestamp);
    })
    .await
    .map_err(io_error)?;

    let valid = outcome.valid_bytes;
    if valid < file_size {
        // What follows the last valid batch. The last write ended with zeros up to its
        // block boundary; after that come zeros (preallocated space) or, in a recycled
        // file (`recycle`), the old segment's bytes. Anything else inside that block, or
        // a batch at or past the log end beyond it, is a torn or lost write.
        let padded = align_up(valid).min(file_size);
        let probe_len = ((file_size - valid) as usize).min((padded - valid) as usize + BATCH_HEADER_BYTES);
        let probe = file.read_at(valid, probe_len).await.map_err(io_error)?;
        let (padding, after) = probe.split_at(((padded - valid) as usize).min(probe.len()));
        let newer_batch_after =
            BatchHeader::parse(after).is_ok_and(|header| header.base_offset >= outcome.next_offset.value());
        if probe.iter().all(|&b| b == 0) {
            tracing::debug!(path = %path.display(), valid, file_size, "trimming preallocated space");
        } else if padding.iter().all(|&b| b == 0) && !newer_batch_after {
            tracing::info!(path = %path.display(), valid, cut_bytes = file_size - valid, next_offset = %outcome.next_offset, "trimming the space after the last batch (preallocated or a recycled file's old content)");
        } else {
            tracing::warn!(
                path = %path.display(),
                kept_bytes = valid,
                cut_bytes = file_size - valid,
                next_offset = %outcome.next_offset,
                reason = outcome.stopped.as_deref().unwrap_or("unknown"),
                "recovery cut a torn or corrupt tail"
            );
        }
        file.truncate(valid).await.map_err(io_error)?;
        file.sync_data().await.map_err(io_error)?;
    }
    let tail_start = align_down(valid);
    let tail_block = if valid > tail_start {
        file.read_at(tail_start, (valid - tail_start) as usize).await.map_err(io_error)?.to_vec()
    } else {
        Vec::new()
    };
    let created_ms = first_timestamp.filter(|&t| t >= 0).unwrap_or(now_ms).min(now_ms);
    Ok(active_tail(tail, created_ms, outcome.next_offset, valid, index, file, tail_block))
}

/// The active segment over a recovered tail file of `valid` bytes, ready for appends.
fn active_tail(
    tail: &FoundSegment,
    created_ms: i64,
    next_offset: Offset,
    valid: u64,
    index: SegmentIndex,
    file: Rc<SegmentFile>,
    tail_block: Vec<u8>,
) -> Segment {
    let mut segment = Segment::new_active(tail.base, created_ms);
    segment.next_offset = next_offset;
    segment.size = valid;
    segment.written_size = valid;
    segment.modified_ms = tail.modified_ms;
    segment.acknowledged_max_timestamp = (index.max_timestamp(), index.relative_offset_of_max_timestamp());
    segment.index = Some(index);
    segment.file = Some(file);
    segment.writer = Some(TailWriter { tail_block, allocated_bytes: valid });
    segment
}

/// A closed segment as the log knows it: where it starts, where the next one starts, its
/// size, and how its offsets are checked (a cleaned segment may have gaps).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentExtent {
    pub base: Offset,
    pub next_offset: Offset,
    pub size: u64,
    pub rule: OffsetRule,
}

/// Why a closed segment's index could not be produced.
#[derive(Debug)]
pub(crate) enum IndexLoadError {
    Io(io::Error),
    Corrupt(String),
}

/// Loads a closed segment's index files, checking them against the segment; rebuilds
/// them by scanning when they are missing or inconsistent.
pub(crate) async fn load_index(
    dir: &Path,
    file: &Rc<SegmentFile>,
    extent: SegmentExtent,
    env: &StorageEnv,
    trust_files: bool,
) -> Result<SegmentIndex, IndexLoadError> {
    let SegmentExtent { base, next_offset, size, rule } = extent;
    let offset_path = segment::segment_path(dir, base, OFFSET_INDEX_SUFFIX);
    let time_path = segment::segment_path(dir, base, TIME_INDEX_SUFFIX);
    let relative_end = (next_offset.value() - base.value()) as u64;
    let (offsets, times) = if trust_files {
        (
            read_small_file(&offset_path, env).await.map_err(IndexLoadError::Io)?,
            read_small_file(&time_path, env).await.map_err(IndexLoadError::Io)?,
        )
    } else {
        (None, None)
    };
    if let (Some(offsets), Some(times)) = (offsets, times) {
        match SegmentIndex::decode(&offsets, &times, size, relative_end) {
            Ok(index) if last_entry_matches(file, base, &index, size).await.map_err(IndexLoadError::Io)? => {
                return Ok(index);
            }
            Ok(_) => tracing::warn!(path = %offset_path.display(), "index does not match its segment; rebuilding"),
            Err(error) => tracing::warn!(path = %offset_path.display(), %error, "index is inconsistent; rebuilding"),
        }
    } else {
        tracing::info!(path = %offset_path.display(), "index missing; rebuilding");
    }

    let mut index = SegmentIndex::new();
    let outcome = scan(file, base, 0, base, size, rule, |header, position, _batch| {
        index.on_batch(
            (header.base_offset - base.value()) as u32,
            position as u32,
            header.total_bytes as u32,
            header.max_timestamp,
        );
    })
    .await
    .map_err(IndexLoadError::Io)?;
    let offsets_fit = match rule {
        OffsetRule::Contiguous => outcome.next_offset == next_offset,
        OffsetRule::Increasing => outcome.next_offset <= next_offset,
    };
    if outcome.valid_bytes != size || !offsets_fit {
        return Err(IndexLoadError::Corrupt(format!(
            "closed segment {base} is corrupt: valid batches end at byte {} of {size} (offset {} of {next_offset}): {}",
            outcome.valid_bytes,
            outcome.next_offset,
            outcome.stopped.as_deref().unwrap_or("offsets do not reach the next segment")
        )));
    }
    index.seal();
    let written = async {
        write_file_atomic(&offset_path, &index.encode_offsets(), env).await?;
        write_file_atomic(&time_path, &index.encode_times(), env).await
    }
    .await;
    if let Err(error) = written {
        tracing::warn!(path = %offset_path.display(), %error, "could not save the rebuilt index; it will be rebuilt again");
    }
    Ok(index)
}

/// The last offset-index entry must point at a batch header with that base offset.
async fn last_entry_matches(file: &Rc<SegmentFile>, base: Offset, index: &SegmentIndex, size: u64) -> io::Result<bool> {
    let Some((relative, position)) = index.last_offset_entry() else { return Ok(true) };
    let len = (size - u64::from(position)).min(crate::protocol::record_batch::BATCH_HEADER_BYTES as u64) as usize;
    let bytes = file.read_at(u64::from(position), len).await?;
    Ok(crate::protocol::record_batch::BatchHeader::parse(&bytes)
        .is_ok_and(|header| header.base_offset == base.value() + i64::from(relative)))
}

pub(crate) async fn remove_segment_files(dir: &Path, base: Offset, env: &StorageEnv) -> io::Result<()> {
    for suffix in [OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
        remove_file(&segment::segment_path(dir, base, suffix), env).await?;
    }
    Ok(())
}

pub(crate) async fn write_log_start_checkpoint(dir: &Path, offset: Offset, env: &StorageEnv) -> io::Result<()> {
    let mut bytes = offset.value().to_be_bytes().to_vec();
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    write_file_atomic(&dir.join(LOG_START_CHECKPOINT), &bytes, env).await
}

async fn read_log_start_checkpoint(dir: &Path, env: &StorageEnv) -> io::Result<Option<Offset>> {
    let path = dir.join(LOG_START_CHECKPOINT);
    let Some(bytes) = read_small_file(&path, env).await? else { return Ok(None) };
    if bytes.len() != 12 || crc32c::crc32c(&bytes[..8]).to_be_bytes() != bytes[8..12] {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is damaged: remove it to fall back to the first segment's base offset", path.display()),
        ));
    }
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    Ok(Some(Offset(i64::from_be_bytes(raw))))
}
