//! CreateTopics (key 19), versions 2-7: partitions (-1 = broker default) or a manual
//! replica assignment naming only registered brokers, configs (validated against the
//! catalogue; unknown keys fail with INVALID_CONFIG), validate-only. Replication factor:
//! -1 or 1 on a standalone node; in a cluster at most the number of live brokers (the
//! controller places the replicas). Executed by the controller.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ControllerReply, ControllerRequest, NewTopic, ShardRequest};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::CreateTopics, 2, 7);

/// The partition count of a topic, checking a manual replica assignment the way Kafka's
/// controller does: with assignments, num_partitions and replication_factor must be -1,
/// partition indexes run 0, 1, 2, ... and every replica list names registered brokers
/// (on a single node: this one), once each. Returns the replica lists.
fn manual_assignments(topic: &CreatableTopic, brokers: &[i32]) -> Result<Vec<Vec<i32>>, ControllerReply> {
    if topic.assignments.is_empty() {
        return Ok(Vec::new());
    }
    let invalid_request = |message: String| ControllerReply::error(ResponseError::InvalidRequest.code(), message);
    let invalid_assignment =
        |message: String| ControllerReply::error(ResponseError::InvalidReplicaAssignment.code(), message);
    if topic.num_partitions != -1 {
        return Err(invalid_request(
            "A manual partition assignment was specified, but numPartitions was not set to -1.".into(),
        ));
    }
    if topic.replication_factor != -1 {
        return Err(invalid_request(
            "A manual partition assignment was specified, but replicationFactor was not set to -1.".into(),
        ));
    }
    let mut indexes: Vec<i32> = topic.assignments.iter().map(|a| a.partition_index).collect();
    indexes.sort_unstable();
    if indexes.iter().enumerate().any(|(i, &index)| index != i as i32) {
        return Err(invalid_assignment("partitions should be a consecutive 0-based integer sequence".into()));
    }
    let mut sorted: Vec<_> = topic.assignments.iter().collect();
    sorted.sort_by_key(|a| a.partition_index);
    let mut replicas = Vec::with_capacity(sorted.len());
    for assignment in sorted {
        let listed: Vec<i32> = assignment.broker_ids.iter().map(|b| b.0).collect();
        if listed.is_empty() {
            return Err(invalid_assignment(format!("partition {} has no replicas", assignment.partition_index)));
        }
        if let Some(unknown) = listed.iter().find(|b| !brokers.contains(b)) {
            return Err(invalid_assignment(format!(
                "The manual partition assignment includes broker {unknown}, but no such broker is registered \
                 (registered: {brokers:?})."
            )));
        }
        let mut unique = listed.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != listed.len() {
            return Err(invalid_assignment(format!(
                "partition {} lists a broker more than once",
                assignment.partition_index
            )));
        }
        replicas.push(listed);
    }
    Ok(replicas)
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: CreateTopicsRequest = decode_body(request)?;
    let mut results: Vec<Option<ControllerReply>> = Vec::with_capacity(body.topics.len());
    let mut to_create = Vec::new();
    let metadata_now = ctx.metadata();
    for topic in &body.topics {
        let name = topic.name.0.to_string();
        if ctx.cluster.is_none() && !matches!(topic.replication_factor, -1 | 1) {
            results.push(Some(ControllerReply::error(
                ResponseError::InvalidReplicationFactor.code(),
                format!("replication factor {} is not possible on a single broker", topic.replication_factor),
            )));
            continue;
        }
        let brokers: Vec<i32> = match ctx.cluster {
            Some(_) => metadata_now.brokers.keys().copied().collect(),
            None => vec![ctx.config.node_id],
        };
        let assignments = match manual_assignments(topic, &brokers) {
            Ok(assignments) => assignments,
            Err(refused) => {
                results.push(Some(refused));
                continue;
            }
        };
        let partitions = if assignments.is_empty() { topic.num_partitions } else { assignments.len() as i32 };
        // Standalone, the node holds every partition; the assignment only counts them.
        let assignments = if ctx.cluster.is_some() { assignments } else { Vec::new() };
        let configs = topic
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()))
            .collect();
        to_create.push(NewTopic {
            name,
            partitions,
            replication_factor: topic.replication_factor,
            assignments,
            configs,
        });
        results.push(None);
    }
    let validate_only = body.validate_only;
    let created = if to_create.is_empty() {
        Vec::new()
    } else {
        ctx.call(0, move |reply| {
            ShardRequest::Controller(ControllerRequest::CreateTopics { topics: to_create, validate_only, reply })
        })
        .await
        .unwrap_or_default()
    };
    let mut created = created.into_iter();
    let metadata = ctx.metadata();
    let topics = body
        .topics
        .iter()
        .zip(results)
        .map(|(topic, precheck)| {
            let ControllerReply { error_code, message } = precheck
                .or_else(|| created.next())
                .unwrap_or_else(|| ControllerReply::error(ResponseError::NotController.code(), "controller unavailable"));
            let info = metadata.topics.get(topic.name.0.as_str());
            let mut result = CreatableTopicResult::default()
                .with_name(topic.name.clone())
                .with_error_code(error_code)
                .with_error_message(message.map(StrBytes::from_string));
            if request.api_version >= 5 {
                result.num_partitions = info.map_or(topic.num_partitions, |i| i.partitions);
                result.replication_factor =
                    info.map_or(1, |i| i.replicas_of(0).len().max(1) as i16);
            }
            if request.api_version >= 7 {
                result.topic_id = info.filter(|_| error_code == 0).map_or(Uuid::nil(), |i| Uuid::from_bytes(i.id));
            }
            result
        })
        .collect();
    let response = CreateTopicsResponse::default().with_topics(topics);
    encode_response(ApiKey::CreateTopics, request.api_version, request.header.correlation_id, &response)
}
