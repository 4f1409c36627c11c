//! TxnOffsetCommit (key 28), versions 0-4 (v4 adds only an error code, KIP-890): offsets a transactional producer commits for
//! a consumer group inside its transaction (`send_offsets_to_transaction`). The group
//! coordinator stages them durably; they become the group's committed offsets when the
//! transaction commits and are dropped when it aborts. The transaction coordinator
//! confirms first that the producer is current and its transaction open with the group's
//! offsets partition (INVALID_PRODUCER_EPOCH, INVALID_TXN_STATE otherwise). From v3
//! (KIP-447) the member and generation are checked like OffsetCommit's.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, TopicName, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::protocol::StrBytes;

use super::offset_commit_plan::{CommitPlan, RequestedCommit};
use super::ApiSupport;
use crate::group::coordinator::GroupRequest;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::TxnOffsetCommit, 0, 4);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: TxnOffsetCommitRequest = decode_body(request)?;
    let version = request.api_version;
    let requested = body.topics.iter().flat_map(|topic| {
        topic.partitions.iter().map(move |p| RequestedCommit {
            topic: topic.name.0.to_string(),
            partition: p.partition_index,
            offset: p.committed_offset,
            leader_epoch: if version >= 2 { p.committed_leader_epoch } else { -1 },
            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
        })
    });
    let mut plan = CommitPlan::new(&ctx.metadata(), requested);
    let group_id = body.group_id.0.to_string();
    let (member_id, generation, instance_id) = if version >= 3 {
        (body.member_id.to_string(), body.generation_id, body.group_instance_id.as_ref().map(|s| s.to_string()))
    } else {
        (String::new(), -1, None)
    };
    let (transactional_id, producer_id, producer_epoch) =
        (body.transactional_id.0.to_string(), body.producer_id.0, body.producer_epoch);
    let known = std::mem::take(&mut plan.known);
    let count = known.len();
    let codes = if count == 0 {
        Vec::new()
    } else {
        let group = group_id.clone();
        ctx.call_group(&group, move |reply| {
            ShardRequest::Group(GroupRequest::TxnCommit {
                group_id,
                transactional_id,
                producer_id,
                producer_epoch,
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
            TxnOffsetCommitResponseTopic::default().with_name(TopicName(StrBytes::from_string(name))).with_partitions(
                partitions
                    .into_iter()
                    .map(|(index, code)| {
                        TxnOffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code)
                    })
                    .collect(),
            )
        })
        .collect();
    let response = TxnOffsetCommitResponse::default().with_topics(topics);
    encode_response(ApiKey::TxnOffsetCommit, request.api_version, request.header.correlation_id, &response)
}
