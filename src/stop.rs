//! The broker-wide stop request: set by SIGTERM/SIGINT or by a failing shard, and seen by
//! every shard at once without polling.
//!
//! Each shard registers a socket pair and awaits a read on one end; a stop request
//! writes one byte to the other end of every registered pair. `write(2)` is
//! async-signal-safe, so the signal handler does this itself. An idle shard therefore
//! sleeps until there is work or a stop, instead of waking to check a flag.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use futures_lite::AsyncReadExt;

/// More than the shards one broker runs (one per CPU).
const WAKER_SLOTS: usize = 1024;

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
/// Write ends of the shards' stop sockets; -1 marks a free slot.
static WAKERS: [AtomicI32; WAKER_SLOTS] = [const { AtomicI32::new(-1) }; WAKER_SLOTS];

/// Asks every shard to stop. Async-signal-safe: atomics and `write(2)` only.
pub fn request_stop() {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
    for slot in &WAKERS {
        let fd = slot.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: `fd` is a nonblocking socket this module owns until the waiter drops
            // it (it unregisters first); a full buffer means a wake-up is already pending.
            unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
        }
    }
}

pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// SIGTERM and SIGINT request a stop.
pub fn install_signal_handlers() {
    extern "C" fn on_stop_signal(_: libc::c_int) {
        request_stop();
    }
    // SAFETY: the handler only touches atomics and calls write(2), both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop_signal as *const () as libc::sighandler_t);
    }
}

/// One shard's registration; must be created and awaited on the shard's executor.
pub struct StopWaiter {
    reader: glommio::net::UnixStream,
    slot: usize,
}

impl std::fmt::Debug for StopWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopWaiter").field("slot", &self.slot).finish()
    }
}

impl StopWaiter {
    pub fn register() -> io::Result<StopWaiter> {
        let (reader, writer) = std::os::unix::net::UnixStream::pair()?;
        writer.set_nonblocking(true)?;
        reader.set_nonblocking(true)?;
        let writer = writer.into_raw_fd();
        let slot = WAKERS
            .iter()
            .position(|slot| slot.compare_exchange(-1, writer, Ordering::SeqCst, Ordering::SeqCst).is_ok());
        let Some(slot) = slot else {
            // SAFETY: we own `writer` and nobody else saw it.
            unsafe { libc::close(writer) };
            return Err(io::Error::other("too many stop waiters"));
        };
        // SAFETY: `reader` is a connected Unix stream socket we own.
        let reader = unsafe { glommio::net::UnixStream::from_raw_fd(reader.into_raw_fd()) };
        Ok(StopWaiter { reader, slot })
    }

    /// Returns once a stop has been requested (before or after this call).
    pub async fn wait(&mut self) {
        let mut byte = [0u8; 1];
        while !stop_requested() {
            match self.reader.read(&mut byte).await {
                Ok(_) => {}
                // Our own end is never closed while registered; on an error fall back to
                // checking the flag at a slow pace rather than spinning.
                Err(_) => glommio::timer::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for StopWaiter {
    fn drop(&mut self) {
        // Unregister, but leave the write end open: a signal handler that loaded the
        // descriptor just before may still write to it, and a closed number could by then
        // belong to a client's socket. One descriptor per shard, once per process.
        WAKERS[self.slot].store(-1, Ordering::SeqCst);
    }
}
