//! What `tern bench` prints and writes: one line per interval (rates and latency
//! percentiles of that interval), a live progress line on a terminal, and the final
//! summary in kafka-producer-perf-test's shape (records, records/s, MB/s, avg, max, p50,
//! p95, p99, p99.9) plus, for e2e, produce-to-consume percentiles up to p99.99. The JSON
//! file holds the summary and the per-interval timeline.
//!
//! MB is 10^6 bytes. Produce MB/s counts record payload (keys + values), as Kafka's tool
//! does; consume MB/s counts record batch bytes received.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::stats::{Probe, ProduceSplit, Stream};

/// Latency percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub p9999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Option<Percentiles> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        Some(Percentiles {
            avg_ms: histogram.mean() / 1_000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p95_ms: ms(histogram.value_at_quantile(0.95)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            p9999_ms: ms(histogram.value_at_quantile(0.9999)),
            max_ms: ms(histogram.max()),
        })
    }
}

/// Rates and latencies of one stream over a span of time.
#[derive(Debug, Clone, Serialize)]
pub struct StreamSummary {
    pub records: u64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency: Option<Percentiles>,
}

impl StreamSummary {
    pub fn of(stream: &Stream, seconds: f64) -> StreamSummary {
        let seconds = seconds.max(1e-9);
        StreamSummary {
            records: stream.records,
            records_per_sec: stream.records as f64 / seconds,
            mb_per_sec: stream.bytes as f64 / seconds / 1e6,
            latency: Percentiles::of(&stream.latency_us),
        }
    }
}

/// Where produce requests spent their time, seen from the client (per request): the
/// part of a record's latency that is the load tool's own (`send_wait`: schedule, linger,
/// waiting for a request slot) and the part that is the network and broker (`round_trip`).
#[derive(Debug, Clone, Serialize)]
pub struct ProduceRequestSummary {
    pub send_wait: Percentiles,
    pub round_trip: Percentiles,
}

impl ProduceRequestSummary {
    pub fn of(split: &ProduceSplit) -> Option<ProduceRequestSummary> {
        Some(ProduceRequestSummary {
            send_wait: Percentiles::of(&split.send_wait_us)?,
            round_trip: Percentiles::of(&split.round_trip_us)?,
        })
    }
}

/// Which part of the run an interval belongs to. Only `Measured` intervals count in the
/// summary: the window is fixed (warmup end to stop), so answers to requests still in
/// flight at the stop land in `Drain` and are left out, as those at the start are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Warmup,
    Measured,
    Drain,
}

/// One interval of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalReport {
    /// Seconds since the start of the run (end of the interval).
    pub at_sec: f64,
    pub phase: Phase,
    pub produce: Option<StreamSummary>,
    pub consume: Option<StreamSummary>,
    pub e2e: Option<Percentiles>,
    pub errors: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mode: String,
    pub settings: BTreeMap<String, String>,
    pub measured_sec: f64,
    pub produce: Option<StreamSummary>,
    pub consume: Option<StreamSummary>,
    pub e2e: Option<Percentiles>,
    /// Per produce request: the wait before it was sent, and its round trip.
    pub produce_requests: Option<ProduceRequestSummary>,
    pub errors: BTreeMap<String, u64>,
    pub failures: Vec<String>,
    /// Transactions committed in the measured part (`--transactional`).
    pub transactions: u64,
    pub timeline: Vec<IntervalReport>,
}

#[derive(Debug)]
pub struct Streams {
    pub produce: bool,
    pub consume: bool,
    pub e2e: bool,
}

pub fn interval_report(at: Duration, span: Duration, phase: Phase, probe: &Probe, streams: &Streams) -> IntervalReport {
    let seconds = span.as_secs_f64();
    IntervalReport {
        at_sec: at.as_secs_f64(),
        phase,
        produce: streams.produce.then(|| StreamSummary::of(&probe.produce, seconds)),
        consume: streams.consume.then(|| StreamSummary::of(&probe.consume, seconds)),
        e2e: if streams.e2e { Percentiles::of(&probe.e2e.latency_us) } else { None },
        errors: probe.error_count(),
    }
}

/// `  3.0s  produce 4,812,345 rec/s 481.2 MB/s p50 1.23 p99 2.34 p99.9 3.10 max 5.20 ms ...`
pub fn interval_line(report: &IntervalReport) -> String {
    let phase = match report.phase {
        Phase::Warmup => " (warmup)",
        Phase::Measured => "",
        Phase::Drain => " (drain)",
    };
    let mut line = format!("{:>6.1}s{phase}", report.at_sec);
    if let Some(produce) = &report.produce {
        line.push_str(&format!(
            "  produce {:>11} rec/s {:>8.1} MB/s",
            thousands(produce.records_per_sec),
            produce.mb_per_sec
        ));
        if let Some(latency) = &produce.latency {
            line.push_str(&format!(
                "  p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms",
                latency.p50_ms, latency.p99_ms, latency.p999_ms, latency.max_ms
            ));
        }
    }
    if let Some(consume) = &report.consume {
        line.push_str(&format!(
            "  consume {:>11} rec/s {:>8.1} MB/s",
            thousands(consume.records_per_sec),
            consume.mb_per_sec
        ));
    }
    if let Some(e2e) = &report.e2e {
        line.push_str(&format!("  e2e p50 {:.2} p99 {:.2} p99.9 {:.2} ms", e2e.p50_ms, e2e.p99_ms, e2e.p999_ms));
    }
    if report.errors > 0 {
        line.push_str(&format!("  errors {}", report.errors));
    }
    line
}

