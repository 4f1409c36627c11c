//! `tern bench` flags. The same flags drive `produce`, `consume` and `e2e`; each mode
//! uses the ones that apply to it.

use std::time::Duration;

use clap::{Args, ValueEnum};
use kafka_protocol::records::Compression;

use crate::client::records::parse_compression;
use crate::config::{parse_cpu_list, parse_duration, parse_size};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Producers only: throughput and produce latency (send to acknowledgement).
    Produce,
    /// Consumers only, from --from: throughput (catch-up reads when the data is old).
    Consume,
    /// Producers and tailing consumers: produce latency and produce-to-consume latency.
    E2e,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartFrom {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Bootstrap brokers, comma-separated host:port (any Kafka-compatible broker).
    #[arg(long, default_value = "127.0.0.1:9092", value_delimiter = ',')]
    pub brokers: Vec<String>,
    /// Topic to load.
    #[arg(long, default_value = "tern-bench")]
    pub topic: String,
    /// Partitions to create the topic with if it does not exist yet.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Replication factor for a created topic (-1: the broker's default).
    #[arg(long, default_value_t = -1)]
    pub replication_factor: i16,
    /// Producer workers, each with its own connection per leader broker.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer workers (consume and e2e), each reading its share of the partitions.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Value bytes per record.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Key bytes per record (0: no key).
    #[arg(long, default_value_t = 0)]
    pub key_size: usize,
    /// Target record batch size per partition (Kafka's batch.size).
    #[arg(long, default_value = "16K", value_parser = parse_size)]
    pub batch_bytes: u64,
    /// With --rate: wait this long for a batch to fill before sending it (linger.ms).
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// Acknowledgements: all (-1), 1 or 0.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Fixed total produce rate in records/s (0: as fast as possible). Latency is taken
    /// from each record's scheduled send time, so a stalled broker shows up in it
    /// (no coordinated omission).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Produce requests in flight per connection (max.in.flight.requests.per.connection).
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Produce as an idempotent producer (a producer id, sequence numbers per partition).
    #[arg(long)]
    pub idempotent: bool,
    /// Produce in transactions of this many batches each (a transactional producer per
    /// producer lane: AddPartitionsToTxn, the batches, EndTxn commit).
    #[arg(long, value_name = "BATCHES")]
    pub transactional: Option<usize>,
    /// Largest produce request (max.request.size); one batch per partition up to this.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub max_request_bytes: u64,
    /// How long to measure (after --warmup), e.g. 30s, 2m. Default 10s unless --records.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many records (produced, or consumed in consume mode).
    #[arg(long)]
    pub records: Option<u64>,
    /// Load that runs before measuring starts and is left out of the summary.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Where consumers start.
    #[arg(long, value_enum, default_value_t = StartFrom::Earliest)]
    pub from: StartFrom,
    /// Consume: stop once every partition is read up to its end as of the start.
    #[arg(long)]
    pub to_end: bool,
    /// Fetch max_bytes per request.
    #[arg(long, default_value = "50M", value_parser = parse_size)]
    pub fetch_max_bytes: u64,
    /// Fetch partition_max_bytes (max.partition.fetch.bytes).
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    pub partition_fetch_bytes: u64,
    /// Fetch max_wait_ms (fetch.max.wait.ms).
    #[arg(long, default_value_t = 500)]
    pub fetch_max_wait_ms: i32,
    /// A request without an answer after this long counts as an error (REQUEST_TIMED_OUT).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// CPUs to run the load on, one glommio executor each (pinned), e.g. `1` or `2-3`.
    /// Default: one unpinned executor.
    #[arg(long, value_parser = parse_cpus)]
    pub cores: Option<CpuList>,
    /// io_uring buffer memory per load executor (counts against ulimit -l).
    #[arg(long, default_value = "512K", value_parser = parse_size)]
    pub memory: u64,
    /// Seconds between report lines.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub report_interval: Duration,
    /// Write the results (summary and per-interval timeline) to this JSON file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// A parsed `--cores` list (a newtype so clap treats it as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

fn parse_cpus(text: &str) -> Result<CpuList, String> {
    parse_cpu_list(text).map(CpuList)
}

fn parse_acks(text: &str) -> Result<i16, String> {
    match text {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        other => Err(format!("--acks {other:?}: use all, 1 or 0")),
    }
}

impl BenchArgs {
    /// Checks combinations clap cannot.
    pub fn validate(&self, mode: Mode) -> Result<(), String> {
        if self.partitions < 1 {
            return Err("--partitions must be at least 1".into());
        }
        if mode != Mode::Consume && self.producers == 0 {
            return Err("--producers must be at least 1".into());
        }
        if mode != Mode::Produce && self.consumers == 0 {
            return Err("--consumers must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return Err("--max-in-flight must be at least 1".into());
        }
        if self.batch_bytes < 128 || self.batch_bytes > self.max_request_bytes {
            return Err("--batch-bytes must be at least 128 and at most --max-request-bytes".into());
        }
        if mode == Mode::E2e && self.record_size < crate::bench::payload::STAMP_BYTES {
            return Err("e2e needs --record-size of at least 8 (each value carries its send time)".into());
        }
        if mode == Mode::E2e && self.acks == 0 {
            return Err("e2e needs --acks 1 or all".into());
        }
        if self.transactional == Some(0) {
            return Err("--transactional needs at least 1 batch per transaction".into());
        }
        if (self.idempotent || self.transactional.is_some()) && self.acks != -1 {
            return Err("--idempotent and --transactional need --acks all".into());
        }
        if self.report_interval.is_zero() {
            return Err("--report-interval must be positive".into());
        }
        Ok(())
    }

    /// How long the measured part runs, if bounded by time.
    pub fn measured_duration(&self) -> Option<Duration> {
        match (self.duration, self.records, self.to_end) {
            (Some(duration), _, _) => Some(duration),
            (None, None, false) => Some(Duration::from_secs(10)),
            _ => None,
        }
    }
}
