//! Executes a `ShardRequest` on the shard that owns its partition (or, for controller
//! requests, on shard 0). Storage errors become Kafka error codes here.

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::{select, select_all, Either};
use kafka_protocol::error::ResponseError;

use super::controller;
use crate::storage::{AppendError, Offset, ReadError, StorageError};

use super::context::ShardContext;
use super::mesh::{ProduceOutcome, ReadOutcome, ShardRequest};

/// How long a retried duplicate waits for its original to become durable.
const DUPLICATE_WAIT: Duration = Duration::from_secs(30);

pub async fn execute(ctx: Rc<ShardContext>, request: ShardRequest) {
    match request {
        ShardRequest::Produce { topic, partition, acks, records, reply } => {
            let _ = reply.send(produce(&ctx, &topic, partition, acks, records).await);
        }
        ShardRequest::Read { topic, partition, offset, max_bytes, reply } => {
            let _ = reply.send(read(&ctx, &topic, partition, offset, max_bytes).await);
        }
        ShardRequest::WaitForData { partitions, max_wait_ms, mut reply } => {
            // The fetch that asked may finish first (data elsewhere, its own deadline):
            // then its receiver is dropped and this wait ends at once.
            let cancelled = Box::pin(reply.cancellation());
            let waited = Box::pin(wait_for_data(&ctx, partitions, max_wait_ms));
            if let Either::Left(_) = select(waited, cancelled).await {
                let _ = reply.send(());
            }
        }
        ShardRequest::ListOffset { topic, partition, timestamp, reply } => {
            let _ = reply.send(list_offset(&ctx, &topic, partition, timestamp).await);
        }
        ShardRequest::DeleteRecords { topic, partition, offset, reply } => {
            let _ = reply.send(delete_records(&ctx, &topic, partition, offset).await);
        }
        ShardRequest::LogSizes { reply } => {
            let sizes = ctx.named_logs().into_iter().map(|(key, log)| (key, log.size_bytes())).collect();
            let _ = reply.send(sizes);
        }
        ShardRequest::Controller(request) => {
            assert_eq!(ctx.id, 0, "controller requests go to shard 0");
            controller::execute(&ctx, request).await;
        }
        ShardRequest::Group(request) => ctx.groups.execute(request).await,
        ShardRequest::ApplyMetadata { metadata, reply } => {
            ctx.apply_metadata(metadata).await;
            let _ = reply.send(());
        }
    }
}

pub fn storage_error_code(error: &StorageError) -> i16 {
    match error {
        StorageError::Closed => ResponseError::NotLeaderOrFollower.code(),
        _ => ResponseError::KafkaStorageError.code(),
    }
}

/// Replicas in sync with the leader. A single node is its own and only in-sync replica.
const IN_SYNC_REPLICAS: i32 = 1;

async fn produce(ctx: &ShardContext, topic: &str, partition: i32, acks: i16, records: bytes::Bytes) -> ProduceOutcome {
    ctx.assert_owner(topic, partition);
    let mut outcome = ProduceOutcome {
        error_code: 0,
        error_message: None,
        base_offset: -1,
        log_append_time_ms: -1,
        log_start_offset: -1,
    };
    let Some(log) = ctx.log(topic, partition) else {
        outcome.error_code = ResponseError::UnknownTopicOrPartition.code();
        return outcome;
    };
    let min_insync_replicas = log.config().min_insync_replicas;
    if acks == -1 && IN_SYNC_REPLICAS < min_insync_replicas {
        // Kafka refuses acks=all before appending when the ISR is below min.insync.replicas.
        outcome.error_code = ResponseError::NotEnoughReplicas.code();
        outcome.error_message = Some(format!(
            "{IN_SYNC_REPLICAS} replica(s) in sync, fewer than min.insync.replicas={min_insync_replicas}"
        ));
        return outcome;
    }
    // The storage engine patches the base offset in place, so it needs its own copy of
    // the batch (the request buffer is shared by all partitions of the request).
    let batch = BytesMut::from(&records[..]);
    match log.append(batch).await {
        Ok(info) => {
            outcome.base_offset = info.base_offset.value();
            outcome.log_append_time_ms = info.log_append_time_ms.unwrap_or(-1);
            outcome.log_start_offset = info.log_start.value();
        }
        Err(AppendError::InvalidBatch(error)) => {
            use crate::protocol::record_batch::BatchError;
            outcome.error_code = match error {
                BatchError::TooLarge { .. } => ResponseError::MessageTooLarge.code(),
                BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat.code(),
                BatchError::RecordCountMismatch { .. } => ResponseError::InvalidRecord.code(),
                _ => ResponseError::CorruptMessage.code(),
            };
            outcome.error_message = Some(error.to_string());
        }
        Err(AppendError::Storage(error)) => {
            outcome.error_code = storage_error_code(&error);
            outcome.error_message = Some(error.to_string());
        }
        Err(AppendError::Duplicate { base_offset, last_offset }) => {
            // A retry of a batch already in the log: answer with its original offsets
            // once it is durable (the original may still be in flight).
            let durable = log.wait_for_high_watermark_beyond(last_offset);
            let timeout = glommio::timer::sleep(DUPLICATE_WAIT);
            let _ = select(Box::pin(durable), Box::pin(timeout)).await;
            if log.offsets().high_watermark.offset() > last_offset {
                outcome.base_offset = base_offset.value();
                outcome.log_start_offset = log.offsets().log_start.value();
            } else {
                outcome.error_code = ResponseError::RequestTimedOut.code();
                outcome.error_message = Some("the original of this retried batch is not durable yet".into());
            }
        }
        Err(error @ AppendError::OutOfOrderSequence { .. }) => {
            outcome.error_code = ResponseError::OutOfOrderSequenceNumber.code();
            outcome.error_message = Some(error.to_string());
        }
        Err(error @ AppendError::ProducerFenced { .. }) => {
            outcome.error_code = ResponseError::InvalidProducerEpoch.code();
            outcome.error_message = Some(error.to_string());
        }
        Err(error @ AppendError::InvalidTimestamp { .. }) => {
            outcome.error_code = ResponseError::InvalidTimestamp.code();
            outcome.error_message = Some(error.to_string());
        }
        Err(error @ AppendError::Compression(_)) => {
            outcome.error_code = ResponseError::CorruptMessage.code();
            outcome.error_message = Some(error.to_string());
        }
    }
    outcome
}

