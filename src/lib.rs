//! Tern: a Kafka-compatible event streaming broker, thread-per-core on io_uring.
//!
//! Module map:
//! - [`protocol`]: Kafka wire pieces handled by hand on the hot path (record batches).
//! - [`storage`]: durable partition logs on direct I/O with group commit, recovery and
//!   retention.
//!
//! See `../shared/DESIGN.md` in the project workspace for the intended architecture.

pub mod protocol;
pub mod storage;
