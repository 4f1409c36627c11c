//! SyncGroup (key 14), versions 0-5: the leader's assignments in, each member's own out.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::group::coordinator::GroupRequest;
use crate::group::state::MemberAssignment;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::SyncGroup, 0, 5);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: SyncGroupRequest = decode_body(request)?;
    let group_id = body.group_id.0.to_string();
    let member_id = body.member_id.to_string();
    let instance_id = body.group_instance_id.as_ref().map(|s| s.to_string());
    let assignments = body
        .assignments
        .iter()
        .map(|a| MemberAssignment { member_id: a.member_id.to_string(), assignment: a.assignment.clone() })
        .collect();
    let generation = body.generation_id;
    let group = group_id.clone();
    let result = ctx
        .call_group(&group, move |reply| {
            ShardRequest::Group(GroupRequest::Sync { group_id, member_id, generation, instance_id, assignments, reply })
        })
        .await;
    let mut response = match result {
        Ok(result) => {
            let mut response =
                SyncGroupResponse::default().with_error_code(result.error_code).with_assignment(result.assignment);
            if request.api_version >= 5 {
                response.protocol_type = result.protocol_type.map(StrBytes::from_string);
                response.protocol_name = result.protocol_name.map(StrBytes::from_string);
            }
            response
        }
        Err(code) => SyncGroupResponse::default().with_error_code(code),
    };
    if request.api_version < 5 {
        response.protocol_type = None;
        response.protocol_name = None;
    }
    encode_response(ApiKey::SyncGroup, request.api_version, request.header.correlation_id, &response)
}
