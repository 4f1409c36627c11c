//! The cluster: brokers that find each other (`--peers`), a metadata quorum that
//! replicates the cluster metadata with Raft (raft-rs, the library TiKV runs), broker
//! registration, heartbeats and fencing, and the inter-broker transport.
//!
//! Every node listed in `--peers` is a voter of the metadata quorum and a broker
//! (Kafka's KRaft "combined" mode). The quorum runs on shard 0, driven by that shard's
//! event loop (`quorum`); its log is a file of its own (`raft_log`). The Raft leader is
//! the controller: metadata changes are validated there, proposed as typed commands
//! (`metadata::commands`) and applied by every node in log order. Requests that reach
//! another node are forwarded to it (`transport`).

pub mod departure;
pub mod liveness;
pub mod logger;
pub mod peer_liveness;
pub mod quorum;
pub mod raft_log;
pub mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::RwLock;

use crate::protocol::topic_partition::TopicPartition;

pub use crate::config::{parse_peers, ClusterConfig, Peer};
pub use quorum::{MetadataQuorum, QuorumError, QuorumHooks};

/// What every shard may read about the cluster at run time (shared across threads).
#[derive(Debug)]
pub struct ClusterView {
    /// The metadata quorum's leader (the controller), -1 while there is none.
    controller_id: AtomicI32,
    /// Every node of `--peers`, sorted by node id.
    pub peer_ids: Vec<i32>,
    /// Replicated partitions: who leads each as far as this node knows (written by the
    /// owning shard's replica groups and by leaders' updates, read by every shard's
    /// Metadata and routing).
    leaders: RwLock<HashMap<TopicPartition, Leadership>>,
    /// Replicated `__consumer_offsets` partitions this node leads and has loaded: it
    /// coordinates their groups.
    offsets_ready: RwLock<std::collections::HashSet<i32>>,
    /// Replicated `__transaction_state` partitions this node leads and has loaded: it
    /// coordinates their transactional ids.
    txn_state_ready: RwLock<std::collections::HashSet<i32>>,
    /// When each peer was last heard from over the cluster link (stamped by shard 0).
    pub peers_heard: peer_liveness::PeerLiveness,
}

/// A replicated partition's leader as a replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// -1 while there is none (an election is on).
    pub leader: i32,
    /// The Raft term, which is the Kafka leader epoch.
    pub epoch: i32,
    /// Replicas caught up with the leader (the leader's view; a follower reports the
    /// last one it knows, or every replica).
    pub in_sync: Vec<i32>,
}

impl ClusterView {
    pub fn new(peer_ids: Vec<i32>) -> ClusterView {
        ClusterView {
            controller_id: AtomicI32::new(-1),
            leaders: RwLock::new(HashMap::new()),
            offsets_ready: RwLock::new(std::collections::HashSet::new()),
            txn_state_ready: RwLock::new(std::collections::HashSet::new()),
            peers_heard: peer_liveness::PeerLiveness::new(&peer_ids),
            peer_ids,
        }
    }

    /// The replicas of `__consumer_offsets` partition `partition` when the cluster
    /// replicates them (three nodes or more): three consecutive nodes from the one that
    /// coordinated it before replication (so that one is the preferred leader). `None`:
    /// not replicated (one or two nodes; with two, a Raft group would stop with either).
    pub fn offsets_replicas(&self, partition: i32) -> Option<Vec<i32>> {
        self.internal_replicas(partition)
    }

    /// The replicas of `__transaction_state` partition `partition`: placed as
    /// `__consumer_offsets` partitions are (`offsets_replicas`).
    pub fn txn_state_replicas(&self, partition: i32) -> Option<Vec<i32>> {
        self.internal_replicas(partition)
    }

    fn internal_replicas(&self, partition: i32) -> Option<Vec<i32>> {
        let n = self.peer_ids.len();
        (n >= 3).then(|| (0..3).map(|k| self.peer_ids[(partition.max(0) as usize + k) % n]).collect())
    }

    pub fn offsets_ready(&self, partition: i32) -> bool {
        self.offsets_ready.read().expect("offsets lock").contains(&partition)
    }

    pub fn set_offsets_ready(&self, partition: i32, ready: bool) {
        set_membership(&self.offsets_ready, partition, ready);
    }

    pub fn txn_state_ready(&self, partition: i32) -> bool {
        self.txn_state_ready.read().expect("transaction state lock").contains(&partition)
    }

    pub fn set_txn_state_ready(&self, partition: i32, ready: bool) {
        set_membership(&self.txn_state_ready, partition, ready);
    }

    /// The leadership of a replicated partition held here (`None`: not held here).
    pub fn leadership(&self, partition: &TopicPartition) -> Option<Leadership> {
        self.leaders.read().expect("leader table lock").get(partition).cloned()
    }

    /// Records what a replica group (this node's, or a leader's update) says. A newer
    /// epoch replaces an older one, never the reverse; the same epoch replaces (the
    /// leader becomes known, the in-sync set changes).
    pub fn set_leadership(&self, partition: TopicPartition, leadership: Leadership) {
        let mut leaders = self.leaders.write().expect("leader table lock");
        match leaders.get(&partition) {
            Some(known) if known.epoch > leadership.epoch => {}
            _ => {
                leaders.insert(partition, leadership);
            }
        }
    }

    pub fn forget_leadership(&self, partition: &TopicPartition) {
        self.leaders.write().expect("leader table lock").remove(partition);
    }

    pub fn controller_id(&self) -> Option<i32> {
        let id = self.controller_id.load(Ordering::Relaxed);
        (id >= 0).then_some(id)
    }

    pub fn set_controller_id(&self, id: Option<i32>) {
        self.controller_id.store(id.unwrap_or(-1), Ordering::Relaxed);
    }

    /// The node coordinating `__consumer_offsets` (or `__transaction_state`) partition
    /// `partition` when it is not replicated, and its preferred leader when it is: the
    /// peers take the partitions round-robin.
    pub fn offsets_partition_leader(&self, partition: i32) -> i32 {
        self.peer_ids[partition.max(0) as usize % self.peer_ids.len()]
    }
}

fn set_membership(set: &RwLock<std::collections::HashSet<i32>>, partition: i32, member: bool) {
    let mut set = set.write().expect("readiness lock");
    if member {
        set.insert(partition);
    } else {
        set.remove(&partition);
    }
}
