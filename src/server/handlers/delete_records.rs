//! DeleteRecords (key 21), versions 0-2: moves each partition's log start offset forward
//! (offset -1 = the high watermark) on the shard that owns it; answers the new low
//! watermark. Segments wholly below it are removed by retention.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};

use super::partition_errors::storage_error_code;
use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;
use crate::storage::{Offset, PartitionLog, ReadError};

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DeleteRecords, 0, 2);

/// One partition's answer: the new log start (low watermark), -1 on error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deletion {
    pub error_code: i16,
    pub low_watermark: i64,
}

/// Moves one partition's log start to `offset` (-1: the high watermark); runs on the
/// shard that owns the partition.
pub async fn delete_before(log: Result<PartitionLog, i16>, offset: i64) -> Deletion {
    let failed = |error_code| Deletion { error_code, low_watermark: -1 };
    let log = match log {
        Ok(log) => log,
        Err(code) => return failed(code),
    };
    // -1 means "up to the high watermark" (Kafka's DeleteRecords semantics).
    let target = if offset == -1 { log.offsets().high_watermark.offset() } else { Offset(offset) };
    match log.delete_records(target).await {
        Ok(start) => Deletion { error_code: 0, low_watermark: start.value() },
        Err(ReadError::OffsetOutOfRange { .. }) => failed(ResponseError::OffsetOutOfRange.code()),
        Err(ReadError::Storage(error)) => failed(storage_error_code(&error)),
    }
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: DeleteRecordsRequest = decode_body(request)?;
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in body.topics {
        let name = topic.name.0.to_string();
        let deletions = topic.partitions.iter().map(|p| {
            let ctx = ctx.clone();
            let (topic, partition, offset) = (name.clone(), p.partition_index, p.offset);
            async move {
                let known = ctx.metadata().topics.get(&topic).is_some_and(|t| (0..t.partitions).contains(&partition));
                let Deletion { error_code: code, low_watermark } = if known {
                    ctx.on_partition(&topic, partition, move |_, log| delete_before(log, offset))
                        .await
                        .unwrap_or(Deletion { error_code: ResponseError::NotLeaderOrFollower.code(), low_watermark: -1 })
                } else {
                    Deletion { error_code: ResponseError::UnknownTopicOrPartition.code(), low_watermark: -1 }
                };
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(partition)
                    .with_error_code(code)
                    .with_low_watermark(low_watermark)
            }
        });
        let partitions = join_all(deletions).await;
        topics.push(DeleteRecordsTopicResult::default().with_name(topic.name).with_partitions(partitions));
    }
    let response = DeleteRecordsResponse::default().with_topics(topics);
    encode_response(ApiKey::DeleteRecords, request.api_version, request.header.correlation_id, &response)
}