/// The final block, kafka-producer-perf-test style.
pub fn summary_text(summary: &Summary) -> String {
    let mut out = String::new();
    if let Some(produce) = &summary.produce {
        out.push_str(&format!(
            "produce: {} records sent, {:.1} records/sec ({:.2} MB/sec)",
            produce.records, produce.records_per_sec, produce.mb_per_sec
        ));
        if let Some(l) = &produce.latency {
            out.push_str(&format!(
                ", {:.3} ms avg latency, {:.3} ms max latency, {:.3} ms 50th, {:.3} ms 95th, {:.3} ms 99th, {:.3} ms 99.9th.",
                l.avg_ms, l.max_ms, l.p50_ms, l.p95_ms, l.p99_ms, l.p999_ms
            ));
        }
        out.push('\n');
    }
    if let Some(consume) = &summary.consume {
        out.push_str(&format!(
            "consume: {} records received, {:.1} records/sec ({:.2} MB/sec of record batches)\n",
            consume.records, consume.records_per_sec, consume.mb_per_sec
        ));
    }
    if let Some(l) = &summary.e2e {
        out.push_str(&format!(
            "end-to-end latency: {:.3} ms avg, {:.3} ms 50th, {:.3} ms 95th, {:.3} ms 99th, {:.3} ms 99.9th, {:.3} ms 99.99th, {:.3} ms max\n",
            l.avg_ms, l.p50_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.p9999_ms, l.max_ms
        ));
    }
    if let Some(requests) = &summary.produce_requests {
        let (w, r) = (&requests.send_wait, &requests.round_trip);
        out.push_str(&format!(
            "produce requests: round trip {:.3} ms 50th, {:.3} ms 99th, {:.3} ms 99.9th; wait before sending {:.3} ms 50th, {:.3} ms 99th, {:.3} ms 99.9th\n",
            r.p50_ms, r.p99_ms, r.p999_ms, w.p50_ms, w.p99_ms, w.p999_ms
        ));
    }
    if summary.transactions > 0 {
        out.push_str(&format!(
            "transactions: {} committed, {:.1} per sec\n",
            summary.transactions,
            summary.transactions as f64 / summary.measured_sec.max(f64::EPSILON)
        ));
    }
    out.push_str(&format!("measured over {:.2} s", summary.measured_sec));
    if summary.errors.is_empty() {
        out.push_str(", no errors\n");
    } else {
        let list: Vec<String> = summary.errors.iter().map(|(name, n)| format!("{name}: {n}")).collect();
        out.push_str(&format!(", ERRORS: {}\n", list.join(", ")));
    }
    for failure in &summary.failures {
        out.push_str(&format!("failed: {failure}\n"));
    }
    out
}

/// Prints interval lines; on a terminal also keeps a live progress line under them.
#[derive(Debug)]
pub struct Printer {
    tty: bool,
    live_shown: bool,
}

impl Printer {
    pub fn new() -> Printer {
        use std::io::IsTerminal;
        Printer { tty: std::io::stdout().is_terminal(), live_shown: false }
    }

    pub fn line(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.live_shown {
            let _ = write!(out, "\r\x1b[2K");
            self.live_shown = false;
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// A transient status (only on a terminal).
    pub fn live(&mut self, text: &str) {
        if !self.tty {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{text}");
        let _ = out.flush();
        self.live_shown = true;
    }
}

impl Default for Printer {
    fn default() -> Printer {
        Printer::new()
    }
}

/// 4812345.2 -> "4,812,345"
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(thousands(4_812_345.2), "4,812,345");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }

    #[test]
    fn summary_has_the_perf_test_fields() {
        let mut stream = Stream { records: 1000, bytes: 100_000, ..Stream::default() };
        stream.record_latency(2_000_000, 1000);
        let mut split = ProduceSplit::default();
        split.record(1_000_000, 1_500_000, 3_500_000);
        let summary = Summary {
            mode: "produce".into(),
            settings: BTreeMap::new(),
            measured_sec: 1.0,
            produce: Some(StreamSummary::of(&stream, 1.0)),
            consume: None,
            e2e: None,
            produce_requests: ProduceRequestSummary::of(&split),
            errors: BTreeMap::from([("NOT_LEADER_OR_FOLLOWER".to_string(), 2)]),
            failures: vec![],
            transactions: 0,
            timeline: vec![],
        };
        let text = summary_text(&summary);
        assert!(text.contains("1000 records sent, 1000.0 records/sec (0.10 MB/sec)"), "{text}");
        assert!(text.contains("ms 99.9th"), "{text}");
        assert!(text.contains("ERRORS: NOT_LEADER_OR_FOLLOWER: 2"), "{text}");
        assert!(text.contains("round trip 2.000 ms 50th"), "{text}");
        assert!(text.contains("wait before sending 0.500 ms 50th"), "{text}");
    }
}
