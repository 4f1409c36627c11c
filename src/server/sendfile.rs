//! Zero-copy transmission of segment file regions to a client socket with sendfile(2):
//! record bytes go from the page cache to the socket inside the kernel, never through
//! user space.
//!
//! How the shard stays responsive (glommio 0.9 exposes neither io_uring splice nor socket
//! readiness; the options and why this one, in `perf/README.md`):
//! - sendfile reads through the page cache and blocks its thread while a cold page comes
//!   from disk, so it runs on the shard's blocking thread pool (`spawn_blocking`, threads
//!   pinned to the shard's CPU), never on the event loop.
//! - The socket is non-blocking (set when the connection starts; glommio's io_uring
//!   sends work the same on it). A job sends until the region is done or the socket
//!   buffer is full; then it waits for POLLOUT at most [`SEND_SLICE`] and returns what
//!   it sent. One slow consumer so holds a pool thread for at most that long at a time,
//!   and pins no memory: the region is a file offset, not a buffer.
//! - The connection's writer awaits each region before its next chunk, so responses stay
//!   in request order whether their bytes are in memory or in files. A client that takes
//!   no bytes for the connection's write timeout is disconnected.
//! - After a region is sent, the job hints the kernel to read the next stretch of the file
//!   (POSIX_FADV_WILLNEED), so a catch-up reader's next fetch overlaps disk and network.
//! - Each job owns a duplicate of the socket descriptor and an `Arc` of the file, so
//!   neither can be closed (and its number reused) while the job runs.
//! - Cold reads are *paced* while the broker is writing (a log of any shard started a
//!   write round within [`PACING_WINDOW`]; any shard, as the disk is shared and the shard
//!   that sends a region is the consumer connection's, not always the partition's):
//!   kernel readahead is off for the file (POSIX_FADV_RANDOM, and the pages ahead of
//!   the job dropped, which ends readahead an earlier unpaced read started:
//!   [`stop_read_ahead_chain`]), a job sends at most [`PACED_JOB_BYTES`], one job of the
//!   shard runs at a time, and no prefetch hint is given. Without this a catch-up reader keeps megabytes of reads
//!   queued at the disk (readahead windows of `read_ahead_kb`, prefetch hints of up to
//!   16 MiB) and every durable produce write waits behind them: produce p99 inside the
//!   broker went from 1 ms to 19-47 ms during a cold catch-up, and to 5-7 ms with pacing,
//!   while the reader's throughput did not drop (perf/README.md). With no produce
//!   traffic, reads run unpaced.
//! - Paced jobs also draw on a per-shard byte budget (`--cold-read-budget-mb`, a token
//!   bucket holding at most one job's bytes): past it, the next job waits. Reads that
//!   follow each other without a gap still slow the disk's durable writes: in-broker
//!   produce p99 during a catch-up was 2.0x alone with no budget, 1.1x at 200 MB/s and
//!   1.05x at the default 50 MB/s (perf/README.md, after the readahead chain was stopped;
//!   before that, 200 MB/s cost 5.5-6.2x).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::byte_bucket::ByteBucket;
use crate::storage::FileRegion;

/// Cold reads are paced while a log of the shard started a write round this recently.
pub const PACING_WINDOW: Duration = Duration::from_millis(200);
/// Most bytes one paced job sends (and so reads from disk in one go, readahead being off).
pub const PACED_JOB_BYTES: usize = 256 << 10;

thread_local! {
    /// One paced job at a time per shard (a shard is one thread).
    static PACED_JOBS: std::rc::Rc<glommio::sync::Semaphore> =
        std::rc::Rc::new(glommio::sync::Semaphore::new(1));
    /// The shard's budget for paced reads (`--cold-read-budget-mb`).
    static PACED_BUDGET: std::cell::RefCell<ReadBudget> = std::cell::RefCell::new(ReadBudget::new(None));
}

/// Sets the calling shard's budget for paced reads, in bytes per second (`None`: no
/// budget). Called once when the shard starts.
pub fn set_cold_read_budget(bytes_per_sec: Option<u64>) {
    PACED_BUDGET.with(|budget| *budget.borrow_mut() = ReadBudget::new(bytes_per_sec.map(|rate| rate as f64)));
}

/// The shard's budget for paced jobs: a token bucket of bytes that holds at most one
/// job's worth, so a reader that was idle gets no burst.
#[derive(Debug)]
struct ReadBudget {
    bytes_per_sec: Option<f64>,
    bucket: ByteBucket,
}

