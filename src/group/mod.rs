//! Consumer groups (classic protocol).
//!
//! ```text
//! state.rs        the sans-I/O group state machine: join, sync, heartbeat, leave, timeouts
//! coordinator.rs  per-shard glue: pending requests, timers, offsets, describe/list/delete
//! offsets.rs      committed offsets in the internal `__consumer_offsets` log
//! membership.rs   a stable group's members and generation, kept beside its offsets
//! ```

pub mod coordinator;
pub mod membership;
pub mod offsets;
pub mod state;

#[cfg(test)]
mod state_tests;
