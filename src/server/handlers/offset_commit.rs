//! OffsetCommit (key 8), versions 2-9 (v9 has KIP-848 semantics, with the same fields
//! for classic groups): validated against the group's generation and member, written
//! durably to `__consumer_offsets` before the answer. Offsets for unknown topics or
//! partitions fail with UNKNOWN_TOPIC_OR_PARTITION.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse};

use super::ApiSupport;
use crate::group::coordinator::{GroupRequest, PartitionOffset};
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::OffsetCommit, 2, 9);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: OffsetCommitRequest = decode_body(request)?;
    let metadata = ctx.metadata();
    let mut known = Vec::new();
    let mut results: Vec<(String, i32, Option<i16>)> = Vec::new();
    for topic in &body.topics {
        let name = topic.name.0.to_string();
        let partitions = metadata.topics.get(&name).map_or(0, |t| t.partitions);
        for p in &topic.partitions {
            if (0..partitions).contains(&p.partition_index) {
                known.push(PartitionOffset {
                    topic: name.clone(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if request.api_version >= 6 { p.committed_leader_epoch } else { -1 },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    error_code: 0,
                });
                results.push((name.clone(), p.partition_index, None));
            } else {
                results.push((name.clone(), p.partition_index, Some(ResponseError::UnknownTopicOrPartition.code())));
            }
        }
    }
    let group_id = body.group_id.0.to_string();
    let member_id = body.member_id.to_string();
    let instance_id = body.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = body.generation_id_or_member_epoch;
    let count = known.len();
    let codes = if count == 0 {
        Vec::new()
    } else {
        let group = group_id.clone();
        ctx.call_group(&group, move |reply| {
            ShardRequest::Group(GroupRequest::Commit {
                group_id,
                member_id,
                generation,
                instance_id,
                offsets: known,
                reply,
            })
        })
        .await
        .unwrap_or_else(|code| vec![code; count])
    };
    let mut codes = codes.into_iter();
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (name, partition, precheck) in results {
        let code = precheck.unwrap_or_else(|| codes.next().unwrap_or(ResponseError::UnknownServerError.code()));
        let entry = OffsetCommitResponsePartition::default().with_partition_index(partition).with_error_code(code);
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == name => last.partitions.push(entry),
            _ => topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
                        name,
                    )))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    let response = OffsetCommitResponse::default().with_topics(topics);
    encode_response(ApiKey::OffsetCommit, request.api_version, request.header.correlation_id, &response)
}
