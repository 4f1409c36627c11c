//! What a log knows about its compaction: where its dirty (uncleaned) part starts, below
//! which offset segments may have gaps, and the cleaner's counters. Persisted in the
//! `cleaner-checkpoint` file of the log's directory (Kafka keeps the first value in a
//! per-directory `cleaner-offset-checkpoint`).
//!
//! Two offsets, because a cleaning pass is not atomic across segments:
//! - `gaps_below` is raised *before* the pass swaps in its first cleaned segment, so
//!   whatever a crash leaves, every segment that may have been rewritten (offsets with
//!   gaps, batches with fewer records than their offset span) is read with the rules of
//!   a cleaned segment (`OffsetRule::Increasing`);
//! - `first_dirty` is raised *after* the pass, so a crash in between only means that
//!   the next pass maps part of the log again.

use std::io;
use std::path::Path;

use super::disk::{read_small_file, write_file_atomic, StorageEnv};
use super::offset::Offset;
use super::segment::{OffsetRule, Segment};

/// File name of the checkpoint inside a log directory.
pub const CLEANER_CHECKPOINT: &str = "cleaner-checkpoint";

/// The persisted part: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanerCheckpoint {
    pub first_dirty: Offset,
    pub gaps_below: Offset,
}

impl CleanerCheckpoint {
    fn encode(&self) -> Vec<u8> {
        encode_offset_pair(self.first_dirty, self.gaps_below)
    }

    fn decode(bytes: &[u8]) -> Option<CleanerCheckpoint> {
        let (first_dirty, gaps_below) = decode_offset_pair(bytes)?;
        Some(CleanerCheckpoint { first_dirty, gaps_below })
    }
}

/// Two offsets and a CRC-32C of them (20 bytes, big-endian): the cleaner's small files.
pub(crate) fn encode_offset_pair(first: Offset, second: Offset) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&first.value().to_be_bytes());
    bytes.extend_from_slice(&second.value().to_be_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

/// The pair [`encode_offset_pair`] wrote; `None` when the bytes are damaged.
pub(crate) fn decode_offset_pair(bytes: &[u8]) -> Option<(Offset, Offset)> {
    if bytes.len() != 20 || crc32c::crc32c(&bytes[..16]).to_be_bytes() != bytes[16..20] {
        return None;
    }
    let read = |at: usize| {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&bytes[at..at + 8]);
        Offset(i64::from_be_bytes(raw))
    };
    Some((read(0), read(8)))
}

/// Reads a log's checkpoint. A damaged file costs work, never data: everything is
/// treated as dirty (mapped again) and every closed segment as possibly gapped.
pub async fn read_checkpoint(dir: &Path, env: &StorageEnv) -> io::Result<CleanerCheckpoint> {
    let path = dir.join(CLEANER_CHECKPOINT);
    let Some(bytes) = read_small_file(&path, env).await? else { return Ok(CleanerCheckpoint::default()) };
    Ok(CleanerCheckpoint::decode(&bytes).unwrap_or_else(|| {
        tracing::warn!(path = %path.display(), "cleaner checkpoint is damaged; the whole log counts as dirty");
        CleanerCheckpoint { first_dirty: Offset(0), gaps_below: Offset(i64::MAX) }
    }))
}

pub async fn write_checkpoint(dir: &Path, checkpoint: CleanerCheckpoint, env: &StorageEnv) -> io::Result<()> {
    write_file_atomic(&dir.join(CLEANER_CHECKPOINT), &checkpoint.encode(), env).await
}

/// The cleaner's work on one log since it was opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanerStats {
    pub passes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    /// Wall-clock end of the last pass, and how long it took.
    pub last_run_ms: Option<i64>,
    pub last_duration_ms: u64,
    /// Why the last pass failed, if it did.
    pub last_error: Option<String>,
}

/// A log's compaction state (in `LogState`).
#[derive(Debug, Clone, Default)]
pub struct CleanState {
    pub checkpoint: CleanerCheckpoint,
    pub stats: CleanerStats,
}

impl CleanState {
    /// How a segment's offsets are checked when it is read or scanned.
    pub fn rule_for(&self, segment: &Segment) -> OffsetRule {
        if segment.closed && segment.next_offset <= self.checkpoint.gaps_below {
            OffsetRule::Increasing
        } else {
            OffsetRule::Contiguous
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_damage_is_detected() {
        let checkpoint = CleanerCheckpoint { first_dirty: Offset(42), gaps_below: Offset(40) };
        let bytes = checkpoint.encode();
        assert_eq!(CleanerCheckpoint::decode(&bytes), Some(checkpoint));
        let mut damaged = bytes.clone();
        damaged[3] ^= 1;
        assert_eq!(CleanerCheckpoint::decode(&damaged), None);
        assert_eq!(CleanerCheckpoint::decode(&bytes[..12]), None);
    }
}
