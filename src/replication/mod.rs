//! Partition replication: one Raft group (raft-rs) per partition whose topic has more
//! than one replica, with the partition log itself as the Raft log.
//!
//! The pieces below the shard's driver (`shard::replicas`):
//! - `entry`: one Raft entry is one record batch, byte for byte on every replica; the
//!   empty entry a new leader appends becomes a one-record control batch, so Raft
//!   indexes and Kafka offsets never need translating;
//! - `state_file`: a replica's Raft state beside its log (term, vote, and the commit
//!   anchor that maps Raft indexes onto log offsets at the next open);
//! - `window`: the `raft::Storage` over the log: the entries Raft may still need
//!   (everything uncommitted, plus a committed tail for followers that lag), in memory.
//!
//! Index and offset: entry `i` is the `i - anchor.index`-th batch after
//! `anchor.next_offset`. Every replica writes entry `i` at its own log end, which is the
//! same offset everywhere because the logs below it are the same (Raft's log matching).

pub mod entry;
pub mod state_file;
pub mod window;

pub use state_file::{Anchor, ReplicaState};
pub use window::{Window, WindowEntry, WindowStorage};
