//! Cutting a replicated log back to an offset: a Raft replica whose uncommitted suffix
//! the leader does not share (a deposed leader's last batches, a follower that took
//! entries of a term that lost) drops it before it takes the leader's entries.
//!
//! The cut is made on the files of a closed log, which is then opened again, so the
//! proven recovery path rebuilds every in-memory structure (segments, the active
//! segment's index and tail block, the writer's offsets, producer state, the cache)
//! instead of a second way of editing each of them in place:
//! 1. close the log (queued writes finish, so nothing lands after the cut);
//! 2. remove every segment that starts at or after the offset;
//! 3. cut the segment holding the offset at the first batch at or after it, fdatasync,
//!    and remove its index files (it becomes the active tail, whose index is rebuilt);
//! 4. remove the clean-shutdown marker and the producer snapshot (both describe the
//!    old end), sync the directory, write the producer state without the cut batches as
//!    a snapshot ending at the cut (so idempotent producers keep their sequences), open.
//!
//! A crash in the middle leaves a log that is a prefix of the old one at least as long
//! as the cut: recovery treats it like any other, and the Raft group cuts again.
//! Committed records are never cut: the offset must be at or above the high watermark.

use std::rc::Rc;

use super::clean_shutdown::CLEAN_SHUTDOWN_MARKER;
use super::disk::{remove_file, sync_dir, write_hint_file, SegmentFile};
use super::error::StorageError;
use super::log::PartitionLog;
use super::offset::Offset;
use super::recovery::{remove_segment_files, PRODUCER_SNAPSHOT};
use super::segment::{scan, segment_path, OffsetRule, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX};

/// Cuts `log` so that its log end is `offset` and returns the reopened log (the old
/// handle is closed: readers holding it get `Closed` and retry).
pub async fn truncate(log: PartitionLog, offset: Offset) -> Result<PartitionLog, StorageError> {
    let offsets = log.offsets();
    if offset >= offsets.log_end.offset() {
        return Ok(log);
    }
    let dir = log.dir().to_path_buf();
    if offset < offsets.high_watermark.offset() {
        return Err(StorageError::Offline {
            dir,
            reason: format!("refusing to cut the log to {offset}, below its high watermark {}", offsets.high_watermark),
        });
    }
    let env = log.shared.env.clone();
    let config = log.config();
    let bases = log.segment_bases();
    // Producer state without the cut batches, as a snapshot that ends exactly at the cut,
    // which recovery then takes whole (a scan would only see the tail segment's batches).
    let producers = {
        let state = log.shared.state.borrow();
        let mut producers = state.producers.clone();
        producers.forget_from(offset);
        producers.encode(offset)
    };
    log.close().await?;
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |e| StorageError::io(&path, e)
    };

    for &base in bases.iter().filter(|&&base| base >= offset) {
        remove_segment_files(&dir, base, &env).await.map_err(io(&dir))?;
    }
    match bases.iter().rev().find(|&&base| base < offset) {
        Some(&base) => {
            let path = segment_path(&dir, base, LOG_SUFFIX);
            let file = Rc::new(SegmentFile::open(&path, &env, false).await.map_err(io(&path))?);
            let size = file.size().await.map_err(io(&path))?;
            let mut cut = None;
            let mut straddles = false;
            let outcome = scan(&file, base, 0, base, size, OffsetRule::Increasing, |header, position, _batch| {
                if cut.is_none() && header.base_offset >= offset.value() {
                    cut = Some(position);
                }
                if header.base_offset < offset.value() && header.next_offset() > offset.value() {
                    straddles = true;
                }
            })
            .await
            .map_err(io(&path))?;
            if straddles {
                return Err(StorageError::Offline {
                    dir,
                    reason: format!("offset {offset} is inside a batch: the log cannot be cut there"),
                });
            }
            let cut = cut.unwrap_or(outcome.valid_bytes);
            file.truncate(cut).await.map_err(io(&path))?;
            file.sync_data().await.map_err(io(&path))?;
            for suffix in [OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let index = segment_path(&dir, base, suffix);
                remove_file(&index, &env).await.map_err(io(&index))?;
            }
            tracing::info!(dir = %dir.display(), %offset, cut_bytes = size - cut, "replica log cut back to the leader's");
        }
        None => {
            // Nothing below the cut survives: an empty segment keeps the log end there.
            let path = segment_path(&dir, offset, LOG_SUFFIX);
            let file = SegmentFile::create(&path, &env, false).await.map_err(io(&path))?;
            file.sync_data().await.map_err(io(&path))?;
            tracing::info!(dir = %dir.display(), %offset, "replica log emptied back to the leader's");
        }
    }
    for name in [CLEAN_SHUTDOWN_MARKER, PRODUCER_SNAPSHOT] {
        let path = dir.join(name);
        remove_file(&path, &env).await.map_err(io(&path))?;
    }
    sync_dir(&dir, &env).await.map_err(io(&dir))?;
    let snapshot = dir.join(PRODUCER_SNAPSHOT);
    if let Err(error) = write_hint_file(&snapshot, &producers, &env).await {
        tracing::warn!(path = %snapshot.display(), %error, "could not keep the producer state across the cut; it is rebuilt from the tail");
    }
    PartitionLog::open(&dir, config, env).await
}
