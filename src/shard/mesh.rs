//! Cross-shard requests. Each variant carries a reply channel; the mesh channels between
//! shards are bounded (`MESH_CHANNEL_CAPACITY`), so a busy owner applies backpressure to
//! the shards calling it instead of queueing without limit.
//!
//! Everything here is `Send`: record bytes travel as `Bytes` (reference counted, not
//! copied), metadata as `Arc` snapshots, per-partition work as `Send` closures that build
//! their (shard-local) future on the target shard.

use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use futures_util::future::LocalBoxFuture;

use super::ShardContext;
use crate::metadata::topic_config::ConfigChange;
use crate::metadata::ClusterMetadata;

pub type Reply<T> = oneshot::Sender<T>;

/// Work for one shard, built by the caller and run on the target shard with that shard's
/// context. This is how a Kafka API's per-partition step (append, read, list offsets,
/// delete records, ...) lives in that API's handler file: the handler sends a closure
/// with typed inputs and gets a typed result back (`ShardContext::on_partition`), instead
/// of adding a message variant here and a branch in the shard's dispatcher.
pub struct ShardTask(pub Box<dyn FnOnce(Rc<ShardContext>) -> LocalBoxFuture<'static, ()> + Send>);

impl std::fmt::Debug for ShardTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardTask")
    }
}

/// The answer of a metadata change: a Kafka error code (0: success) and a message.
/// One partition's requested replicas: `None` cancels its reassignment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionReassignment {
    pub topic: String,
    pub partition: i32,
    pub target: Option<Vec<i32>>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ControllerReply {
    pub error_code: i16,
    pub message: Option<String>,
}

impl ControllerReply {
    pub fn ok() -> ControllerReply {
        ControllerReply { error_code: 0, message: None }
    }

    pub fn error(code: i16, message: impl Into<String>) -> ControllerReply {
        ControllerReply { error_code: code, message: Some(message.into()) }
    }
}

/// A topic to create: name, partitions (-1: broker default), replication factor (-1:
/// broker default), or a manual replica assignment (`assignments`, one list per
/// partition, instead of both), configs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub assignments: Vec<Vec<i32>>,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with broker-default partitions and replication (auto creation).
    pub fn with_defaults(name: String) -> NewTopic {
        NewTopic { name, partitions: -1, replication_factor: -1, assignments: Vec::new(), configs: Vec::new() }
    }
}

/// The owner of a set of configs (DescribeConfigs / AlterConfigs resource).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConfigResource {
    Topic(String),
    /// A broker by node id, or "" for the cluster-wide broker default.
    Broker(String),
}

/// Changes to cluster metadata; executed by the controller (shard 0) only.
#[derive(Debug)]
pub enum ControllerRequest {
    /// Create topics. Replies one (error code, message) per topic.
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
        reply: Reply<Vec<ControllerReply>>,
    },
    DeleteTopics {
        names: Vec<String>,
        reply: Reply<Vec<i16>>,
    },
    /// Replace (`incremental == false`) or patch a topic's or a broker's configs.
    AlterConfigs {
        resource: ConfigResource,
        changes: Vec<ConfigChange>,
        incremental: bool,
        validate_only: bool,
        reply: Reply<ControllerReply>,
    },
    CreatePartitions {
        topic: String,
        count: i32,
        validate_only: bool,
        reply: Reply<ControllerReply>,
    },
    /// Allocate a producer id (InitProducerId without a transactional id).
    AllocateProducerId {
        reply: Reply<Result<i64, i16>>,
    },
    /// Cluster mode: reserve a block of producer ids for one broker (its InitProducerId
    /// hands them out). Replies the first id, or an error code and message.
    AllocateProducerIdBlock {
        reply: Reply<Result<i64, ControllerReply>>,
    },
    /// Cluster mode: start, redirect or cancel partition reassignments
    /// (AlterPartitionReassignments). Replies one result per change, in order.
    Reassign {
        changes: Vec<PartitionReassignment>,
        reply: Reply<Vec<ControllerReply>>,
    },
    /// Cluster mode: a partition's leader reports that its Raft group has moved to the
    /// target replicas (`shard::reassignment`).
    CompleteReassignment {
        topic: String,
        partition: i32,
        target: crate::metadata::ReassignmentTarget,
        reply: Reply<ControllerReply>,
    },
    /// Cluster mode: a node that ran standalone before joining brings its topics into the
    /// cluster, assigned to itself, keeping their ids and configs.
    ImportTopics {
        node_id: i32,
        topics: Vec<(String, crate::metadata::TopicMetadata)>,
        next_producer_id: i64,
        reply: Reply<Vec<ControllerReply>>,
    },
}

#[derive(Debug)]
pub enum ShardRequest {
    /// Per-partition and per-shard work of the Kafka APIs (see [`ShardTask`]).
    Run(ShardTask),
    Controller(ControllerRequest),
    /// Consumer group requests, executed by the group's coordinating shard.
    Group(crate::group::coordinator::GroupRequest),
    /// A new metadata snapshot from the controller; the shard opens or removes logs.
    ApplyMetadata {
        metadata: Arc<ClusterMetadata>,
        reply: Reply<()>,
    },
}
