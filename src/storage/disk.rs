//! The storage engine's only door to the disk: segment files, small metadata files
//! replaced atomically, directory listings and syncs. Two disks sit behind it
//! ([`Disk`]):
//! - `Direct`, production: files opened with O_DIRECT through glommio (io_uring);
//! - `Memory`, tests: a [`MemoryDisk`] that can tear writes, fail or delay syncs, fill up
//!   and crash, driven by a seed (see `memory_disk`).
//!
//! Every write and fsync also passes a [`FaultInjector`] first when one is installed:
//! tests install a [`SimulatedDisk`] to make writes, fsyncs or allocations of real files
//! fail (EIO, ENOSPC) and prove that the log poisons itself or fails cleanly.
//!
//! Runs on the shard that owns the log; nothing here is `Send`.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};
use glommio::GlommioError;

use super::batch_cache::{BatchCache, SharedBatchCache, DEFAULT_BATCH_CACHE_BYTES};
use super::clock::{Clock, SystemClock};
use super::config::{SyncMode, BLOCK_BYTES};
use super::memory_disk::{MemoryFile, MemorySession};

/// The disk a log's files live on.
#[derive(Debug, Clone, Default)]
pub enum Disk {
    /// Real files, O_DIRECT, through io_uring.
    #[default]
    Direct,
    /// The simulated disk of tests, as one incarnation of the broker sees it.
    Memory(MemorySession),
}

impl Disk {
    pub fn is_memory(&self) -> bool {
        matches!(self, Disk::Memory(_))
    }
}

/// The operations a simulated disk can intercept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOp {
    Write,
    Sync,
    Allocate,
}

/// Decides whether a disk operation fails. Called before the real operation; an `Err`
/// is returned to the caller as if the kernel had failed it.
pub trait FaultInjector: fmt::Debug {
    fn check(&self, op: DiskOp, path: &Path) -> io::Result<()>;
}

/// A disk whose failures tests switch on and off: EIO on writes or syncs, ENOSPC on
/// writes and allocations. Counts the operations it let through.
#[derive(Debug, Default)]
pub struct SimulatedDisk {
    pub fail_writes: Cell<bool>,
    pub fail_syncs: Cell<bool>,
    pub full: Cell<bool>,
    pub writes: Cell<u64>,
    pub syncs: Cell<u64>,
    pub allocations: Cell<u64>,
}

impl FaultInjector for SimulatedDisk {
    fn check(&self, op: DiskOp, _path: &Path) -> io::Result<()> {
        match op {
            DiskOp::Write if self.fail_writes.get() => Err(io::Error::from_raw_os_error(libc::EIO)),
            DiskOp::Sync if self.fail_syncs.get() => Err(io::Error::from_raw_os_error(libc::EIO)),
            DiskOp::Write | DiskOp::Allocate if self.full.get() => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            DiskOp::Write => {
                self.writes.set(self.writes.get() + 1);
                Ok(())
            }
            DiskOp::Sync => {
                self.syncs.set(self.syncs.get() + 1);
                Ok(())
            }
            DiskOp::Allocate => {
                self.allocations.set(self.allocations.get() + 1);
                Ok(())
            }
        }
    }
}

/// What a log needs from its surroundings: a clock, its shard's batch cache and, in
/// tests, a fault injector.
#[derive(Debug, Clone)]
pub struct StorageEnv {
    pub clock: Rc<dyn Clock>,
    pub faults: Option<Rc<dyn FaultInjector>>,
    pub batch_cache: SharedBatchCache,
    pub disk: Disk,
    /// How durable-policy logs make writes durable.
    pub sync_mode: SyncMode,
    /// Keep a retention-deleted segment's file for the log's next segment (`recycle`).
    pub recycle_segments: bool,
}

impl Default for StorageEnv {
    /// System clock, no faults, a cache of its own with the default budget (tests; a
    /// shard passes the one cache all its logs share).
    fn default() -> Self {
        StorageEnv {
            clock: Rc::new(SystemClock),
            faults: None,
            batch_cache: BatchCache::shared(DEFAULT_BATCH_CACHE_BYTES),
            disk: Disk::Direct,
            sync_mode: SyncMode::default(),
            recycle_segments: true,
        }
    }
}

