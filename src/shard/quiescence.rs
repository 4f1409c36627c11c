//! Quiescence: a replica group with nothing to replicate stops ticking and heartbeating,
//! so thousands of idle partitions cost no CPU (CockroachDB's quiescence, TiKV's
//! hibernate regions; raft-rs itself has no such mode, this is how we drive it).
//!
//! - **Going quiet.** A leader whose every follower holds its whole log, committed, with
//!   nothing pending (no produce waiting, no proposal, no leadership transfer, every
//!   follower's replica driver live, every replica in sync, the leader its partition's preferred
//!   replica when leaders are rebalanced), and nothing new for `QUIET_TICKS` ticks, sends
//!   each follower one last heartbeat marked `QUIESCE_CONTEXT` and stops ticking. A
//!   follower that receives it in the leader's term, with its whole log committed up to
//!   the leader's commit, stops ticking too. A follower for which any of that is false
//!   keeps ticking; at worst it asks for a (pre-)vote, which wakes the leader.
//! - **Waking up.** Any message other than its leader's heartbeat (a follower) or a
//!   follower's heartbeat answer (a leader) wakes a quiet group, as does a proposal. A
//!   leader's wake-up thus wakes its followers with its first append.
//! - **Failures.** A quiet group hears nothing from its peers, so it watches their
//!   replica drivers instead (`cluster::peer_liveness`: each driver's heartbeat to each
//!   peer, several per election timeout, sent from its own event loop, so a hung driver
//!   on a live broker falls silent too). A follower whose leader's driver (the one owning
//!   the partition there) has been silent for an election timeout wakes with its election
//!   clock at the timeout, so it campaigns within one more randomized timeout, as a
//!   follower that never went quiet would; a leader with a silent follower wakes and
//!   ticks (check-quorum, the in-sync set).
//!
//! While a leader is quiet its in-sync set is every replica: they all held its whole
//! log when it went quiet, it wakes as soon as one's driver falls silent, and it wakes
//! if a follower has not answered its quiesce heartbeat within an election timeout (a
//! follower whose group failed, or is still opening after a restart, does not answer).
//! Waking, it counts as heard from (as of their drivers' last heartbeats) only the followers
//! that answered.
//!
//! A leader whose group stops (its log failed, or the broker shuts down) tells its
//! followers with a heartbeat marked `ABDICATE_CONTEXT`: they start an election at once
//! instead of waiting for a silence they might never see (a quiet group hears nothing
//! anyway, and the broker may live on).

use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};
use raft::{ProgressState, StateRole};

use super::replica_group::ReplicaGroup;
use super::router::shard_for;
use super::ShardContext;
use crate::cluster::peer_liveness::PeerLiveness;
use crate::cluster::transport::PartitionMessage;
use crate::cluster::ClusterConfig;
use crate::protocol::topic_partition::TopicPartition;

/// Marks a leader's last heartbeat before it goes quiet.
pub const QUIESCE_CONTEXT: &[u8] = b"tern:quiesce";
/// Marks a leader's message that its group is stopping here (never stepped by Raft).
pub const ABDICATE_CONTEXT: &[u8] = b"tern:abdicate";
/// A leader goes quiet after this many ticks with nothing new (one election timeout).
pub const QUIET_TICKS: u32 = ClusterConfig::ELECTION_TICKS as u32;

/// Marks a replica driver's heartbeat to a peer (`cluster::peer_liveness`).
pub const DRIVER_HEARTBEAT_CONTEXT: &[u8] = b"tern:driver";

/// The heartbeat of the driver of shard `shard` (of `shard_count`) to a peer: a
/// partition message with no topic, which brokers of earlier versions route to a driver
/// that finds no such group and drops it.
pub fn driver_heartbeat(shard: usize, shard_count: usize) -> PartitionMessage {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgHeartbeat);
    message.commit = shard_count as u64;
    message.set_context(bytes::Bytes::from_static(DRIVER_HEARTBEAT_CONTEXT));
    PartitionMessage { topic: String::new(), topic_id: [0; 16], partition: shard as i32, message }
}

/// (shard, shard count) if `message` is a driver heartbeat.
pub fn as_driver_heartbeat(message: &PartitionMessage) -> Option<(usize, usize)> {
    (message.topic.is_empty() && message.message.get_context() == DRIVER_HEARTBEAT_CONTEXT)
        .then_some((message.partition.max(0) as usize, message.message.commit as usize))
}

/// What the quiescence rules need besides the group.
#[derive(Debug, Clone, Copy)]
pub struct Surroundings<'a> {
    pub peers: &'a PeerLiveness,
    /// A peer silent for longer than this is taken for dead (the election timeout).
    pub window: Duration,
    /// Leaders hand the leadership back to preferred replicas (`--auto-leader-rebalance-interval-ms`).
    pub rebalancing: bool,
    pub now: Instant,
}

