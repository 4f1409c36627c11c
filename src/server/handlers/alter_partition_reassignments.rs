//! AlterPartitionReassignments (key 45), versions 0-1: moves partitions' replicas to
//! other brokers, or cancels a move (null replicas). The controller records the target
//! (KIP-455); each partition's Raft leader then moves its group there
//! (`shard::reassignment`). Any broker takes the request and forwards it to the
//! controller.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{ApiKey, AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ControllerReply, ControllerRequest, PartitionReassignment, ShardRequest};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::AlterPartitionReassignments, 0, 1);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: AlterPartitionReassignmentsRequest = decode_body(request)?;
    let metadata = ctx.metadata();
    // Version 1 may forbid a change of the replication factor (KIP-860).
    let factor_fixed = request.api_version >= 1 && !body.allow_replication_factor_change;
    let mut changes = Vec::new();
    // Per partition: its answer, or the index of its change in `changes`.
    let mut slots: Vec<(usize, i32, Result<usize, ControllerReply>)> = Vec::new();
    for (t, topic) in body.topics.iter().enumerate() {
        for partition in &topic.partitions {
            let name = topic.name.0.to_string();
            let target = partition.replicas.as_ref().map(|ids| ids.iter().map(|id| id.0).collect::<Vec<i32>>());
            let current = metadata
                .topics
                .get(&name)
                .filter(|info| (0..info.partitions).contains(&partition.partition_index))
                .map(|info| info.replicas_of(partition.partition_index).len());
            let slot = match (&target, current) {
                (Some(target), Some(current)) if factor_fixed && target.len() != current => {
                    Err(ControllerReply::error(
                        ResponseError::InvalidReplicationFactor.code(),
                        format!("the partition has {current} replicas; the request does not allow {}", target.len()),
                    ))
                }
                _ => {
                    changes.push(PartitionReassignment { topic: name, partition: partition.partition_index, target });
                    Ok(changes.len() - 1)
                }
            };
            slots.push((t, partition.partition_index, slot));
        }
    }
    let replies = if changes.is_empty() {
        Vec::new()
    } else {
        let count = changes.len();
        ctx.call(0, move |reply| ShardRequest::Controller(ControllerRequest::Reassign { changes, reply }))
            .await
            .unwrap_or_else(|| {
                vec![ControllerReply::error(ResponseError::NotController.code(), "controller unavailable"); count]
            })
    };
    let mut responses: Vec<ReassignableTopicResponse> = body
        .topics
        .iter()
        .map(|topic| ReassignableTopicResponse::default().with_name(topic.name.clone()))
        .collect();
    for (t, partition, slot) in slots {
        let ControllerReply { error_code, message } = match slot {
            Ok(index) => replies.get(index).cloned().unwrap_or_else(|| {
                ControllerReply::error(ResponseError::UnknownServerError.code(), "no answer from the controller")
            }),
            Err(refused) => refused,
        };
        responses[t].partitions.push(
            ReassignablePartitionResponse::default()
                .with_partition_index(partition)
                .with_error_code(error_code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(!factor_fixed)
        .with_responses(responses);
    encode_response(ApiKey::AlterPartitionReassignments, request.api_version, request.header.correlation_id, &response)
}
