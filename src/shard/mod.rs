//! Thread-per-core shards: one glommio executor per CPU, each owning a set of partitions.
//!
//! ```text
//! router.rs   shard_for(topic, partition): the documented ownership rule
//! mesh.rs     typed cross-shard requests with reply channels (glommio channel mesh)
//! context.rs  ShardContext: a shard's state (metadata copy, owned logs, mesh senders)
//! handler.rs  executes ShardRequests on the owning shard
//! controller.rs the single writer of cluster metadata (shard 0): validate, persist, apply
//! metrics_publisher.rs publishes the shard's gauges every second, watches event-loop lag
//! transactions.rs  the transaction coordinator's requests, markers, timeouts
//! group_round.rs  one replica group's part of a driver round (shared with the simulation)
//! reassignment.rs moves a partition's Raft group to other brokers (configuration changes)
//! txn_cluster.rs   where an id is coordinated; `__transaction_state` as Raft groups
//! txn_forward.rs   transaction calls between nodes (markers, KIP-890 checks)
//! txn_markers.rs   one partition's marker written on this node
//! ```
//!
//! Starting the executors, recovery, listeners and shutdown is the `broker` module's job,
//! one layer up: nothing here knows about sockets.

pub mod catch_up;
pub mod context;
pub mod controller;
pub mod controller_forward;
pub mod coordination;
pub mod group_round;
pub mod handler;
pub mod leadership;
pub mod mesh;
pub mod metrics_publisher;
pub mod quiescence;
pub mod reassignment;
pub mod replica_group;
pub mod replicas;
pub mod router;
pub mod transactions;
pub mod txn_cluster;
pub mod txn_forward;
pub mod txn_markers;

pub use context::ShardContext;
