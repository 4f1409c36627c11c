//! AlterConfigs (key 33), versions 0-2: replaces a topic's configs, or a broker's
//! dynamic configs (resource name = node id, or "" for the cluster-wide default), with
//! the given set. The controller validates against the config catalogue: unknown names
//! and bad values fail with INVALID_CONFIG, read-only broker configs with
//! INVALID_REQUEST, as in Kafka.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::ApiSupport;
use crate::metadata::topic_config::{ConfigChange, ConfigOp};
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ConfigResource, ControllerReply, ControllerRequest, ShardRequest};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::AlterConfigs, 0, 2);

/// Sends one resource's config change to the controller; (error code, message).
pub async fn alter_resource(
    ctx: &Rc<ShardContext>,
    resource_type: i8,
    resource_name: String,
    changes: Vec<ConfigChange>,
    incremental: bool,
    validate_only: bool,
) -> ControllerReply {
    let resource = match resource_type {
        RESOURCE_TOPIC => ConfigResource::Topic(resource_name),
        RESOURCE_BROKER => ConfigResource::Broker(resource_name),
        other => {
            return ControllerReply::error(
                ResponseError::InvalidRequest.code(),
                format!("resource type {other} cannot be altered: only topics (2) and brokers (4)"),
            )
        }
    };
    ctx.call(0, move |reply| {
        ShardRequest::Controller(ControllerRequest::AlterConfigs {
            resource,
            changes,
            incremental,
            validate_only,
            reply,
        })
    })
    .await
    .unwrap_or_else(|| ControllerReply::error(ResponseError::NotController.code(), "controller unavailable"))
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: AlterConfigsRequest = decode_body(request)?;
    let mut responses = Vec::with_capacity(body.resources.len());
    for resource in &body.resources {
        // Legacy AlterConfigs replaces the whole set: every listed key is SET (a null
        // value leaves the key unset), every other key goes back to its default.
        let changes = resource
            .configs
            .iter()
            .map(|c| ConfigChange {
                name: c.name.to_string(),
                op: c.value.as_ref().map_or(ConfigOp::Delete, |v| ConfigOp::Set(v.to_string())),
            })
            .collect();
        let ControllerReply { error_code: code, message } = alter_resource(
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
