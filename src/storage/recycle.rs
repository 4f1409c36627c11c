//! Segment recycling: the file of a segment that retention deleted is kept, one per log,
//! and becomes the log's next segment.
//!
//! Why: a new segment grows by fallocate, so its blocks are *unwritten* extents, and a
//! durable write into them also has to persist their conversion to written (on ext4 an
//! extent-tree or inode write that the write's flush waits for, done by a kernel worker).
//! A deleted segment's blocks are all written: appends into them are plain overwrites,
//! whose O_DSYNC write needs only the device flush. perf/README.md ("Segment recycling")
//! has the measurements. RocksDB recycles its WAL files for the same reason.
//!
//! Safety, written down:
//! - Only a segment that retention (or DeleteRecords) removed is kept: everything in it
//!   lies below the log start, which never moves back, and every later segment of this
//!   log starts at or above it. The kept file is named by the offset its batches end
//!   before (`<20-digit offset>.recycle`), and it is reused only by a segment whose base
//!   is at or above that offset, so every stale batch in it has an offset below the new
//!   segment's base. Recovery scans an active segment with offset contiguity
//!   (`segment::scan`): it stops at the first stale batch as it stops at zeros, and cuts
//!   the file there.
//! - A file that anything still reads (a fetch in flight holds its handle) is removed,
//!   not kept: its inode stays readable to that reader, as with any deleted segment.
//! - The page cache may still hold the old content (zero-copy fetches read segments
//!   buffered). Nothing reads a segment past what has been written to it, and every
//!   direct write invalidates the cached pages of the range it writes, before and after
//!   the write, as it does for a fresh file's zeros. The old pages are not dropped
//!   eagerly: that walk would run on the shard's thread.
//! - A crash between any two steps leaves either the segment below the checkpointed log
//!   start (removed at the next open, as before) or a kept file that the next open finds.
//! - Space: a log holds at most one kept file, and only until its next roll; retention
//!   frees that segment's space when the log rolls instead of at once.
//!   `--recycle-segments false` turns recycling off.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::config::BLOCK_BYTES;
use super::disk::{list_dir, remove_file, rename_file, StorageEnv};
use super::log::LogShared;
use super::offset::Offset;
use super::segment::{segment_path, Segment, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX};

pub const RECYCLE_SUFFIX: &str = "recycle";

/// A deleted segment's file kept for the log's next segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptFile {
    /// Every batch in the file has an offset below this one.
    pub stale_below: Offset,
    pub path: PathBuf,
}

/// `<dir>/<20-digit stale_below>.recycle`
pub fn kept_path(dir: &Path, stale_below: Offset) -> PathBuf {
    dir.join(format!("{:020}.{RECYCLE_SUFFIX}", stale_below.value()))
}

/// Parses a kept file's name into the offset its batches end before.
pub fn parse_kept_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(RECYCLE_SUFFIX)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().map(Offset)
}

/// Removes a segment that retention took out of the log: its index files always, its
/// data file unless it is kept for reuse (see the module's rules). The caller syncs the
/// directory. Returns whether the file was kept.
pub(crate) async fn retire_segment(shared: &LogShared, doomed: Segment) -> io::Result<bool> {
    let dir = &shared.dir;
    let env = &shared.env;
    for suffix in [OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        remove_file(&segment_path(dir, doomed.base_offset, suffix), env).await?;
    }
    let log_path = segment_path(dir, doomed.base_offset, LOG_SUFFIX);
    let unshared = doomed.file.as_ref().is_none_or(|file| Rc::strong_count(file) == 1)
        && doomed.send_file.as_ref().is_none_or(|file| std::sync::Arc::strong_count(file) == 1);
    let worth_keeping = env.recycle_segments
        && doomed.closed
        && unshared
        && doomed.size >= BLOCK_BYTES
        && shared.state.borrow().kept_file.is_none();
    if !worth_keeping {
        remove_file(&log_path, env).await?;
        return Ok(false);
    }
    // Close our own handles before the file changes name and content.
    let Segment { file, send_file, next_offset, .. } = doomed;
    drop(send_file);
    if let Some(file) = file.and_then(|file| Rc::try_unwrap(file).ok()) {
        file.close().await?;
    }
    let kept = KeptFile { stale_below: next_offset, path: kept_path(dir, next_offset) };
    rename_file(&log_path, &kept.path, env).await?;
    shared.state.borrow_mut().kept_file = Some(kept);
    Ok(true)
}

/// Moves the log's kept file into place as the file of the segment starting at `base`.
/// Returns its path, or `None` when there is no kept file or it may not hold this
/// segment (then it is removed). The caller opens the file and syncs the directory.
pub(crate) async fn reuse_for(shared: &LogShared, base: Offset) -> io::Result<Option<PathBuf>> {
    let Some(kept) = shared.state.borrow_mut().kept_file.take() else { return Ok(None) };
    let env = &shared.env;
    if kept.stale_below > base {
        tracing::warn!(path = %kept.path.display(), %base, "kept segment file holds offsets at or above the new segment's base; removing it");
        remove_file(&kept.path, env).await?;
        return Ok(None);
    }
    let path = segment_path(&shared.dir, base, LOG_SUFFIX);
    rename_file(&kept.path, &path, env).await?;
    crate::metrics::probes().segments_recycled.add(1);
    Ok(Some(path))
}

/// At open: the kept file to reuse (the newest) among those in `dir`; any others are
/// removed. A kept file whose batches reach `log_end` or beyond cannot be reused by this
/// log and is removed too.
pub(crate) async fn find_kept(dir: &Path, log_end: Offset, env: &StorageEnv) -> io::Result<Option<KeptFile>> {
    let mut kept: Vec<Offset> = list_dir(dir, env)?.iter().filter_map(|entry| parse_kept_name(&entry.name)).collect();
    kept.sort_unstable();
    let reusable = match kept.last() {
        Some(&newest) if env.recycle_segments && newest <= log_end => kept.pop(),
        _ => None,
    };
    for stale_below in kept {
        remove_file(&kept_path(dir, stale_below), env).await?;
    }
    Ok(reusable.map(|stale_below| KeptFile { stale_below, path: kept_path(dir, stale_below) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_names_round_trip() {
        let path = kept_path(Path::new("/d"), Offset(42));
        assert_eq!(path, Path::new("/d/00000000000000000042.recycle"));
        assert_eq!(parse_kept_name("00000000000000000042.recycle"), Some(Offset(42)));
        assert_eq!(parse_kept_name("00000000000000000042.log"), None);
        assert_eq!(parse_kept_name("42.recycle"), None);
        assert_eq!(super::super::segment::parse_segment_name("00000000000000000042.recycle"), None);
    }
}
