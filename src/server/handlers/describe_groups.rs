//! DescribeGroups (key 15), versions 0-5: state, protocol, members with their metadata
//! and assignments.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{ApiKey, DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::group::coordinator::GroupRequest;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DescribeGroups, 0, 5);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: DescribeGroupsRequest = decode_body(request)?;
    let mut described = Vec::with_capacity(body.groups.len());
    for group in &body.groups {
        let group_id = group.0.to_string();
        let id = group_id.clone();
        let entry = match ctx
            .call_group(&group_id, move |reply| ShardRequest::Group(GroupRequest::Describe { group_id: id, reply }))
            .await
        {
            Err(code) => DescribedGroup::default().with_group_id(group.clone()).with_error_code(code),
            Ok(d) => DescribedGroup::default()
                .with_group_id(group.clone())
                .with_error_code(d.error_code)
                .with_group_state(StrBytes::from_string(d.state))
                .with_protocol_type(StrBytes::from_string(d.protocol_type))
                .with_protocol_data(StrBytes::from_string(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            let member = DescribedGroupMember::default()
                                .with_member_id(StrBytes::from_string(m.member_id))
                                .with_client_id(StrBytes::from_string(m.client_id))
                                .with_client_host(StrBytes::from_string(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment);
                            if request.api_version >= 4 {
                                member.with_group_instance_id(m.instance_id.map(StrBytes::from_string))
                            } else {
                                member
                            }
                        })
                        .collect(),
                ),
        };
        described.push(entry);
    }
    let response = DescribeGroupsResponse::default().with_groups(described);
    encode_response(ApiKey::DescribeGroups, request.api_version, request.header.correlation_id, &response)
}
