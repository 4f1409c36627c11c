//! One segment of a partition log: a file of RecordBatch v2 bytes named by its 20-digit
//! base offset, its sparse indexes, and the routines that scan and read it.
//!
//! A segment is *active* (the log's last; appended to, indexes in memory, file
//! preallocated past its logical end) or *closed* (sealed: truncated to its exact size,
//! indexes written beside it, never written again). A closed segment found on disk when
//! the log is opened is not read until it is needed: its file and indexes load lazily.

use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::protocol::record_batch::{check_crc, BatchHeader, BATCH_HEADER_BYTES};

use super::config::{INDEX_INTERVAL_BYTES, SCAN_CHUNK_BYTES};
use super::disk::SharedSegmentFile;
use super::index::SegmentIndex;
use super::offset::Offset;

pub const LOG_SUFFIX: &str = "log";
pub const OFFSET_INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

/// `<dir>/<20-digit base offset>.<suffix>`
pub fn segment_path(dir: &Path, base_offset: Offset, suffix: &str) -> PathBuf {
    dir.join(format!("{:020}.{suffix}", base_offset.value()))
}

/// Parses a segment file name (`00000000000000000042.log`) into its base offset.
pub fn parse_segment_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().map(Offset)
}

/// What the group-commit writer knows about the active segment's file.
#[derive(Debug, Default)]
pub struct TailWriter {
    /// Bytes of the last, partial block already written; rewritten with the next write.
    pub tail_block: Vec<u8>,
    /// File length reserved with fallocate.
    pub allocated_bytes: u64,
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: Offset,
    /// Offset after the last batch assigned to this segment.
    pub next_offset: Offset,
    /// Logical bytes assigned (appended, possibly not yet written).
    pub size: u64,
    /// Bytes whose write has completed; reads never go past this.
    pub written_size: u64,
    /// Wall-clock time used for segment.ms rolling.
    pub created_ms: i64,
    /// Last modification time, used by retention.ms when the segment has no timestamps.
    pub modified_ms: i64,
    /// (max timestamp, its relative offset) as of the last completed write; restored when
    /// a failed write is rolled back.
    pub acknowledged_max_timestamp: (i64, u32),
    pub closed: bool,
    /// `None` until the file is created (new segment) or opened (lazy closed segment).
    pub file: Option<SharedSegmentFile>,
    /// `None` until loaded for a closed segment found at open.
    pub index: Option<SegmentIndex>,
    /// Buffered descriptor for zero-copy sends (`protocol::record_chunk`), opened on first use.
    pub send_file: Option<std::sync::Arc<std::fs::File>>,
    pub writer: Option<TailWriter>,
}

impl Segment {
    /// A new active segment whose file the writer creates before its first write.
    pub fn new_active(base_offset: Offset, created_ms: i64) -> Segment {
        Segment {
            base_offset,
            next_offset: base_offset,
            size: 0,
            written_size: 0,
            created_ms,
            modified_ms: created_ms,
            acknowledged_max_timestamp: (-1, 0),
            closed: false,
            file: None,
            index: Some(SegmentIndex::new()),
            send_file: None,
            writer: Some(TailWriter::default()),
        }
    }

    /// A closed segment known only by name and size; file and index load on first use.
    pub fn new_closed(base_offset: Offset, next_offset: Offset, size: u64, modified_ms: i64) -> Segment {
        Segment {
            base_offset,
            next_offset,
            size,
            written_size: size,
            created_ms: 0,
            modified_ms,
            acknowledged_max_timestamp: (-1, 0),
            closed: true,
            file: None,
            index: None,
            send_file: None,
            writer: None,
        }
    }

    pub fn relative(&self, offset: Offset) -> u32 {
        let relative = offset.value() - self.base_offset.value();
        assert!((0..=i64::from(u32::MAX)).contains(&relative), "offset {offset} outside segment {}", self.base_offset);
        relative as u32
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        self.index.as_ref().map(SegmentIndex::max_timestamp)
    }
}

