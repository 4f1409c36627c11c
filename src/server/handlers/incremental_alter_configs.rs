//! IncrementalAlterConfigs (key 44), versions 0-1: SET, DELETE, APPEND and SUBTRACT of
//! individual topic or broker configs. APPEND and SUBTRACT work on list-typed configs
//! (`cleanup.policy`, the throttled-replica lists) starting from the current override or
//! the config's default, as Kafka does; on other configs they fail with INVALID_CONFIG.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::alter_configs::alter_resource;
use super::ApiSupport;
use crate::metadata::topic_config::{ConfigChange, ConfigOp};
use crate::shard::mesh::ControllerReply;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::IncrementalAlterConfigs, 0, 1);

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: IncrementalAlterConfigsRequest = decode_body(request)?;
    let mut responses = Vec::with_capacity(body.resources.len());
    for resource in &body.resources {
        let changes = resource
            .configs
            .iter()
            .map(|c| {
                let value = c.value.as_ref().map(|v| v.to_string());
                let op = match (c.config_operation, value) {
                    (OP_DELETE, _) => ConfigOp::Delete,
                    (OP_SET, Some(value)) => ConfigOp::Set(value),
                    (OP_APPEND, Some(value)) => ConfigOp::Append(value),
                    (OP_SUBTRACT, Some(value)) => ConfigOp::Subtract(value),
                    (OP_SET | OP_APPEND | OP_SUBTRACT, None) => {
                        return Err(format!("Null value not supported for : {}", c.name.as_str()))
                    }
                    (op, _) => return Err(format!("unknown config operation {op} on {}", c.name.as_str())),
                };
                Ok(ConfigChange { name: c.name.to_string(), op })
            })
            .collect::<Result<Vec<_>, _>>();
        let ControllerReply { error_code: code, message } = match changes {
            Ok(changes) => {
                alter_resource(
                    ctx,
                    resource.resource_type,
                    resource.resource_name.to_string(),
                    changes,
                    true,
                    body.validate_only,
                )
                .await
            }
            Err(reason) => ControllerReply::error(ResponseError::InvalidRequest.code(), reason),
        };
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone()),
        );
    }
    let response = IncrementalAlterConfigsResponse::default().with_responses(responses);
    encode_response(ApiKey::IncrementalAlterConfigs, request.api_version, request.header.correlation_id, &response)
}
