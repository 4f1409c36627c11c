//! DescribeCluster (key 60), versions 0-1: cluster id, controller (this node) and the one
//! broker.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::CLUSTER_ID;
use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DescribeCluster, 0, 1);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let _: DescribeClusterRequest = decode_body(request)?;
    let node = ctx.config.node_id;
    let response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_static_str(CLUSTER_ID))
        .with_controller_id(BrokerId(node))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(node))
            .with_host(StrBytes::from_string(ctx.config.advertised_host.clone()))
            .with_port(ctx.config.advertised_port)]);
    encode_response(ApiKey::DescribeCluster, request.api_version, request.header.correlation_id, &response)
}
