//! OffsetFetch (key 9), versions 1-9: committed offsets of a group, for the listed
//! partitions or (v2+, topics null) all of them; -1 where nothing was committed. From v8
//! one request asks for several groups (each answered by its own coordinating shard,
//! concurrently); v9 adds the KIP-848 member epoch, which classic groups do not check.
//! With require_stable (v7+, KIP-447) a partition whose offset an open transaction
//! staged answers UNSTABLE_OFFSET_COMMIT, and the client retries.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{ApiKey, GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::group::coordinator::{GroupRequest, PartitionOffset};
use crate::protocol::topic_partition::TopicPartition;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::OffsetFetch, 1, 9);

/// One group's committed offsets from its coordinating shard (`None`: shard gone).
async fn group_offsets(
    ctx: &Rc<ShardContext>,
    group_id: String,
    partitions: Option<Vec<TopicPartition>>,
    require_stable: bool,
) -> Result<Vec<PartitionOffset>, i16> {
    let group = group_id.clone();
    ctx.call_group(&group, move |reply| {
        ShardRequest::Group(GroupRequest::FetchOffsets { group_id, partitions, require_stable, reply })
    })
    .await
}

/// Offsets grouped by topic, in the order the coordinator answered.
fn by_topic(offsets: Vec<PartitionOffset>) -> Vec<(String, Vec<PartitionOffset>)> {
    let mut topics: Vec<(String, Vec<PartitionOffset>)> = Vec::new();
    for offset in offsets {
        match topics.last_mut() {
            Some((topic, partitions)) if *topic == offset.topic => partitions.push(offset),
            _ => topics.push((offset.topic.clone(), vec![offset])),
        }
    }
    topics
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: OffsetFetchRequest = decode_body(request)?;
    let version = request.api_version;
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        let lookups = body.groups.iter().map(|group| {
            let partitions: Option<Vec<TopicPartition>> = group.topics.as_ref().map(|topics| {
                topics
                    .iter()
                    .flat_map(|t| t.partition_indexes.iter().map(move |p| TopicPartition::new(t.name.0.to_string(), *p)))
                    .collect()
            });
            group_offsets(ctx, group.group_id.0.to_string(), partitions, body.require_stable)
        });
        let found = join_all(lookups).await;
        response.groups = body
            .groups
            .iter()
            .zip(found)
            .map(|(group, found)| {
                let entry = OffsetFetchResponseGroup::default().with_group_id(GroupId(group.group_id.0.clone()));
                let offsets = match found {
                    Ok(offsets) => offsets,
                    Err(code) => return entry.with_error_code(code),
                };
                entry.with_topics(
                    by_topic(offsets)
                        .into_iter()
                        .map(|(topic, partitions)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(StrBytes::from_string(topic)))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|o| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(o.partition)
                                                .with_committed_offset(o.offset)
                                                .with_committed_leader_epoch(o.leader_epoch)
                                                .with_metadata(Some(StrBytes::from_string(
                                                    o.metadata.unwrap_or_default(),
                                                )))
                                                .with_error_code(o.error_code)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
            })
            .collect();
        return encode_response(ApiKey::OffsetFetch, version, request.header.correlation_id, &response);
    }
    let partitions: Option<Vec<TopicPartition>> = body.topics.as_ref().map(|topics| {
        topics.iter().flat_map(|t| t.partition_indexes.iter().map(move |p| TopicPartition::new(t.name.0.to_string(), *p))).collect()
    });
    match group_offsets(ctx, body.group_id.0.to_string(), partitions, body.require_stable).await {
        Err(code) => {
            if version >= 2 {
                response.error_code = code;
            } else {
                // v1 has no group-level error: every partition asked for carries it.
                response.topics = body
                    .topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        OffsetFetchResponseTopic::default().with_name(t.name.clone()).with_partitions(
                            t.partition_indexes
                                .iter()
                                .map(|&p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                    })
                    .collect();
            }
        }
        Ok(offsets) => {
            response.topics = by_topic(offsets)
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|o| {
                                    let mut entry = OffsetFetchResponsePartition::default()
                                        .with_partition_index(o.partition)
                                        .with_committed_offset(o.offset)
                                        .with_metadata(Some(StrBytes::from_string(o.metadata.unwrap_or_default())))
                                        .with_error_code(o.error_code);
                                    if version >= 5 {
                                        entry.committed_leader_epoch = o.leader_epoch;
                                    }
                                    entry
                                })
                                .collect(),
                        )
                })
                .collect();
        }
    }
    encode_response(ApiKey::OffsetFetch, version, request.header.correlation_id, &response)
}
