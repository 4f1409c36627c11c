//! TxnOffsetCommit (key 28), versions 0-4 (v4 adds only an error code, KIP-890): offsets a transactional producer commits for
//! a consumer group inside its transaction (`send_offsets_to_transaction`). The group
//! coordinator stages them durably; they become the group's committed offsets when the
//! transaction commits and are dropped when it aborts. From v3 (KIP-447) the member and
//! generation are checked like OffsetCommit's.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::ApiSupport;
use crate::group::coordinator::{GroupRequest, PartitionOffset};
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::TxnOffsetCommit, 0, 4);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: TxnOffsetCommitRequest = decode_body(request)?;
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
                    leader_epoch: if request.api_version >= 2 { p.committed_leader_epoch } else { -1 },
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
    let (member_id, generation, instance_id) = if request.api_version >= 3 {
        (body.member_id.to_string(), body.generation_id, body.group_instance_id.as_ref().map(|s| s.to_string()))
    } else {
        (String::new(), -1, None)
    };
    let producer_id = body.producer_id.0;
    let count = known.len();
    let codes = if count == 0 {
        Vec::new()
    } else {
        let group = group_id.clone();
        ctx.call_group(&group, move |reply| {
            ShardRequest::Group(GroupRequest::TxnCommit {
                group_id,
                producer_id,
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
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
    for (name, partition, precheck) in results {
        let code = precheck.unwrap_or_else(|| codes.next().unwrap_or(ResponseError::UnknownServerError.code()));
        let entry = TxnOffsetCommitResponsePartition::default().with_partition_index(partition).with_error_code(code);
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == name => last.partitions.push(entry),
            _ => topics.push(
                TxnOffsetCommitResponseTopic::default()
                    .with_name(kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
                        name,
                    )))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    let response = TxnOffsetCommitResponse::default().with_topics(topics);
    encode_response(ApiKey::TxnOffsetCommit, request.api_version, request.header.correlation_id, &response)
}
