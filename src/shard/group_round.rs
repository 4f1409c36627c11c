//! One replica group's part of a driver round, in the order raft-rs requires (see
//! `shard::replicas` for the round over all of a shard's groups). Readys are handled
//! asynchronously (raft-rs's `advance_append_async`): a group's next Ready may start
//! while the writes of earlier ones are still on their way to the disk, so a follower
//! writes what arrives at once instead of after its previous write, and a leader counts
//! its followers' acknowledgements while its own write runs.
//! 1. [`start_ready`]: take the Ready, hand out the messages that may leave before the
//!    write, install a snapshot, cut a divergent uncommitted tail (after the writes in
//!    flight), queue the new entries' writes to the partition log, apply committed
//!    configuration changes, and advance the node past the Ready;
//! 2. [`DurableWait::wait`]: wait until those writes (and the replica state, when due)
//!    are on disk; flights of one group complete in the order they started;
//! 3. [`finish_flight`]: hand out the messages that needed the write (votes, append
//!    acknowledgements), tell the node what is persisted, answer produce requests,
//!    move the high watermark.
//!
//! Nothing here knows the shard: the shard's driver runs these for its groups and the
//! deterministic simulation (`tests/replica_sim.rs`) runs them over simulated disks and a
//! simulated network, so both drive raft-rs, the storage hooks and the window the same
//! way.

use std::path::PathBuf;

use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::StateRole;

use crate::replication::entry::{conf_change_batch, leader_noop_batch, offsets_of};
use crate::replication::{ReplicaState, WindowEntry};
use crate::storage::{Offset, PartitionLog, PendingAppend, StorageEnv, StorageError};

use super::replica_group::{answer_durable, ProposeOutcome, ReplicaGroup, WINDOW_KEEP_BYTES};

/// A group's Ready after its writes were queued (and the node advanced past it),
/// waiting for them.
#[derive(Debug)]
pub struct GroupFlight {
    /// The Ready's number, told to the node once the flight is durable (none: only the
    /// replica state is written).
    pub ready_number: Option<u64>,
    /// Messages that may leave only once the flight is durable.
    pub persisted_messages: Vec<Message>,
    /// The index of a snapshot the Ready installed: applied once it is persisted.
    pub snapshot_index: Option<u64>,
    pub writes: Vec<PendingAppend>,
    pub write_state: bool,
    pub written_through: u64,
}

impl GroupFlight {
    /// No Ready, only the replica state to write.
    pub fn state_only(group: &ReplicaGroup) -> GroupFlight {
        let written_through = group.window.borrow().last_index();
        GroupFlight {
            ready_number: None,
            persisted_messages: Vec::new(),
            snapshot_index: None,
            writes: Vec::new(),
            write_state: true,
            written_through,
        }
    }
}

/// What a started Ready asks of the caller besides the flight.
#[derive(Debug)]
pub struct Started {
    pub flight: GroupFlight,
    /// The log was cut back (`storage::truncate` returns a new handle): whoever else
    /// holds the partition's log must take this one.
    pub replaced_log: Option<PartitionLog>,
    /// A committed configuration change was applied (the replica state should be
    /// written at the next round).
    pub conf_changed: bool,
}

/// Whether the next Ready cuts the log back: its first entry is at or below the window's
/// last (a new leader's entries replace an uncommitted tail). The caller lets the
/// group's flights in progress finish first (`storage::truncate` closes the log, and the
/// node must hear of their persistence before it is told of later Readys).
pub fn ready_cuts_back(group: &ReplicaGroup) -> bool {
    // Entries Raft has not handed out yet start after its stable index; the window holds
    // everything handed out.
    let unstable = &group.node.raft.raft_log.unstable;
    !unstable.entries.is_empty() && unstable.offset <= group.window.borrow().last_index()
}