impl StorageEnv {
    fn check(&self, op: DiskOp, path: &Path) -> io::Result<()> {
        match &self.faults {
            Some(faults) => faults.check(op, path),
            None => Ok(()),
        }
    }
}

/// Keeps the OS error code that glommio's "enhanced" errors would otherwise flatten, so
/// ENOSPC stays recognisable.
pub fn to_io_error<T>(error: GlommioError<T>) -> io::Error {
    match error {
        GlommioError::IoError(source) | GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

thread_local! {
    static TEMP_FILE_COUNTER: Cell<u64> = const { Cell::new(0) };
    /// Devices (st_dev) on which this thread's glommio reactor has probed poll support.
    static PRIMED_DEVICES: std::cell::RefCell<std::collections::HashSet<u64>> = Default::default();
}

/// Makes glommio's io_uring poll-ring probe see real data on `dir`'s device.
///
/// glommio 0.9 decides once per thread and device whether O_DIRECT reads can use the
/// IOPOLL ring, by reading the first DMA file opened there. When that file is empty the
/// read succeeds trivially, the poll ring is chosen, and every later read on a device
/// without polled I/O (virtio, most cloud disks) fails with EOPNOTSUPP. Opening a file
/// with one block of data first makes the probe answer truthfully.
pub async fn prime_direct_io(dir: &Path, env: &StorageEnv) -> io::Result<()> {
    if env.disk.is_memory() {
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(dir)?.dev();
    if PRIMED_DEVICES.with(|primed| primed.borrow().contains(&device)) {
        return Ok(());
    }
    let probe = dir.join(".direct-io-probe");
    std::fs::write(&probe, vec![0u8; BLOCK_BYTES as usize])?;
    let opened = DmaFile::open(&probe).await.map_err(to_io_error);
    if let Ok(file) = opened {
        let _ = file.close().await;
    }
    std::fs::remove_file(&probe)?;
    PRIMED_DEVICES.with(|primed| primed.borrow_mut().insert(device));
    Ok(())
}

/// A block-aligned write buffer: DMA memory for direct files, plain memory for the
/// simulated disk.
#[derive(Debug)]
pub enum IoBuffer {
    Direct(DmaBuffer),
    Heap(Vec<u8>),
}

impl IoBuffer {
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_direct(&self) -> bool {
        matches!(self, IoBuffer::Direct(_))
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            IoBuffer::Direct(buffer) => buffer.as_bytes(),
            IoBuffer::Heap(buffer) => buffer,
        }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match self {
            IoBuffer::Direct(buffer) => buffer.as_bytes_mut(),
            IoBuffer::Heap(buffer) => buffer,
        }
    }
}

/// Bytes read from a segment file.
#[derive(Debug)]
pub enum ReadBytes {
    Direct(ReadResult),
    Heap(Bytes),
}

impl std::ops::Deref for ReadBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ReadBytes::Direct(read) => read,
            ReadBytes::Heap(bytes) => bytes,
        }
    }
}

#[derive(Debug)]
enum FileImpl {
    Direct(DmaFile),
    Memory(MemoryFile),
}

/// A segment file: O_DIRECT on the real disk, or a file of the simulated one.
///
/// A *write-through* file is opened with O_DSYNC as well: a write completes only once
/// its data, and the metadata needed to read it back, are on stable storage. The kernel
/// does the cache flush in the write's own completion (a FUA write where the device
/// has it), so one io_uring operation replaces a write followed by an fdatasync, and no
/// io_uring worker thread is woken for a separate sync (see perf/README.md).
#[derive(Debug)]
pub struct SegmentFile {
    file: FileImpl,
    path: PathBuf,
    env: StorageEnv,
    write_through: bool,
}

/// Opens a segment file for O_DIRECT reads and writes (O_DSYNC too when write-through).
async fn open_direct(path: &Path, create_new: bool, write_through: bool) -> io::Result<DmaFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create_new)
        .custom_flags(if write_through { libc::O_DSYNC } else { 0 })
        .dma_open(path)
        .await
        .map_err(to_io_error)
}

