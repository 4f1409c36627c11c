//! Heartbeat (key 12), versions 0-4.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};

use super::ApiSupport;
use crate::group::coordinator::GroupRequest;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::Heartbeat, 0, 4);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: HeartbeatRequest = decode_body(request)?;
    let group_id = body.group_id.0.to_string();
    let member_id = body.member_id.to_string();
    let instance_id = body.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = body.generation_id;
    let group = group_id.clone();
    let code = ctx
        .call_group(&group, move |reply| {
            ShardRequest::Group(GroupRequest::Heartbeat { group_id, member_id, generation, instance_id, reply })
        })
        .await
        .unwrap_or_else(|code| code);
    let response = HeartbeatResponse::default().with_error_code(code);
    encode_response(ApiKey::Heartbeat, request.api_version, request.header.correlation_id, &response)
}
