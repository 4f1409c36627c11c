//! Rate-limited warnings: one line per interval for a kind of event that can repeat
//! thousands of times a second (a full disk failing every append, a storm of bad
//! connections), with the count of those held back. The events themselves are counted
//! in /metrics; the log keeps a sample.

use std::time::{Duration, Instant};

/// Lets one warning through per interval and counts the ones it held back.
#[derive(Debug)]
pub struct WarningLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl WarningLimiter {
    pub fn new(interval: Duration) -> WarningLimiter {
        WarningLimiter { interval, last: None, suppressed: 0 }
    }

    /// `Some(held back since the last one)` when a warning may be logged at `now`.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_limiter_lets_one_through_per_interval_and_counts_the_rest() {
        let start = Instant::now();
        let mut limiter = WarningLimiter::new(Duration::from_secs(10));
        assert_eq!(limiter.admit(start), Some(0));
        for n in 1..=1000u64 {
            assert_eq!(limiter.admit(start + Duration::from_millis(n)), None);
        }
        assert_eq!(limiter.admit(start + Duration::from_secs(10)), Some(1000));
        assert_eq!(limiter.admit(start + Duration::from_secs(11)), None);
        assert_eq!(limiter.admit(start + Duration::from_secs(25)), Some(1));
    }
}
