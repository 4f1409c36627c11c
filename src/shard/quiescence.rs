//! Quiescence: a replica group with nothing to replicate stops ticking and heartbeating,
//! so thousands of idle partitions cost no CPU (CockroachDB's quiescence, TiKV's
//! hibernate regions; raft-rs itself has no such mode, this is how we drive it).
//!
//! - **Going quiet.** A leader whose every follower holds its whole log, committed, with
//!   nothing pending (no produce waiting, no proposal, no leadership transfer, every
//!   follower's broker live, every replica in sync, the leader its partition's preferred
//!   replica when leaders are rebalanced), and nothing new for `QUIET_TICKS` ticks, sends
//!   each follower one last heartbeat marked `QUIESCE_CONTEXT` and stops ticking. A
//!   follower that receives it in the leader's term, with its whole log committed up to
//!   the leader's commit, stops ticking too. A follower for which any of that is false
//!   keeps ticking; at worst it asks for a (pre-)vote, which wakes the leader.
//! - **Waking up.** Any message other than its leader's heartbeat (a follower) or a
//!   follower's heartbeat answer (a leader) wakes a quiet group, as does a proposal. A
//!   leader's wake-up thus wakes its followers with its first append.
//! - **Failures.** A quiet group hears nothing from its peers, so it watches their
//!   brokers instead (`cluster::peer_liveness`: every frame of the pair's link, and the
//!   pair heartbeat sent several times per election timeout). A follower whose leader's
//!   broker has been silent for an election timeout wakes with its election clock at
//!   the timeout, so it campaigns within one more randomized timeout, as a follower that
//!   never went quiet would; a leader with a silent follower wakes and ticks (check-quorum,
//!   the in-sync set).
//!
//! While a leader is quiet its in-sync set is every replica: they all held its whole
//! log when it went quiet, and it wakes as soon as one's broker falls silent.

use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};
use raft::{ProgressState, StateRole};

use super::replica_group::ReplicaGroup;
use super::ShardContext;
use crate::cluster::peer_liveness::PeerLiveness;
use crate::cluster::ClusterConfig;

/// Marks a leader's last heartbeat before it goes quiet.
pub const QUIESCE_CONTEXT: &[u8] = b"tern:quiesce";
/// A leader goes quiet after this many ticks with nothing new (one election timeout).
pub const QUIET_TICKS: u32 = ClusterConfig::ELECTION_TICKS as u32;

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

    fn live(&self, node: u64) -> bool {
        self.peers.is_live(node as i32, self.window, self.now)
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
        raft.prs()
            .get(id)
            .is_some_and(|pr| pr.matched == last && pr.state == ProgressState::Replicate && around.live(id))
    });
    followers_current && group.in_sync().len() == group.replicas.len()
}

/// The leader's last heartbeat to each follower, marked so the follower goes quiet too.
pub fn quiesce_heartbeats(group: &ReplicaGroup) -> Vec<Message> {
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
            message.set_context(bytes::Bytes::from_static(QUIESCE_CONTEXT));
            message
        })
        .collect()
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
        let silent = group.replicas.iter().map(|&id| id as u64).any(|id| id != raft.id && !around.live(id));
        silent.then_some(TickWake::FollowerSilent)
    } else if raft.leader_id == 0 || !around.live(raft.leader_id) {
        Some(TickWake::LeaderSilent)
    } else {
        None
    }
}

/// Wakes a quiet group. A leader takes its followers as caught up and heard from as of
/// their brokers' last frames (they held its whole log while it was quiet); a follower
/// whose leader fell silent starts its election clock at the timeout.
pub fn wake(group: &mut ReplicaGroup, reason: Option<TickWake>, around: &Surroundings) {
    group.quiesced = false;
    group.quiet_ticks = 0;
    let raft = &mut group.node.raft;
    if raft.state == StateRole::Leader {
        let own = raft.id;
        let last = raft.raft_log.last_index();
        let followers: Vec<u64> = raft.prs().iter().map(|(&id, _)| id).filter(|&id| id != own).collect();
        for id in followers {
            let heard = around.peers.last_heard(id as i32).map_or(around.now, |at| at.min(around.now));
            group.heard_at.insert(id, heard);
            if let Some(progress) = raft.mut_prs().get_mut(id) {
                if progress.matched == last {
                    group.caught_up_at.insert(id, heard);
                }
                progress.recent_active = around.live(id);
            }
        }
        group.last_index_seen = last;
    } else if reason == Some(TickWake::LeaderSilent) {
        raft.election_elapsed = raft.election_timeout();
    }
}
