//! A consumer worker: reads its share of the partitions with Fetch, one request in flight
//! per leader (as Kafka consumers do), without a consumer group (no rebalances in the
//! measurement). Counts records and record batch bytes; in e2e mode it also decodes the
//! values and records produce-to-consume latency from the stamp each value carries.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::context::{within, SharedContext};
use super::options::StartFrom;
use super::payload::read_stamp;
use super::stats::{now_ns, Probe};
use crate::client::records::{decode_records, whole_batches_len};
use crate::client::requests::{fetch_request, FetchLimits};
use crate::client::{error_name, ClientError, Connection, PartitionLeader};
use crate::protocol::record_batch::{records, BatchHeader};

const OFFSET_OUT_OF_RANGE: i16 = 1;

#[derive(Debug, Clone)]
pub struct ConsumerPlan {
    pub id: usize,
    pub partitions: Vec<PartitionLeader>,
    /// Measure produce-to-consume latency.
    pub e2e: bool,
}

pub async fn run_consumer(ctx: SharedContext, plan: ConsumerPlan) {
    if let Err(error) = consume_loop(&ctx, &plan).await {
        let message = format!("consumer {}: {error}", plan.id);
        ctx.probe.lock().expect("probe lock").failures.push(message);
    }
}

async fn consume_loop(ctx: &SharedContext, plan: &ConsumerPlan) -> Result<(), ClientError> {
    let args = &ctx.args;
    let topic = args.topic.as_str();
    let start = match args.from {
        StartFrom::Earliest => -2,
        StartFrom::Latest => -1,
    };
    let mut positions = ctx.client.list_offsets(topic, &plan.partitions, start).await?;
    let ends = if args.to_end { Some(ctx.client.list_offsets(topic, &plan.partitions, -1).await?) } else { None };
    let version = ctx.client.version_for::<FetchRequest>()?;
    let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in &plan.partitions {
        by_leader.entry(p.leader).or_default().push(p.partition);
    }
    let mut connections = Vec::new();
    for (leader, partitions) in by_leader {
        connections.push((ctx.client.dedicated_connection(leader).await?, partitions));
    }

    while !ctx.control.stopped() {
        if let Some(ends) = &ends {
            if ends.iter().all(|(p, end)| positions.get(p).is_some_and(|at| at >= end)) {
                break;
            }
        }
        if args.records.is_some_and(|n| ctx.control.consumed.load(std::sync::atomic::Ordering::Relaxed) >= n) {
            break;
        }
        for (connection, partitions) in &connections {
            fetch_once(ctx, connection, version, partitions, &mut positions, plan.e2e).await?;
        }
    }
    Ok(())
}

async fn fetch_once(
    ctx: &SharedContext,
    connection: &Connection,
    version: i16,
    partitions: &[i32],
    offsets: &mut HashMap<i32, i64>,
    e2e: bool,
) -> Result<(), ClientError> {
    let args = &ctx.args;
    let positions: Vec<(i32, i64)> = partitions.iter().map(|&p| (p, offsets[&p])).collect();
    let limits = FetchLimits {
        max_wait_ms: args.fetch_max_wait_ms,
        max_bytes: args.fetch_max_bytes.min(i32::MAX as u64) as i32,
        partition_max_bytes: args.partition_fetch_bytes.min(i32::MAX as u64) as i32,
    };
    let request = fetch_request(&args.topic, &positions, limits);
    let wait = args.request_timeout + std::time::Duration::from_millis(args.fetch_max_wait_ms.max(0) as u64);
    let response: FetchResponse = match within(wait, connection.call(version, &request)).await {
        Some(result) => result?,
        None => {
            ctx.probe.lock().expect("probe lock").count_error("REQUEST_TIMED_OUT", 1);
            return Ok(());
        }
    };
    let received_ns = now_ns();
    let mut probe = ctx.probe.lock().expect("probe lock");
    if response.error_code != 0 {
        probe.count_error(&error_name(response.error_code), 1);
    }
    let mut consumed = 0;
    for topic in &response.responses {
        for partition in &topic.partitions {
            let index = partition.partition_index;
            if partition.error_code != 0 {
                probe.count_error(&error_name(partition.error_code), 1);
                if partition.error_code == OFFSET_OUT_OF_RANGE {
                    // Retention moved the log start past us: count it and skip ahead, as
                    // auto.offset.reset=earliest would.
                    offsets.insert(index, partition.log_start_offset.max(0));
                }
                continue;
            }
            let Some(records) = &partition.records else { continue };
            let Some(position) = offsets.get_mut(&index) else { continue };
            consumed += take_batches(records, position, e2e.then_some(received_ns), &mut probe);
        }
    }
    drop(probe);
    ctx.control.consumed.fetch_add(consumed, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Counts the records at or after `position` in `records`, moves `position` past them,
/// and (e2e) records each value's latency. Returns the records taken.
fn take_batches(records: &Bytes, position: &mut i64, received_ns: Option<u64>, probe: &mut Probe) -> u64 {
    let whole = whole_batches_len(records);
    let mut at = 0;
    let mut taken = 0;
    while at < whole {
        let Ok(header) = BatchHeader::parse(&records[at..whole]) else {
            probe.count_error("CORRUPT_MESSAGE", 1);
            break;
        };
        let end = at + header.total_bytes;
        let last = header.last_offset();
        if last >= *position {
            let first = header.base_offset.max(*position);
            let count = (last - first + 1) as u64;
            taken += count;
            probe.consume.records += count;
            probe.consume.bytes += header.total_bytes as u64;
            if let Some(received_ns) = received_ns {
                record_e2e(&records.slice(at..end), &header, first, received_ns, probe);
            }
            *position = last + 1;
        }
        at = end;
    }
    taken
}

fn record_e2e(batch: &Bytes, header: &BatchHeader, first: i64, received_ns: u64, probe: &mut Probe) {
    let mut note = |offset: i64, value: Option<&[u8]>| {
        if offset < first {
            return;
        }
        if let Some(stamp) = value.and_then(read_stamp) {
            probe.e2e.records += 1;
            probe.e2e.record_latency(received_ns.saturating_sub(stamp), 1);
        }
    };
    if header.compression_codec() == 0 {
        for record in records(batch, header).unwrap_or_default() {
            note(record.offset, record.value);
        }
    } else {
        match decode_records(batch) {
            Ok(decoded) => {
                for record in decoded {
                    note(record.offset, record.value.as_deref());
                }
            }
            Err(_) => probe.count_error("CORRUPT_MESSAGE", 1),
        }
    }
}
