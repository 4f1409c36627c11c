//! A small Kafka client on glommio, used by the load tool (`tern bench`) and the admin
//! CLI. It speaks the protocol through `kafka-protocol`'s message types, negotiates
//! versions with ApiVersions, pipelines requests per connection and never retries on its
//! own: every broker error reaches the caller, by code.
//!
//! - [`connection`]: one pipelined connection (writer and reader tasks, in-order replies).
//! - [`cluster`]: bootstrap, version negotiation, metadata, admin calls.
//! - [`records`]: compression codecs and batch encode/decode.
//! - [`requests`]: Produce and Fetch request builders.
//! - [`group_member`]: consumer group membership (join, sync, heartbeat, commit, leave),
//!   with the leader's [`assignor`]s.
//! - [`error`]: [`ClientError`] and Kafka error names.

pub mod assignor;
pub mod cluster;
pub mod connection;
pub mod error;
pub mod group_member;
pub mod records;
pub mod requests;

pub use cluster::{Client, CoordinatorKind, PartitionLeader};
pub use connection::Connection;
pub use error::{error_name, ClientError};
