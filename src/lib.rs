//! Tern: a Kafka-compatible event streaming broker, thread-per-core on io_uring.
//!
//! Module map:
//! - [`protocol`]: Kafka wire pieces handled by hand on the hot path (record batches).
//! - [`storage`]: durable partition logs on direct I/O with group commit, recovery and
//!   retention.
//! - [`shard`]: thread-per-core runtime: executors, partition routing, cross-shard mesh.
//! - [`server`]: the Kafka protocol front end: listener, connections, one handler per API.
//! - [`metadata`]: topics and configs (single writer on shard 0, persisted with rkyv).
//! - [`config`]: `tern serve` settings and limits; [`config_file`]: `--config tern.toml`.
//! - [`group`]: consumer groups: the sans-I/O state machine, coordinator, committed offsets.
//! - [`client`]: a small Kafka client (glommio) for the load tool and the admin CLI.
//! - [`bench`]: `tern bench`, the load tool.
//! - [`admin`]: operator commands against a running broker (`tern topic`).
//! - [`metrics`]: per-shard probes.
//! - [`tune`]: `tern tune`, host settings checked against the recommendations.
//!
//! See `../shared/DESIGN.md` in the project workspace for the intended architecture.

pub mod admin;
pub mod bench;
pub mod client;
pub mod config;
pub mod config_file;
pub mod group;
pub mod metadata;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod storage;
pub mod tune;
