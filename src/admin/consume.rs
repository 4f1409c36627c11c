//! `tern consume`: print a topic's records, like kafka-console-consumer or kcat -C. It
//! reads every partition (or `--partition`) from `--from beginning | end | offset:N |
//! timestamp:MS`, or, with `--group`, from the group's committed offsets (falling back
//! to `--from`), committing what it printed when it stops. It stops after
//! `--max-records`, at the end of every partition with `--exit-at-end`, or on Ctrl-C.
//! This is a plain assigned consumer that commits for the group; it does not join the
//! group (no rebalancing with other members).

use std::collections::BTreeMap;
use std::io::Write;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::records::Record;

use super::{run_with_client, ConnectArgs};
use crate::client::records::decode_records;
use crate::client::requests::{fetch_request, offset_commit_request, FetchLimits};
use crate::client::{error_name, Client, ClientError, PartitionLeader};

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
    /// Start from this group's committed offsets and commit what was printed on exit.
    #[arg(long)]
    pub group: Option<String>,
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

enum Start {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
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

pub fn run(args: ConsumeArgs) -> Result<(), String> {
    let start = parse_from(&args.from)?;
    let connect = args.connect.clone();
    run_with_client(&connect, move |client| async move {
        let mut partitions = client.partitions(&args.topic).await?.ok_or_else(|| {
            ClientError::Usage(format!("topic {} does not exist: `tern topic list` shows the topics", args.topic))
        })?;
        if let Some(only) = args.partition {
            partitions.retain(|p| p.partition == only);
            if partitions.is_empty() {
                return Err(ClientError::Usage(format!("topic {} has no partition {only}", args.topic)));
            }
        }
        let mut positions = start_positions(&client, &args.topic, &partitions, &start).await?;
        if let Some(group) = &args.group {
            for ((topic, partition), offset) in super::group::committed_offsets(&client, group).await? {
                if topic == args.topic && positions.contains_key(&partition) {
                    positions.insert(partition, offset);
                }
            }
        }
        let ends = client.list_offsets(&args.topic, &partitions, -1).await?;
        let printed = consume(&client, &args, &partitions, &mut positions, &ends).await?;
        if let Some(group) = &args.group {
            commit(&client, group, &args.topic, &positions).await?;
        }
        eprintln!("consumed {printed} records from {}", args.topic);
        Ok(())
    })
}

async fn start_positions(
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

async fn consume(
    client: &Client,
    args: &ConsumeArgs,
    partitions: &[PartitionLeader],
    positions: &mut BTreeMap<i32, i64>,
    ends: &std::collections::HashMap<i32, i64>,
) -> Result<u64, ClientError> {
    let version = client.version_for::<FetchRequest>()?;
    let limits = FetchLimits { max_wait_ms: 500, max_bytes: 16 << 20, partition_max_bytes: 1 << 20 };
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.exit_at_end && partitions.iter().all(|p| positions[&p.partition] >= ends[&p.partition]) {
            return Ok(printed);
        }
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for p in partitions {
            by_leader.entry(p.leader).or_default().push((p.partition, positions[&p.partition]));
        }
        for (leader, wanted) in by_leader {
            let connection = client.shared_connection(&client.broker_address(leader)?).await?;
            let response = connection.call(version, &fetch_request(&args.topic, &wanted, limits)).await?;
            for data in response.responses.iter().flat_map(|t| t.partitions.iter()) {
                if data.error_code != 0 {
                    return Err(ClientError::Usage(format!(
                        "reading {}-{} failed: {}",
                        args.topic,
                        data.partition_index,
                        error_name(data.error_code)
                    )));
                }
                let Some(records) = &data.records else { continue };
                let position = positions.get_mut(&data.partition_index).expect("a requested partition");
                let mut out = stdout.lock();
                for record in decode_records(records)? {
                    if record.offset < *position {
                        continue;
                    }
                    *position = record.offset + 1;
                    let _ = writeln!(out, "{}", render(args, data.partition_index, &record));
                    printed += 1;
                    if args.max_records.is_some_and(|max| printed >= max) {
                        return Ok(printed);
                    }
                }
            }
        }
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

async fn commit(client: &Client, group: &str, topic: &str, positions: &BTreeMap<i32, i64>) -> Result<(), ClientError> {
    let request = offset_commit_request(group, topic, positions.iter().map(|(&p, &o)| (p, o)));
    let response = client.call_coordinator(group, &request).await?;
    for p in response.topics.iter().flat_map(|t| t.partitions.iter()) {
        if p.error_code != 0 {
            return Err(ClientError::broker(format!("committing offsets of group {group}"), p.error_code, None));
        }
    }
    Ok(())
}
