//! Consumer groups (classic protocol).
//!
//! ```text
//! state.rs   the sans-I/O group state machine: join, sync, heartbeat, leave, timeouts
//! ```
//!
//! The coordinator glue (requests, timers, the `__consumer_offsets` log) builds on it.

pub mod state;

#[cfg(test)]
mod state_tests;
