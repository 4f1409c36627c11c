//! Cluster metadata: topics, their partition counts and configs, and the producer id
//! counter.
//!
//! One writer (shard 0, the controller) changes it, persists it (rkyv archive with a
//! CRC-32C, replaced atomically) and then sends the new snapshot to every shard; shards
//! hold read-only `Arc` copies. On restart every shard loads the persisted snapshot.
//!
//! The controller that changes it runs on shard 0 (`shard::controller`).
//!
//! Configs: `config_catalog` is the table of Kafka's topic configs, `topic_config`
//! resolves and validates them, `broker_config` describes the broker's own.

pub mod broker_config;
pub mod config_catalog;
pub mod registry;
pub mod topic_config;

pub use registry::{ClusterMetadata, TopicMetadata};
