//! CreatePartitions (key 37), versions 0-3: grows a topic's partition count. Manual
//! assignments must name only this broker.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ControllerReply, ControllerRequest, ShardRequest};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::CreatePartitions, 0, 3);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: CreatePartitionsRequest = decode_body(request)?;
    let node = ctx.config.node_id;
    let mut results = Vec::with_capacity(body.topics.len());
    for topic in &body.topics {
        let foreign = topic
            .assignments
            .as_ref()
            .is_some_and(|assignments| assignments.iter().flat_map(|a| a.broker_ids.iter()).any(|b| b.0 != node));
        let ControllerReply { error_code: code, message } = if foreign {
            ControllerReply::error(ResponseError::InvalidReplicaAssignment.code(), format!("this cluster has one broker, {node}"))
        } else {
            let (name, count, validate_only) = (topic.name.0.to_string(), topic.count, body.validate_only);
            ctx.call(0, move |reply| {
                ShardRequest::Controller(ControllerRequest::CreatePartitions {
                    topic: name,
                    count,
                    validate_only,
                    reply,
                })
            })
            .await
            .unwrap_or_else(|| ControllerReply::error(ResponseError::NotController.code(), "controller unavailable"))
        };
        results.push(
            CreatePartitionsTopicResult::default()
                .with_name(topic.name.clone())
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    let response = CreatePartitionsResponse::default().with_results(results);
    encode_response(ApiKey::CreatePartitions, request.api_version, request.header.correlation_id, &response)
}
