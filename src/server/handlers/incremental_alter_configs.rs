//! IncrementalAlterConfigs (key 44), versions 0-1: SET and DELETE of individual topic
//! configs. APPEND and SUBTRACT apply to list-typed configs, which no honoured topic
//! config is, so they fail with INVALID_CONFIG.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::alter_configs::alter_topic;
use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::IncrementalAlterConfigs, 0, 1);

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: IncrementalAlterConfigsRequest = decode_body(request)?;
    let mut responses = Vec::with_capacity(body.resources.len());
    for resource in &body.resources {
        let changes = resource
            .configs
            .iter()
            .map(|c| match c.config_operation {
                OP_SET => Ok((c.name.to_string(), Some(c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()))),
                OP_DELETE => Ok((c.name.to_string(), None)),
                op => Err(format!("operation {op} on {} is not supported: only SET and DELETE", c.name.as_str())),
            })
            .collect::<Result<Vec<_>, _>>();
        let (code, message) = alter_topic(
            ctx,
            resource.resource_type,
            resource.resource_name.to_string(),
            changes,
            true,
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
    let response = IncrementalAlterConfigsResponse::default().with_responses(responses);
    encode_response(ApiKey::IncrementalAlterConfigs, request.api_version, request.header.correlation_id, &response)
}
