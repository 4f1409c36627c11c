//! Fetch (key 1), versions 4-17, with long polling. From v13 topics are named by topic
//! id (KIP-516): ids are looked up in the metadata, an unknown one is answered with
//! UNKNOWN_TOPIC_ID. Versions 0-3 (message formats 0/1) were removed by Kafka 4.0.
//!
//! Pass one reads every requested partition on its owning shard (concurrently). If that
//! gathered fewer than `min_bytes` and `max_wait_ms > 0`, the owners are asked to wait
//! until any of their partitions gets data or the wait runs out, and pass two reads
//! again. Response size follows KIP-74: whole batches, at most `max_bytes` in total and
//! `partition_max_bytes` per partition, except that the first batch is always returned.
//! Fetch sessions (KIP-227) are answered with session id 0: every fetch is a full fetch.
//! The response is framed by hand (`protocol::fetch_response`): record batches go out in
//! the buffers the batch cache holds, or as segment file regions the connection sends
//! with sendfile (cold reads), never copied into the response.

use std::rc::Rc;

use std::time::Duration;

use futures_util::future::{select, select_all, Either};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, FetchRequest};

use super::partition_errors::storage_error_code;
use super::ApiSupport;
use crate::protocol::fetch_response::{self, FetchPartition, FetchTopic};
use crate::protocol::record_chunk::RecordChunk;
use crate::server::frame::{decode_body, FrameError, Request};
use crate::shard::ShardContext;
use crate::storage::{Isolation, Offset, PartitionLog, ReadError};

/// Fetch's isolation level for read_committed (0 is read_uncommitted).
pub const READ_COMMITTED: i8 = 1;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::Fetch, 4, 17);

/// The most one Fetch response carries (Kafka's fetch.max.bytes default); larger
/// `max_bytes` and `partition_max_bytes` are capped to it.
pub const FETCH_BYTES_MAX: usize = 57_671_680;
/// The longest a Fetch waits for data, whatever `max_wait_ms` asks.
pub const FETCH_WAIT_MS_MAX: u64 = 30_000;

/// One partition's answer, as the Fetch response needs it.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// The last stable offset (the high watermark for read_uncommitted).
    pub last_stable_offset: i64,
    /// read_committed: the aborted transactions the records may hold.
    pub aborted: Vec<(i64, i64)>,
    /// Whole batches: in memory (batch cache) or a segment region to send with sendfile.
    pub records: Vec<RecordChunk>,
    /// The client's last fetched epoch ends before its fetch offset here (KIP-320).
    pub diverging_epoch: Option<(i32, i64)>,
}

/// Reads one partition from `offset`, at most `max_bytes` (at least one batch), below
/// the limit `isolation` sets; runs on the shard that owns the partition.
pub async fn read(log: Result<PartitionLog, i16>, offset: i64, max_bytes: usize, isolation: Isolation) -> ReadOutcome {
    let log = match log {
        Ok(log) => log,
        Err(error_code) => {
            return ReadOutcome {
                error_code,
                high_watermark: -1,
                log_start_offset: -1,
                last_stable_offset: -1,
                ..ReadOutcome::default()
            };
        }
    };
    // Taken after the read: the limit can only have moved up since, so the aborted list
    // covers every transaction the records can hold.
    let stable = |log: &PartitionLog, high_watermark: i64| match isolation {
        Isolation::ReadUncommitted => (high_watermark, Vec::new()),
        Isolation::ReadCommitted => {
            let view = log.stable_view(Offset(offset));
            let aborted = view.aborted.iter().map(|a| (a.producer_id, a.first_offset.value())).collect();
            (view.last_stable_offset.value().min(high_watermark), aborted)
        }
    };
    if max_bytes == 0 {
        // No budget left in this response: offsets only.
        let offsets = log.offsets();
        let (last_stable_offset, _) = stable(&log, offsets.high_watermark.value());
        return ReadOutcome {
            error_code: 0,
            high_watermark: offsets.high_watermark.value(),
            log_start_offset: offsets.log_start.value(),
            last_stable_offset,
            aborted: Vec::new(),
            records: Vec::new(),
            diverging_epoch: None,
        };
    }
    match log.read_for_send(Offset(offset), max_bytes, isolation).await {
        Ok(read) => {
            let (last_stable_offset, aborted) = stable(&log, read.offsets.high_watermark.value());
            ReadOutcome {
                error_code: 0,
                high_watermark: read.offsets.high_watermark.value(),
                log_start_offset: read.offsets.log_start.value(),
                last_stable_offset,
                aborted: if read.chunks.is_empty() { Vec::new() } else { aborted },
                records: read.chunks,
                diverging_epoch: None,
            }
        }
        Err(error) => {
            let offsets = log.offsets();
            let code = match &error {
                ReadError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
                ReadError::Storage(storage) => storage_error_code(storage),
            };
            ReadOutcome {
                error_code: code,
                high_watermark: offsets.high_watermark.value(),
                log_start_offset: offsets.log_start.value(),
                last_stable_offset: offsets.high_watermark.value(),
                aborted: Vec::new(),
                records: Vec::new(),
                diverging_epoch: None,
            }
        }
    }
}

