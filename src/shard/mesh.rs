//! Cross-shard requests. Each variant carries a reply channel; the mesh channels between
//! shards are bounded (`MESH_CHANNEL_CAPACITY`), so a busy owner applies backpressure to
//! the shards calling it instead of queueing without limit.
//!
//! Everything here is `Send`: record bytes travel as `Bytes` (reference counted, not
//! copied), metadata as `Arc` snapshots.

use std::sync::Arc;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::metadata::topic_config::ConfigChange;
use crate::metadata::ClusterMetadata;
use crate::shard::context::TopicPartition;

pub type Reply<T> = oneshot::Sender<T>;

/// Per-partition outcome of a produce, as the Produce response needs it.
#[derive(Debug, Clone)]
pub struct ProduceOutcome {
    pub error_code: i16,
    pub error_message: Option<String>,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// Per-partition outcome of a read, as the Fetch response needs it.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Whole batches: in memory (batch cache) or a segment region to send with sendfile.
    pub records: Vec<crate::storage::RecordChunk>,
}

/// A topic to create: name, partitions (-1: broker default), configs.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub configs: Vec<(String, String)>,
}

/// The owner of a set of configs (DescribeConfigs / AlterConfigs resource).
#[derive(Debug, Clone, PartialEq, Eq)]
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
        reply: Reply<Vec<(i16, Option<String>)>>,
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
        reply: Reply<(i16, Option<String>)>,
    },
    CreatePartitions {
        topic: String,
        count: i32,
        validate_only: bool,
        reply: Reply<(i16, Option<String>)>,
    },
    /// Allocate a producer id (InitProducerId without a transactional id).
    AllocateProducerId {
        reply: Reply<Result<i64, i16>>,
    },
}

#[derive(Debug)]
pub enum ShardRequest {
    Produce {
        topic: String,
        partition: i32,
        /// The request's acks (-1 = all, checked against min.insync.replicas).
        acks: i16,
        records: Bytes,
        reply: Reply<ProduceOutcome>,
    },
    Read {
        topic: String,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        reply: Reply<ReadOutcome>,
    },
    /// Resolves when any listed partition's high watermark passes its offset, or at the
    /// deadline (milliseconds from now).
    WaitForData {
        partitions: Vec<(String, i32, i64)>,
        max_wait_ms: u64,
        reply: Reply<()>,
    },
    /// ListOffsets: -1 latest, -2 earliest, -3 max timestamp, -4 earliest local, -5 latest
    /// tiered, else by timestamp.
    ListOffset {
        topic: String,
        partition: i32,
        timestamp: i64,
        reply: Reply<(i16, i64, i64)>,
    },
    DeleteRecords {
        topic: String,
        partition: i32,
        offset: i64,
        reply: Reply<(i16, i64)>,
    },
    /// DescribeLogDirs: the size in bytes of every log this shard owns.
    LogSizes {
        reply: Reply<Vec<(TopicPartition, u64)>>,
    },
    Controller(ControllerRequest),
    /// Consumer group requests, executed by the group's coordinating shard.
    Group(crate::group::coordinator::GroupRequest),
    /// A new metadata snapshot from the controller; the shard opens or removes logs.
    ApplyMetadata {
        metadata: Arc<ClusterMetadata>,
        reply: Reply<()>,
    },
}
