//! LeaveGroup (key 13), versions 0-5 (a batch of members, with instance ids, from v3; v5
//! adds a reason, which is logged by nobody and ignored).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{ApiKey, LeaveGroupRequest, LeaveGroupResponse};

use super::ApiSupport;
use crate::group::coordinator::GroupRequest;
use crate::group::state::LeavingMember;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::LeaveGroup, 0, 5);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: LeaveGroupRequest = decode_body(request)?;
    let group_id = body.group_id.0.to_string();
    let batched = request.api_version >= 3;
    let members: Vec<LeavingMember> = if batched {
        body.members
            .iter()
            .map(|m| LeavingMember::new(m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string())))
            .collect()
    } else {
        vec![LeavingMember::new(body.member_id.to_string(), None)]
    };
    let count = members.len();
    let leaving = members.clone();
    let group = group_id.clone();
    let codes = ctx
        .call_group(&group, move |reply| ShardRequest::Group(GroupRequest::Leave { group_id, members: leaving, reply }))
        .await
        .unwrap_or_else(|code| vec![code; count]);
    let response = if batched {
        LeaveGroupResponse::default().with_members(
            body.members
                .iter()
                .zip(&codes)
                .map(|(m, code)| {
                    MemberResponse::default()
                        .with_member_id(m.member_id.clone())
                        .with_group_instance_id(m.group_instance_id.clone())
                        .with_error_code(*code)
                })
                .collect(),
        )
    } else {
        LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0))
    };
    encode_response(ApiKey::LeaveGroup, request.api_version, request.header.correlation_id, &response)
}
