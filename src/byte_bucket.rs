//! A token bucket over bytes: the rate limiter for reads that must not crowd out other
//! work. Replica catch-up (`shard::catch_up`, `--replica-catch-up-bytes-per-sec`) and cold
//! reads while the broker writes (`server::sendfile`, `--cold-read-budget-mb`) both draw on
//! one.

use std::time::{Duration, Instant};

/// Bytes that may be sent now, refilled at a rate up to a burst. A take larger than what
/// is there drives it negative: the taker waits for the debt, and the next one behind it.
#[derive(Debug)]
pub struct ByteBucket {
    available: f64,
    updated: Instant,
}

impl ByteBucket {
    /// An empty bucket: the first take waits for its bytes.
    pub fn empty(now: Instant) -> ByteBucket {
        ByteBucket { available: 0.0, updated: now }
    }

    /// A bucket holding `bytes` already.
    pub fn holding(bytes: f64, now: Instant) -> ByteBucket {
        ByteBucket { available: bytes, updated: now }
    }

    /// Takes `bytes`, the bucket refilled at `rate` bytes per second since the last take
    /// and holding at most `burst`, and says how long to wait before sending them.
    pub fn take(&mut self, bytes: u64, rate: f64, burst: f64, now: Instant) -> Duration {
        let rate = rate.max(1.0);
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.available = (self.available + elapsed * rate).min(burst);
        self.updated = now;
        self.available -= bytes as f64;
        if self.available >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.available / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_bucket_waits_for_the_bytes_and_debts_add_up() {
        let start = Instant::now();
        let mut bucket = ByteBucket::empty(start);
        assert_eq!(bucket.take(1000, 1000.0, 1000.0, start), Duration::from_secs(1));
        assert_eq!(bucket.take(1000, 1000.0, 1000.0, start), Duration::from_secs(2));
        // Once the waits have passed the bucket is even again.
        let later = start + Duration::from_secs(2);
        assert_eq!(bucket.take(500, 1000.0, 1000.0, later), Duration::from_millis(500));
    }

    #[test]
    fn the_burst_caps_what_idle_time_saves() {
        let start = Instant::now();
        let mut bucket = ByteBucket::holding(1000.0, start);
        assert_eq!(bucket.take(500, 1000.0, 1000.0, start), Duration::ZERO);
        let much_later = start + Duration::from_secs(60);
        assert_eq!(bucket.take(1000, 1000.0, 1000.0, much_later), Duration::ZERO);
        assert!(bucket.take(1, 1000.0, 1000.0, much_later) > Duration::ZERO);
    }
}
