//! OffsetCommit (key 8), versions 2-9 (v9 has KIP-848 semantics, with the same fields
//! for classic groups): validated against the group's generation and member, written
//! durably to `__consumer_offsets` before the answer. Offsets for unknown topics or
//! partitions fail with UNKNOWN_TOPIC_OR_PARTITION.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::offset_commit_plan::{CommitPlan, RequestedCommit};
use super::ApiSupport;
use crate::group::coordinator::GroupRequest;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::OffsetCommit, 2, 9);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: OffsetCommitRequest = decode_body(request)?;
    let version = request.api_version;
    let requested = body.topics.iter().flat_map(|topic| {
        topic.partitions.iter().map(move |p| RequestedCommit {
            topic: topic.name.0.to_string(),
            partition: p.partition_index,
            offset: p.committed_offset,
            leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
        })
    });
    let mut plan = CommitPlan::new(&ctx.metadata(), requested);
    let group_id = body.group_id.0.to_string();
    let member_id = body.member_id.to_string();
    let instance_id = body.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = body.generation_id_or_member_epoch;
    let known = std::mem::take(&mut plan.known);
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
    let topics = plan
        .answers(codes)
        .into_iter()
        .map(|(name, partitions)| {
            OffsetCommitResponseTopic::default().with_name(TopicName(StrBytes::from_string(name))).with_partitions(
                partitions
                    .into_iter()
                    .map(|(index, code)| {
                        OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code)
                    })
                    .collect(),
            )
        })
        .collect();
    let response = OffsetCommitResponse::default().with_topics(topics);
    encode_response(ApiKey::OffsetCommit, request.api_version, request.header.correlation_id, &response)
}
