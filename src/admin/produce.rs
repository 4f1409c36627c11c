//! `tern produce`: one record per line of stdin, like kafka-console-producer. With
//! `--key-separator` the text before the first separator is the key. Keyed records go to
//! the partition Java clients would pick (murmur2 of the key), unkeyed ones rotate over
//! the partitions; `--partition` pins them all. Lines are sent in batches of up to
//! `--batch-records` per partition, and the command fails on the first broker error.

use std::collections::BTreeMap;
use std::io::BufRead;

use bytes::Bytes;
use clap::Args;
use indexmap::IndexMap;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, TimestampType};

use super::{parse_key_value, run_with_client, ConnectArgs};
use crate::client::records::{encode_batch, parse_compression};
use crate::client::requests::produce_request;
use crate::client::{error_name, Client, ClientError, PartitionLeader};

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic to produce to (it must exist, or the broker must auto-create it).
    #[arg(long)]
    pub topic: String,
    /// Split each line at the first occurrence of this into key and value.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// A header `key=value` added to every record (repeatable).
    #[arg(long = "header", value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Send every record to this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// all, 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Records per partition per request.
    #[arg(long, default_value_t = 500)]
    pub batch_records: usize,
}

pub fn run(args: ProduceArgs) -> Result<(), String> {
    let acks: i16 = match args.acks.as_str() {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => return Err(format!("--acks {other:?}: use all, 1 or 0")),
    };
    let connect = args.connect.clone();
    run_with_client(&connect, move |client| async move {
        let partitions = leaders(&client, &args.topic).await?;
        if let Some(p) = args.partition {
            if !partitions.iter().any(|l| l.partition == p) {
                return Err(ClientError::Usage(format!("topic {} has no partition {p}", args.topic)));
            }
        }
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        let mut produced = 0u64;
        let mut rotate = 0usize;
        loop {
            // Up to batch_records lines per round (so a pipe of millions streams through).
            let mut pending: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
            let mut taken = 0;
            for line in lines.by_ref() {
                let line = line.map_err(|e| ClientError::Usage(format!("cannot read stdin: {e}")))?;
                let (key, value) = match &args.key_separator {
                    Some(sep) => match line.split_once(sep.as_str()) {
                        Some((k, v)) => (Some(k.to_string()), v.to_string()),
                        None => (None, line),
                    },
                    None => (None, line),
                };
                let partition = match (args.partition, &key) {
                    (Some(p), _) => p,
                    (None, Some(k)) => partitions[murmur2_partition(k.as_bytes(), partitions.len())].partition,
                    (None, None) => {
                        rotate += 1;
                        partitions[rotate % partitions.len()].partition
                    }
                };
                pending.entry(partition).or_default().push(record(key, value, &args.headers));
                taken += 1;
                if taken >= args.batch_records {
                    break;
                }
            }
            if taken == 0 {
                break;
            }
            produced += send(&client, &args.topic, acks, args.compression, &partitions, pending).await?;
        }
        eprintln!("produced {produced} records to {}", args.topic);
        Ok(())
    })
}

fn record(key: Option<String>, value: String, headers: &[(String, String)]) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        key: key.map(Bytes::from),
        value: Some(Bytes::from(value)),
        headers: headers
            .iter()
            .map(|(k, v)| (StrBytes::from_string(k.clone()), Some(Bytes::from(v.clone()))))
            .collect::<IndexMap<_, _>>(),
    }
}

async fn leaders(client: &Client, topic: &str) -> Result<Vec<PartitionLeader>, ClientError> {
    client
        .partitions(topic)
        .await?
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ClientError::Usage(format!("topic {topic} does not exist: create it with `tern topic create`")))
}

/// Sends one batch per partition, grouped by leader; returns the records acknowledged.
async fn send(
    client: &Client,
    topic: &str,
    acks: i16,
    codec: Compression,
    partitions: &[PartitionLeader],
    pending: BTreeMap<i32, Vec<Record>>,
) -> Result<u64, ClientError> {
    let version = client.version_for::<ProduceRequest>()?;
    let mut by_leader: BTreeMap<i32, Vec<(i32, Bytes)>> = BTreeMap::new();
    let mut count = 0;
    for (partition, records) in pending {
        count += records.len() as u64;
        let leader = partitions.iter().find(|p| p.partition == partition).map_or(-1, |p| p.leader);
        by_leader.entry(leader).or_default().push((partition, encode_batch(records, codec)?));
    }
    for (leader, batches) in by_leader {
        let connection = client.shared_connection(&client.broker_address(leader)?).await?;
        let request = produce_request(topic, acks, 30_000, batches);
        if acks == 0 {
            connection.send_without_response(version, &request).await?;
            continue;
        }
        let response = connection.call(version, &request).await?;
        for partition in response.responses.iter().flat_map(|t| t.partition_responses.iter()) {
            if partition.error_code != 0 {
                return Err(ClientError::Usage(format!(
                    "producing to {topic}-{} failed: {}{}",
                    partition.index,
                    error_name(partition.error_code),
                    partition.error_message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
                )));
            }
        }
    }
    Ok(count)
}

/// Kafka's default partitioner for keyed records (Java `Utils.murmur2`, seed 0x9747b28c),
/// so `tern produce` places keys where Java producers do.
pub fn murmur2_partition(key: &[u8], partitions: usize) -> usize {
    (murmur2(key) & 0x7fff_ffff) as usize % partitions.max(1)
}

fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_reference_values() {
        // From Kafka's UtilsTest.testMurmur2 (signed Java ints).
        let cases: [(&[u8], i32); 4] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"abc", 479470107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key) as i32, expected, "{:?}", std::str::from_utf8(key));
        }
    }
}