/// Phase 1 for one group: its Ready's messages into `out`, its entries queued for
/// writing.
pub async fn start_ready(group: &mut ReplicaGroup, state_due: bool, out: &mut Vec<Message>) -> Result<Started, String> {
    let mut ready = group.node.ready();
    if let Some(soft) = ready.ss() {
        if soft.raft_state == StateRole::Leader && group.role != StateRole::Leader {
            // A new leader starts with the replicas it just heard from (its voters) in
            // sync, as Kafka keeps the in-sync set across a leader change; one that does
            // not catch up leaves it after REPLICA_LAG_MAX.
            let now = std::time::Instant::now();
            group.caught_up_at.clear();
            for (&id, _) in group.node.raft.prs().iter() {
                if group.heard_at.get(&id).is_some_and(|at| now.duration_since(*at) < group.heard_window) {
                    group.caught_up_at.insert(id, now);
                }
            }
            group.last_index_seen = group.node.raft.raft_log.last_index();
            group.term_start_index = group.node.raft.raft_log.last_index();
        }
        group.role = soft.raft_state;
    }
    out.extend(mark_snapshots(group, ready.take_messages()));
    let installed = !ready.snapshot().is_empty();
    if installed {
        install_snapshot(group, ready.snapshot())?;
    }
    let entries = ready.take_entries();
    let mut writes = Vec::with_capacity(entries.len());
    let mut replaced_log = None;
    if let Some(first) = entries.first() {
        let keep = first.index - 1;
        let last = group.window.borrow().last_index();
        if keep < last {
            replaced_log = Some(cut_back(group, keep).await?);
        }
        for entry in entries {
            writes.push(write_entry(group, entry)?);
        }
    }
    let write_state = state_due
        || installed
        || ready.hs().is_some_and(|hs| hs.term != group.persisted.term || hs.vote != group.persisted.vote);
    let written_through = group.window.borrow().last_index();
    if group.role != StateRole::Leader && !group.prepared.is_empty() {
        // Deposed with proposals Raft dropped: their producer sequences were recorded
        // when they were prepared, and they will never be written.
        group.prepared.clear();
        let log_end = group.log.offsets().log_end.offset();
        group.log.forget_producers_from(log_end);
    }
    let persisted_messages = ready.take_persisted_messages();
    // Committed entries (raft-rs hands out only persisted ones) are in the log already;
    // configuration changes among them take effect now.
    let committed = ready.take_committed_entries();
    let applied_through = committed.last().map(|entry| entry.index);
    let snapshot_index = installed.then(|| ready.snapshot().get_metadata().index);
    let ready_number = ready.number();
    group.node.advance_append_async(ready);
    let conf_changed = super::reassignment::apply_committed(group, committed)?;
    if let Some(index) = applied_through {
        group.node.advance_apply_to(index);
    }
    let flight = GroupFlight {
        ready_number: Some(ready_number),
        persisted_messages,
        snapshot_index,
        writes,
        write_state,
        written_through,
    };
    Ok(Started { flight, replaced_log, conf_changed })
}

/// Phase 2 for one group: what to wait for, taken from the group when the round's writes
/// were queued (the wait itself holds no borrow of it, so a shard waits for all of its
/// groups together).
#[derive(Debug)]
pub struct DurableWait {
    state: (PathBuf, StorageEnv, ReplicaState),
    /// Abort markers written this round: their index entries reach the disk before Raft
    /// hears the entries are persisted.
    aborts: Option<PartitionLog>,
}

impl DurableWait {
    pub fn of(group: &ReplicaGroup) -> DurableWait {
        let state = (group.log.dir().to_path_buf(), group.log.storage_env(), group.current_state());
        let aborts = Some(group.log.clone()).filter(|log| log.take_unsaved_aborts());
        DurableWait { state, aborts }
    }

