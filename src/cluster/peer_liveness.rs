//! When this node last heard from each peer's replica drivers: the failure detector of
//! quiet partition groups (`shard::quiescence`).
//!
//! A Raft group that is quiet sends no heartbeats of its own, so its followers cannot
//! tell a silent leader from a dead one by the group's messages. Instead every replica
//! driver (one per shard, `shard::replicas`) sends each peer a driver heartbeat
//! `DRIVER_HEARTBEATS_PER_TIMEOUT` times per replica election timeout, from its own
//! event loop: one message per pair of (broker, shard), however many groups they share,
//! and one that stops when the driver stops, even if the broker lives on (a disk write
//! that never returns). Shard 0 stamps them here, and the replica drivers of every shard
//! read the stamps: a quiet group whose leader's driver (or a follower's) has gone
//! silent for an election timeout wakes up and lets Raft decide.
//!
//! The heartbeat names its shard and the sender's shard count, so a follower finds the
//! shard owning a partition on the leader's broker even when the brokers run different
//! numbers of shards.
//!
//! It also records peers whose *process* is known to be gone: a connection from the
//! peer ended and its cluster port then refused a new one (`cluster::transport`), which
//! only happens when nothing listens there, i.e. the broker process died or exited. A
//! machine that dies silently, or a paused process, still takes the election timeout;
//! a SIGKILLed or crashed broker is known to be gone within a loopback or LAN round
//! trip, and its followers elect at once (`cluster::departure`).
//!
//! Written by shard 0, read by every shard: atomics, in milliseconds since the table
//! was made.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Driver heartbeats go out this many times per replica election timeout, so a live
/// driver misses the liveness window only after losing several in a row.
pub const DRIVER_HEARTBEATS_PER_TIMEOUT: u32 = 4;
/// Shards per broker that are tracked (more are taken for silent).
pub const MAX_SHARDS: usize = 256;

/// Never heard from (a stamp is one more than its milliseconds after `base`).
const NEVER: u64 = 0;

#[derive(Debug)]
struct Peer {
    node_id: i32,
    /// The peer's shard count, from its latest driver heartbeat (0: none yet).
    shard_count: AtomicU64,
    /// Per shard: 1 + milliseconds after `base` its driver was last heard from, or `NEVER`.
    drivers: Vec<AtomicU64>,
    /// 1 + milliseconds after `base` since when the peer's process is known gone, or
    /// `NEVER` while it is not (never seen gone, or back since).
    gone_since: AtomicU64,
}

#[derive(Debug)]
pub struct PeerLiveness {
    base: Instant,
    peers: Vec<Peer>,
}

impl PeerLiveness {
    pub fn new(peer_ids: &[i32]) -> PeerLiveness {
        let peers = peer_ids
            .iter()
            .map(|&node_id| Peer {
                node_id,
                shard_count: AtomicU64::new(0),
                drivers: (0..MAX_SHARDS).map(|_| AtomicU64::new(NEVER)).collect(),
                gone_since: AtomicU64::new(NEVER),
            })
            .collect();
        PeerLiveness { base: Instant::now(), peers }
    }

    fn peer(&self, node: i32) -> Option<&Peer> {
        self.peers.iter().find(|p| p.node_id == node)
    }

    /// A heartbeat from the replica driver of shard `shard` (of `shard_count`) on `node`.
    pub fn driver_heard(&self, node: i32, shard: usize, shard_count: usize) {
        self.driver_heard_at(node, shard, shard_count, Instant::now());
    }

    fn driver_heard_at(&self, node: i32, shard: usize, shard_count: usize, at: Instant) {
        let Some(peer) = self.peer(node) else { return };
        let Some(stamp) = peer.drivers.get(shard) else { return };
        if shard_count == 0 || shard >= shard_count {
            return;
        }
        peer.shard_count.store(shard_count as u64, Ordering::Relaxed);
        let millis = at.saturating_duration_since(self.base).as_millis() as u64;
        stamp.fetch_max(millis.saturating_add(1), Ordering::Relaxed);
    }

    /// `node`'s shard count as its drivers last said (`None`: not heard yet).
    pub fn shard_count(&self, node: i32) -> Option<usize> {
        let count = self.peer(node)?.shard_count.load(Ordering::Relaxed) as usize;
        (count > 0).then_some(count)
    }

