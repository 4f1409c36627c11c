//! `tern consume`: print a topic's records, like kafka-console-consumer or kcat -C. Without
//! `--group` it reads every partition (or `--partition`) from `--from beginning | end |
//! offset:N | timestamp:MS`. With `--group` it is a full group member
//! ([`super::consume_group`]): it reads the partitions the group assigns it, from the
//! group's committed offsets (falling back to `--from`), and commits what it printed.
//! It stops after `--max-records`, at the end of its partitions with `--exit-at-end`, on
//! a closed stdout, or on Ctrl-C / SIGTERM (a second one exits at once).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use kafka_protocol::records::Record;

use super::partition_reader::PartitionReader;
use super::{run_with_client, ConnectArgs};
use crate::client::{Client, ClientError, PartitionLeader};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The value, one per line (with --print-key: key, separator, value).
    Text,
    /// One JSON object per line: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long)]
    pub topic: String,
    /// Only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// beginning, end, offset:N or timestamp:MS (epoch milliseconds).
    #[arg(long, default_value = "beginning")]
    pub from: String,
    /// Join this consumer group: read the partitions it assigns, from its committed
    /// offsets, and commit what was printed (every --commit-interval-ms and on exit).
    #[arg(long)]
    pub group: Option<String>,
    /// With --group: the coordinator drops this member after this long without a heartbeat.
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: i32,
    /// With --group: how often printed positions are committed while running.
    #[arg(long, default_value_t = 5_000)]
    pub commit_interval_ms: u64,
    /// Stop after this many records.
    #[arg(long)]
    pub max_records: Option<u64>,
    /// Stop once every partition is read to its end.
    #[arg(long)]
    pub exit_at_end: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Text format: print the key before the value.
    #[arg(long)]
    pub print_key: bool,
    /// Text format: between key and value.
    #[arg(long, default_value = "\t")]
    pub key_separator: String,
}

#[derive(Debug)]
pub enum Start {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

impl Start {
    /// Where a position that is out of range (deleted by retention) restarts, as a
    /// ListOffsets timestamp: the latest offset for `--from end`, else the earliest.
    pub fn reset_to(&self) -> i64 {
        match self {
            Start::Latest => -1,
            _ => -2,
        }
    }
}

fn parse_from(text: &str) -> Result<Start, String> {
    match text {
        "beginning" | "earliest" => Ok(Start::Earliest),
        "end" | "latest" => Ok(Start::Latest),
        other => match other.split_once(':') {
            Some(("offset", n)) => n.parse().map(Start::Offset).map_err(|_| format!("bad offset in --from {other:?}")),
            Some(("timestamp", n)) => {
                n.parse().map(Start::Timestamp).map_err(|_| format!("bad timestamp in --from {other:?}"))
            }
            _ => Err(format!("--from {other:?}: use beginning, end, offset:N or timestamp:MS")),
        },
    }
}

/// Set by SIGINT/SIGTERM; the consume loops check it between fetches.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    if STOP_REQUESTED.swap(true, Ordering::SeqCst) {
        // The second Ctrl-C: do not wait for a commit or a rebalance.
        unsafe { libc::_exit(130) };
    }
}

pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

pub fn run(args: ConsumeArgs) -> Result<(), String> {
    let start = parse_from(&args.from)?;
    if args.group.is_some() && args.partition.is_some() {
        return Err("--partition and --group exclude each other: the group assigns the partitions".into());
    }
    // SAFETY: the handler only touches an atomic (and _exit, which is async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_stop_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop_signal as *const () as libc::sighandler_t);
    }
    let connect = args.connect.clone();
    run_with_client(&connect, move |client| async move {
        let mut out = Output::new(&args);
        if let Some(group) = args.group.clone() {
            super::consume_group::consume(&client, &args, &group, &start, &mut out).await?;
        } else {
            consume_partitions(&client, &args, &start, &mut out).await?;
        }
        eprintln!("consumed {} records from {}", out.printed, args.topic);
        Ok(())
    })
}

