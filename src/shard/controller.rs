//! The controller: the single writer of cluster metadata, running on shard 0.
//!
//! Every change is serialized (`controller_gate`), validated, persisted, and then applied
//! on every shard (each opens or removes its logs) before the request is answered, so a
//! client that created a topic can produce to it on any connection right away.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use crate::metadata::broker_config::{broker_resource, validate_dynamic, BrokerResource};
use crate::metadata::config_catalog::{topic_config_for_broker_synonym, ConfigType};
use crate::metadata::registry::validate_topic_name;
use crate::metadata::topic_config::{
    apply_changes, log_config, topic_kind_and_default, BrokerLayers, ConfigChange, ConfigError,
};
use crate::metadata::{ClusterMetadata, TopicMetadata};

use super::mesh::{ConfigResource, ControllerReply, ControllerRequest, NewTopic, ShardRequest};
use super::ShardContext;

/// Partitions per topic accepted by CreateTopics / CreatePartitions.
const TOPIC_PARTITIONS_MAX: i32 = 10_000;

pub async fn execute(ctx: &Rc<ShardContext>, request: ControllerRequest) {
    let _permit = ctx.controller_gate.acquire_permit(1).await.expect("controller gate never closes");
    match request {
        ControllerRequest::CreateTopics { topics, validate_only, reply } => {
            let _ = reply.send(create_topics(ctx, topics, validate_only).await);
        }
        ControllerRequest::DeleteTopics { names, reply } => {
            let _ = reply.send(delete_topics(ctx, names).await);
        }
        ControllerRequest::AlterConfigs { resource, changes, incremental, validate_only, reply } => {
            let _ = reply.send(alter_configs(ctx, resource, changes, incremental, validate_only).await);
        }
        ControllerRequest::CreatePartitions { topic, count, validate_only, reply } => {
            let _ = reply.send(create_partitions(ctx, topic, count, validate_only).await);
        }
        ControllerRequest::AllocateProducerId { reply } => {
            let mut next = (*ctx.metadata()).clone();
            let id = next.next_producer_id;
            next.next_producer_id += 1;
            let result = commit(ctx, next).await.map(|()| id).map_err(|_| ResponseError::KafkaStorageError.code());
            let _ = reply.send(result);
        }
    }
}

fn new_topic_id(name: &str, version: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    id[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
    id[8..12].copy_from_slice(&crate::stable_hash::fnv1a_32(name.as_bytes()).to_be_bytes());
    id[12..].copy_from_slice(&(version as u32).to_be_bytes());
    id
}

async fn create_topics(ctx: &Rc<ShardContext>, topics: Vec<NewTopic>, validate_only: bool) -> Vec<ControllerReply> {
    let mut next = (*ctx.metadata()).clone();
    let mut results = Vec::with_capacity(topics.len());
    let mut changed = false;
    for NewTopic { name, partitions, configs } in topics {
        let partitions = if partitions == -1 { ctx.config.default_partitions } else { partitions };
        let configs: BTreeMap<String, String> = configs.into_iter().collect();
        let outcome = if let Err(reason) = validate_topic_name(&name) {
            ControllerReply::error(ResponseError::InvalidTopicException.code(), reason)
        } else if next.topics.contains_key(&name) {
            ControllerReply::error(ResponseError::TopicAlreadyExists.code(), format!("topic {name:?} already exists"))
        } else if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
            ControllerReply::error(
                ResponseError::InvalidPartitions.code(),
                format!("partitions must be 1..={TOPIC_PARTITIONS_MAX}"),
            )
        } else if let Err(reason) =
            log_config(&configs, next.broker_layers(ctx.config.node_id, &ctx.config.static_broker_configs))
        {
            ControllerReply::error(ResponseError::InvalidConfig.code(), reason)
        } else {
            if !validate_only {
                let id = new_topic_id(&name, next.version);
                next.topics.insert(name, TopicMetadata { id, partitions, configs });
                changed = true;
            }
            ControllerReply::ok()
        };
        results.push(outcome);
    }
    if changed && commit(ctx, next).await.is_err() {
        for result in results.iter_mut().filter(|r| r.error_code == 0) {
            *result =
                ControllerReply::error(ResponseError::KafkaStorageError.code(), "could not persist cluster metadata");
        }
    }
    results
}

async fn delete_topics(ctx: &Rc<ShardContext>, names: Vec<String>) -> Vec<i16> {
    let mut next = (*ctx.metadata()).clone();
    let mut results = Vec::with_capacity(names.len());
    let mut changed = false;
    for name in names {
        if next.topics.remove(&name).is_some() {
            changed = true;
            results.push(0);
        } else {
            results.push(ResponseError::UnknownTopicOrPartition.code());
        }
    }
    if changed && commit(ctx, next).await.is_err() {
        return results.into_iter().map(|r| if r == 0 { ResponseError::KafkaStorageError.code() } else { r }).collect();
    }
    results
}

