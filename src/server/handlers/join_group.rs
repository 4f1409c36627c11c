//! JoinGroup (key 11), versions 0-9 (v8 adds a reason; v9 the skip_assignment flag, never
//! set here): forwarded to the group's coordinating shard; the answer may wait for the
//! rebalance to complete (MEMBER_ID_REQUIRED from v4).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{ApiKey, JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::group::coordinator::GroupRequest;
use crate::group::state::JoinRequest;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::JoinGroup, 0, 9);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: JoinGroupRequest = decode_body(request)?;
    let version = request.api_version;
    let group_id = body.group_id.0.to_string();
    let join = JoinRequest {
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: request.header.client_id.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        client_host: request.client_host.clone(),
        protocol_type: body.protocol_type.to_string(),
        protocols: body.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        session_timeout_ms: body.session_timeout_ms,
        // v0 has no rebalance timeout: it equals the session timeout.
        rebalance_timeout_ms: if version >= 1 { body.rebalance_timeout_ms } else { body.session_timeout_ms },
        require_known_member_id: version >= 4,
    };
    let group = group_id.clone();
    let result =
        ctx.call_group(&group, move |reply| ShardRequest::Group(GroupRequest::Join { group_id, request: join, reply })).await;
    let mut response = match result {
        Ok(result) => JoinGroupResponse::default()
            .with_error_code(result.error_code)
            .with_generation_id(result.generation_id)
            .with_protocol_name(result.protocol_name.map(StrBytes::from_string))
            .with_leader(StrBytes::from_string(result.leader))
            .with_member_id(StrBytes::from_string(result.member_id))
            .with_members(
                result
                    .members
                    .into_iter()
                    .map(|m| {
                        let member = JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_string(m.member_id))
                            .with_metadata(m.metadata);
                        if version >= 5 {
                            member.with_group_instance_id(m.instance_id.map(StrBytes::from_string))
                        } else {
                            member
                        }
                    })
                    .collect(),
            )
            .with_protocol_type(if version >= 7 { result.protocol_type.map(StrBytes::from_string) } else { None }),
        Err(code) => JoinGroupResponse::default().with_error_code(code),
    };
    if version < 7 {
        response.protocol_type = None;
    }
    if response.protocol_name.is_none() && version < 7 {
        response.protocol_name = Some(StrBytes::default());
    }
    encode_response(ApiKey::JoinGroup, version, request.header.correlation_id, &response)
}
