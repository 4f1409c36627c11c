//! Thread-per-core shards: one glommio executor per CPU, each owning a set of partitions.
//!
//! ```text
//! router.rs   shard_for(topic, partition): the documented ownership rule
//! mesh.rs     typed cross-shard requests with reply channels (glommio channel mesh)
//! context.rs  ShardContext: a shard's state (metadata copy, owned logs, mesh senders)
//! handler.rs  executes ShardRequests on the owning shard
//! runtime.rs  starting the executors, recovery, listeners, shutdown
//! ```

pub mod context;
pub mod handler;
pub mod mesh;
pub mod router;
pub mod runtime;

pub use context::ShardContext;
