//! The controller: the single writer of cluster metadata, running on shard 0.
//!
//! Every change is serialized (`controller_gate`), validated, and turned into
//! `MetadataCommand`s. A standalone node applies and persists them at once; a cluster
//! node that leads the metadata quorum proposes them and waits until they are committed
//! and applied, and a node that does not lead forwards the request to the one that does
//! (`controller_forward`). Either way the new state is installed on every shard of this
//! node (each opens or removes its logs) before the request is answered, so a client
//! that created a topic can produce to it on any connection right away.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use crate::cluster::QuorumError;
use crate::metadata::broker_config::{broker_resource, validate_dynamic, BrokerResource};
use crate::metadata::commands::{place_replicas, CommandEffect, MetadataCommand};
use crate::metadata::config_catalog::{topic_config_for_broker_synonym, ConfigType};
use crate::metadata::registry::validate_topic_name;
use crate::metadata::topic_config::{
    apply_changes, log_config, topic_kind_and_default, BrokerLayers, ConfigChange, ConfigError,
};
use crate::metadata::{ClusterMetadata, TopicMetadata};

use super::mesh::{ConfigResource, ControllerReply, ControllerRequest, NewTopic, PartitionReassignment, ShardRequest};
use super::ShardContext;

/// Partitions per topic accepted by CreateTopics / CreatePartitions.
const TOPIC_PARTITIONS_MAX: i32 = 10_000;
/// Producer ids a broker reserves at a time in a cluster.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

pub async fn execute(ctx: &Rc<ShardContext>, request: ControllerRequest) {
    let request = match request {
        ControllerRequest::AllocateProducerId { reply } if ctx.quorum().is_some() => {
            let _ = reply.send(producer_id_from_block(ctx).await);
            return;
        }
        other => other,
    };
    if let Some(quorum) = ctx.quorum() {
        let leader = quorum.wait_for_leader(2 * ctx.cluster_config().election_timeout).await;
        match leader {
            Some(leader) if leader == quorum.node_id() => {
                if !quorum.wait_ready_to_lead(2 * ctx.cluster_config().election_timeout).await {
                    return super::controller_forward::refuse(request, &QuorumError::NotLeader(quorum.leader()));
                }
            }
            Some(leader) => return super::controller_forward::forward(&quorum, leader, request).await,
            None => return super::controller_forward::refuse(request, &quorum.no_leader()),
        }
    }
    execute_here(ctx, request).await
}

/// Executes a request on this node (standalone, or the quorum leader).
pub async fn execute_here(ctx: &Rc<ShardContext>, request: ControllerRequest) {
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
            let result = match commit(ctx, vec![MetadataCommand::AllocateProducerIds { count: 1 }]).await {
                Ok(effects) => match effects.first() {
                    Some(CommandEffect::ProducerIds { first }) => Ok(*first),
                    _ => Err(ResponseError::KafkaStorageError.code()),
                },
                Err(refused) => Err(refused.error_code),
            };
            let _ = reply.send(result);
        }
        ControllerRequest::AllocateProducerIdBlock { reply } => {
            let command = MetadataCommand::AllocateProducerIds { count: PRODUCER_ID_BLOCK };
            let result = match commit(ctx, vec![command]).await {
                Ok(effects) => match effects.first() {
                    Some(CommandEffect::ProducerIds { first }) => Ok(*first),
                    _ => Err(ControllerReply::error(ResponseError::UnknownServerError.code(), "no block allocated")),
                },
                Err(refused) => Err(refused),
            };
            let _ = reply.send(result);
        }
        ControllerRequest::ImportTopics { node_id, topics, next_producer_id, reply } => {
            let _ = reply.send(import_topics(ctx, node_id, topics, next_producer_id).await);
        }
        ControllerRequest::Reassign { changes, reply } => {
            let _ = reply.send(reassign(ctx, changes).await);
        }
        ControllerRequest::CompleteReassignment { topic, partition, target, reply } => {
            let command = MetadataCommand::CompleteReassignment {
                name: topic,
                partition,
                replicas: target.replicas,
                epoch: target.epoch,
            };
            let _ = reply.send(match commit(ctx, vec![command]).await {
                Ok(effects) => match effects.first() {
                    Some(CommandEffect::Skipped(reason)) => {
                        ControllerReply::error(ResponseError::NoReassignmentInProgress.code(), reason.clone())
                    }
                    _ => ControllerReply::ok(),
                },
                Err(refused) => refused,
            });
        }
    }
}

