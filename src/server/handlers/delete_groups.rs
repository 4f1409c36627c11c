//! DeleteGroups (key 42), versions 0-2: deletes empty groups and their committed offsets
//! (NON_EMPTY_GROUP while members remain, GROUP_ID_NOT_FOUND for unknown groups).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{ApiKey, DeleteGroupsRequest, DeleteGroupsResponse};

use super::ApiSupport;
use crate::group::coordinator::GroupRequest;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DeleteGroups, 0, 2);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: DeleteGroupsRequest = decode_body(request)?;
    let mut results = Vec::with_capacity(body.groups_names.len());
    for group in &body.groups_names {
        let group_id = group.0.to_string();
        let group_key = group_id.clone();
        let code = ctx
            .call_group(&group_key, move |reply| ShardRequest::Group(GroupRequest::Delete { group_id, reply }))
            .await
            .unwrap_or_else(|code| code);
        results.push(DeletableGroupResult::default().with_group_id(group.clone()).with_error_code(code));
    }
    let response = DeleteGroupsResponse::default().with_results(results);
    encode_response(ApiKey::DeleteGroups, request.api_version, request.header.correlation_id, &response)
}