impl<'a> Surroundings<'a> {
    /// What a shard's replica driver sees of the cluster at `now`.
    pub fn of(ctx: &ShardContext, view: &'a crate::cluster::ClusterView, now: Instant) -> Surroundings<'a> {
        let config = ctx.cluster_config();
        Surroundings {
            peers: &view.peers_heard,
            window: config.replica_election_timeout,
            rebalancing: config.leader_rebalance_interval.is_some(),
            now,
        }
    }

    /// When the replica driver owning `partition` on `node` was last heard from.
    fn last_heard(&self, node: u64, partition: &TopicPartition) -> Option<Instant> {
        let node = node as i32;
        let shards = self.peers.shard_count(node)?;
        self.peers.driver_last_heard(node, shard_for(&partition.topic, partition.partition, shards))
    }

    /// Whether the replica driver owning `partition` on `node` was heard from within
    /// the window.
    fn live(&self, node: u64, partition: &TopicPartition) -> bool {
        self.last_heard(node, partition).is_some_and(|at| self.now.saturating_duration_since(at) <= self.window)
    }
}

/// Leader, at every tick while awake: counts the ticks the group has had nothing to do
/// and says whether it should go quiet now.
pub fn leader_tick(group: &mut ReplicaGroup, around: &Surroundings) -> bool {
    let last = group.node.raft.raft_log.last_index();
    if !leader_has_nothing_to_do(group, around) || last != group.quiet_index {
        group.quiet_index = last;
        group.quiet_ticks = 0;
        return false;
    }
    group.quiet_ticks += 1;
    group.quiet_ticks >= QUIET_TICKS
}

/// Whether a leader has nothing to replicate, nothing waiting and nobody to watch.
fn leader_has_nothing_to_do(group: &ReplicaGroup, around: &Surroundings) -> bool {
    let raft = &group.node.raft;
    let last = raft.raft_log.last_index();
    if raft.state != StateRole::Leader
        || raft.lead_transferee.is_some()
        || !group.waiters.is_empty()
        || !group.prepared.is_empty()
        || group.catch_up.is_some()
        || group.node.has_ready()
        || raft.raft_log.committed != last
        || group.term_start_index > last
        || super::reassignment::in_progress(group)
    {
        return false;
    }
    if around.rebalancing && group.replicas.first().is_some_and(|&preferred| preferred as u64 != raft.id) {
        // It will hand the leadership back at its next balance check.
        return false;
    }
    if raft.prs().iter().count() != group.replicas.len() {
        return false;
    }
    let followers_current = group.replicas.iter().map(|&id| id as u64).filter(|&id| id != raft.id).all(|id| {
        raft.prs().get(id).is_some_and(|pr| {
            pr.matched == last && pr.state == ProgressState::Replicate && around.live(id, &group.partition)
        })
    });
    followers_current && group.in_sync().len() == group.replicas.len()
}

/// The leader goes quiet: returns its last heartbeat to each follower, marked so the
/// follower goes quiet too.
pub fn go_quiet(group: &mut ReplicaGroup, now: Instant) -> Vec<Message> {
    group.quiesced = true;
    group.quiet_since = now;
    group.quiet_acks.clear();
    marked_heartbeats(group, QUIESCE_CONTEXT)
}

/// A leader whose group stops here: a message to each follower to elect another.
pub fn abdication(group: &ReplicaGroup) -> Vec<Message> {
    if group.node.raft.state != StateRole::Leader {
        return Vec::new();
    }
    marked_heartbeats(group, ABDICATE_CONTEXT)
}

fn marked_heartbeats(group: &ReplicaGroup, context: &'static [u8]) -> Vec<Message> {
    let raft = &group.node.raft;
    let committed = raft.raft_log.committed;
    raft.prs()
        .iter()
        .filter(|(&id, _)| id != raft.id)
        .map(|(&id, progress)| {
            let mut message = Message::default();
            message.set_msg_type(MessageType::MsgHeartbeat);
            message.to = id;
            message.from = raft.id;
            message.term = raft.term;
            message.commit = progress.matched.min(committed);
            message.set_context(bytes::Bytes::from_static(context));
            message
        })
        .collect()
}

/// What a message means to the quiescence rules, before Raft sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The follower's leader stops leading here: elect another (not stepped).
    Abdication,
    /// A quiet leader's follower answered its quiesce heartbeat.
    QuietAck,
}

impl Signal {
    pub fn of(group: &ReplicaGroup, message: &Message) -> Option<Signal> {
        let raft = &group.node.raft;
        match message.get_msg_type() {
            MessageType::MsgHeartbeat
                if message.get_context() == ABDICATE_CONTEXT
                    && raft.state == StateRole::Follower
                    && message.from == raft.leader_id
                    && message.term == raft.term =>
            {
                Some(Signal::Abdication)
            }
            MessageType::MsgHeartbeatResponse
                if message.get_context() == QUIESCE_CONTEXT
                    && group.quiesced
                    && raft.state == StateRole::Leader
                    && message.term == raft.term =>
            {
                Some(Signal::QuietAck)
            }
            _ => None,
        }
    }
}

