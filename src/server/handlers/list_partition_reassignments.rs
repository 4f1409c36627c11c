//! ListPartitionReassignments (key 46), version 0: the partitions being moved, with the
//! replicas they have and are getting or losing (KIP-455). Partitions not moving, and
//! unknown ones, are left out, as Kafka does.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{ApiKey, BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::metadata::TopicMetadata;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::ListPartitionReassignments, 0, 0);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: ListPartitionReassignmentsRequest = decode_body(request)?;
    let metadata = ctx.metadata();
    let mut topics = Vec::new();
    let ongoing = |info: &TopicMetadata, partition: i32| {
        let target = info.target_of(partition)?;
        let current = info.replicas_of(partition);
        let ids = |list: Vec<i32>| list.into_iter().map(BrokerId).collect::<Vec<_>>();
        Some(
            OngoingPartitionReassignment::default()
                .with_partition_index(partition)
                .with_replicas(ids(info.hosts_of(partition)))
                .with_adding_replicas(ids(target.iter().copied().filter(|id| !current.contains(id)).collect()))
                .with_removing_replicas(ids(info.removing_of(partition))),
        )
    };
    match &body.topics {
        None => {
            for (name, info) in &metadata.topics {
                let partitions: Vec<_> = info.targets.keys().filter_map(|&p| ongoing(info, p)).collect();
                if !partitions.is_empty() {
                    topics.push(OngoingTopicReassignment::default().with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(name.clone()))).with_partitions(partitions));
                }
            }
        }
        Some(wanted) => {
            for topic in wanted {
                let Some(info) = metadata.topics.get(topic.name.0.as_str()) else { continue };
                let partitions: Vec<_> = topic.partition_indexes.iter().filter_map(|&p| ongoing(info, p)).collect();
                if !partitions.is_empty() {
                    topics.push(OngoingTopicReassignment::default().with_name(topic.name.clone()).with_partitions(partitions));
                }
            }
        }
    }
    let response = ListPartitionReassignmentsResponse::default().with_topics(topics);
    encode_response(ApiKey::ListPartitionReassignments, request.api_version, request.header.correlation_id, &response)
}