impl ReadBudget {
    fn new(bytes_per_sec: Option<f64>) -> ReadBudget {
        ReadBudget { bytes_per_sec, bucket: ByteBucket::empty(Instant::now()) }
    }

    /// Takes `bytes` and returns how long to wait before reading them (zero without a
    /// budget, or when the bucket had them).
    fn take(&mut self, bytes: usize, now: Instant) -> Duration {
        match self.bytes_per_sec {
            Some(rate) => self.bucket.take(bytes as u64, rate, PACED_JOB_BYTES as f64, now),
            None => Duration::ZERO,
        }
    }
}

/// Pacing is on unless the environment has `TERN_NO_READ_PACING` (a diagnostic switch,
/// for measuring what pacing buys: perf/README.md).
fn pacing_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("TERN_NO_READ_PACING").is_none())
}

/// The longest one job waits for the socket to drain before handing back.
pub const SEND_SLICE: Duration = Duration::from_millis(10);
/// Most bytes one prefetch hint covers.
const PREFETCH_BYTES_MAX: usize = 16 << 20;
/// How far ahead of a paced job cached pages are dropped: past the furthest a readahead
/// window reaches (two windows of twice `read_ahead_kb` under POSIX_FADV_SEQUENTIAL, at
/// the 8 MiB this kind of VM has; more than the usual 128 KiB-4 MiB).
const READ_AHEAD_EVICT_BYTES: usize = 32 << 20;
/// Largest single sendfile(2) call (Linux caps one call at about 2 GiB anyway).
const SENDFILE_CALL_BYTES_MAX: usize = 64 << 20;

/// A connection's socket as seen by sendfile jobs.
#[derive(Debug, Clone)]
pub struct SendSocket(Arc<OwnedFd>);

/// The connection's socket for sendfile jobs, duplicated on first use: a connection that
/// never gets a cold read (producers, tailing consumers, idle clients) holds one
/// descriptor, not two. The socket is made non-blocking when the connection starts, so
/// the descriptor behaves the same before and after the duplicate exists.
#[derive(Debug)]
pub struct LazySendSocket {
    fd: RawFd,
    socket: std::cell::OnceCell<SendSocket>,
}

impl LazySendSocket {
    /// Makes `fd` non-blocking (sendfile jobs must never block a pool thread forever).
    pub fn new(fd: RawFd) -> io::Result<LazySendSocket> {
        set_nonblocking(fd)?;
        Ok(LazySendSocket { fd, socket: std::cell::OnceCell::new() })
    }

