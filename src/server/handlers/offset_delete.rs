//! OffsetDelete (key 47), version 0: deletes a group's committed offsets for some
//! partitions, unless the group is actively subscribed to the topic
//! (GROUP_SUBSCRIBED_TO_TOPIC).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{ApiKey, OffsetDeleteRequest, OffsetDeleteResponse};

use super::ApiSupport;
use crate::group::coordinator::{GroupRequest, OffsetDeletion};
use crate::protocol::topic_partition::TopicPartition;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::OffsetDelete, 0, 0);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: OffsetDeleteRequest = decode_body(request)?;
    let group_id = body.group_id.0.to_string();
    let partitions: Vec<TopicPartition> = body
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| TopicPartition::new(t.name.0.to_string(), p.partition_index)))
        .collect();
    let count = partitions.len();
    let asked = partitions.clone();
    let group = group_id.clone();
    let OffsetDeletion { error_code: group_error, partition_codes: codes } = ctx
        .call_group(&group, move |reply| {
            ShardRequest::Group(GroupRequest::DeleteOffsets { group_id, partitions: asked, reply })
        })
        .await
        .unwrap_or_else(|code| OffsetDeletion { error_code: code, partition_codes: vec![0; count] });
    let mut codes = codes.into_iter();
    let topics = body
        .topics
        .iter()
        .map(|t| {
            OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(codes.next().unwrap_or(0))
                    })
                    .collect(),
            )
        })
        .collect();
    let response = OffsetDeleteResponse::default().with_error_code(group_error).with_topics(topics);
    encode_response(ApiKey::OffsetDelete, request.api_version, request.header.correlation_id, &response)
}