/// A batch in a segment failed validation.
#[derive(Debug, thiserror::Error)]
pub enum SegmentReadError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("corrupt batch at position {position}: {reason}")]
    Corrupt { position: u64, reason: String },
}

/// Where a scan stopped and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Bytes from the start of the segment that hold valid, contiguous batches.
    pub valid_bytes: u64,
    /// Offset after the last valid batch.
    pub next_offset: Offset,
    /// Why the scan stopped before `end`, if it did.
    pub stopped: Option<String>,
}

/// What a scan accepts between and inside batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetRule {
    /// Every batch starts where the previous one ended and holds
    /// `last_offset_delta + 1` records: a segment as appended.
    Contiguous,
    /// Offsets only increase: a segment rewritten by the log cleaner, where batches and
    /// records may have been removed (a batch keeps its last offset delta).
    Increasing,
}

/// Walks batches from `position` (where the batch with base offset `offset` starts) up
/// to `end`, checking length, magic, CRC-32C, record counts and offsets (`rule`); calls
/// `on_batch` for each valid one. Stops at the first invalid batch and says why.
pub async fn scan(
    file: &SharedSegmentFile,
    segment_base: Offset,
    mut position: u64,
    mut offset: Offset,
    end: u64,
    rule: OffsetRule,
    mut on_batch: impl FnMut(&BatchHeader, u64, &[u8]),
) -> io::Result<ScanOutcome> {
    let mut stopped = None;
    'chunks: while position < end {
        let want = (end - position).min(SCAN_CHUNK_BYTES as u64) as usize;
        let chunk = file.read_at(position, want).await?;
        let bytes: &[u8] = &chunk;
        let mut at = 0usize;
        loop {
            let remaining = &bytes[at..];
            if remaining.len() < BATCH_HEADER_BYTES {
                if position + (at as u64) + (remaining.len() as u64) >= end {
                    if !remaining.is_empty() {
                        stopped = Some(format!("{} trailing bytes hold no complete batch header", remaining.len()));
                    }
                    position += at as u64;
                    break 'chunks;
                }
                break;
            }
            let header = match BatchHeader::parse(remaining) {
                Ok(header) => header,
                Err(error) => {
                    stopped = Some(error.to_string());
                    position += at as u64;
                    break 'chunks;
                }
            };
            if header.next_offset().saturating_sub(segment_base.value()) > i64::from(i32::MAX) {
                stopped = Some(format!("batch at offset {} runs past the segment's offset range", header.base_offset));
                position += at as u64;
                break 'chunks;
            }
            let in_order = match rule {
                OffsetRule::Contiguous => header.base_offset == offset.value(),
                OffsetRule::Increasing => header.base_offset >= offset.value(),
            };
            if !in_order {
                stopped = Some(format!("batch base offset {} where {offset} was expected", header.base_offset));
                position += at as u64;
                break 'chunks;
            }
            let batch_end = position + (at + header.total_bytes) as u64;
            if batch_end > end {
                stopped = Some(format!("batch of {} bytes runs past the end of the file", header.total_bytes));
                position += at as u64;
                break 'chunks;
            }
            if header.total_bytes > remaining.len() {
                if at == 0 {
                    // A batch larger than the chunk: read exactly it.
                    let whole = file.read_at(position, header.total_bytes).await?;
                    if let Err(reason) = check_whole_batch(&whole, &header, rule) {
                        stopped = Some(reason);
                        break 'chunks;
                    }
                    on_batch(&header, position, &whole);
                    position += header.total_bytes as u64;
                    offset = Offset(header.next_offset());
                    continue 'chunks;
                }
                break;
            }
            if let Err(reason) = check_whole_batch(&remaining[..header.total_bytes], &header, rule) {
                stopped = Some(reason);
                position += at as u64;
                break 'chunks;
            }
            on_batch(&header, position + at as u64, &remaining[..header.total_bytes]);
            at += header.total_bytes;
            offset = Offset(header.next_offset());
        }
        position += at as u64;
        glommio::yield_if_needed().await;
    }
    Ok(ScanOutcome { valid_bytes: position, next_offset: offset, stopped })
}

