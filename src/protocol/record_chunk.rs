//! What a read hands to the network: record bytes in memory (the batch cache) or a region
//! of a segment file that the connection sends with sendfile(2), so cold reads never
//! copy record bytes through user space.
//!
//! Page cache coherence: segments are written with O_DIRECT, and regions are sent from a
//! second, buffered descriptor of the same file. Linux invalidates the page cache over
//! the range of every O_DIRECT write after it completes, so a buffered read after the
//! write sees the new bytes. Regions only ever cover bytes below the log's high
//! watermark, whose writes have completed; the writer's rewrite of the partial last
//! block carries those same bytes again, so a page cached in between holds the same
//! content for every byte a region can cover.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

/// A byte range of a segment file (whole record batches).
#[derive(Debug, Clone)]
pub struct FileRegion {
    /// Buffered (not O_DIRECT) descriptor of the segment; `Arc` so a send running on the
    /// blocking pool keeps it open even if retention deletes the segment meanwhile.
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

impl FileRegion {
    /// Reads the region into memory (tests and tools; the fetch path never does this).
    pub fn read_to_bytes(&self) -> io::Result<Bytes> {
        let mut out = vec![0u8; self.len];
        self.file.read_exact_at(&mut out, self.position)?;
        Ok(Bytes::from(out))
    }
}

/// Part of a response body: bytes in memory, or a file region to send without copying.
#[derive(Debug, Clone)]
pub enum RecordChunk {
    Memory(Bytes),
    File(FileRegion),
}

impl RecordChunk {
    pub fn len(&self) -> usize {
        match self {
            RecordChunk::Memory(bytes) => bytes.len(),
            RecordChunk::File(region) => region.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunk's bytes, reading a file region if needed (tests and tools).
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        match self {
            RecordChunk::Memory(bytes) => Ok(bytes.clone()),
            RecordChunk::File(region) => region.read_to_bytes(),
        }
    }
}

impl From<Bytes> for RecordChunk {
    fn from(bytes: Bytes) -> RecordChunk {
        RecordChunk::Memory(bytes)
    }
}

/// Opens the buffered descriptor regions are sent from, and tells the kernel reads will
/// be sequential (a larger readahead window for catch-up reads).
pub fn open_for_send(path: &std::path::Path) -> io::Result<Arc<File>> {
    use std::os::fd::AsRawFd;
    let file = File::open(path)?;
    // SAFETY: plain syscall on a descriptor we own; advice failures are harmless.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    Ok(Arc::new(file))
}
