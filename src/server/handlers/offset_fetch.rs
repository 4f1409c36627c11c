//! OffsetFetch (key 9), versions 1-7: committed offsets of a group, for the listed
//! partitions or (v2+, topics null) all of them; -1 where nothing was committed.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::{ApiKey, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::group::coordinator::GroupRequest;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::OffsetFetch, 1, 7);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: OffsetFetchRequest = decode_body(request)?;
    let group_id = body.group_id.0.to_string();
    let partitions: Option<Vec<(String, i32)>> = body.topics.as_ref().map(|topics| {
        topics.iter().flat_map(|t| t.partition_indexes.iter().map(move |p| (t.name.0.to_string(), *p))).collect()
    });
    let shard = ctx.group_shard(&group_id);
    let found = ctx
        .call(shard, move |reply| ShardRequest::Group(GroupRequest::FetchOffsets { group_id, partitions, reply }))
        .await;
    let version = request.api_version;
    let mut response = OffsetFetchResponse::default();
    match found {
        None => {
            if version >= 2 {
                response.error_code = ResponseError::CoordinatorNotAvailable.code();
            }
        }
        Some(offsets) => {
            let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
            for o in offsets {
                let mut entry = OffsetFetchResponsePartition::default()
                    .with_partition_index(o.partition)
                    .with_committed_offset(o.offset)
                    .with_metadata(Some(StrBytes::from_string(o.metadata.unwrap_or_default())))
                    .with_error_code(o.error_code);
                if version >= 5 {
                    entry.committed_leader_epoch = o.leader_epoch;
                }
                match topics.last_mut() {
                    Some(last) if last.name.0.as_str() == o.topic => last.partitions.push(entry),
                    _ => topics.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(StrBytes::from_string(o.topic)))
                            .with_partitions(vec![entry]),
                    ),
                }
            }
            response.topics = topics;
        }
    }
    encode_response(ApiKey::OffsetFetch, version, request.header.correlation_id, &response)
}
