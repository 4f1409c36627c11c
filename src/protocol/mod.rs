//! Kafka wire-format pieces that Tern handles by hand because they sit on the hot path.
//!
//! Control-plane messages use the `kafka-protocol` crate; record batches are validated
//! and patched here without decoding their records, so a produced batch is stored and
//! served byte for byte as the client sent it, unless the topic asks for another
//! compression codec (`compression`: bounded decompression and re-encoding).

pub mod batch_filter;
pub mod compression;
pub mod control_batch;
pub mod fetch_response;
pub mod record_batch;
pub mod record_chunk;
pub mod topic_partition;
