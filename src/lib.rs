//! Tern: a Kafka-compatible event streaming broker, thread-per-core on io_uring.
//!
//! Module map, in layers: a module imports only from the layers below it
//! (`python3 ../shared/tools/module-cycles.py` checks there is no cycle). The whole map,
//! with the path of a request from socket to disk, is in README.md (Architecture).
//!
//! ```text
//! broker                      startup and shutdown: config -> shards -> listeners  (top)
//! server                      listener, connection, frames, handlers/<api>.rs (one list)
//! shard                       ShardContext, routing rule, mesh (typed cross-shard calls),
//!                             controller (metadata writer), request execution
//! cluster                     metadata quorum (raft-rs), inter-broker transport, liveness
//! group                       consumer groups: sans-I/O state machine, coordinator, offsets
//! txn                         transaction coordinator state: ids, __transaction_state
//! metadata                    cluster metadata, config catalogue, topic/broker configs
//! config                      `tern serve` settings and limits
//! storage                     partition logs: segments, indexes, writer, recovery, retention
//! protocol  metrics  stable_hash  stop  warn_limit   record batches, codecs, fetch
//! allocator  byte_bucket      framing, response chunks; per-shard probes; placement
//!                             hash; stop signal; rate-limited warnings; the global
//!                             allocator; a token bucket over bytes              (bottom)
//! ```
//!
//! Tools built on the bottom layers, never imported by the broker's modules: [`client`]
//! (a small Kafka client), [`bench`] (`tern bench`), [`admin`] (`tern topic | group |
//! produce | consume`), [`tune`] (`tern tune`), [`config_file`] (`--config tern.toml`).

pub mod admin;
pub mod allocator;
pub mod bench;
pub mod broker;
pub mod byte_bucket;
pub mod client;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod group;
pub mod metadata;
pub mod metrics;
pub mod protocol;
pub mod replication;
pub mod server;
pub mod shard;
pub mod stable_hash;
pub mod stop;
pub mod storage;
pub mod tune;
pub mod txn;
pub mod warn_limit;