/// Cluster mode: the next producer id from this broker's block, reserving a new block
/// through the controller when it is used up (ids stay unique cluster-wide: every block
/// comes from the replicated counter). Runs on shard 0.
async fn producer_id_from_block(ctx: &Rc<ShardContext>) -> Result<i64, i16> {
    loop {
        let (next, end) = ctx.producer_id_block.get();
        if next < end {
            ctx.producer_id_block.set((next + 1, end));
            return Ok(next);
        }
        let (reply, answer) = futures_channel::oneshot::channel();
        Box::pin(execute(ctx, ControllerRequest::AllocateProducerIdBlock { reply })).await;
        let first = match answer.await {
            Ok(Ok(first)) => first,
            Ok(Err(refused)) => return Err(refused.error_code),
            Err(_) => return Err(ResponseError::CoordinatorNotAvailable.code()),
        };
        // Another caller may have refilled meanwhile; the newest block wins, the rest of
        // the older one is left unused (ids are never handed out twice).
        ctx.producer_id_block.set((first, first + PRODUCER_ID_BLOCK));
    }
}

/// The state requests are validated against: in a cluster the quorum's applied state
/// (shard 0's installed copy may lag it by a publication), standalone the installed one.
fn current_metadata(ctx: &ShardContext) -> Arc<ClusterMetadata> {
    ctx.quorum().map_or_else(|| ctx.metadata(), |quorum| quorum.state())
}

/// The brokers new replicas may be placed on: registered and not fenced.
fn live_brokers(metadata: &ClusterMetadata) -> Vec<i32> {
    metadata.brokers.values().filter(|b| !b.fenced).map(|b| b.node_id).collect()
}

/// Replica lists for `count` partitions of `topic` from `first` on (empty standalone).
fn assign(
    ctx: &ShardContext,
    metadata: &ClusterMetadata,
    topic: &str,
    first: i32,
    count: i32,
    replication_factor: i16,
) -> Result<Vec<Vec<i32>>, ControllerReply> {
    if ctx.quorum().is_none() {
        return Ok(Vec::new());
    }
    let factor = if replication_factor == -1 { ctx.config.default_replication_factor } else { replication_factor };
    if factor < 1 {
        return Err(ControllerReply::error(
            ResponseError::InvalidReplicationFactor.code(),
            format!("replication factor must be at least 1, not {factor}"),
        ));
    }
    place_replicas(topic, first, count, factor as usize, &live_brokers(metadata))
        .map_err(|reason| ControllerReply::error(ResponseError::InvalidReplicationFactor.code(), reason))
}

