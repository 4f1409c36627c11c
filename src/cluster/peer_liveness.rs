//! When this node last heard from each peer, over any frame of the cluster link: the
//! failure detector of quiescent partition groups (`shard::quiescence`).
//!
//! A Raft group that is quiescent sends no heartbeats of its own, so its followers cannot
//! tell a silent leader from a dead one by the group's messages. Instead every node sends
//! each peer a pair heartbeat every `PAIR_HEARTBEAT_DIVISOR`th of the replica election
//! timeout (one frame per pair of brokers, however many groups they share), shard 0
//! stamps every frame it receives here, and the replica drivers of every shard read the
//! stamps: a quiescent group whose leader (or follower) has gone silent for an election
//! timeout wakes up and lets Raft decide.
//!
//! Written by shard 0, read by every shard: one atomic per peer, in milliseconds since
//! the table was made.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Pair heartbeats go out this many times per replica election timeout, so a live peer
/// misses the liveness window only after losing several in a row.
pub const PAIR_HEARTBEAT_DIVISOR: u32 = 4;

/// Never heard from (a stamp is one more than its milliseconds after `base`).
const NEVER: u64 = 0;

#[derive(Debug)]
pub struct PeerLiveness {
    base: Instant,
    /// (node id, 1 + milliseconds after `base` it was last heard from, or `NEVER`).
    heard: Vec<(i32, AtomicU64)>,
}

impl PeerLiveness {
    pub fn new(peer_ids: &[i32]) -> PeerLiveness {
        PeerLiveness { base: Instant::now(), heard: peer_ids.iter().map(|&id| (id, AtomicU64::new(NEVER))).collect() }
    }

    /// A frame from `node` arrived now.
    pub fn heard(&self, node: i32) {
        self.heard_at(node, Instant::now());
    }

    fn heard_at(&self, node: i32, at: Instant) {
        if let Some((_, stamp)) = self.heard.iter().find(|(id, _)| *id == node) {
            let millis = at.saturating_duration_since(self.base).as_millis() as u64;
            stamp.fetch_max(millis.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// When `node` was last heard from (`None`: never, or not a peer).
    pub fn last_heard(&self, node: i32) -> Option<Instant> {
        let (_, stamp) = self.heard.iter().find(|(id, _)| *id == node)?;
        match stamp.load(Ordering::Relaxed) {
            NEVER => None,
            stamp => Some(self.base + Duration::from_millis(stamp - 1)),
        }
    }

    /// Whether `node` was heard from within `window` before `now`.
    pub fn is_live(&self, node: i32, window: Duration, now: Instant) -> bool {
        self.last_heard(node).is_some_and(|at| now.saturating_duration_since(at) <= window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_live_within_the_window_of_its_last_frame() {
        let liveness = PeerLiveness::new(&[1, 2, 3]);
        let start = liveness.base;
        let window = Duration::from_millis(800);
        assert!(!liveness.is_live(2, window, start), "never heard: not live");
        liveness.heard_at(2, start + Duration::from_millis(100));
        assert!(liveness.is_live(2, window, start + Duration::from_millis(900)));
        assert!(!liveness.is_live(2, window, start + Duration::from_millis(901)));
        assert!(!liveness.is_live(3, window, start + Duration::from_millis(200)), "another peer is unaffected");
        assert!(!liveness.is_live(9, window, start), "not a peer");
        liveness.heard(9);
        assert_eq!(liveness.last_heard(9), None);
    }

    #[test]
    fn a_late_stamp_never_moves_the_time_back() {
        let liveness = PeerLiveness::new(&[1]);
        let start = liveness.base;
        liveness.heard_at(1, start + Duration::from_millis(500));
        liveness.heard_at(1, start + Duration::from_millis(200));
        assert_eq!(liveness.last_heard(1), Some(start + Duration::from_millis(500)));
    }
}