/// A partition a long poll waits on: data past `seen` wakes it.
#[derive(Debug, Clone)]
struct Watched {
    topic: String,
    partition: i32,
    seen: i64,
}

/// Resolves when any of this shard's listed partitions gets a high watermark past what
/// the fetch saw, or after `max_wait`; runs on the shard that owns them. When the fetch
/// finishes first (data elsewhere, its own deadline) it drops the call and this ends too.
async fn wait_for_data(ctx: &ShardContext, partitions: Vec<Watched>, max_wait: Duration) {
    let waits: Vec<_> = partitions
        .iter()
        .filter_map(|w| ctx.log(&w.topic, w.partition).map(|log| Box::pin(log.wait_for_high_watermark_beyond(Offset(w.seen)))))
        .collect();
    let timeout = Box::pin(glommio::timer::sleep(max_wait));
    if waits.is_empty() {
        timeout.await;
        return;
    }
    match select(select_all(waits), timeout).await {
        Either::Left(_) | Either::Right(_) => {}
    }
}

struct Wanted {
    topic: String,
    topic_id: [u8; 16],
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// The leader epoch the client believes current (v9+; -1: not given), checked
    /// against this leader's (KIP-320).
    current_leader_epoch: i32,
    /// The epoch of the last batch the client fetched (v12+; -1: not given): if that
    /// epoch ends before `offset` in this log, the client's log diverged (KIP-320).
    last_fetched_epoch: i32,
}

/// Where the client's log diverges from this one (KIP-320, as Kafka's
/// `Partition.fetchRecords` checks it): the end of `last_fetched` here, when that epoch is
/// not in this log (it ends in an earlier one) or ends before the fetch offset. Only
/// called when `last_fetched` is not the current epoch (which ends at the log end). A
/// future epoch is OFFSET_OUT_OF_RANGE, as in Kafka.
async fn diverging_epoch(
    log: &PartitionLog,
    last_fetched: i32,
    current: i32,
    fetch_offset: i64,
) -> Result<Option<(i32, i64)>, i16> {
    match log.epoch_end(last_fetched, current).await {
        Err(_) => Err(ResponseError::KafkaStorageError.code()),
        Ok(None) => Err(ResponseError::OffsetOutOfRange.code()),
        Ok(Some(end)) if end.epoch < last_fetched || end.end_offset.value() < fetch_offset => {
            Ok(Some((end.epoch, end.end_offset.value())))
        }
        Ok(Some(_)) => Ok(None),
    }
}

/// A diverged fetch: no records, the partition's offsets and where to truncate.
fn diverged(log: &PartitionLog, diverging: (i32, i64)) -> ReadOutcome {
    let offsets = log.offsets();
    let high_watermark = offsets.high_watermark.value();
    let stable = log.stable_view(Offset(high_watermark)).last_stable_offset.value();
    ReadOutcome {
        high_watermark,
        log_start_offset: offsets.log_start.value(),
        last_stable_offset: stable.min(high_watermark),
        diverging_epoch: Some(diverging),
        ..ReadOutcome::default()
    }
}

/// Reads the partitions in request order, each on its owning shard, within the
/// response-wide budget: only the first non-empty partition may exceed it (KIP-74);
/// partitions past the budget report their offsets without records.
async fn read_all(ctx: &Rc<ShardContext>, wanted: &[Wanted], max_bytes: usize, isolation: Isolation) -> Vec<ReadOutcome> {
    let mut outcomes = Vec::with_capacity(wanted.len());
    let mut total = 0usize;
    for w in wanted {
        let remaining = max_bytes.saturating_sub(total);
        let limit = w.max_bytes.min(remaining);
        let offset = w.offset;
        let (client_epoch, topic, partition) = (w.current_leader_epoch, w.topic.clone(), w.partition);
        let last_fetched_epoch = w.last_fetched_epoch;
        let mut outcome = ctx
            .on_partition(&w.topic, w.partition, move |ctx, log| async move {
                if let Ok(partition_log) = &log {
                    let current = ctx.leader_epoch(&topic, partition);
                    if client_epoch >= 0 {
                        if let Err(code) = super::offset_for_leader_epoch::check_current_epoch(client_epoch, current) {
                            return ReadOutcome { error_code: code, ..ReadOutcome::default() };
                        }
                    }
                    if last_fetched_epoch >= 0 && last_fetched_epoch != current {
                        match diverging_epoch(partition_log, last_fetched_epoch, current, offset).await {
                            Ok(None) => {}
                            Ok(Some(diverging)) => return diverged(partition_log, diverging),
                            Err(code) => return ReadOutcome { error_code: code, ..ReadOutcome::default() },
                        }
                    }
                }
                read(log, offset, limit, isolation).await
            })
            .await
            .unwrap_or(ReadOutcome { error_code: ResponseError::NotLeaderOrFollower.code(), ..ReadOutcome::default() });
        let size: usize = outcome.records.iter().map(RecordChunk::len).sum();
        if total > 0 && size > remaining {
            outcome.records.clear();
        } else {
            total += size;
        }
        outcomes.push(outcome);
    }
    outcomes
}

