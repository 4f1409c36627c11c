//! AlterConfigs (key 33), versions 0-2: replaces a topic's configs with the given set.
//! Values are validated by the controller against what the storage engine honours;
//! unknown keys fail with INVALID_CONFIG. Broker configs are flags, not alterable.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::RESOURCE_TOPIC;
use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ControllerRequest, ShardRequest};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::AlterConfigs, 0, 2);

/// Sends one topic's config change to the controller; (error code, message).
pub async fn alter_topic(
    ctx: &Rc<ShardContext>,
    resource_type: i8,
    topic: String,
    changes: Result<Vec<(String, Option<String>)>, String>,
    incremental: bool,
    validate_only: bool,
) -> (i16, Option<String>) {
    if resource_type != RESOURCE_TOPIC {
        return (
            ResponseError::InvalidRequest.code(),
            Some("only topic configs can be altered; broker settings are flags".into()),
        );
    }
    let changes = match changes {
        Ok(changes) => changes,
        Err(reason) => return (ResponseError::InvalidConfig.code(), Some(reason)),
    };
    ctx.call(0, move |reply| {
        ShardRequest::Controller(ControllerRequest::AlterConfigs { topic, changes, incremental, validate_only, reply })
    })
    .await
    .unwrap_or((ResponseError::NotController.code(), Some("controller unavailable".into())))
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: AlterConfigsRequest = decode_body(request)?;
    let mut responses = Vec::with_capacity(body.resources.len());
    for resource in &body.resources {
        let changes = Ok(resource
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect());
        let (code, message) = alter_topic(
            ctx,
            resource.resource_type,
            resource.resource_name.to_string(),
            changes,
            false,
            body.validate_only,
        )
        .await;
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone()),
        );
    }
    let response = AlterConfigsResponse::default().with_responses(responses);
    encode_response(ApiKey::AlterConfigs, request.api_version, request.header.correlation_id, &response)
}