    /// When the driver of `shard` on `node` was last heard from (`None`: never).
    pub fn driver_last_heard(&self, node: i32, shard: usize) -> Option<Instant> {
        match self.peer(node)?.drivers.get(shard)?.load(Ordering::Relaxed) {
            NEVER => None,
            stamp => Some(self.base + Duration::from_millis(stamp - 1)),
        }
    }

    /// `node`'s process is gone: its cluster port refused a connection after one from it
    /// ended. Keeps the earlier time if it was already gone.
    pub fn process_gone(&self, node: i32) {
        self.process_gone_at(node, Instant::now());
    }

    fn process_gone_at(&self, node: i32, at: Instant) {
        let Some(peer) = self.peer(node) else { return };
        let millis = at.saturating_duration_since(self.base).as_millis() as u64;
        let _ = peer.gone_since.compare_exchange(NEVER, millis.saturating_add(1), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// `node` is back: it connected, or accepted a connection.
    pub fn process_back(&self, node: i32) {
        if let Some(peer) = self.peer(node) {
            peer.gone_since.store(NEVER, Ordering::Relaxed);
        }
    }

    /// Since when `node`'s process is known gone (`None`: it is not known gone).
    pub fn gone_since(&self, node: i32) -> Option<Instant> {
        match self.peer(node)?.gone_since.load(Ordering::Relaxed) {
            NEVER => None,
            stamp => Some(self.base + Duration::from_millis(stamp - 1)),
        }
    }

    /// Whether the driver of `shard` on `node` was heard from within `window` before `now`.
    pub fn driver_live(&self, node: i32, shard: usize, window: Duration, now: Instant) -> bool {
        self.driver_last_heard(node, shard).is_some_and(|at| now.saturating_duration_since(at) <= window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_is_live_within_the_window_of_its_last_heartbeat() {
        let liveness = PeerLiveness::new(&[1, 2, 3]);
        let start = liveness.base;
        let window = Duration::from_millis(800);
        assert!(!liveness.driver_live(2, 0, window, start), "never heard: not live");
        assert_eq!(liveness.shard_count(2), None);
        liveness.driver_heard_at(2, 1, 2, start + Duration::from_millis(100));
        assert_eq!(liveness.shard_count(2), Some(2));
        assert!(liveness.driver_live(2, 1, window, start + Duration::from_millis(900)));
        assert!(!liveness.driver_live(2, 1, window, start + Duration::from_millis(901)));
        assert!(!liveness.driver_live(2, 0, window, start + Duration::from_millis(200)), "another shard: silent");
        assert!(!liveness.driver_live(3, 1, window, start + Duration::from_millis(200)), "another peer: silent");
        liveness.driver_heard(9, 0, 1);
        assert_eq!(liveness.driver_last_heard(9, 0), None, "not a peer");
        liveness.driver_heard(2, 5, 2);
        assert_eq!(liveness.driver_last_heard(2, 5), None, "a shard past the count is ignored");
    }

    #[test]
    fn a_gone_process_stays_gone_from_its_first_notice_until_it_is_back() {
        let liveness = PeerLiveness::new(&[1, 2]);
        let start = liveness.base;
        assert_eq!(liveness.gone_since(2), None);
        liveness.process_gone_at(2, start + Duration::from_millis(300));
        liveness.process_gone_at(2, start + Duration::from_millis(900));
        assert_eq!(liveness.gone_since(2), Some(start + Duration::from_millis(300)), "the first notice counts");
        assert_eq!(liveness.gone_since(1), None, "another peer");
        liveness.process_back(2);
        assert_eq!(liveness.gone_since(2), None);
        liveness.process_gone_at(2, start + Duration::from_millis(1200));
        assert_eq!(liveness.gone_since(2), Some(start + Duration::from_millis(1200)), "gone again");
        liveness.process_gone(7);
        assert_eq!(liveness.gone_since(7), None, "not a peer");
    }

    #[test]
    fn a_late_stamp_never_moves_the_time_back() {
        let liveness = PeerLiveness::new(&[1]);
        let start = liveness.base;
        liveness.driver_heard_at(1, 0, 1, start + Duration::from_millis(500));
        liveness.driver_heard_at(1, 0, 1, start + Duration::from_millis(200));
        assert_eq!(liveness.driver_last_heard(1, 0), Some(start + Duration::from_millis(500)));
    }
}
