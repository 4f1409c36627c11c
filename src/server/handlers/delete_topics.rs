//! DeleteTopics (key 20), versions 1-5 (by name). Every shard closes and deletes the data
//! of the partitions it owned before the response is sent.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse};

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ControllerRequest, ShardRequest};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DeleteTopics, 1, 5);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: DeleteTopicsRequest = decode_body(request)?;
    let names: Vec<String> = body.topic_names.iter().map(|n| n.0.to_string()).collect();
    let codes = if names.is_empty() {
        Vec::new()
    } else {
        let names = names.clone();
        ctx.call(0, move |reply| ShardRequest::Controller(ControllerRequest::DeleteTopics { names, reply }))
            .await
            .unwrap_or_else(|| vec![ResponseError::NotController.code(); body.topic_names.len()])
    };
    let responses = body
        .topic_names
        .iter()
        .zip(codes)
        .map(|(name, code)| DeletableTopicResult::default().with_name(Some(name.clone())).with_error_code(code))
        .collect();
    let response = DeleteTopicsResponse::default().with_responses(responses);
    encode_response(ApiKey::DeleteTopics, request.api_version, request.header.correlation_id, &response)
}