async fn import_topics(
    ctx: &Rc<ShardContext>,
    node_id: i32,
    topics: Vec<(String, TopicMetadata)>,
    next_producer_id: i64,
) -> Vec<ControllerReply> {
    let current = current_metadata(ctx);
    let mut commands = Vec::new();
    let mut results = Vec::new();
    for (name, topic) in topics {
        match current.topics.get(&name) {
            Some(existing) if existing.id == topic.id => results.push(ControllerReply::ok()),
            Some(_) => results.push(ControllerReply::error(
                ResponseError::TopicAlreadyExists.code(),
                format!("the cluster already has another topic named {name:?}"),
            )),
            None => {
                let replicas = vec![vec![node_id]; topic.partitions.max(0) as usize];
                commands.push(MetadataCommand::CreateTopic {
                    name,
                    id: topic.id,
                    partitions: topic.partitions,
                    configs: topic.configs,
                    replicas,
                });
                results.push(ControllerReply::ok());
            }
        }
    }
    if next_producer_id > current.next_producer_id {
        commands.push(MetadataCommand::AllocateProducerIds { count: next_producer_id - current.next_producer_id });
    }
    if commands.is_empty() {
        return results;
    }
    match commit(ctx, commands).await {
        Err(refused) => results.into_iter().map(|_| refused.clone()).collect(),
        Ok(effects) => {
            // A creation skipped when applied (the name was taken meanwhile) is a clash.
            if let Some(CommandEffect::Skipped(reason)) =
                effects.iter().find(|effect| matches!(effect, CommandEffect::Skipped(_)))
            {
                return results
                    .into_iter()
                    .map(|_| ControllerReply::error(ResponseError::TopicAlreadyExists.code(), reason.clone()))
                    .collect();
            }
            results
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
    let current = current_metadata(ctx);
    let mut commands = Vec::new();
    let mut results = Vec::with_capacity(topics.len());
    let mut names = std::collections::BTreeSet::new();
    for NewTopic { name, partitions, replication_factor, assignments, configs } in topics {
        let partitions = if !assignments.is_empty() {
            assignments.len() as i32
        } else if partitions == -1 {
            ctx.config.default_partitions
        } else {
            partitions
        };
        let configs: BTreeMap<String, String> = configs.into_iter().collect();
        let replicas = if !assignments.is_empty() && ctx.quorum().is_some() {
            Ok(assignments)
        } else {
            assign(ctx, &current, &name, 0, partitions.clamp(0, TOPIC_PARTITIONS_MAX), replication_factor)
        };
        let outcome = if let Err(reason) = validate_topic_name(&name) {
            ControllerReply::error(ResponseError::InvalidTopicException.code(), reason)
        } else if current.topics.contains_key(&name) || names.contains(&name) {
            ControllerReply::error(ResponseError::TopicAlreadyExists.code(), format!("topic {name:?} already exists"))
        } else if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
            ControllerReply::error(
                ResponseError::InvalidPartitions.code(),
                format!("partitions must be 1..={TOPIC_PARTITIONS_MAX}"),
            )
        } else if let Err(reason) =
            log_config(&configs, current.broker_layers(ctx.config.node_id, &ctx.config.static_broker_configs))
        {
            ControllerReply::error(ResponseError::InvalidConfig.code(), reason)
        } else {
            match replicas {
                Err(refused) => refused,
                Ok(replicas) => {
                    if !validate_only {
                        let id = new_topic_id(&name, current.version + commands.len() as u64);
                        names.insert(name.clone());
                        commands.push(MetadataCommand::CreateTopic { name, id, partitions, configs, replicas });
                    }
                    ControllerReply::ok()
                }
            }
        };
        results.push(outcome);
    }
    if commands.is_empty() {
        return results;
    }
    match commit(ctx, commands).await {
        Ok(effects) => {
            let mut effects = effects.into_iter();
            for result in results.iter_mut().filter(|r| r.error_code == 0) {
                if let Some(CommandEffect::Skipped(reason)) = effects.next() {
                    *result = ControllerReply::error(ResponseError::TopicAlreadyExists.code(), reason);
                }
            }
        }
        Err(refused) => {
            for result in results.iter_mut().filter(|r| r.error_code == 0) {
                *result = refused.clone();
            }
        }
    }
    results
}

async fn delete_topics(ctx: &Rc<ShardContext>, names: Vec<String>) -> Vec<i16> {
    let current = current_metadata(ctx);
    let mut results = Vec::with_capacity(names.len());
    let mut commands = Vec::new();
    for name in names {
        if current.topics.contains_key(&name)
            && !commands.contains(&MetadataCommand::DeleteTopic { name: name.clone() })
        {
            commands.push(MetadataCommand::DeleteTopic { name });
            results.push(0);
        } else {
            results.push(ResponseError::UnknownTopicOrPartition.code());
        }
    }
    if !commands.is_empty() {
        if let Err(refused) = commit(ctx, commands).await {
            return results.into_iter().map(|r| if r == 0 { refused.error_code } else { r }).collect();
        }
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
    let current = current_metadata(ctx);
    let refused = |error: ConfigError| match error {
        ConfigError::Invalid(message) => ControllerReply::error(ResponseError::InvalidConfig.code(), message),
        ConfigError::Request(message) => ControllerReply::error(ResponseError::InvalidRequest.code(), message),
    };
    let command = match resource {
        ConfigResource::Topic(topic) => {
            let Some(info) = current.topics.get(&topic) else {
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
            MetadataCommand::SetTopicConfigs { name: topic, configs: updated }
        }
        ConfigResource::Broker(name) => {
            // In a cluster the controller changes any registered broker's configs (the
            // request may have been forwarded from that broker).
            let registered = name.parse::<i32>().ok().filter(|id| current.brokers.contains_key(id));
            let key = match (registered, broker_resource(&name, ctx.config.node_id)) {
                (Some(id), _) => id.to_string(),
                (None, Ok(BrokerResource::ClusterDefault)) => String::new(),
                (None, Ok(BrokerResource::ThisBroker)) => ctx.config.node_id.to_string(),
                (None, Err(error)) => return refused(error),
            };
            let base = if incremental {
                current.broker_configs.get(&key).cloned().unwrap_or_default()
            } else {
                BTreeMap::new()
            };
            let updated = match apply_changes(&base, &changes, broker_kind_and_default) {
                Ok(updated) => updated,
                Err(error) => return refused(error),
            };
            if let Err(error) = validate_dynamic(&updated) {
                return refused(error);
            }
            // Every topic must still get a config the storage engine can run with.
            let (per_broker, cluster_default) = if key.is_empty() {
                (current.broker_configs.get(&ctx.config.node_id.to_string()), Some(&updated))
            } else {
                (Some(&updated), current.broker_configs.get(""))
            };
            let layers =
                BrokerLayers { per_broker, cluster_default, static_configs: &ctx.config.static_broker_configs };
            for (topic, info) in std::iter::once((&String::new(), &BTreeMap::new()))
                .chain(current.topics.iter().map(|(t, i)| (t, &i.configs)))
            {
                if let Err(reason) = log_config(info, layers) {
                    let whom = if topic.is_empty() { "topics".to_string() } else { format!("topic {topic}") };
                    return ControllerReply::error(
                        ResponseError::InvalidConfig.code(),
                        format!("{whom} would get an invalid config: {reason}"),
                    );
                }
            }
            MetadataCommand::SetBrokerConfigs { key, configs: updated }
        }
    };
    if validate_only {
        return ControllerReply::ok();
    }
    match commit(ctx, vec![command]).await {
        Ok(_) => ControllerReply::ok(),
        Err(refused) => refused,
    }
}

/// `apply_changes`' lookup for broker configs: the topic config a broker config defaults.
fn broker_kind_and_default(name: &str) -> Option<(ConfigType, String)> {
    topic_config_for_broker_synonym(name)
        .map(|(def, synonym)| (def.kind, synonym.default.unwrap_or(def.default).to_string()))
}

async fn create_partitions(ctx: &Rc<ShardContext>, topic: String, count: i32, validate_only: bool) -> ControllerReply {
    let current = current_metadata(ctx);
    let Some(info) = current.topics.get(&topic) else {
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
    // New partitions get as many replicas as partition 0 has.
    let factor = info.replicas_of(0).len().max(1) as i16;
    let replicas = match assign(ctx, &current, &topic, info.partitions, count - info.partitions, factor) {
        Ok(replicas) => replicas,
        Err(refused) => return refused,
    };
    if validate_only {
        return ControllerReply::ok();
    }
    match commit(ctx, vec![MetadataCommand::AddPartitions { name: topic, count, replicas }]).await {
        Ok(_) => ControllerReply::ok(),
        Err(refused) => refused,
    }
}

/// AlterPartitionReassignments: checks each change against the current state (Kafka's
/// error codes) and commits the valid ones together.
async fn reassign(ctx: &Rc<ShardContext>, changes: Vec<PartitionReassignment>) -> Vec<ControllerReply> {
    let current = current_metadata(ctx);
    let mut replies = Vec::with_capacity(changes.len());
    let mut commands = Vec::new();
    for change in changes {
        match check_reassignment(ctx, &current, &change) {
            Ok(()) => {
                replies.push(ControllerReply::ok());
                commands.push(MetadataCommand::ReassignPartition {
                    name: change.topic,
                    partition: change.partition,
                    target: change.target,
                });
            }
            Err(refused) => replies.push(refused),
        }
    }
    if commands.is_empty() {
        return replies;
    }
    if let Err(refused) = commit(ctx, commands).await {
        for reply in replies.iter_mut().filter(|reply| reply.error_code == 0) {
            *reply = refused.clone();
        }
    }
    replies
}

fn check_reassignment(
    ctx: &ShardContext,
    current: &ClusterMetadata,
    change: &PartitionReassignment,
) -> Result<(), ControllerReply> {
    let invalid = |reason: String| ControllerReply::error(ResponseError::InvalidReplicaAssignment.code(), reason);
    let Some(info) = current.topics.get(&change.topic).filter(|info| (0..info.partitions).contains(&change.partition))
    else {
        return Err(ControllerReply::error(
            ResponseError::UnknownTopicOrPartition.code(),
            format!("unknown partition {}-{}", change.topic, change.partition),
        ));
    };
    let Some(target) = &change.target else {
        return match info.target_of(change.partition) {
            Some(_) => Ok(()),
            None => Err(ControllerReply::error(
                ResponseError::NoReassignmentInProgress.code(),
                format!("{}-{} is not being reassigned", change.topic, change.partition),
            )),
        };
    };
    if ctx.cluster.is_none() {
        return Err(invalid("a standalone node holds every partition; there is nowhere to move it".into()));
    }
    // Moves happen inside the partition's Raft group: both ends must be replicated.
    if info.replicas_of(change.partition).len() < 2 || target.len() < 2 {
        return Err(invalid(format!(
            "{}-{} would move from {:?} to {target:?}: only partitions with at least two replicas, to at least \
             two, can be reassigned",
            change.topic,
            change.partition,
            info.replicas_of(change.partition)
        )));
    }
    let mut unique = target.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != target.len() {
        return Err(invalid(format!("the replica list {target:?} names a broker twice")));
    }
    if let Some(unknown) = target.iter().find(|id| !current.brokers.contains_key(id)) {
        return Err(invalid(format!("broker {unknown} is not registered")));
    }
    Ok(())
}

/// The Kafka error for a change the metadata quorum did not take.
pub fn quorum_refusal(error: &QuorumError) -> ControllerReply {
    let code = match error {
        QuorumError::NotLeader(_) | QuorumError::NoLeader { .. } | QuorumError::LeadershipLost => {
            ResponseError::NotController.code()
        }
        QuorumError::NoQuorum { .. } | QuorumError::Timeout(_) => ResponseError::RequestTimedOut.code(),
    };
    ControllerReply::error(code, error.to_string())
}

/// Applies `commands`: standalone, to a copy of the state that is persisted and then
/// installed on every shard; in a cluster, through the metadata quorum (which installs
/// the state on every shard once the commands are committed and applied). Returns each
/// command's effect.
async fn commit(ctx: &Rc<ShardContext>, commands: Vec<MetadataCommand>) -> Result<Vec<CommandEffect>, ControllerReply> {
    if let Some(quorum) = ctx.quorum() {
        return quorum.propose(commands).await.map_err(|error| quorum_refusal(&error));
    }
    let mut next = (*current_metadata(ctx)).clone();
    let effects: Vec<CommandEffect> =
        commands.iter().map(|command| crate::metadata::commands::apply(&mut next, command)).collect();
    next.persist(&ctx.config.data_dir).await.map_err(|error| {
        tracing::error!(%error, "persisting cluster metadata failed");
        ControllerReply::error(ResponseError::KafkaStorageError.code(), "could not persist cluster metadata")
    })?;
    publish(ctx, Arc::new(next)).await;
    Ok(effects)
}

/// Installs `metadata` on every shard of this node and returns once all have it.
pub async fn publish(ctx: &Rc<ShardContext>, metadata: Arc<ClusterMetadata>) {
    for shard in 0..ctx.shard_count {
        let metadata = metadata.clone();
        ctx.call(shard, move |reply| ShardRequest::ApplyMetadata { metadata, reply }).await;
    }
}