/// Reads every partition of the topic (or `--partition`) without a group.
async fn consume_partitions(
    client: &Client,
    args: &ConsumeArgs,
    start: &Start,
    out: &mut Output<'_>,
) -> Result<(), ClientError> {
    let mut partitions = client.partitions(&args.topic).await?.ok_or_else(|| missing_topic(&args.topic))?;
    if let Some(only) = args.partition {
        partitions.retain(|p| p.partition == only);
        if partitions.is_empty() {
            return Err(ClientError::Usage(format!("topic {} has no partition {only}", args.topic)));
        }
    }
    let positions = start_positions(client, &args.topic, &partitions, start).await?;
    let ends = client.list_offsets(&args.topic, &partitions, -1).await?;
    let mut reader = PartitionReader::new(&args.topic, partitions, positions, start.reset_to());
    while !stop_requested() && !out.done() {
        if args.exit_at_end && reader.at_end(&ends) {
            break;
        }
        reader.poll(client, out).await?;
    }
    Ok(())
}

pub fn missing_topic(topic: &str) -> ClientError {
    ClientError::Usage(format!("topic {topic} does not exist: `tern topic list` shows the topics"))
}

pub async fn start_positions(
    client: &Client,
    topic: &str,
    partitions: &[PartitionLeader],
    start: &Start,
) -> Result<BTreeMap<i32, i64>, ClientError> {
    let timestamp = match start {
        Start::Earliest => -2,
        Start::Latest => -1,
        Start::Offset(n) => return Ok(partitions.iter().map(|p| (p.partition, *n)).collect()),
        Start::Timestamp(ms) => *ms,
    };
    let mut offsets = client.list_offsets(topic, partitions, timestamp).await?;
    if matches!(start, Start::Timestamp(_)) {
        // No record at or after the time: start at the end.
        let ends = client.list_offsets(topic, partitions, -1).await?;
        for (partition, offset) in offsets.iter_mut() {
            if *offset < 0 {
                *offset = ends[partition];
            }
        }
    }
    Ok(offsets.into_iter().collect())
}

/// Where records go: stdout in the chosen format, counted against `--max-records`.
#[derive(Debug)]
pub struct Output<'a> {
    args: &'a ConsumeArgs,
    pub printed: u64,
    closed: bool,
}

impl<'a> Output<'a> {
    fn new(args: &'a ConsumeArgs) -> Output<'a> {
        Output { args, printed: 0, closed: false }
    }

    /// True once `--max-records` were printed or stdout closed.
    pub fn done(&self) -> bool {
        self.closed || self.args.max_records.is_some_and(|max| self.printed >= max)
    }

    /// Prints one record; false if stdout is closed (e.g. `| head`): then the consumer
    /// stops and commits only what was printed.
    pub fn print(&mut self, out: &mut impl Write, partition: i32, record: &Record) -> bool {
        if writeln!(out, "{}", render(self.args, partition, record)).and_then(|()| out.flush()).is_err() {
            self.closed = true;
            return false;
        }
        self.printed += 1;
        true
    }
}

fn text(bytes: &Option<Bytes>) -> String {
    bytes.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
}

fn render(args: &ConsumeArgs, partition: i32, record: &Record) -> String {
    match args.format {
        Format::Text if args.print_key => format!("{}{}{}", text(&record.key), args.key_separator, text(&record.value)),
        Format::Text => text(&record.value),
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = record
                .headers
                .iter()
                .map(|(k, v)| {
                    (k.to_string(), v.as_ref().map_or(serde_json::Value::Null, |v| String::from_utf8_lossy(v).into()))
                })
                .collect();
            serde_json::json!({
                "topic": args.topic,
                "partition": partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "key": record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                "value": record.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
                "headers": headers,
            })
            .to_string()
        }
    }
}
