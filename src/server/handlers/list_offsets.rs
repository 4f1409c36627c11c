//! ListOffsets (key 2), versions 1-9: latest (-1, the high watermark), earliest (-2, the
//! log start), max timestamp (-3, KIP-734), earliest local (-4, KIP-405: the log start,
//! every segment being local), latest tiered (-5, KIP-1005: none, -1) and by timestamp
//! (the first record at or after it), each answered by the shard that owns the partition.
//! v0 (several offsets per partition) was removed by Kafka 4.0. Each answer carries the
//! leader's current epoch, and v4+'s `current_leader_epoch` is checked as Fetch checks it.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::partition_errors::storage_error_code;
use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;
use crate::storage::{Isolation, PartitionLog};

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::ListOffsets, 1, 9);

/// One partition's answer: the offset found and its timestamp (-1 when none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetLookup {
    pub error_code: i16,
    pub timestamp: i64,
    pub offset: i64,
}

impl OffsetLookup {
    fn found(timestamp: i64, offset: i64) -> OffsetLookup {
        OffsetLookup { error_code: 0, timestamp, offset }
    }

    fn failed(error_code: i16) -> OffsetLookup {
        OffsetLookup { error_code, timestamp: -1, offset: -1 }
    }
}

/// Looks up one partition's offset for `timestamp` (or a special value); runs on the
/// shard that owns the partition. The latest offset of a read_committed lookup is the
/// last stable offset.
pub async fn lookup(log: Result<PartitionLog, i16>, timestamp: i64, isolation: Isolation) -> OffsetLookup {
    let log = match log {
        Ok(log) => log,
        Err(code) => return OffsetLookup::failed(code),
    };
    let offsets = log.offsets();
    match timestamp {
        -1 if isolation == Isolation::ReadCommitted => OffsetLookup::found(-1, log.last_stable_offset().value()),
        -1 => OffsetLookup::found(-1, offsets.high_watermark.value()),
        // -4: earliest local offset (KIP-405); with no tiered storage, the log start.
        -2 | -4 => OffsetLookup::found(-1, offsets.log_start.value()),
        // -5: latest tiered offset (KIP-1005); nothing is tiered.
        -5 => OffsetLookup::found(-1, -1),
        -3 => match log.max_timestamp().await {
            Ok(Some((timestamp, offset))) => OffsetLookup::found(timestamp, offset.value()),
            Ok(None) => OffsetLookup::found(-1, -1),
            Err(error) => OffsetLookup::failed(storage_error_code(&error)),
        },
        timestamp if timestamp < 0 => OffsetLookup::failed(ResponseError::InvalidRequest.code()),
        timestamp => match log.offset_for_timestamp(timestamp).await {
            Ok(Some(found)) => OffsetLookup::found(found.timestamp, found.offset.value()),
            Ok(None) => OffsetLookup::found(-1, -1),
            Err(error) => OffsetLookup::failed(storage_error_code(&error)),
        },
    }
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: ListOffsetsRequest = decode_body(request)?;
    let mut topics = Vec::with_capacity(body.topics.len());
    let version = request.api_version;
    let isolation =
        if body.isolation_level == super::fetch::READ_COMMITTED { Isolation::ReadCommitted } else { Isolation::ReadUncommitted };
    for topic in body.topics {
        let name = topic.name.0.to_string();
        let lookups = topic.partitions.iter().map(|p| {
            let ctx = ctx.clone();
            let (topic, partition, timestamp) = (name.clone(), p.partition_index, p.timestamp);
            let client_epoch = if version >= 4 { p.current_leader_epoch } else { -1 };
            async move {
                let known = ctx.metadata().topics.get(&topic).is_some_and(|t| (0..t.partitions).contains(&partition));
                // The leader's current epoch goes with every answer: a client that later
                // checks its position against that epoch (KIP-320, OffsetForLeaderEpoch)
                // finds it ends at or after any offset answered now.
                let (OffsetLookup { error_code, timestamp, offset }, leader_epoch) = if !known {
                    (OffsetLookup::failed(ResponseError::UnknownTopicOrPartition.code()), -1)
                } else {
                    let name = topic.clone();
                    ctx.on_partition(&name, partition, move |ctx, log| async move {
                        let epoch = ctx.leader_epoch(&topic, partition);
                        if log.is_ok() {
                            // KIP-320, as in Fetch: a client behind or ahead of this
                            // leader's epoch refreshes its metadata first.
                            if let Err(code) = super::offset_for_leader_epoch::check_current_epoch(client_epoch, epoch) {
                                return (OffsetLookup::failed(code), -1);
                            }
                        }
                        (lookup(log, timestamp, isolation).await, epoch)
                    })
                    .await
                    .unwrap_or((OffsetLookup::failed(ResponseError::NotLeaderOrFollower.code()), -1))
                };
                let response = ListOffsetsPartitionResponse::default()
                    .with_partition_index(partition)
                    .with_error_code(error_code)
                    .with_timestamp(timestamp)
                    .with_offset(offset);
                if version >= 4 {
                    response.with_leader_epoch(if error_code == 0 { leader_epoch } else { -1 })
                } else {
                    response
                }
            }
        });
        let partitions = join_all(lookups).await;
        topics.push(ListOffsetsTopicResponse::default().with_name(topic.name).with_partitions(partitions));
    }
    let response = ListOffsetsResponse::default().with_topics(topics);
    encode_response(ApiKey::ListOffsets, request.api_version, request.header.correlation_id, &response)
}
