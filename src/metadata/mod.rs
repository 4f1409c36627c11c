//! Cluster metadata: topics, their partition counts, replica assignments and configs,
//! registered brokers, and the producer id counter.
//!
//! One writer (shard 0, the controller) turns requests into `commands`; they are applied
//! (on a standalone node at once, in a cluster once the metadata quorum committed them),
//! the state is persisted (rkyv archive with a CRC-32C, replaced atomically) and the new
//! snapshot goes to every shard; shards hold read-only `Arc` copies. On restart every
//! shard loads the persisted snapshot.
//!
//! The controller that changes it runs on shard 0 (`shard::controller`); the quorum is
//! `cluster`.
//!
//! Configs: `config_catalog` is the table of Kafka's topic configs, `topic_config`
//! resolves and validates them, `broker_config` describes the broker's own.

pub mod broker_config;
pub mod commands;
pub mod config_catalog;
pub mod registry;
pub mod topic_config;

pub use registry::{BrokerRegistration, ClusterMetadata, ReassignmentTarget, TopicMetadata};
