//! The cleaner's file I/O: reading every batch of a closed segment in order (CRC
//! checked, so corrupt data is never copied into a cleaned segment), and writing a
//! cleaned segment with O_DIRECT in block-aligned chunks while building its index.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::protocol::record_batch::{check_crc, BatchHeader, BATCH_HEADER_BYTES};

use super::super::config::{BLOCK_BYTES, SCAN_CHUNK_BYTES};
use super::super::disk::{align_down, align_up, SegmentFile, SharedSegmentFile, StorageEnv};
use super::super::index::SegmentIndex;
use super::super::offset::Offset;
use super::throttle::IoThrottle;

/// Reads whole batches of one segment file from its start to `end`.
#[derive(Debug)]
pub struct BatchReader {
    file: SharedSegmentFile,
    end: u64,
    /// File position of `chunk[0]`.
    chunk_start: u64,
    chunk: Bytes,
    at: usize,
}

impl BatchReader {
    pub fn new(file: SharedSegmentFile, end: u64) -> BatchReader {
        BatchReader { file, end, chunk_start: 0, chunk: Bytes::new(), at: 0 }
    }

    /// The next batch and its header; `None` at the end. A batch that fails its checks
    /// is an error: the cleaner never rewrites what it cannot read.
    pub async fn next(&mut self, throttle: &IoThrottle) -> io::Result<Option<(BatchHeader, Bytes)>> {
        let position = self.chunk_start + self.at as u64;
        if position >= self.end {
            return Ok(None);
        }
        let mut need = BATCH_HEADER_BYTES;
        loop {
            let available = &self.chunk[self.at..];
            if available.len() >= need {
                let header = BatchHeader::parse(available).map_err(|e| corrupt(&self.file, position, e))?;
                if header.total_bytes <= available.len() {
                    let batch = self.chunk.slice(self.at..self.at + header.total_bytes);
                    check_crc(&batch, &header).map_err(|e| corrupt(&self.file, position, e))?;
                    self.at += header.total_bytes;
                    return Ok(Some((header, batch)));
                }
                need = header.total_bytes;
            }
            if position + need as u64 > self.end {
                return Err(corrupt(&self.file, position, "batch runs past the end of the segment"));
            }
            // Keep the bytes already read of this batch and read only what follows them.
            let kept = &self.chunk[self.at..];
            let from = position + kept.len() as u64;
            let len = ((self.end - from) as usize).min(SCAN_CHUNK_BYTES.max(need - kept.len()));
            let read = self.file.read_at(from, len).await?;
            throttle.read(read.len() as u64).await;
            let mut chunk = Vec::with_capacity(kept.len() + read.len());
            chunk.extend_from_slice(kept);
            chunk.extend_from_slice(&read);
            self.chunk = Bytes::from(chunk);
            self.chunk_start = position;
            self.at = 0;
            if self.chunk.len() < need {
                return Err(corrupt(&self.file, position, "short read inside the segment"));
            }
        }
    }
}

fn corrupt(file: &SegmentFile, position: u64, reason: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} is corrupt at position {position}: {reason}", file.path().display()),
    )
}

/// Bytes staged before a direct write of the cleaned segment.
const WRITE_CHUNK_BYTES: usize = 256 << 10;

/// A cleaned segment being written: `<base>.log.cleaned`, batches back to back.
#[derive(Debug)]
pub struct CleanedSegmentWriter {
    file: SegmentFile,
    base: Offset,
    /// Bytes not yet written; starts at file position `flushed`.
    staged: Vec<u8>,
    flushed: u64,
    size: u64,
    index: SegmentIndex,
}

impl CleanedSegmentWriter {
    pub async fn create(
        path: &Path,
        base: Offset,
        index_interval_bytes: u64,
        env: &StorageEnv,
    ) -> io::Result<CleanedSegmentWriter> {
        let file = SegmentFile::create(path, env, false).await?;
        let mut index = SegmentIndex::new();
        index.set_interval_bytes(index_interval_bytes);
        Ok(CleanedSegmentWriter {
            file,
            base,
            staged: Vec::with_capacity(WRITE_CHUNK_BYTES + BLOCK_BYTES as usize),
            flushed: 0,
            size: 0,
            index,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn append(&mut self, header: &BatchHeader, batch: &[u8], throttle: &IoThrottle) -> io::Result<()> {
        let relative = u32::try_from(header.base_offset - self.base.value())
            .map_err(|_| io::Error::other("batch offset outside the cleaned segment's range"))?;
        let position = u32::try_from(self.size).map_err(|_| io::Error::other("cleaned segment too large"))?;
        self.index.on_batch(relative, position, batch.len() as u32, header.max_timestamp);
        self.staged.extend_from_slice(batch);
        self.size += batch.len() as u64;
        if self.staged.len() >= WRITE_CHUNK_BYTES {
            let whole = align_down(self.staged.len() as u64) as usize;
            self.write_staged(whole, throttle).await?;
        }
        Ok(())
    }

    /// Writes the first `len` staged bytes (a whole number of blocks, padded with zeros
    /// past the data at the end) and keeps the rest staged.
    async fn write_staged(&mut self, len: usize, throttle: &IoThrottle) -> io::Result<()> {
        let mut buffer = self.file.alloc_block_buffer(len);
        let data = len.min(self.staged.len());
        buffer.as_bytes_mut()[..data].copy_from_slice(&self.staged[..data]);
        buffer.as_bytes_mut()[data..].fill(0);
        self.file.write_all_at(buffer, self.flushed).await?;
        throttle.wrote(len as u64).await;
        self.staged.drain(..data);
        self.flushed += len as u64;
        Ok(())
    }

    /// Writes the rest, cuts the file to its exact size and makes it durable. Returns
    /// the file's path, its size and its sealed index.
    pub async fn finish(mut self, throttle: &IoThrottle) -> io::Result<(PathBuf, u64, SegmentIndex)> {
        if !self.staged.is_empty() {
            let len = align_up(self.staged.len() as u64) as usize;
            self.write_staged(len, throttle).await?;
        }
        self.file.truncate(self.size).await?;
        self.file.sync_data().await?;
        let path = self.file.path().to_path_buf();
        self.file.close().await?;
        self.index.seal();
        Ok((path, self.size, self.index))
    }

    /// Gives up: the partial file is closed (the caller removes it).
    pub async fn abandon(self) -> PathBuf {
        let path = self.file.path().to_path_buf();
        let _ = self.file.close().await;
        path
    }
}
