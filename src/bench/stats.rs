//! Measurements of the load tool. Each executor owns one [`Probe`] behind a mutex (taken
//! once per request or fetch, so uncontended); the reporter on the main thread drains the
//! probes every interval into [`Totals`]. Latencies are kept in microseconds in HDR
//! histograms (1 µs to 10 min, 3 significant digits).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Nanoseconds since the process's bench clock started (monotonic, shared by all
/// executors, so a producer's stamp can be compared with a consumer's clock).
pub fn now_ns() -> u64 {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    ANCHOR.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Nanoseconds as the microseconds a histogram of [`new_histogram`] takes (within its bounds).
fn histogram_micros(ns: u64) -> u64 {
    (ns / 1_000).clamp(1, 600_000_000)
}

/// Counters and histograms of one stream (produce, consume or e2e) over some interval.
#[derive(Debug, Clone)]
pub struct Stream {
    pub records: u64,
    /// Produce: record payload bytes (keys + values), as kafka-producer-perf-test counts.
    /// Consume: record batch bytes received.
    pub bytes: u64,
    pub latency_us: Histogram<u64>,
}

impl Default for Stream {
    fn default() -> Stream {
        Stream { records: 0, bytes: 0, latency_us: new_histogram() }
    }
}

impl Stream {
    pub fn add(&mut self, other: &Stream) {
        self.records += other.records;
        self.bytes += other.bytes;
        self.latency_us.add(&other.latency_us).expect("histograms with equal bounds");
    }

    /// Records `count` latencies of `latency_ns` each.
    pub fn record_latency(&mut self, latency_ns: u64, count: u64) {
        self.latency_us.saturating_record_n(histogram_micros(latency_ns), count);
    }
}

/// Where a produce request's time went, from the client's side (microseconds).
#[derive(Debug, Clone)]
pub struct ProduceSplit {
    pub send_wait_us: Histogram<u64>,
    pub round_trip_us: Histogram<u64>,
}

impl Default for ProduceSplit {
    fn default() -> ProduceSplit {
        ProduceSplit { send_wait_us: new_histogram(), round_trip_us: new_histogram() }
    }
}

impl ProduceSplit {
    pub fn add(&mut self, other: &ProduceSplit) {
        self.send_wait_us.add(&other.send_wait_us).expect("histograms with equal bounds");
        self.round_trip_us.add(&other.round_trip_us).expect("histograms with equal bounds");
    }

    /// One request: due at `due_ns`, sent at `sent_ns`, answered at `done_ns`.
    pub fn record(&mut self, due_ns: u64, sent_ns: u64, done_ns: u64) {
        self.send_wait_us.saturating_record(histogram_micros(sent_ns.saturating_sub(due_ns)));
        self.round_trip_us.saturating_record(histogram_micros(done_ns.saturating_sub(sent_ns)));
    }
}

/// What the workers of one executor measured since the last drain.
#[derive(Debug, Default, Clone)]
pub struct Probe {
    pub produce: Stream,
    pub consume: Stream,
    pub e2e: Stream,
    /// Produce requests, split: how long after its first record was due each request was
    /// sent (the load tool's own wait: schedule, linger, a free request slot), and its
    /// round trip (sent to answered). Per request, not per record.
    pub produce_split: ProduceSplit,
    /// Error name -> records affected (produce) or responses (consume).
    pub errors: BTreeMap<String, u64>,
    /// Fatal worker failures (connection lost and the like), shown at the end.
    pub failures: Vec<String>,
    /// Transactions committed (`--transactional`).
    pub transactions: u64,
}

impl Probe {
    pub fn add(&mut self, other: &Probe) {
        self.produce.add(&other.produce);
        self.consume.add(&other.consume);
        self.e2e.add(&other.e2e);
        self.produce_split.add(&other.produce_split);
        for (name, count) in &other.errors {
            *self.errors.entry(name.clone()).or_default() += count;
        }
        self.failures.extend(other.failures.iter().cloned());
        self.transactions += other.transactions;
    }

    pub fn count_error(&mut self, name: &str, count: u64) {
        *self.errors.entry(name.to_string()).or_default() += count;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

pub type SharedProbe = Arc<Mutex<Probe>>;

/// Takes what a probe has gathered and leaves it empty.
pub fn drain(probe: &SharedProbe) -> Probe {
    std::mem::take(&mut *probe.lock().expect("probe lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_resets_and_adding_sums() {
        let probe: SharedProbe = Arc::default();
        {
            let mut p = probe.lock().unwrap();
            p.produce.records = 10;
            p.produce.record_latency(2_500_000, 10);
            p.count_error("NOT_LEADER_OR_FOLLOWER", 3);
        }
        let first = drain(&probe);
        assert_eq!(first.produce.records, 10);
        assert_eq!(first.produce.latency_us.len(), 10);
        assert_eq!(drain(&probe).produce.records, 0);
        let mut total = Probe::default();
        total.add(&first);
        total.add(&first);
        assert_eq!(total.produce.records, 20);
        assert_eq!(total.errors["NOT_LEADER_OR_FOLLOWER"], 6);
        let p50 = total.produce.latency_us.value_at_quantile(0.5);
        assert!((2_490..=2_510).contains(&p50), "{p50}");
    }
}
