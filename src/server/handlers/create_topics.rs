//! CreateTopics (key 19), versions 2-7: partitions (-1 = broker default), configs
//! (validated; unknown keys fail with INVALID_CONFIG), validate-only. Replication factor
//! must be -1 or 1 on a single node. Executed by the controller on shard 0.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ControllerRequest, NewTopic, ShardRequest};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::CreateTopics, 2, 7);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: CreateTopicsRequest = decode_body(request)?;
    let mut results: Vec<Option<(i16, Option<String>)>> = Vec::with_capacity(body.topics.len());
    let mut to_create = Vec::new();
    for topic in &body.topics {
        let name = topic.name.0.to_string();
        if !matches!(topic.replication_factor, -1 | 1) {
            results.push(Some((
                ResponseError::InvalidReplicationFactor.code(),
                Some(format!("replication factor {} is not possible on a single broker", topic.replication_factor)),
            )));
            continue;
        }
        if !topic.assignments.is_empty() {
            results.push(Some((
                ResponseError::InvalidRequest.code(),
                Some("manual replica assignment is not supported".into()),
            )));
            continue;
        }
        let configs = topic
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()))
            .collect();
        to_create.push(NewTopic { name, partitions: topic.num_partitions, configs });
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
            let (error_code, message) = precheck
                .or_else(|| created.next())
                .unwrap_or((ResponseError::NotController.code(), Some("controller unavailable".to_string())));
            let info = metadata.topics.get(topic.name.0.as_str());
            let mut result = CreatableTopicResult::default()
                .with_name(topic.name.clone())
                .with_error_code(error_code)
                .with_error_message(message.map(StrBytes::from_string));
            if request.api_version >= 5 {
                result.num_partitions = info.map_or(topic.num_partitions, |i| i.partitions);
                result.replication_factor = 1;
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
