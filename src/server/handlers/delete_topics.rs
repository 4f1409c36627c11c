//! DeleteTopics (key 20), versions 1-6 (by name; v6 also by topic id). Every shard closes and deletes the data
//! of the partitions it owned before the response is sent.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ControllerRequest, ShardRequest};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DeleteTopics, 1, 6);

/// One topic of the request: by name (v1-5, or v6 with a name) or by topic id (v6).
struct Target {
    name: Option<String>,
    id: Uuid,
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: DeleteTopicsRequest = decode_body(request)?;
    let metadata = ctx.metadata();
    let targets: Vec<Target> = if request.api_version >= 6 {
        body.topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => Target { name: Some(name.0.to_string()), id: t.topic_id },
                None => Target {
                    name: metadata
                        .topics
                        .iter()
                        .find(|(_, i)| Uuid::from_bytes(i.id) == t.topic_id)
                        .map(|(n, _)| n.clone()),
                    id: t.topic_id,
                },
            })
            .collect()
    } else {
        body.topic_names.iter().map(|n| Target { name: Some(n.0.to_string()), id: Uuid::nil() }).collect()
    };
    let names: Vec<String> = targets.iter().filter_map(|t| t.name.clone()).collect();
    let codes = if names.is_empty() {
        Vec::new()
    } else {
        let count = names.len();
        ctx.call(0, move |reply| ShardRequest::Controller(ControllerRequest::DeleteTopics { names, reply }))
            .await
            .unwrap_or_else(|| vec![ResponseError::NotController.code(); count])
    };
    let mut codes = codes.into_iter();
    let responses = targets
        .into_iter()
        .map(|target| {
            let id = match &target.name {
                Some(name) if target.id.is_nil() && request.api_version >= 6 => {
                    metadata.topics.get(name).map_or(Uuid::nil(), |i| Uuid::from_bytes(i.id))
                }
                _ => target.id,
            };
            let code = match &target.name {
                Some(_) => codes.next().unwrap_or(ResponseError::NotController.code()),
                None => ResponseError::UnknownTopicId.code(),
            };
            DeletableTopicResult::default()
                .with_name(target.name.map(|n| TopicName(StrBytes::from_string(n))))
                .with_topic_id(id)
                .with_error_code(code)
        })
        .collect();
    let response = DeleteTopicsResponse::default().with_responses(responses);
    encode_response(ApiKey::DeleteTopics, request.api_version, request.header.correlation_id, &response)
}
