//! The Kafka protocol front end of a shard.
//!
//! ```text
//! listener.rs    per-shard SO_REUSEPORT listener and accept loop
//! connection.rs  one client connection: framing, size limit, pipelining in order
//! frame.rs       request header parsing and response encoding
//! sendfile.rs    zero-copy sends of segment file regions (cold fetches)
//! handlers/      one file per Kafka API, each with its supported version range
//! ```

pub mod connection;
pub mod frame;
pub mod handlers;
pub mod listener;
pub mod sendfile;