fn check_whole_batch(bytes: &[u8], header: &BatchHeader, rule: OffsetRule) -> Result<(), String> {
    check_crc(bytes, header).map_err(|e| e.to_string())?;
    let span = i64::from(header.last_offset_delta) + 1;
    let count = i64::from(header.record_count);
    let counts_fit = match rule {
        OffsetRule::Contiguous => count == span,
        OffsetRule::Increasing => count <= span,
    };
    if count <= 0 || !counts_fit {
        return Err(format!(
            "record count {} does not match last offset delta {}",
            header.record_count, header.last_offset_delta
        ));
    }
    Ok(())
}

/// Reads whole batches from a segment file: starts at `position` (at or before the batch
/// holding `offset`), skips batches that end before `offset`, stops before `limit_offset`,
/// at `end` (exclusive file position) or when `max_bytes` is reached, returning at least
/// one batch. Every returned batch has been checked (header, CRC) after reading. In a
/// segment with gaps (`rule`), the first batch may start after `offset`.
pub async fn read_batches(
    file: &SharedSegmentFile,
    mut position: u64,
    end: u64,
    offset: Offset,
    limit_offset: Offset,
    max_bytes: usize,
    rule: OffsetRule,
) -> Result<Bytes, SegmentReadError> {
    let mut out = BytesMut::new();
    // Enough for the skipped prefix (up to one index interval plus a batch) and the answer.
    let mut want = (max_bytes + 2 * INDEX_INTERVAL_BYTES as usize).min(SCAN_CHUNK_BYTES.max(max_bytes));
    while position < end {
        let len = ((end - position) as usize).min(want.max(BATCH_HEADER_BYTES));
        let chunk = file.read_at(position, len).await?;
        crate::metrics::probes().segment_bytes_read.add(chunk.len() as u64);
        let bytes: &[u8] = &chunk;
        let mut at = 0usize;
        while bytes.len() - at >= BATCH_HEADER_BYTES {
            let header = BatchHeader::parse(&bytes[at..])
                .map_err(|e| SegmentReadError::Corrupt { position: position + at as u64, reason: e.to_string() })?;
            if header.base_offset >= limit_offset.value() {
                return Ok(out.freeze());
            }
            let fits = out.is_empty() || out.len() + header.total_bytes <= max_bytes;
            if header.next_offset() > offset.value() && !fits {
                return Ok(out.freeze());
            }
            if position + (at + header.total_bytes) as u64 > end {
                return Err(SegmentReadError::Corrupt {
                    position: position + at as u64,
                    reason: format!("batch of {} bytes runs past the segment end {end}", header.total_bytes),
                });
            }
            if at + header.total_bytes > bytes.len() {
                // Incomplete in this chunk: read again from this batch, at least whole.
                want = want.max(header.total_bytes);
                break;
            }
            if header.next_offset() > offset.value() {
                if out.is_empty() && header.base_offset > offset.value() && rule == OffsetRule::Contiguous {
                    // The index pointed past the batch holding `offset`: never skip records silently.
                    return Err(SegmentReadError::Corrupt {
                        position: position + at as u64,
                        reason: format!("index points at offset {} past the requested {offset}", header.base_offset),
                    });
                }
                let batch = &bytes[at..at + header.total_bytes];
                check_crc(batch, &header)
                    .map_err(|e| SegmentReadError::Corrupt { position: position + at as u64, reason: e.to_string() })?;
                out.extend_from_slice(batch);
                if out.len() >= max_bytes {
                    return Ok(out.freeze());
                }
            }
            at += header.total_bytes;
        }
        if at == 0 && bytes.len() >= BATCH_HEADER_BYTES {
            continue; // re-read with the larger `want`
        }
        if at == 0 {
            return Err(SegmentReadError::Corrupt {
                position,
                reason: format!("{} bytes before the segment end hold no batch header", bytes.len()),
            });
        }
        position += at as u64;
    }
    Ok(out.freeze())
}