fn gathered(outcomes: &[ReadOutcome]) -> usize {
    outcomes.iter().flat_map(|o| o.records.iter()).map(RecordChunk::len).sum()
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Vec<RecordChunk>, FrameError> {
    let body: FetchRequest = decode_body(request)?;
    let metadata = ctx.metadata();
    let mut wanted = Vec::new();
    let mut unknown = Vec::new();
    let by_id = request.api_version >= 13;
    for topic in &body.topics {
        let (name, info) = if by_id {
            let id = topic.topic_id.into_bytes();
            match metadata.topics.iter().find(|(_, info)| info.id == id) {
                Some((name, info)) => (name.clone(), Some(info)),
                None => (String::new(), None),
            }
        } else {
            let name = topic.topic.0.to_string();
            let info = metadata.topics.get(&name);
            (name, info)
        };
        let topic_id = info.map_or(topic.topic_id.into_bytes(), |info| info.id);
        for partition in &topic.partitions {
            let known = info.is_some_and(|t| partition.partition < t.partitions && partition.partition >= 0);
            let entry = Wanted {
                topic: name.clone(),
                topic_id,
                partition: partition.partition,
                offset: partition.fetch_offset,
                max_bytes: (partition.partition_max_bytes.max(0) as usize).min(FETCH_BYTES_MAX),
                current_leader_epoch: partition.current_leader_epoch,
                last_fetched_epoch: partition.last_fetched_epoch,
            };
            if known {
                wanted.push(entry);
            } else {
                unknown.push(entry);
            }
        }
    }
    let isolation = if body.isolation_level == READ_COMMITTED { Isolation::ReadCommitted } else { Isolation::ReadUncommitted };
    let max_bytes = if body.max_bytes <= 0 { FETCH_BYTES_MAX } else { (body.max_bytes as usize).min(FETCH_BYTES_MAX) };
    let min_bytes = body.min_bytes.max(0) as usize;
    let max_wait = std::time::Duration::from_millis((body.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MS_MAX));
    let deadline = std::time::Instant::now() + max_wait;
    let mut outcomes = read_all(ctx, &wanted, max_bytes, isolation).await;
    // Long polling: wait until new data could make up `min_bytes`, or the deadline.
    loop {
        let has_error = outcomes.iter().any(|o| o.error_code != 0);
        let now = std::time::Instant::now();
        if gathered(&outcomes) >= min_bytes || has_error || wanted.is_empty() || now >= deadline {
            break;
        }
        let wait = deadline.duration_since(now).max(Duration::from_millis(1));
        let mut by_shard: Vec<Vec<Watched>> = vec![Vec::new(); ctx.shard_count];
        for (w, outcome) in wanted.iter().zip(&outcomes) {
            // New data means a high watermark past what this pass already saw.
            let seen = outcome.high_watermark.max(w.offset);
            by_shard[ctx.owner(&w.topic, w.partition)].push(Watched {
                topic: w.topic.clone(),
                partition: w.partition,
                seen,
            });
        }
        let waits: Vec<_> = by_shard
            .into_iter()
            .enumerate()
            .filter(|(_, partitions)| !partitions.is_empty())
            .map(|(shard, partitions)| {
                let ctx = ctx.clone();
                Box::pin(async move {
                    ctx.run_on_while_awaited(shard, move |ctx| async move { wait_for_data(&ctx, partitions, wait).await })
                        .await;
                })
            })
            .collect();
        let timeout = Box::pin(glommio::timer::sleep(deadline.duration_since(now)));
        // Dropping the losing waits cancels them on their shards.
        match select(select_all(waits), timeout).await {
            Either::Left(_) | Either::Right(_) => {}
        }
        outcomes = read_all(ctx, &wanted, max_bytes, isolation).await;
    }

    let mut topics: Vec<FetchTopic> = Vec::new();
    let mut push = |w: &Wanted, data: FetchPartition| match topics.last_mut() {
        Some(last) if last.name == w.topic && last.topic_id == w.topic_id => last.partitions.push(data),
        _ => topics.push(FetchTopic { name: w.topic.clone(), topic_id: w.topic_id, partitions: vec![data] }),
    };
    for (w, outcome) in wanted.iter().zip(outcomes) {
        push(
            w,
            FetchPartition {
                partition_index: w.partition,
                error_code: outcome.error_code,
                high_watermark: outcome.high_watermark,
                last_stable_offset: outcome.last_stable_offset,
                log_start_offset: outcome.log_start_offset,
                aborted: outcome.aborted,
                records: outcome.records,
                diverging_epoch: outcome.diverging_epoch,
            },
        );
    }
    for w in &unknown {
        let unknown_id = by_id && !metadata.topics.values().any(|info| info.id == w.topic_id);
        push(
            w,
            FetchPartition {
                partition_index: w.partition,
                error_code: if unknown_id {
                    ResponseError::UnknownTopicId.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                },
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                aborted: Vec::new(),
                records: Vec::new(),
                diverging_epoch: None,
            },
        );
    }
    Ok(fetch_response::encode(request.api_version, request.header.correlation_id, &topics))
}