    pub fn get(&self) -> io::Result<&SendSocket> {
        if let Some(socket) = self.socket.get() {
            return Ok(socket);
        }
        let socket = SendSocket::new(self.fd)?;
        Ok(self.socket.get_or_init(|| socket))
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor the connection owns for its whole life.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl SendSocket {
    /// Duplicates `fd` and makes the socket non-blocking.
    pub fn new(fd: RawFd) -> io::Result<SendSocket> {
        // SAFETY: fcntl on a descriptor owned by the connection for its whole life.
        let duplicate = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if duplicate < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `duplicate` is a fresh descriptor that nothing else owns.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(duplicate) };
        // SAFETY: plain fcntl calls on a valid descriptor.
        unsafe {
            let flags = libc::fcntl(duplicate, libc::F_GETFL);
            if flags < 0 || libc::fcntl(duplicate, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(SendSocket(Arc::new(owned)))
    }
}

/// Sends `region` completely, or fails (client gone, no progress within `stall_timeout`,
/// or the file is shorter than the region).
pub async fn send_region(socket: &SendSocket, region: &FileRegion, stall_timeout: Duration) -> io::Result<()> {
    let probes = crate::metrics::probes();
    let mut done = 0usize;
    let mut last_progress = Instant::now();
    while done < region.len {
        let (sock, file) = (socket.0.clone(), region.file.clone());
        let position = region.position + done as u64;
        let paced = pacing_enabled() && crate::storage::wrote_within(PACING_WINDOW);
        let left = if paced { (region.len - done).min(PACED_JOB_BYTES) } else { region.len - done };
        let _turn = if paced {
            let gate = PACED_JOBS.with(|gate| gate.clone());
            let permit = gate.acquire_static_permit(1).await.map_err(|_| io::Error::other("pacing gate closed"))?;
            let wait = PACED_BUDGET.with(|budget| budget.borrow_mut().take(left, Instant::now()));
            if !wait.is_zero() {
                probes.cold_read_budget_waits.add(1);
                glommio::timer::sleep(wait).await;
            }
            Some(permit)
        } else {
            None
        };
        let (sent, calls) = glommio::executor()
            .spawn_blocking(move || {
                let advice = if paced { libc::POSIX_FADV_RANDOM } else { libc::POSIX_FADV_NORMAL };
                // SAFETY: advice on an open descriptor; a failure only loses the hint.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, advice) };
                if paced {
                    stop_read_ahead_chain(file.as_raw_fd(), position + left as u64);
                }
                let result = send_slice(sock.as_raw_fd(), file.as_raw_fd(), position, left);
                if !paced && matches!(result, Ok((sent, _)) if sent == left) {
                    // A catch-up reader's next fetch most likely continues here: start
                    // reading it from disk now, while this response travels.
                    prefetch(file.as_raw_fd(), position + left as u64, left);
                }
                result
            })
            .await?;
        probes.sendfile_bytes.add(sent as u64);
        probes.sendfile_calls.add(calls);
        if paced {
            probes.paced_read_bytes.add(sent as u64);
        }
        done += sent;
        if sent > 0 {
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= stall_timeout {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading its fetch response"));
        }
    }
    Ok(())
}

/// Drops cached pages of the file from `from` to [`READ_AHEAD_EVICT_BYTES`] beyond it.
///
/// POSIX_FADV_RANDOM stops the kernel from starting readahead, but not readahead that
/// has already started: each readahead window marks a page, and reading that page starts
/// the next window, whatever the file's advice (`page_cache_async_ra`). One unpaced read
/// of a file (say before producers started) so left a chain of 8 MiB windows (the
/// device's `read_ahead_kb`) behind every paced job, two 4 MiB reads at a time at the
/// disk, and produce writes queued behind them: write p99.9 10-13 ms during a catch-up
/// at 50 MB/s, against 2.5 ms alone (perf/README.md). Dropping what lies ahead of the
/// job removes the marked page before it is read, so the job's own pages are read as
/// it needs them (64 KiB at a time, sendfile's pipe). Pages are dropped whole folios at
/// a time (up to 2 MiB): the folio holding `from` stays. The price: pages another reader
/// brought in (a second consumer just behind this one, or a replay of data read
/// recently) are read from disk again, within the same budget.
fn stop_read_ahead_chain(file: RawFd, from: u64) {
    // SAFETY: advice on an open descriptor; clean pages only (segments are written with
    // O_DIRECT), and a failure only leaves the readahead running.
    unsafe {
        libc::posix_fadvise(file, from as libc::off_t, READ_AHEAD_EVICT_BYTES as libc::off_t, libc::POSIX_FADV_DONTNEED)
    };
}

/// Asks the kernel to start reading `len` bytes at `position` into the page cache
/// (asynchronous readahead; returns without waiting for the disk).
fn prefetch(file: RawFd, position: u64, len: usize) {
    let len = len.min(PREFETCH_BYTES_MAX);
    // SAFETY: advice on an open descriptor; failures only lose the hint.
    unsafe { libc::posix_fadvise(file, position as libc::off_t, len as libc::off_t, libc::POSIX_FADV_WILLNEED) };
}

/// One pool job: sendfile until `len` bytes are sent, or the socket stays full for
/// [`SEND_SLICE`]. Returns the bytes sent and the sendfile calls made.
fn send_slice(socket: RawFd, file: RawFd, position: u64, len: usize) -> io::Result<(usize, u64)> {
    let started = Instant::now();
    let mut offset = position as libc::off_t;
    let mut sent = 0usize;
    let mut calls = 0u64;
    while sent < len {
        let want = (len - sent).min(SENDFILE_CALL_BYTES_MAX);
        // SAFETY: both descriptors are kept open by the caller for the whole call.
        let n = unsafe { libc::sendfile(socket, file, &mut offset, want) };
        calls += 1;
        if n > 0 {
            sent += n as usize;
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment file is shorter than the region to send",
            ));
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let waited = started.elapsed();
                if waited >= SEND_SLICE {
                    break;
                }
                let mut poll = libc::pollfd { fd: socket, events: libc::POLLOUT, revents: 0 };
                let timeout_ms = (SEND_SLICE - waited).as_millis().max(1) as libc::c_int;
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut poll, 1, timeout_ms) };
            }
            _ => return Err(error),
        }
    }
    Ok((sent, calls))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of the file's first `pages` pages are in the page cache.
    fn resident_pages(file: &std::fs::File, pages: usize) -> Vec<bool> {
        let len = pages * 4096;
        // SAFETY: a read-only shared mapping of `len` bytes of a file that long, unmapped
        // before returning; mincore writes one byte per page into a vector that size.
        unsafe {
            let map = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
            assert_ne!(map, libc::MAP_FAILED);
            let mut resident = vec![0u8; pages];
            assert_eq!(libc::mincore(map, len, resident.as_mut_ptr()), 0);
            libc::munmap(map, len);
            resident.iter().map(|&page| page & 1 == 1).collect()
        }
    }

    #[test]
    fn stopping_the_read_ahead_chain_drops_what_lies_ahead_only() {
        use std::io::{Read, Write};
        // Pages are cached in folios of up to 2 MiB, and a folio is dropped whole or not
        // at all: the job ends on a 2 MiB boundary here.
        const PAGES: usize = 2048;
        const JOB_END_PAGE: usize = 512;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment.log");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&vec![7u8; PAGES * 4096]).unwrap();
        file.sync_all().unwrap(); // clean pages: DONTNEED drops only those
        let mut file = std::fs::File::open(&path).unwrap();
        let mut all = Vec::new();
        file.read_to_end(&mut all).unwrap();
        if !resident_pages(&file, PAGES).iter().all(|&page| page) {
            eprintln!("skipped: this file system does not keep the file's pages cached");
            return;
        }
        stop_read_ahead_chain(file.as_raw_fd(), (JOB_END_PAGE * 4096) as u64);
        let after = resident_pages(&file, PAGES);
        if after.iter().all(|&page| page) {
            eprintln!("skipped: this file system ignores POSIX_FADV_DONTNEED (tmpfs)");
            return;
        }
        assert!(after[..JOB_END_PAGE].iter().all(|&page| page), "pages before the job's end stay cached");
        let kept: Vec<usize> = (JOB_END_PAGE..PAGES).filter(|&i| after[i]).collect();
        assert!(kept.is_empty(), "pages ahead of the job are dropped; kept {kept:?}");
    }

    #[test]
    fn budget_without_a_rate_never_waits() {
        let mut budget = ReadBudget::new(None);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(budget.take(PACED_JOB_BYTES, now), Duration::ZERO);
        }
    }

    #[test]
    fn budget_spaces_jobs_at_its_rate() {
        // 100 MB/s: one 256 KiB job every 2.62 ms.
        let rate = 100e6;
        let mut budget = ReadBudget::new(Some(rate));
        let start = Instant::now();
        let job = PACED_JOB_BYTES as f64 / rate;
        let first = budget.take(PACED_JOB_BYTES, start);
        assert!((first.as_secs_f64() - job).abs() < 1e-6, "an empty bucket waits one job's time: {first:?}");
        // A job started right after waits for its own bytes too: the debt adds up.
        let second = budget.take(PACED_JOB_BYTES, start);
        assert!((second.as_secs_f64() - 2.0 * job).abs() < 1e-6, "{second:?}");
        // Once the waits have passed, the bucket is even again, and the next job waits one job's time.
        let later = start + Duration::from_secs_f64(2.0 * job);
        let third = budget.take(PACED_JOB_BYTES, later);
        assert!((third.as_secs_f64() - job).abs() < 1e-6, "{third:?}");
    }

    #[test]
    fn an_idle_budget_allows_at_most_one_job_at_once() {
        let mut budget = ReadBudget::new(Some(100e6));
        let start = Instant::now();
        let _ = budget.take(PACED_JOB_BYTES, start);
        // A minute idle: the bucket holds one job's bytes, not a minute's.
        let later = start + Duration::from_secs(60);
        assert_eq!(budget.take(PACED_JOB_BYTES, later), Duration::ZERO);
        assert!(budget.take(PACED_JOB_BYTES, later) > Duration::ZERO);
    }

    #[test]
    fn budget_holds_the_rate_over_many_jobs() {
        // Jobs that each start when their wait ends read at the budget's rate.
        let rate = 200e6;
        let mut budget = ReadBudget::new(Some(rate));
        let start = Instant::now();
        let mut now = start;
        let jobs = 1000;
        for _ in 0..jobs {
            now += budget.take(PACED_JOB_BYTES, now);
        }
        let achieved = (jobs * PACED_JOB_BYTES) as f64 / (now - start).as_secs_f64();
        assert!((achieved - rate).abs() / rate < 0.01, "read at {achieved} B/s against {rate}");
    }
}
