//! ListGroups (key 16), versions 0-5: every group of every shard (v4: state filter; v5:
//! type filter and group type, every Tern group being a "classic" group, KIP-848).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ApiKey, GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::group::coordinator::GroupRequest;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;

/// The classic group protocol (JoinGroup/SyncGroup), the only one Tern runs.
const GROUP_TYPE: &str = "classic";

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::ListGroups, 0, 5);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: ListGroupsRequest = decode_body(request)?;
    let mut groups = Vec::new();
    for shard in 0..ctx.shard_count {
        if let Some(listed) = ctx.call(shard, |reply| ShardRequest::Group(GroupRequest::List { reply })).await {
            groups.extend(listed);
        }
    }
    let filter: Vec<String> = body.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let classic_wanted =
        body.types_filter.is_empty() || body.types_filter.iter().any(|t| t.eq_ignore_ascii_case(GROUP_TYPE));
    let listed = groups
        .into_iter()
        .filter(|_| classic_wanted)
        .filter(|g| filter.is_empty() || filter.contains(&g.state.to_lowercase()))
        .map(|g| {
            let entry = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            let entry =
                if request.api_version >= 4 { entry.with_group_state(StrBytes::from_string(g.state)) } else { entry };
            if request.api_version >= 5 {
                entry.with_group_type(StrBytes::from_static_str(GROUP_TYPE))
            } else {
                entry
            }
        })
        .collect();
    let response = ListGroupsResponse::default().with_groups(listed);
    encode_response(ApiKey::ListGroups, request.api_version, request.header.correlation_id, &response)
}
