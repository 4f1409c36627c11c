//! The cleaner's I/O budget: bytes read plus bytes written per second
//! (`--log-cleaner-io-max-bytes-per-second`, Kafka's log.cleaner.io.max.bytes.per.second).
//! After each read or write the cleaner sleeps until its average rate since the start of
//! the pass is back under the budget, so produce and fetch I/O keep the disk.

use std::cell::Cell;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct IoThrottle {
    /// 0: no limit.
    bytes_per_second: u64,
    started: Instant,
    read: Cell<u64>,
    written: Cell<u64>,
}

impl IoThrottle {
    pub fn new(bytes_per_second: u64) -> IoThrottle {
        IoThrottle { bytes_per_second, started: Instant::now(), read: Cell::new(0), written: Cell::new(0) }
    }

    pub fn bytes_read(&self) -> u64 {
        self.read.get()
    }

    pub fn bytes_written(&self) -> u64 {
        self.written.get()
    }

    /// Counts `bytes` read and waits while the pass is ahead of its budget.
    pub async fn read(&self, bytes: u64) {
        self.read.set(self.read.get() + bytes);
        self.pace().await
    }

    /// Counts `bytes` written and waits while the pass is ahead of its budget.
    pub async fn wrote(&self, bytes: u64) {
        self.written.set(self.written.get() + bytes);
        self.pace().await
    }

    async fn pace(&self) {
        if self.bytes_per_second == 0 {
            glommio::yield_if_needed().await;
            return;
        }
        let spent = self.read.get() + self.written.get();
        let due = Duration::from_secs_f64(spent as f64 / self.bytes_per_second as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            glommio::timer::sleep(due - elapsed).await;
        } else {
            glommio::yield_if_needed().await;
        }
    }
}
