//! FindCoordinator (key 10), versions 0-6: the broker coordinating each group (v4+
//! answers a batch of keys): standalone this node; in a cluster the leader of the group's
//! `__consumer_offsets` partition (COORDINATOR_NOT_AVAILABLE while it is fenced).
//! Transaction coordinators (key type 1): standalone this node; in a cluster the leader
//! of the id's `__transaction_state` partition.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::cluster_layout::broker_address;
use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::FindCoordinator, 0, 6);

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: FindCoordinatorRequest = decode_body(request)?;
    let metadata = ctx.metadata();
    let locate = |key: &str| -> (i16, BrokerId, StrBytes, i32) {
        let node = match body.key_type {
            KEY_TYPE_GROUP => ctx.group_coordinator_node(key),
            KEY_TYPE_TRANSACTION => crate::shard::txn_cluster::txn_coordinator_node(ctx, key),
            _ => return (ResponseError::InvalidRequest.code(), BrokerId(-1), StrBytes::default(), -1),
        };
        match broker_address(ctx, &metadata, node) {
            Some(b) => (0, BrokerId(b.node_id), StrBytes::from_string(b.host), b.port),
            None => (ResponseError::CoordinatorNotAvailable.code(), BrokerId(-1), StrBytes::default(), -1),
        }
    };
    let response = if request.api_version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(
            body.coordinator_keys
                .iter()
                .map(|key| {
                    let (error, node, host, port) = locate(key);
                    Coordinator::default()
                        .with_key(key.clone())
                        .with_node_id(node)
                        .with_host(host)
                        .with_port(port)
                        .with_error_code(error)
                })
                .collect(),
        )
    } else {
        let (error, node, host, port) = locate(&body.key);
        FindCoordinatorResponse::default().with_error_code(error).with_node_id(node).with_host(host).with_port(port)
    };
    encode_response(ApiKey::FindCoordinator, request.api_version, request.header.correlation_id, &response)
}
