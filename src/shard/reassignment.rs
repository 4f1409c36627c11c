//! Moving a partition's replicas to other brokers (Kafka's AlterPartitionReassignments,
//! KIP-455), done inside the partition's Raft group with raft-rs configuration changes.
//!
//! The controller records the target replicas in the cluster metadata; every broker in
//! the target opens the partition (a new replica starts empty, with no configuration).
//! The group's leader then moves the group one safe step at a time, each step a
//! configuration-change entry in the partition log (a control batch, see
//! `replication::entry`), which takes effect on each replica once it is applied:
//! 1. the new brokers join as learners: they receive the log but do not vote. A
//!    learner copies the leader's segments up to a snapshot (`shard::catch_up`), so the
//!    leader's window starts at the change that added it (its snapshot must name it);
//! 2. once every learner holds the committed log, one joint change (Raft's joint
//!    consensus) makes the target the voters and the old replicas leave, and a second
//!    change leaves the joint configuration; a commit needs a majority of both sets
//!    meanwhile, so no step loses a quorum's guarantee;
//! 3. a leader that is leaving hands the leadership to a voter that stays before the
//!    change that removes it (before the joint change when some old voter stays, before
//!    leaving the joint configuration otherwise): raft-rs cannot lead a group it is not
//!    a voter of (it panics committing), so a leader never removes itself;
//! 4. the leader asks the controller to record the target as the replicas; brokers
//!    that are no longer replicas then close and delete their copy.
//!
//! A cancelled reassignment is the same walk back to the replicas the metadata still
//! names. Everything the leader does is decided from the applied configuration and the
//! metadata, so a new leader (after a failover mid-move) takes over where the old one was.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry, EntryType};
use raft::StateRole;

use crate::metadata::ReassignmentTarget;

use super::replica_group::ReplicaGroup;

/// How often a leader asks the controller to record a finished move until it has.
pub const COMPLETION_RETRY: Duration = Duration::from_secs(2);

/// Applies the configuration changes among committed entries; returns whether any was.
/// A change that does not decode or apply is an error: this replica would no longer
/// agree with the others on who votes, so its group stops (`Driver::fail_group`).
pub fn apply_committed(group: &mut ReplicaGroup, entries: Vec<Entry>) -> Result<bool, String> {
    let mut applied = false;
    for entry in entries {
        if entry.get_entry_type() != EntryType::EntryConfChangeV2 {
            continue;
        }
        let change = ConfChangeV2::parse_from_bytes(&entry.data)
            .map_err(|error| format!("the configuration change at index {} does not decode: {error}", entry.index))?;
        let conf = group
            .node
            .apply_conf_change(&change)
            .map_err(|error| format!("the configuration change at index {} does not apply: {error}", entry.index))?;
        tracing::info!(
            partition = %group.partition, index = entry.index, voters = ?conf.voters,
            learners = ?conf.learners, leaving = ?conf.voters_outgoing,
            "replica group configuration changed"
        );
        let raft = &mut group.node.raft;
        if raft.state == StateRole::Leader
            && !conf.voters.contains(&raft.id)
            && !conf.voters_outgoing.contains(&raft.id)
        {
            // Removed while leading (elected in a joint configuration it then left):
            // raft-rs would go on leading a group it is not in (and panic committing).
            tracing::warn!(partition = %group.partition, "removed from the group while leading; stepping down");
            let term = raft.term;
            raft.become_follower(term, raft::INVALID_ID);
        }
        group.window.borrow_mut().apply_conf(entry.index, conf);
        applied = true;
    }
    Ok(applied)
}

/// Leader, when it settles: a learner that holds nothing yet (a move added it) must start
/// from a snapshot that carries the current configuration. raft-rs refuses a snapshot
/// that does not name it, and entries from the start of the log would replay past
/// configuration changes onto the empty configuration it starts with. While the window
/// still holds a configuration change, it gives up its entries through it. So it does
/// for a voter being probed from the start of the log (empty, or its copy wiped), which
/// takes no entries from there while a change is among them (`group_round::may_answer`).
pub fn snapshot_for_new_replicas(group: &mut ReplicaGroup) {
    if !group.is_leader() {
        return;
    }
    let Some(last_change) = group.window.borrow().last_conf_change() else { return };
    let raft = &group.node.raft;
    // Not every follower with matched 0: right after an election every follower has it.
    let learners = raft.prs().conf().learners();
    let empty = raft.prs().iter().any(|(id, progress)| {
        *id != raft.id && progress.matched == 0 && (learners.contains(id) || progress.next_idx <= 1)
    });
    if empty && last_change <= raft.raft_log.applied {
        group.window.borrow_mut().evict_through(last_change, 0);
    }
}

/// What a leader asks of the controller when the group has moved: to record the
/// target (of that epoch) as the replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub target: ReassignmentTarget,
}