async fn alter_configs(
    ctx: &Rc<ShardContext>,
    resource: ConfigResource,
    changes: Vec<ConfigChange>,
    incremental: bool,
    validate_only: bool,
) -> ControllerReply {
    let current = ctx.metadata();
    let mut next = (*current).clone();
    let refused = |error: ConfigError| match error {
        ConfigError::Invalid(message) => ControllerReply::error(ResponseError::InvalidConfig.code(), message),
        ConfigError::Request(message) => ControllerReply::error(ResponseError::InvalidRequest.code(), message),
    };
    match resource {
        ConfigResource::Topic(topic) => {
            let Some(info) = next.topics.get_mut(&topic) else {
                return ControllerReply::error(
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("unknown topic {topic:?}"),
                );
            };
            let base = if incremental { info.configs.clone() } else { BTreeMap::new() };
            let updated = match apply_changes(&base, &changes, topic_kind_and_default) {
                Ok(updated) => updated,
                Err(error) => return refused(error),
            };
            let layers = current.broker_layers(ctx.config.node_id, &ctx.config.static_broker_configs);
            if let Err(reason) = log_config(&updated, layers) {
                return ControllerReply::error(ResponseError::InvalidConfig.code(), reason);
            }
            info.configs = updated;
        }
        ConfigResource::Broker(name) => {
            let key = match broker_resource(&name, ctx.config.node_id) {
                Ok(BrokerResource::ClusterDefault) => String::new(),
                Ok(BrokerResource::ThisBroker) => ctx.config.node_id.to_string(),
                Err(error) => return refused(error),
            };
            let base =
                if incremental { next.broker_configs.get(&key).cloned().unwrap_or_default() } else { BTreeMap::new() };
            let updated = match apply_changes(&base, &changes, broker_kind_and_default) {
                Ok(updated) => updated,
                Err(error) => return refused(error),
            };
            if let Err(error) = validate_dynamic(&updated) {
                return refused(error);
            }
            // Every topic must still get a config the storage engine can run with.
            let (per_broker, cluster_default) = if key.is_empty() {
                (next.broker_configs.get(&ctx.config.node_id.to_string()), Some(&updated))
            } else {
                (Some(&updated), next.broker_configs.get(""))
            };
            let layers =
                BrokerLayers { per_broker, cluster_default, static_configs: &ctx.config.static_broker_configs };
            for (topic, info) in std::iter::once((&String::new(), &BTreeMap::new()))
                .chain(next.topics.iter().map(|(t, i)| (t, &i.configs)))
            {
                if let Err(reason) = log_config(info, layers) {
                    let whom = if topic.is_empty() { "topics".to_string() } else { format!("topic {topic}") };
                    return ControllerReply::error(
                        ResponseError::InvalidConfig.code(),
                        format!("{whom} would get an invalid config: {reason}"),
                    );
                }
            }
            if updated.is_empty() {
                next.broker_configs.remove(&key);
            } else {
                next.broker_configs.insert(key, updated);
            }
        }
    }
    if validate_only {
        return ControllerReply::ok();
    }
    match commit(ctx, next).await {
        Ok(()) => ControllerReply::ok(),
        Err(reason) => ControllerReply::error(ResponseError::KafkaStorageError.code(), reason),
    }
}

/// `apply_changes`' lookup for broker configs: the topic config a broker config defaults.
fn broker_kind_and_default(name: &str) -> Option<(ConfigType, String)> {
    topic_config_for_broker_synonym(name)
        .map(|(def, synonym)| (def.kind, synonym.default.unwrap_or(def.default).to_string()))
}

async fn create_partitions(ctx: &Rc<ShardContext>, topic: String, count: i32, validate_only: bool) -> ControllerReply {
    let mut next = (*ctx.metadata()).clone();
    let Some(info) = next.topics.get_mut(&topic) else {
        return ControllerReply::error(
            ResponseError::UnknownTopicOrPartition.code(),
            format!("unknown topic {topic:?}"),
        );
    };
    if count <= info.partitions || count > TOPIC_PARTITIONS_MAX {
        return ControllerReply::error(
            ResponseError::InvalidPartitions.code(),
            format!(
                "topic has {} partitions; the new count must be larger and at most {TOPIC_PARTITIONS_MAX}",
                info.partitions
            ),
        );
    }
    if validate_only {
        return ControllerReply::ok();
    }
    info.partitions = count;
    match commit(ctx, next).await {
        Ok(()) => ControllerReply::ok(),
        Err(reason) => ControllerReply::error(ResponseError::KafkaStorageError.code(), reason),
    }
}

/// Persists a new snapshot and applies it on every shard before returning.
async fn commit(ctx: &Rc<ShardContext>, mut next: ClusterMetadata) -> Result<(), String> {
    next.version += 1;
    next.persist(&ctx.config.data_dir).await.map_err(|error| {
        tracing::error!(%error, "persisting cluster metadata failed");
        error.to_string()
    })?;
    let snapshot = Arc::new(next);
    for shard in 0..ctx.shard_count {
        let metadata = snapshot.clone();
        ctx.call(shard, move |reply| ShardRequest::ApplyMetadata { metadata, reply }).await;
    }
    Ok(())
}