/// A follower whose leader abdicated: awake, with its election clock run out.
pub fn leader_abdicated(group: &mut ReplicaGroup) {
    group.quiesced = false;
    let raft = &mut group.node.raft;
    raft.election_elapsed = raft.election_timeout();
}

/// What a follower needs of a leader's message, read before the message is stepped.
#[derive(Debug, Clone, Copy)]
pub struct QuiesceRequest {
    leader: u64,
    term: u64,
    commit: u64,
}

impl QuiesceRequest {
    /// The request a message carries, if it is a leader's quiesce heartbeat.
    pub fn of(message: &Message) -> Option<QuiesceRequest> {
        (message.get_msg_type() == MessageType::MsgHeartbeat && message.get_context() == QUIESCE_CONTEXT)
            .then_some(QuiesceRequest { leader: message.from, term: message.term, commit: message.commit })
    }
}

/// Follower, once the quiesce heartbeat is stepped: it goes quiet if it follows that
/// leader in that term and holds exactly what the leader committed.
pub fn follower_accepts(group: &ReplicaGroup, request: QuiesceRequest) -> bool {
    let raft = &group.node.raft;
    let last = raft.raft_log.last_index();
    raft.state == StateRole::Follower
        && raft.term == request.term
        && raft.leader_id == request.leader
        && raft.raft_log.committed == last
        && request.commit == last
        && group.catch_up.is_none()
}

/// Whether `message` wakes a quiet group: anything but its leader's heartbeat (a
/// follower) or a follower's heartbeat answer (a leader).
pub fn message_wakes(group: &ReplicaGroup, message: &Message) -> bool {
    let raft = &group.node.raft;
    match message.get_msg_type() {
        MessageType::MsgHeartbeat => {
            raft.state != StateRole::Follower || message.from != raft.leader_id || message.term != raft.term
        }
        MessageType::MsgHeartbeatResponse => raft.state != StateRole::Leader || message.term != raft.term,
        _ => true,
    }
}

/// Why a quiet group wakes at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickWake {
    /// A follower's leader (or leaderless follower): it should elect soon.
    LeaderSilent,
    /// A leader's follower: it should tick again (check-quorum, the in-sync set).
    FollowerSilent,
}

/// At a tick of a quiet group: whether a peer it depends on has gone silent.
pub fn tick_wakes(group: &ReplicaGroup, around: &Surroundings) -> Option<TickWake> {
    let raft = &group.node.raft;
    if raft.state == StateRole::Leader {
        let followers = || group.replicas.iter().map(|&id| id as u64).filter(|&id| id != raft.id);
        let silent = followers().any(|id| !around.live(id, &group.partition));
        let unanswered = around.now.saturating_duration_since(group.quiet_since) > around.window
            && followers().any(|id| !group.quiet_acks.contains(&id));
        (silent || unanswered).then_some(TickWake::FollowerSilent)
    } else if raft.leader_id == 0 || !around.live(raft.leader_id, &group.partition) {
        Some(TickWake::LeaderSilent)
    } else {
        None
    }
}

/// Wakes a quiet group. A leader takes the followers that answered its quiesce heartbeat
/// as caught up and heard from as of their drivers' last heartbeats (they held its whole log
/// while it was quiet); a follower whose leader's driver is silent starts its election
/// clock at the timeout.
pub fn wake(group: &mut ReplicaGroup, reason: Option<TickWake>, around: &Surroundings) {
    group.quiesced = false;
    group.quiet_ticks = 0;
    let raft = &mut group.node.raft;
    if raft.state == StateRole::Leader {
        let own = raft.id;
        let last = raft.raft_log.last_index();
        let followers: Vec<u64> = raft.prs().iter().map(|(&id, _)| id).filter(|&id| id != own).collect();
        for id in followers {
            let heard = around.last_heard(id, &group.partition).map(|at| at.min(around.now));
            let (Some(heard), true) = (heard, group.quiet_acks.contains(&id)) else { continue };
            group.heard_at.insert(id, heard);
            if let Some(progress) = raft.mut_prs().get_mut(id) {
                if progress.matched == last {
                    group.caught_up_at.insert(id, heard);
                }
                progress.recent_active = around.live(id, &group.partition);
            }
        }
        group.quiet_acks.clear();
        group.last_index_seen = last;
    } else if reason == Some(TickWake::LeaderSilent) || !around.live(raft.leader_id, &group.partition) {
        raft.election_elapsed = raft.election_timeout();
    }
}
