//! The cluster as the Kafka APIs describe it (Metadata, DescribeCluster,
//! FindCoordinator): which brokers are live, who the controller is, and who leads each
//! partition. Standalone, the answer is always this node.

use kafka_protocol::error::ResponseError;

use crate::metadata::ClusterMetadata;
use crate::shard::context::PartitionLeader;
use crate::shard::ShardContext;

/// A broker as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// The live brokers: standalone this node; in a cluster the registered, unfenced ones
/// (this node included once it is registered).
pub fn live_brokers(ctx: &ShardContext, metadata: &ClusterMetadata) -> Vec<BrokerAddress> {
    if ctx.cluster.is_none() {
        return vec![self_address(ctx)];
    }
    metadata
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| BrokerAddress { node_id: b.node_id, host: b.host.clone(), port: b.port, rack: b.rack.clone() })
        .collect()
}

/// A live broker's address (`None`: unknown or fenced).
pub fn broker_address(ctx: &ShardContext, metadata: &ClusterMetadata, node_id: i32) -> Option<BrokerAddress> {
    live_brokers(ctx, metadata).into_iter().find(|b| b.node_id == node_id)
}

fn self_address(ctx: &ShardContext) -> BrokerAddress {
    BrokerAddress {
        node_id: ctx.config.node_id,
        host: ctx.config.advertised_host.clone(),
        port: ctx.config.advertised_port,
        rack: ctx.config.cluster.as_ref().and_then(|c| c.rack.clone()),
    }
}

/// The controller's node id (-1: none right now).
pub fn controller_id(ctx: &ShardContext) -> i32 {
    match &ctx.cluster {
        Some(view) => view.controller_id().unwrap_or(-1),
        None => ctx.config.node_id,
    }
}

/// A partition as Metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLayout {
    pub error_code: i16,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub in_sync: Vec<i32>,
    pub offline: Vec<i32>,
    /// The leader epoch (a replicated partition's Raft term; 0 otherwise).
    pub leader_epoch: i32,
}

/// Leader, replicas and in-sync replicas of a partition. A replicated partition's
/// leader, epoch and ISR come from its Raft group (as this node's replica knows them);
/// an unreplicated partition's only replica is its leader and its whole ISR. A partition
/// without a leader (an election, or a fenced leader) answers LEADER_NOT_AVAILABLE.
pub fn partition_layout(
    ctx: &ShardContext,
    metadata: &ClusterMetadata,
    topic: &str,
    partition: i32,
) -> PartitionLayout {
    // During a reassignment: the target and the replicas leaving, as Kafka lists them.
    let replicas: Vec<i32> = match metadata.topics.get(topic).map(|info| info.hosts_of(partition)) {
        Some(replicas) if !replicas.is_empty() => replicas,
        _ => vec![ctx.config.node_id],
    };
    let live = |id: &i32| ctx.cluster.is_none() || metadata.brokers.get(id).is_some_and(|b| !b.fenced);
    let offline: Vec<i32> = replicas.iter().copied().filter(|id| !live(id)).collect();
    let leadership = ctx
        .cluster
        .as_ref()
        .and_then(|view| view.leadership(&crate::protocol::topic_partition::TopicPartition::new(topic, partition)));
    let (leader_epoch, group_in_sync) = match &leadership {
        Some(l) => (l.epoch, Some(l.in_sync.iter().copied().filter(|id| live(id)).collect::<Vec<i32>>())),
        None => (0, None),
    };
    let leader = match ctx.partition_leader(metadata, topic, partition) {
        PartitionLeader::Here => ctx.config.node_id,
        PartitionLeader::Broker(leader) => leader,
        PartitionLeader::Offline | PartitionLeader::Unknown => {
            return PartitionLayout {
                error_code: ResponseError::LeaderNotAvailable.code(),
                leader: -1,
                replicas,
                in_sync: Vec::new(),
                offline,
                leader_epoch,
            }
        }
    };
    let in_sync = group_in_sync.unwrap_or_else(|| vec![leader]);
    PartitionLayout { error_code: 0, leader, replicas, in_sync, offline, leader_epoch }
}
