//! Aligned write buffers for the group-commit writer.
//!
//! A round's bytes (the partial last block already on disk, then the new batches) are
//! copied into block-aligned DMA buffers of at most [`WRITE_CHUNK_BYTES`] each, which the
//! writer submits to io_uring together. Full-size chunks come from a per-shard pool and go
//! back to it after the write, so the hot path neither allocates nor page-faults fresh
//! memory for every round.

use std::cell::RefCell;

use super::disk::{align_down, align_up, IoBuffer, SegmentFile};
use bytes::Bytes;

/// Size of one pooled write buffer and the largest single DMA write.
pub const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// Idle chunks kept per shard.
const POOLED_CHUNKS_MAX: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<IoBuffer>> = const { RefCell::new(Vec::new()) };
}

/// Block-aligned buffers covering `[start, start + padded length)` of a segment file.
#[derive(Debug)]
pub struct ChunkedWrite {
    pub chunks: Vec<(u64, IoBuffer)>,
    /// The bytes of the new partial last block (rewritten by the next round).
    pub new_tail: Vec<u8>,
}

/// Lays out `tail_block ++ batches` starting at the block-aligned `start`.
pub fn build(file: &SegmentFile, start: u64, tail_block: &[u8], batches: &[Bytes]) -> ChunkedWrite {
    debug_assert_eq!(start, align_down(start));
    let logical: usize = tail_block.len() + batches.iter().map(Bytes::len).sum::<usize>();
    let padded = align_up(logical as u64) as usize;
    let mut chunks = Vec::with_capacity(padded.div_ceil(WRITE_CHUNK_BYTES));
    let mut sources = std::iter::once(tail_block).chain(batches.iter().map(|b| &b[..]));
    let mut source: &[u8] = &[];
    let mut chunk_start = 0usize;
    while chunk_start < padded {
        let len = WRITE_CHUNK_BYTES.min(padded - chunk_start);
        let mut buffer = take_buffer(file, len);
        let out = buffer.as_bytes_mut();
        let mut filled = 0usize;
        while filled < len {
            if source.is_empty() {
                match sources.next() {
                    Some(next) => {
                        source = next;
                        continue;
                    }
                    None => {
                        out[filled..].fill(0);
                        break;
                    }
                }
            }
            let n = source.len().min(len - filled);
            out[filled..filled + n].copy_from_slice(&source[..n]);
            source = &source[n..];
            filled += n;
        }
        chunks.push((start + chunk_start as u64, buffer));
        chunk_start += len;
    }
    let tail_from = align_down(logical as u64) as usize;
    let mut new_tail = Vec::with_capacity(logical - tail_from);
    if logical > tail_from {
        let (position, last) = chunks.last().expect("a partial block means at least one chunk");
        let offset_in_chunk = (start + tail_from as u64 - position) as usize;
        new_tail.extend_from_slice(&last.as_bytes()[offset_in_chunk..offset_in_chunk + (logical - tail_from)]);
    }
    ChunkedWrite { chunks, new_tail }
}

fn take_buffer(file: &SegmentFile, len: usize) -> IoBuffer {
    if len == WRITE_CHUNK_BYTES && file.is_direct() {
        if let Some(buffer) = POOL.with(|pool| pool.borrow_mut().pop()) {
            return buffer;
        }
    }
    file.alloc_block_buffer(len)
}

/// Returns a full-size chunk to the pool once its write has completed.
pub fn recycle(buffer: IoBuffer) {
    if buffer.len() == WRITE_CHUNK_BYTES && buffer.is_direct() {
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOLED_CHUNKS_MAX {
                pool.push(buffer);
            }
        });
    }
}
