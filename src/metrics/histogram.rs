//! A Prometheus-style histogram with fixed buckets, updated with relaxed atomics by one
//! shard thread and read by the scrape thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (10 µs to 10 s).
pub const BUCKETS_SECONDS: [f64; 19] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket counts (not cumulative); the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS_SECONDS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// A consistent-enough copy for rendering (cumulative bucket counts).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let slot = BUCKETS_SECONDS.iter().position(|&bound| seconds <= bound).unwrap_or(BUCKETS_SECONDS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl HistogramSnapshot {
    pub fn add(&mut self, other: &HistogramSnapshot) {
        if self.cumulative.is_empty() {
            *self = other.clone();
            return;
        }
        for (mine, theirs) in self.cumulative.iter_mut().zip(&other.cumulative) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_sums_add_up() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(5));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(30));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], 1, "5 µs is in the first bucket (10 µs)");
        assert_eq!(s.cumulative[7], 1, "3 ms is above 2.5 ms");
        assert_eq!(s.cumulative[8], 2, "3 ms is at or below 5 ms");
        assert_eq!(*s.cumulative.last().unwrap(), 3, "+Inf holds everything");
        assert!((s.sum_seconds - 30.003005).abs() < 1e-6);
    }
}
