//! Metadata (key 3), versions 0-12: brokers (standalone: this node; in a cluster: the
//! registered, unfenced ones), the controller, topics and partitions with their leader,
//! replicas and in-sync replicas (`cluster_layout`; leader epoch 0), and auto topic
//! creation. In v0 the topic list is not nullable and an empty one means every topic
//! (v1+: null means every topic).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::cluster_layout::{controller_id, live_brokers, partition_layout};
use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ControllerRequest, NewTopic, ShardRequest};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::Metadata, 0, 12);
pub const CLUSTER_ID: &str = "tern-cluster";

/// Creates missing topics with the broker's default partition count (auto creation).
pub async fn auto_create(ctx: &Rc<ShardContext>, names: Vec<String>) {
    if names.is_empty() || !ctx.config.auto_create_topics {
        return;
    }
    let topics = names.into_iter().map(NewTopic::with_defaults).collect();
    ctx.call(0, |reply| {
        ShardRequest::Controller(ControllerRequest::CreateTopics { topics, validate_only: false, reply })
    })
    .await;
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let mut body: MetadataRequest = decode_body(request)?;
    if request.api_version == 0 && body.topics.as_ref().is_some_and(|t| t.is_empty()) {
        body.topics = None;
    }
    let existing = ctx.metadata();
    let requested: Option<Vec<(Option<String>, Uuid)>> = body
        .topics
        .as_ref()
        .map(|topics| topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)).collect());

    if body.allow_auto_topic_creation {
        if let Some(requested) = &requested {
            let missing: Vec<String> = requested
                .iter()
                .filter_map(|(name, _)| name.clone())
                .filter(|name| !existing.topics.contains_key(name))
                .filter(|name| crate::metadata::registry::validate_topic_name(name).is_ok())
                .collect();
            auto_create(ctx, missing).await;
        }
    }

    let metadata = ctx.metadata();
    let version = request.api_version;
    let id_if_supported = |id: Uuid| if version >= 10 { id } else { Uuid::nil() };
    let describe = |name: &str, error_code: i16, id: Uuid| -> MetadataResponseTopic {
        let partitions = metadata.topics.get(name).map_or(0, |info| info.partitions);
        MetadataResponseTopic::default()
            .with_error_code(error_code)
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
            .with_topic_id(id)
            .with_partitions(
                (0..partitions)
                    .map(|partition| {
                        let layout = partition_layout(ctx, &metadata, name, partition);
                        let ids = |ids: Vec<i32>| ids.into_iter().map(BrokerId).collect::<Vec<_>>();
                        MetadataResponsePartition::default()
                            .with_error_code(layout.error_code)
                            .with_partition_index(partition)
                            .with_leader_id(BrokerId(layout.leader))
                            .with_leader_epoch(if version >= 7 { layout.leader_epoch } else { -1 })
                            .with_replica_nodes(ids(layout.replicas))
                            .with_isr_nodes(ids(layout.in_sync))
                            .with_offline_replicas(ids(layout.offline))
                    })
                    .collect(),
            )
    };
    let topics = match requested {
        None => metadata
            .topics
            .iter()
            .map(|(name, info)| describe(name, 0, id_if_supported(Uuid::from_bytes(info.id))))
            .collect(),
        Some(requested) => requested
            .into_iter()
            .map(|(name, id)| {
                let found = match &name {
                    Some(name) => metadata.topics.get_key_value(name.as_str()),
                    None => metadata.topics.iter().find(|(_, info)| Uuid::from_bytes(info.id) == id),
                };
                match found {
                    Some((name, info)) => describe(name, 0, id_if_supported(Uuid::from_bytes(info.id))),
                    None => {
                        let code = match &name {
                            Some(n) if crate::metadata::registry::validate_topic_name(n).is_err() => {
                                ResponseError::InvalidTopicException.code()
                            }
                            Some(_) => ResponseError::UnknownTopicOrPartition.code(),
                            None => ResponseError::UnknownTopicId.code(),
                        };
                        MetadataResponseTopic::default()
                            .with_error_code(code)
                            .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                            .with_topic_id(id)
                    }
                }
            })
            .collect(),
    };
    let brokers = live_brokers(ctx, &metadata)
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
    let response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(controller_id(ctx)))
        .with_topics(topics);
    encode_response(ApiKey::Metadata, request.api_version, request.header.correlation_id, &response)
}