    /// Waits for the flight's writes, the abort index and (when due) the replica state;
    /// returns the state written.
    pub async fn wait(self, flight: &mut GroupFlight) -> Result<Option<ReplicaState>, StorageError> {
        let mut failure = None;
        for write in std::mem::take(&mut flight.writes) {
            if let Err(error) = write.durable().await {
                failure.get_or_insert(error);
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        if let Some(log) = self.aborts {
            log.persist_aborted_index().await?;
        }
        if !flight.write_state {
            return Ok(None);
        }
        let (dir, env, state) = self.state;
        state.write(&dir, &env).await.map_err(|error| StorageError::io(&dir, error))?;
        Ok(Some(state))
    }
}

/// Phase 3 for one group, once a flight is durable (flights of a group finish in the
/// order they started): its messages leave, the node learns what is persisted (a leader
/// counts its own copy toward the commit only now), and produce requests are answered.
/// The node may have a new Ready after this (committed entries, messages).
pub fn finish_flight(
    group: &mut ReplicaGroup,
    flight: GroupFlight,
    written_state: Option<ReplicaState>,
    out: &mut Vec<Message>,
) {
    if let Some(state) = written_state {
        group.log.set_clean_limit(state.anchor.next_offset());
        group.persisted = state;
        group.persisted_at = std::time::Instant::now();
    }
    note_acknowledged(group, &flight.persisted_messages);
    out.extend(mark_snapshots(group, flight.persisted_messages));
    if let Some(number) = flight.ready_number {
        group.node.on_persist_ready(number);
    }
    if let Some(index) = flight.snapshot_index.filter(|&index| index > group.node.raft.raft_log.applied) {
        group.node.advance_apply_to(index);
    }
    if group.is_leader() {
        answer_durable(group, flight.written_through);
    }
    settle(group);
}

/// The most appends a follower remembers the arrival of: acknowledgements cover every
/// earlier append, so only a follower whose acknowledgements stop (a new leader, a
/// rejection) could fill it, and then the oldest are forgotten.
const APPENDS_TRACKED_MAX: usize = 1024;

/// Follower: an append with entries is about to be stepped; when it arrived is kept
/// until its acknowledgement leaves (`note_acknowledged`).
pub fn note_append_received(group: &mut ReplicaGroup, message: &Message, now: std::time::Instant) {
    if message.get_msg_type() != MessageType::MsgAppend || message.entries.is_empty() {
        return;
    }
    let last = message.index + message.entries.len() as u64;
    if group.appends_unacknowledged.len() >= APPENDS_TRACKED_MAX {
        group.appends_unacknowledged.pop_front();
    }
    group.appends_unacknowledged.push_back((last, now));
}

/// Follower: acknowledgements leaving after a flight end the appends they cover
/// (`tern_replication_follower_ack_seconds`: arrival to acknowledgement, the write
/// included).
fn note_acknowledged(group: &mut ReplicaGroup, messages: &[Message]) {
    if group.is_leader() {
        // Arrivals from before it was elected are never acknowledged, and must not be
        // counted (with the time since) if it follows again.
        group.appends_unacknowledged.clear();
        return;
    }
    let Some(acked) = messages
        .iter()
        .filter(|m| m.get_msg_type() == MessageType::MsgAppendResponse && !m.reject)
        .map(|m| m.index)
        .max()
    else {
        return;
    };
    let probes = crate::metrics::probes();
    while let Some(&(last, arrived)) = group.appends_unacknowledged.front() {
        if last > acked {
            break;
        }
        probes.replication_follower_ack.observe(arrived.elapsed());
        group.appends_unacknowledged.pop_front();
    }
}

/// Leader: each snapshot message carries, in its otherwise unused `index`, how much of
/// the follower's log this leader knows matches its own (the follower's `matched`). The
/// follower keeps that much when it cuts its log back before copying the leader's
/// (`catch_up_keep`): entries it acknowledged may count toward a commit, and cutting
/// them would let the leader's next heartbeat commit past the follower's log (raft-rs
/// panics) or, with two crashes, lose a committed entry.
fn mark_snapshots(group: &ReplicaGroup, mut messages: Vec<Message>) -> Vec<Message> {
    for message in &mut messages {
        if message.get_msg_type() == MessageType::MsgSnapshot {
            message.index = group.node.raft.prs().get(message.to).map_or(0, |progress| progress.matched);
        }
    }
    messages
}

/// Follower: whether a leader's snapshot calls for a catch-up (copying the leader's log
/// up to it). One whose entry this replica holds already, of the same term (sent before
/// an ordinary append caught it up, and delivered late), is stepped into Raft as it is:
/// Raft only moves the commit forward. Any other (an entry this replica lacks, or holds
/// from another term) needs the copy: Raft would otherwise take the snapshot over a log
/// that differs from the leader's.
pub fn snapshot_needs_catch_up(group: &ReplicaGroup, snapshot: &Message) -> bool {
    let metadata = snapshot.get_snapshot().get_metadata();
    // Raft's view: the window, and entries Raft accepted that are not written yet.
    group.node.raft.raft_log.term(metadata.index).ok() != Some(metadata.term)
}

/// Before a peer's message is stepped: what raft-rs, which takes every acknowledged
/// entry to stay on its replica's disk, cannot handle when a replica's copy was wiped
/// (its directory deleted, its disk replaced) and it comes back empty.
///
/// - A follower takes a heartbeat's commit only up to what it holds: the leader sends
///   the commit it believes the follower has, and raft-rs aborts on a commit past the
///   log's end. The appends that fill the log bring the commit along.
/// - A leader that hears a follower's log ends before entries the follower had
///   acknowledged (a rejection hinting below its matched index, and not a stale one:
///   it rejects an index at or past that match) starts over with it: nothing of it
///   counts as matched, and it is probed from the end it reports. raft-rs would take the
///   rejection for stale and keep sending past the follower's end.
/// - A leader about to send the entries from the start of the log to an empty or wiped
///   follower while a configuration change is among them hands out its entries through
///   that change first (the follower then gets a snapshot, which carries the
///   configuration): the follower starts from the configuration the metadata names now,
///   and replaying the changes onto that one would give it a wrong one.
pub fn before_step(group: &mut ReplicaGroup, message: &mut Message) {
    let raft = &mut group.node.raft;
    match message.get_msg_type() {
        MessageType::MsgHeartbeat if raft.state != StateRole::Leader && message.commit > raft.raft_log.last_index() => {
            message.commit = raft.raft_log.committed;
        }
        MessageType::MsgAppendResponse if message.reject && raft.state == StateRole::Leader => {
            let hint = message.reject_hint;
            let applied = raft.raft_log.applied;
            let Some(progress) = raft.mut_prs().get_mut(message.from) else { return };
            let lost = message.index >= progress.matched && hint < progress.matched;
            if lost {
                tracing::warn!(
                    partition = %group.partition, replica = message.from, matched = progress.matched, log_end = hint,
                    "a replica lost entries it had acknowledged (its copy was wiped?); it starts over from its log end"
                );
                progress.matched = 0;
                progress.become_probe();
                // So that raft-rs takes the rejection and probes from the hint at once.
                progress.next_idx = message.index + 1;
            }
            if lost || hint == 0 {
                let mut window = group.window.borrow_mut();
                if let Some(change) = window.last_conf_change().filter(|&change| change > hint && change <= applied) {
                    window.evict_through(change, 0);
                }
            }
        }
        _ => {}
    }
}

/// Whether this replica may answer `message` at all: a vote request gets no answer from
/// a replica that is not a voter of its own configuration (one that joins by a
/// reassignment, empty and without one). Otherwise a broker that left a group and joins
/// it again with an empty log would grant its vote to a replica that still has the
/// configuration from before it left, which could then win an election the real voters
/// never held, and commit beside them.
///
/// Nor does a replica without any configuration (one that joins by a reassignment, until
/// the leader's snapshot brings one) take entries: the entries from the start of the log
/// would replay past configuration changes onto its empty one, which cannot apply them.
/// The leader's appends from there go unanswered until it sends the snapshot
/// (`reassignment::snapshot_for_new_replicas`, once it has applied the last change).
/// For the same reason no replica takes entries from the very start of the log that
/// carry a configuration change: it cannot tell whether the configuration it started
/// with is the one the group started with (a replica whose copy was wiped starts with
/// the metadata's replicas), and the snapshot is sure.
pub fn may_answer(group: &ReplicaGroup, message: &Message) -> bool {
    let window = group.window.borrow();
    let conf = &window.conf_state;
    match message.get_msg_type() {
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
            let id = group.node.raft.id;
            conf.voters.contains(&id) || conf.voters_outgoing.contains(&id)
        }
        // (An append that does not continue its log is still answered: the rejection
        // tells the leader where this replica's log ends.)
        MessageType::MsgAppend => {
            let from_the_start_with_a_change = message.index == 0
                && message.entries.iter().any(|entry| entry.get_entry_type() != EntryType::EntryNormal);
            !from_the_start_with_a_change
                && (!super::replica_group::has_no_members(conf)
                    || message.entries.is_empty()
                    || message.index > window.last_index())
        }
        _ => true,
    }
}

/// Follower: whether a catch-up may start now. Not while Raft holds entries it accepted
/// and the log does not have yet: the round writes them first (the copy would otherwise
/// write other batches where they go).
pub fn may_start_catch_up(group: &ReplicaGroup) -> bool {
    group.node.raft.raft_log.last_index() == group.window.borrow().last_index()
}

/// Follower, before a catch-up: the entry to cut the log back to. Everything after the
/// commit may differ from the leader's log, except what the leader said matches
/// (`mark_snapshots`).
pub fn catch_up_keep(group: &ReplicaGroup, snapshot: &Message) -> u64 {
    let last = group.window.borrow().last_index();
    let commit = group.node.raft.raft_log.committed.min(last);
    commit.max(snapshot.index.min(last))
}

/// A snapshot Raft took after the catch-up copied the log up to it: the window starts
/// over at the snapshot's entry.
fn install_snapshot(group: &mut ReplicaGroup, snapshot: &raft::eraftpb::Snapshot) -> Result<(), String> {
    let descriptor: super::catch_up::SnapshotDescriptor =
        serde_json::from_slice(&snapshot.data).map_err(|e| format!("snapshot descriptor: {e}"))?;
    let log_end = group.log.offsets().log_end.offset();
    if log_end != Offset(descriptor.next_offset) {
        return Err(format!("the snapshot ends at offset {} but the log at {log_end}", descriptor.next_offset));
    }
    let metadata = snapshot.get_metadata();
    let mut window = group.window.borrow_mut();
    let base =
        crate::replication::Anchor { index: metadata.index, term: metadata.term, next_offset: descriptor.next_offset };
    window.restore(base, metadata.get_conf_state().clone());
    window.hard_state.commit = metadata.index;
    window.hard_state.term = window.hard_state.term.max(metadata.term);
    Ok(())
}

/// Writes one entry Raft handed out at the log end and adds it to the window.
fn write_entry(group: &mut ReplicaGroup, entry: Entry) -> Result<PendingAppend, String> {
    let base_offset = group.log.offsets().log_end.offset();
    let conf_change = (entry.get_entry_type() == EntryType::EntryConfChangeV2).then(|| entry.data.clone());
    let data = match &conf_change {
        Some(change) => conf_change_batch(base_offset, entry.term, change),
        None if entry.data.is_empty() => leader_noop_batch(base_offset, entry.term),
        None => entry.data,
    };
    let count = offsets_of(&data).ok_or_else(|| format!("entry {} is not a record batch", entry.index))?;
    // The leader recorded its own proposals' producer sequences when it prepared them.
    let prepared_here = group.prepared.remove(&entry.index);
    let pending = group.log.append_entry(data.clone(), !prepared_here).map_err(|e| e.to_string())?;
    group.window.borrow_mut().push(WindowEntry {
        term: entry.term,
        base_offset,
        next_offset: Offset(base_offset.value() + count),
        data,
        conf_change,
    });
    Ok(pending)
}

/// Cuts the log and the window back to entry `keep` (a new leader's entries follow);
/// returns the log's new handle.
pub async fn cut_back(group: &mut ReplicaGroup, keep: u64) -> Result<PartitionLog, String> {
    let offset = group
        .window
        .borrow()
        .next_offset_after(keep)
        .ok_or_else(|| format!("entry {keep} to cut back to is below the window"))?;
    let commit_offset = group.log.offsets().high_watermark.offset();
    let log = crate::storage::truncate::truncate(group.log.clone(), offset).await.map_err(|e| e.to_string())?;
    log.replicate(commit_offset);
    group.window.borrow_mut().truncate_after(keep);
    group.log = log.clone();
    crate::metrics::replication_gauges().truncations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(partition = %group.partition, keep, %offset, "replica cut its uncommitted entries back to the leader's");
    Ok(log)
}

/// Moves the log's high watermark to the commit, answers committed acks=all requests
/// and trims the window.
pub fn settle(group: &mut ReplicaGroup) {
    // Never past this replica's own durable copy: a majority may have committed entries
    // whose write here is still in flight, and the high watermark (what consumers read,
    // what a restart keeps) stays behind the local disk.
    let committed = group.node.raft.raft_log.committed.min(group.node.raft.raft_log.persisted);
    let applied = group.node.raft.raft_log.applied;
    let (commit_index, commit_offset) = {
        let window = group.window.borrow();
        let index = committed.min(window.last_index()).max(window.base().index);
        (index, window.next_offset_after(index).expect("inside the window"))
    };
    group.log.set_commit(commit_offset);
    let log_start = group.log.offsets().log_start.offset();
    let done: Vec<u64> = group.waiters.range(..=commit_index).map(|(&index, _)| index).collect();
    let probes = (!done.is_empty()).then(crate::metrics::probes);
    for index in done {
        let term = group.window.borrow().term_of(index);
        for waiter in group.waiters.remove(&index).unwrap_or_default() {
            if let Some(probes) = &probes {
                probes.replication_commit.observe(waiter.proposed_at.elapsed());
            }
            let outcome = waiter.outcome_for(term, log_start);
            let _ = waiter.reply.send(outcome);
        }
    }
    group.window.borrow_mut().evict_through(commit_index.min(applied), WINDOW_KEEP_BYTES);
    super::reassignment::snapshot_for_new_replicas(group);
    if !group.is_leader() && !group.waiters.is_empty() {
        // Deposed: entries it proposed may still commit under the new leader, but this
        // node will not see them through; the clients retry (idempotent producers are
        // deduplicated by the new leader).
        group.fail_waiters(|| ProposeOutcome::NotLeader);
        let log_end = group.log.offsets().log_end.offset();
        group.log.forget_producers_from(log_end);
    }
}
