//! Elections at once when a leader's broker process is known gone, for the partition
//! replica groups (`shard::replicas`) and the metadata quorum (`cluster::quorum`).
//!
//! Raft finds a dead leader by its silence: a follower campaigns once it has heard
//! nothing for a randomized election timeout (one to two of the election timeout),
//! and two followers that time out together split the vote and wait again. When the
//! leader's process died (SIGKILL, a crash, an OOM kill) its peers learn it sooner:
//! its connections end and its cluster port refuses new ones (`cluster::transport`,
//! `cluster::peer_liveness`). Then the surviving voters of each group it led take turns:
//! the first in the partition's replica order (the preferred leaders first) campaigns at
//! the next tick, the next one `stagger` later if there is still no leader, and so on,
//! so they do not split the vote. A campaign is Raft's own leadership-transfer
//! election (`MsgTimeoutNow`, as the dead leader would have sent it): it skips the
//! pre-vote and the other voters grant it although they heard from the leader within
//! the timeout, if the candidate's log is at least as complete as theirs (a candidate
//! that is behind loses, and the next voter's turn comes).
//!
//! This is only a hint to start sooner; Raft still decides. A leader that is alive but
//! silent (a paused process, a machine gone without closing its sockets, a cut network)
//! is found by the election timeout as before.

use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};
use raft::{RawNode, StateRole, Storage, INVALID_ID};

use super::peer_liveness::PeerLiveness;

/// A follower's leader whose process is known gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoneLeader {
    pub node: u64,
    /// When its process was first known gone (`PeerLiveness::gone_since`).
    pub since: Instant,
    /// Whether this replica has taken its turn (campaigned, or cannot).
    pub done: bool,
}

/// What a tick did about a group's gone leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The leader is not known gone (or this replica already took its turn).
    None,
    /// The leader is gone; this replica's turn comes later.
    Waiting,
    /// This replica started an election.
    Campaigned,
}

/// A Raft node's side of it: what it knows of a gone leader, and its preference order.
pub struct Departure<'a, S: Storage> {
    pub node: &'a mut RawNode<S>,
    pub gone_leader: &'a mut Option<GoneLeader>,
    /// Who campaigns first among the survivors (voters not in it come after, by id).
    pub order: &'a [i32],
    /// What the node is, for the log line.
    pub name: &'a dyn std::fmt::Display,
}

impl<S: Storage> std::fmt::Debug for Departure<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Departure")
            .field("name", &self.name.to_string())
            .field("gone_leader", &self.gone_leader)
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

/// At a tick: if the node's leader is known gone, campaign when this replica's turn has
/// come. A quiet group for which this returns anything but `Turn::None` must wake.
pub fn take_turn<S: Storage>(at: Departure<'_, S>, peers: &PeerLiveness, stagger: Duration, now: Instant) -> Turn {
    let Departure { node, gone_leader, order, name } = at;
    let raft = &node.raft;
    if raft.state == StateRole::Leader {
        *gone_leader = None;
        return Turn::None;
    }
    let leader = raft.leader_id;
    if leader != INVALID_ID {
        match peers.gone_since(leader as i32) {
            None => {
                *gone_leader = None;
                return Turn::None;
            }
            Some(since) => {
                if gone_leader.is_none_or(|gone| gone.node != leader || gone.since != since) {
                    *gone_leader = Some(GoneLeader { node: leader, since, done: false });
                }
            }
        }
    }
    // With no leader (an election is on), the last gone one still counts while it is gone.
    let Some(gone) = *gone_leader else { return Turn::None };
    if gone.done {
        return Turn::None;
    }
    if peers.gone_since(gone.node as i32) != Some(gone.since) {
        *gone_leader = None; // back (or gone again: the next tick starts over)
        return Turn::None;
    }
    let voters: Vec<u64> = raft.prs().conf().voters().ids().iter().collect();
    let is_gone = |id: u64| id == gone.node || peers.gone_since(id as i32).is_some();
    let Some(rank) = campaign_rank(&voters, order, raft.id, is_gone) else {
        *gone_leader = Some(GoneLeader { done: true, ..gone });
        return Turn::None;
    };
    if now < gone.since + stagger * rank as u32 {
        return Turn::Waiting;
    }
    *gone_leader = Some(GoneLeader { done: true, ..gone });
    tracing::info!(%name, gone = gone.node, term = raft.term, rank, "the leader's process is gone; campaigning");
    let mut timeout_now = Message::default();
    timeout_now.set_msg_type(MessageType::MsgTimeoutNow);
    timeout_now.from = gone.node;
    timeout_now.to = raft.id;
    timeout_now.term = raft.term;
    if let Err(error) = node.step(timeout_now) {
        tracing::debug!(%name, %error, "campaign not started");
    }
    Turn::Campaigned
}

/// This replica's turn among the surviving voters (0: first), in the order of the
/// partition's replicas (voters not among them after, by id); `None` if it is not a
/// surviving voter.
fn campaign_rank(voters: &[u64], replicas: &[i32], own: u64, is_gone: impl Fn(u64) -> bool) -> Option<usize> {
    let mut survivors: Vec<u64> = voters.iter().copied().filter(|&id| !is_gone(id)).collect();
    survivors.sort_by_key(|&id| (replicas.iter().position(|&r| r as u64 == id).unwrap_or(usize::MAX), id));
    survivors.iter().position(|&id| id == own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survivors_take_turns_in_replica_order() {
        let gone = |id: u64| id == 1;
        assert_eq!(campaign_rank(&[1, 2, 3], &[1, 3, 2], 3, gone), Some(0), "the preferred survivor first");
        assert_eq!(campaign_rank(&[1, 2, 3], &[1, 3, 2], 2, gone), Some(1));
        assert_eq!(campaign_rank(&[1, 2, 3], &[1, 3, 2], 1, gone), None, "the gone one has no turn");
        assert_eq!(campaign_rank(&[1, 2, 3], &[1, 3, 2], 4, gone), None, "a learner has no turn");
    }

    #[test]
    fn voters_outside_the_replica_list_come_last_by_id() {
        let gone = |id: u64| id == 2;
        // Mid-reassignment: voters 5 and 4 are not (yet) in the metadata's replicas.
        assert_eq!(campaign_rank(&[1, 2, 4, 5], &[2, 1], 1, gone), Some(0));
        assert_eq!(campaign_rank(&[1, 2, 4, 5], &[2, 1], 4, gone), Some(1));
        assert_eq!(campaign_rank(&[1, 2, 4, 5], &[2, 1], 5, gone), Some(2));
    }

    #[test]
    fn every_gone_voter_is_skipped() {
        let gone = |id: u64| id == 1 || id == 3;
        assert_eq!(campaign_rank(&[1, 2, 3, 4, 5], &[1, 3, 5, 4, 2], 5, gone), Some(0));
        assert_eq!(campaign_rank(&[1, 2, 3, 4, 5], &[1, 3, 5, 4, 2], 2, gone), Some(2));
    }
}
