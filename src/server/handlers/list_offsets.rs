//! ListOffsets (key 2), versions 1-9: latest (-1, the high watermark), earliest (-2, the
//! log start), max timestamp (-3, KIP-734), earliest local (-4, KIP-405: the log start,
//! every segment being local), latest tiered (-5, KIP-1005: none, -1) and by timestamp
//! (the first record at or after it), each answered by the shard that owns the partition.
//! v0 (several offsets per partition) was removed by Kafka 4.0.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::ListOffsets, 1, 9);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: ListOffsetsRequest = decode_body(request)?;
    let mut topics = Vec::with_capacity(body.topics.len());
    let version = request.api_version;
    for topic in body.topics {
        let name = topic.name.0.to_string();
        let lookups = topic.partitions.iter().map(|p| {
            let ctx = ctx.clone();
            let (topic, partition, timestamp) = (name.clone(), p.partition_index, p.timestamp);
            async move {
                let owner = ctx.owner(&topic, partition);
                let known = ctx.metadata().topics.get(&topic).is_some_and(|t| (0..t.partitions).contains(&partition));
                let (error_code, timestamp, offset) = if !known {
                    (ResponseError::UnknownTopicOrPartition.code(), -1, -1)
                } else {
                    ctx.call(owner, move |reply| ShardRequest::ListOffset { topic, partition, timestamp, reply })
                        .await
                        .unwrap_or((ResponseError::NotLeaderOrFollower.code(), -1, -1))
                };
                let response = ListOffsetsPartitionResponse::default()
                    .with_partition_index(partition)
                    .with_error_code(error_code)
                    .with_timestamp(timestamp)
                    .with_offset(offset);
                if version >= 4 {
                    response.with_leader_epoch(0)
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
