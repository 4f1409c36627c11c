//! DeleteRecords (key 21), versions 0-2: moves each partition's log start offset forward
//! (offset -1 = the high watermark) on the shard that owns it; answers the new low
//! watermark. Segments wholly below it are removed by retention.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DeleteRecords, 0, 2);

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
                let (code, low_watermark) = if known {
                    let owner = ctx.owner(&topic, partition);
                    ctx.call(owner, move |reply| ShardRequest::DeleteRecords { topic, partition, offset, reply })
                        .await
                        .unwrap_or((ResponseError::NotLeaderOrFollower.code(), -1))
                } else {
                    (ResponseError::UnknownTopicOrPartition.code(), -1)
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
