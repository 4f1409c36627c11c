//! FindCoordinator (key 10), versions 0-6: this node coordinates every group (v4+ answers
//! a batch of keys). Transaction coordinators are not offered: Tern has no transactions.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::FindCoordinator, 0, 6);

const KEY_TYPE_GROUP: i8 = 0;

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: FindCoordinatorRequest = decode_body(request)?;
    let node = BrokerId(ctx.config.node_id);
    let host = StrBytes::from_string(ctx.config.advertised_host.clone());
    let port = ctx.config.advertised_port;
    let error = if body.key_type == KEY_TYPE_GROUP { 0 } else { ResponseError::CoordinatorNotAvailable.code() };
    let response = if request.api_version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(
            body.coordinator_keys
                .iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(key.clone())
                        .with_node_id(node)
                        .with_host(host.clone())
                        .with_port(port)
                        .with_error_code(error)
                })
                .collect(),
        )
    } else {
        FindCoordinatorResponse::default().with_error_code(error).with_node_id(node).with_host(host).with_port(port)
    };
    encode_response(ApiKey::FindCoordinator, request.api_version, request.header.correlation_id, &response)
}
