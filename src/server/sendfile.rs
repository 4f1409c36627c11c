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
//! - Cold reads are *paced* while the shard is writing (a log of it started a write round
//!   within [`PACING_WINDOW`]): kernel readahead is off for the file (POSIX_FADV_RANDOM),
//!   a job sends at most [`PACED_JOB_BYTES`], one job of the shard runs at a time, and no
//!   prefetch hint is given. Without this a catch-up reader keeps megabytes of reads
//!   queued at the disk (readahead windows of `read_ahead_kb`, prefetch hints of up to
//!   16 MiB) and every durable produce write waits behind them: produce p99 inside the
//!   broker went from 1 ms to 19-47 ms during a cold catch-up, and to 5-7 ms with pacing,
//!   while the reader's throughput did not drop (perf/README.md). With no produce
//!   traffic, reads run unpaced.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::FileRegion;

/// Cold reads are paced while a log of the shard started a write round this recently.
pub const PACING_WINDOW: Duration = Duration::from_millis(200);
/// Most bytes one paced job sends (and so reads from disk in one go, readahead being off).
pub const PACED_JOB_BYTES: usize = 256 << 10;

thread_local! {
    /// One paced job at a time per shard (a shard is one thread).
    static PACED_JOBS: std::rc::Rc<glommio::sync::Semaphore> =
        std::rc::Rc::new(glommio::sync::Semaphore::new(1));
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
            Some(gate.acquire_static_permit(1).await.map_err(|_| io::Error::other("pacing gate closed"))?)
        } else {
            None
        };
        let (sent, calls) = glommio::executor()
            .spawn_blocking(move || {
                let advice = if paced { libc::POSIX_FADV_RANDOM } else { libc::POSIX_FADV_NORMAL };
                // SAFETY: advice on an open descriptor; a failure only loses the hint.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, advice) };
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
        done += sent;
        if sent > 0 {
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= stall_timeout {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading its fetch response"));
        }
    }
    Ok(())
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