impl SegmentFile {
    /// Creates a new, empty file; fails if it exists. With `write_through`, every write
    /// returns only once its data is on stable storage (O_DSYNC; see [`SegmentFile`]).
    pub async fn create(path: &Path, env: &StorageEnv, write_through: bool) -> io::Result<SegmentFile> {
        let file = match &env.disk {
            Disk::Direct => FileImpl::Direct(open_direct(path, true, write_through).await?),
            Disk::Memory(disk) => FileImpl::Memory(disk.create(path, true)?),
        };
        Ok(SegmentFile { file, path: path.to_path_buf(), env: env.clone(), write_through })
    }

    /// Opens an existing file for reading and writing.
    pub async fn open(path: &Path, env: &StorageEnv, write_through: bool) -> io::Result<SegmentFile> {
        let file = match &env.disk {
            Disk::Direct => FileImpl::Direct(open_direct(path, false, write_through).await?),
            Disk::Memory(disk) => FileImpl::Memory(disk.open(path)?),
        };
        Ok(SegmentFile { file, path: path.to_path_buf(), env: env.clone(), write_through })
    }

    /// Writes return only once durable (opened with O_DSYNC).
    pub fn is_write_through(&self) -> bool {
        self.write_through
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_direct(&self) -> bool {
        matches!(self.file, FileImpl::Direct(_))
    }

    /// An aligned buffer of at least `len` bytes, rounded up to whole blocks.
    pub fn alloc_block_buffer(&self, len: usize) -> IoBuffer {
        let len = align_up(len as u64) as usize;
        match &self.file {
            FileImpl::Direct(file) => IoBuffer::Direct(file.alloc_dma_buffer(len)),
            FileImpl::Memory(_) => IoBuffer::Heap(vec![0; len]),
        }
    }

    /// Writes the whole buffer at `position` (both block aligned). A short write is an
    /// error: the caller treats the file state as unknown.
    pub async fn write_all_at(&self, buffer: IoBuffer, position: u64) -> io::Result<()> {
        self.write_chunk_at(buffer, position).await.map(drop)
    }

    /// Like [`SegmentFile::write_all_at`], handing the buffer back after the write so it
    /// can be reused.
    pub async fn write_chunk_at(&self, buffer: IoBuffer, position: u64) -> io::Result<IoBuffer> {
        debug_assert_eq!(position % BLOCK_BYTES, 0);
        debug_assert_eq!(buffer.len() as u64 % BLOCK_BYTES, 0);
        self.env.check(DiskOp::Write, &self.path)?;
        if self.write_through {
            // The write carries the flush: a failing flush fails the write.
            self.env.check(DiskOp::Sync, &self.path)?;
        }
        let expected = buffer.len();
        match (&self.file, buffer) {
            (FileImpl::Direct(file), IoBuffer::Direct(buffer)) => {
                let shared = Rc::new(buffer);
                let written = file.write_rc_at(shared.clone(), position).await.map_err(to_io_error)?;
                if written != expected {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short direct write: {written} of {expected} bytes at {position}"),
                    ));
                }
                Rc::try_unwrap(shared)
                    .map(IoBuffer::Direct)
                    .map_err(|_| io::Error::other("write buffer still shared after its write completed"))
            }
            (FileImpl::Memory(file), buffer) => {
                file.write_at(position, buffer.as_bytes())?;
                if self.write_through {
                    file.sync_now()?;
                }
                Ok(buffer)
            }
            (FileImpl::Direct(_), IoBuffer::Heap(_)) => {
                Err(io::Error::other("a heap buffer cannot be written to a direct file"))
            }
        }
    }

    /// Reads up to `len` bytes at any position (glommio aligns internally).
    pub async fn read_at(&self, position: u64, len: usize) -> io::Result<ReadBytes> {
        match &self.file {
            FileImpl::Direct(file) => file.read_at(position, len).await.map(ReadBytes::Direct).map_err(to_io_error),
            FileImpl::Memory(file) => file.read_at(position, len).map(ReadBytes::Heap),
        }
    }

    pub async fn sync_data(&self) -> io::Result<()> {
        self.env.check(DiskOp::Sync, &self.path)?;
        match &self.file {
            FileImpl::Direct(file) => file.fdatasync().await.map_err(to_io_error),
            FileImpl::Memory(file) => file.sync_data().await,
        }
    }

    /// Extends the file to `len` bytes with allocated, zero-reading blocks (fallocate).
    pub async fn allocate(&self, len: u64) -> io::Result<()> {
        self.env.check(DiskOp::Allocate, &self.path)?;
        match &self.file {
            FileImpl::Direct(file) => file.pre_allocate(len, false).await.map_err(to_io_error),
            FileImpl::Memory(file) => file.allocate(len),
        }
    }

    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        self.env.check(DiskOp::Write, &self.path)?;
        match &self.file {
            FileImpl::Direct(file) => file.truncate(len).await.map_err(to_io_error),
            FileImpl::Memory(file) => file.truncate(len),
        }
    }

    pub async fn size(&self) -> io::Result<u64> {
        match &self.file {
            FileImpl::Direct(file) => file.file_size().await.map_err(to_io_error),
            FileImpl::Memory(file) => file.size(),
        }
    }

    pub async fn close(self) -> io::Result<()> {
        match self.file {
            FileImpl::Direct(file) => file.close().await.map_err(to_io_error),
            FileImpl::Memory(_) => Ok(()),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file is written and synced, renamed
/// over `path`, and the directory is synced.
pub async fn write_file_atomic(path: &Path, bytes: &[u8], env: &StorageEnv) -> io::Result<()> {
    write_file_replacing(path, bytes, env, true).await
}

/// Like [`write_file_atomic`] without any sync: for *hint* files, whose loss or damage in
/// a power failure only costs time: the clean-shutdown marker and the producer-state
/// snapshot, without which the next open scans the tail. Both carry a CRC-32C and are
/// checked against the segment they describe (size, next offset, last index entry), so
/// a file whose content did not reach the disk, or an older one, is ignored. The kernel
/// writes them back within seconds anyway. A clean shutdown of 5,000 partitions spent
/// most of its time in these files' syncs (2 per file, 4 per partition: 3.3 s).
pub async fn write_hint_file(path: &Path, bytes: &[u8], env: &StorageEnv) -> io::Result<()> {
    write_file_replacing(path, bytes, env, false).await
}

async fn write_file_replacing(path: &Path, bytes: &[u8], env: &StorageEnv, durable: bool) -> io::Result<()> {
    // A unique name per write, so concurrent replacements of related files never share
    // a temporary file. Leftovers end in ".tmp" and are removed when a log is opened.
    let tmp = {
        let n = TEMP_FILE_COUNTER.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        path.with_file_name(format!("{name}.{}-{n}.tmp", std::process::id()))
    };
    if let Disk::Direct = env.disk {
        env.check(DiskOp::Write, &tmp)?;
        env.check(DiskOp::Sync, &tmp)?;
        // One job on the shard's blocking pool for the whole sequence: a clean shutdown
        // writes two small files per partition, and handing each step (create, truncate,
        // rename, directory sync) to the pool separately cost ~0.4 ms of thread handoffs
        // per step (5,000 partitions: 4 s).
        let (tmp, path, bytes) = (tmp.clone(), path.to_path_buf(), bytes.to_vec());
        return glommio::executor()
            .spawn_blocking(move || write_file_atomic_blocking(&tmp, &path, &bytes, durable))
            .await;
    }
    let file = SegmentFile::create(&tmp, env, false).await?;
    let mut buffer = file.alloc_block_buffer(bytes.len().max(1));
    buffer.as_bytes_mut()[..bytes.len()].copy_from_slice(bytes);
    buffer.as_bytes_mut()[bytes.len()..].fill(0);
    file.write_all_at(buffer, 0).await?;
    file.truncate(bytes.len() as u64).await?;
    if durable {
        file.sync_data().await?;
    }
    file.close().await?;
    match &env.disk {
        Disk::Direct => glommio::io::rename(&tmp, path).await.map_err(to_io_error)?,
        Disk::Memory(disk) => disk.rename(&tmp, path)?,
    }
    if !durable {
        return Ok(());
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")), env).await
}

/// `write_file_atomic` on the real disk, as plain blocking calls (buffered writes: the
/// file is small and read back at most once, at the next open).
fn write_file_atomic_blocking(tmp: &Path, path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    use std::io::Write;
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_data()?;
        }
        Ok(())
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(tmp);
        return Err(error);
    }
    std::fs::rename(tmp, path)?;
    if !durable {
        return Ok(());
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a whole small file, or `None` when it does not exist.
pub async fn read_small_file(path: &Path, env: &StorageEnv) -> io::Result<Option<Vec<u8>>> {
    if let Disk::Memory(disk) = &env.disk {
        return match disk.open(path) {
            Ok(file) => Ok(Some(file.read_at(0, usize::MAX)?.to_vec())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        };
    }
    let file = match DmaFile::open(path).await.map_err(to_io_error) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let len = file.file_size().await.map_err(to_io_error)? as usize;
    let data = if len == 0 { Vec::new() } else { file.read_at(0, len).await.map_err(to_io_error)?.to_vec() };
    file.close().await.map_err(to_io_error)?;
    Ok(Some(data))
}

/// fsync on a directory, so created, renamed and removed entries are durable.
pub async fn sync_dir(dir: &Path, env: &StorageEnv) -> io::Result<()> {
    env.check(DiskOp::Sync, dir)?;
    if let Disk::Memory(disk) = &env.disk {
        return disk.sync_dir(dir).await;
    }
    // glommio opens directories with openat(-1, path): a relative path would fail with
    // EBADF, so resolve it against the working directory first.
    let dir = std::path::absolute(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })?;
    let directory = glommio::io::Directory::open(&dir).await.map_err(to_io_error)?;
    directory.sync().await.map_err(to_io_error)?;
    directory.close().await.map_err(to_io_error)
}

/// Renames a file (atomically replacing `to`); durable once the directory is synced.
pub async fn rename_file(from: &Path, to: &Path, env: &StorageEnv) -> io::Result<()> {
    env.check(DiskOp::Write, from)?;
    match &env.disk {
        Disk::Direct => glommio::io::rename(from, to).await.map_err(to_io_error),
        Disk::Memory(disk) => disk.rename(from, to),
    }
}

/// Removes a file; a missing one is not an error.
pub async fn remove_file(path: &Path, env: &StorageEnv) -> io::Result<()> {
    let removed = match &env.disk {
        Disk::Direct => glommio::io::remove(path).await.map_err(to_io_error),
        Disk::Memory(disk) => disk.remove(path),
    };
    match removed {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Creates a directory and its parents (the simulated disk's directories always exist).
pub fn create_dir_all(dir: &Path, env: &StorageEnv) -> io::Result<()> {
    match env.disk {
        Disk::Direct => std::fs::create_dir_all(dir),
        Disk::Memory(_) => Ok(()),
    }
}

/// A file in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub size: u64,
    pub modified_ms: i64,
}

/// The files of `dir`.
pub fn list_dir(dir: &Path, env: &StorageEnv) -> io::Result<Vec<DirEntry>> {
    if let Disk::Memory(disk) = &env.disk {
        return Ok(disk
            .list_dir(dir)?
            .into_iter()
            .map(|(name, size, modified_ms)| DirEntry { name, size, modified_ms })
            .collect());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let metadata = entry.metadata()?;
        let modified_ms = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        out.push(DirEntry { name, size: metadata.len(), modified_ms });
    }
    Ok(out)
}

pub fn align_down(value: u64) -> u64 {
    value & !(BLOCK_BYTES - 1)
}

pub fn align_up(value: u64) -> u64 {
    (value + BLOCK_BYTES - 1) & !(BLOCK_BYTES - 1)
}

/// Shared handle to a segment file: the writer and readers hold it while in use, so a
/// segment deleted by retention stays readable by a fetch already in flight.
pub type SharedSegmentFile = Rc<SegmentFile>;