async fn read(ctx: &ShardContext, topic: &str, partition: i32, offset: i64, max_bytes: usize) -> ReadOutcome {
    ctx.assert_owner(topic, partition);
    let Some(log) = ctx.log(topic, partition) else {
        return ReadOutcome {
            error_code: ResponseError::UnknownTopicOrPartition.code(),
            high_watermark: -1,
            log_start_offset: -1,
            records: Vec::new(),
        };
    };
    if max_bytes == 0 {
        // No budget left in this response: offsets only.
        let offsets = log.offsets();
        return ReadOutcome {
            error_code: 0,
            high_watermark: offsets.high_watermark.value(),
            log_start_offset: offsets.log_start.value(),
            records: Vec::new(),
        };
    }
    match log.read_for_send(Offset(offset), max_bytes).await {
        Ok(read) => ReadOutcome {
            error_code: 0,
            high_watermark: read.offsets.high_watermark.value(),
            log_start_offset: read.offsets.log_start.value(),
            records: read.chunks,
        },
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
                records: Vec::new(),
            }
        }
    }
}

async fn wait_for_data(ctx: &ShardContext, partitions: Vec<(String, i32, i64)>, max_wait_ms: u64) {
    let waits: Vec<_> = partitions
        .iter()
        .filter_map(|(topic, partition, offset)| {
            ctx.log(topic, *partition).map(|log| Box::pin(log.wait_for_high_watermark_beyond(Offset(*offset))))
        })
        .collect();
    let timeout = Box::pin(glommio::timer::sleep(Duration::from_millis(max_wait_ms)));
    if waits.is_empty() {
        timeout.await;
        return;
    }
    match select(select_all(waits), timeout).await {
        Either::Left(_) | Either::Right(_) => {}
    }
}

/// (error code, timestamp, offset) for ListOffsets.
async fn list_offset(ctx: &ShardContext, topic: &str, partition: i32, timestamp: i64) -> (i16, i64, i64) {
    ctx.assert_owner(topic, partition);
    let Some(log) = ctx.log(topic, partition) else {
        return (ResponseError::UnknownTopicOrPartition.code(), -1, -1);
    };
    let offsets = log.offsets();
    match timestamp {
        -1 => (0, -1, offsets.high_watermark.value()),
        // -4: earliest local offset (KIP-405); with no tiered storage, the log start.
        -2 | -4 => (0, -1, offsets.log_start.value()),
        // -5: latest tiered offset (KIP-1005); nothing is tiered.
        -5 => (0, -1, -1),
        -3 => match log.max_timestamp().await {
            Ok(Some((timestamp, offset))) => (0, timestamp, offset.value()),
            Ok(None) => (0, -1, -1),
            Err(error) => (storage_error_code(&error), -1, -1),
        },
        timestamp if timestamp < 0 => (ResponseError::InvalidRequest.code(), -1, -1),
        timestamp => match log.offset_for_timestamp(timestamp).await {
            Ok(Some(found)) => (0, found.timestamp, found.offset.value()),
            Ok(None) => (0, -1, -1),
            Err(error) => (storage_error_code(&error), -1, -1),
        },
    }
}

async fn delete_records(ctx: &ShardContext, topic: &str, partition: i32, offset: i64) -> (i16, i64) {
    ctx.assert_owner(topic, partition);
    let Some(log) = ctx.log(topic, partition) else {
        return (ResponseError::UnknownTopicOrPartition.code(), -1);
    };
    // -1 means "up to the high watermark" (Kafka's DeleteRecords semantics).
    let target = if offset == -1 { log.offsets().high_watermark.offset() } else { Offset(offset) };
    match log.delete_records(target).await {
        Ok(start) => (0, start.value()),
        Err(ReadError::OffsetOutOfRange { .. }) => (ResponseError::OffsetOutOfRange.code(), -1),
        Err(ReadError::Storage(error)) => (storage_error_code(&error), -1),
    }
}