/// Leader, every tick: the next step of a move (or of its cancellation), if any is due.
/// Returns the target to record once the group's voters are exactly it.
pub fn drive(group: &mut ReplicaGroup, now: Instant) -> Option<Completed> {
    if !group.is_leader() {
        return None;
    }
    let desired: Vec<i32> = group.target.as_ref().map_or_else(|| group.replicas.clone(), |t| t.replicas.clone());
    let raft = &group.node.raft;
    if desired.is_empty() || raft.has_pending_conf() || raft.lead_transferee.is_some() {
        return None;
    }
    let conf = group.window.borrow().conf_state.clone();
    let want: BTreeSet<u64> = desired.iter().map(|&id| id as u64).collect();
    if !conf.voters_outgoing.is_empty() {
        // Joint: leaving it makes the incoming voters the group. A leader among them
        // leaves it; one that is not hands over to one that is first (raft-rs cannot
        // lead a group it is not a voter of), whatever the target says now (a move
        // cancelled or redirected mid-way walks on from the incoming voters).
        if !conf.voters.contains(&raft.id) {
            let incoming: BTreeSet<u64> = conf.voters.iter().copied().collect();
            hand_over(group, &incoming);
        } else {
            propose(group, ConfChangeV2::default(), "leaving the joint configuration");
        }
        return None;
    }
    let voters: BTreeSet<u64> = conf.voters.iter().copied().collect();
    let learners: BTreeSet<u64> = conf.learners.iter().copied().collect();
    if voters.is_empty() {
        return None;
    }
    let joining: Vec<u64> = want.iter().copied().filter(|id| !voters.contains(id) && !learners.contains(id)).collect();
    if !joining.is_empty() {
        let change = changes(joining.iter().map(|&id| (id, ConfChangeType::AddLearnerNode)));
        propose(group, change, "adding learners");
        return None;
    }
    let stray: Vec<u64> = learners.iter().copied().filter(|id| !want.contains(id)).collect();
    if !stray.is_empty() {
        propose(group, changes(stray.iter().map(|&id| (id, ConfChangeType::RemoveNode))), "removing learners");
        return None;
    }
    if voters != want {
        let staying: BTreeSet<u64> = voters.intersection(&want).copied().collect();
        if !want.contains(&raft.id) && !staying.is_empty() {
            // A voter that stays leads the change.
            hand_over(group, &staying);
            return None;
        }
        let committed = raft.raft_log.committed;
        let caught_up = want
            .iter()
            .filter(|id| !voters.contains(id))
            .all(|&id| raft.prs().get(id).is_some_and(|p| p.matched >= committed && p.recent_active));
        if !caught_up {
            return None;
        }
        let promote = want.iter().filter(|id| !voters.contains(id)).map(|&id| (id, ConfChangeType::AddNode));
        let remove = voters.iter().filter(|id| !want.contains(id)).map(|&id| (id, ConfChangeType::RemoveNode));
        // Always joint, left explicitly (above): the leader never removes itself.
        let mut change = changes(promote.chain(remove));
        change.set_transition(ConfChangeTransition::Explicit);
        propose(group, change, "moving the voters to the target");
        return None;
    }
    let target = group.target.clone()?;
    if group.completion_asked.is_some_and(|at| now.duration_since(at) < COMPLETION_RETRY) {
        return None;
    }
    group.completion_asked = Some(now);
    Some(Completed { target })
}

/// Hands the leadership to the replica among `to` (voters of the incoming
/// configuration) that holds the most of the log.
fn hand_over(group: &mut ReplicaGroup, to: &BTreeSet<u64>) {
    let raft = &group.node.raft;
    let incoming = &group.window.borrow().conf_state.voters;
    let successor = raft
        .prs()
        .iter()
        .filter(|(id, progress)| to.contains(id) && incoming.contains(id) && **id != raft.id && progress.recent_active)
        .max_by_key(|(_, progress)| progress.matched)
        .map(|(&id, _)| id);
    if let Some(successor) = successor {
        tracing::info!(partition = %group.partition, successor, "leaving the replicas; handing the leadership over");
        group.node.transfer_leader(successor);
    }
}

fn changes(list: impl Iterator<Item = (u64, ConfChangeType)>) -> ConfChangeV2 {
    let mut change = ConfChangeV2::default();
    for (node_id, kind) in list {
        let mut single = ConfChangeSingle { node_id, ..Default::default() };
        single.set_change_type(kind);
        change.mut_changes().push(single);
    }
    change
}

fn propose(group: &mut ReplicaGroup, change: ConfChangeV2, what: &str) {
    tracing::info!(partition = %group.partition, changes = ?change.changes, "{what}");
    if let Err(error) = group.node.propose_conf_change(Vec::new(), change) {
        tracing::warn!(partition = %group.partition, %error, "configuration change not proposed");
    }
}

/// Whether a reassignment keeps the group busy (it must not go quiet): a target set, or
/// a configuration that differs from the replicas.
pub fn in_progress(group: &ReplicaGroup) -> bool {
    if group.target.is_some() {
        return true;
    }
    let conf = &group.window.borrow().conf_state;
    let mut voters = conf.voters.clone();
    voters.sort_unstable();
    let mut replicas: Vec<u64> = group.replicas.iter().map(|&id| id as u64).collect();
    replicas.sort_unstable();
    !conf.learners.is_empty() || !conf.voters_outgoing.is_empty() || voters != replicas
}
