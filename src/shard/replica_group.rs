//! One partition's Raft group on the shard that owns the partition: the raft-rs node,
//! its window over the log, and the produce requests waiting on it. Opening a group
//! rebuilds the window from the log and the replica state file (see
//! `replication::state_file` for how the anchor maps indexes onto offsets).
//!
//! The driver (`shard::replicas`) does all the work; this file holds the per-group state
//! and the steps that touch only one group.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use raft::eraftpb::{ConfState, Entry, HardState, Message, MessageType};
use raft::{RawNode, StateRole};

use crate::cluster::ClusterConfig;
use crate::metadata::ReassignmentTarget;
use crate::protocol::record_batch::iter_batches;
use crate::protocol::topic_partition::TopicPartition;
use crate::replication::entry::{conf_change_in, epoch_of, offsets_of};
use crate::replication::{Anchor, ReplicaState, Window, WindowEntry, WindowStorage};
use crate::storage::{AppendError, Offset, PartitionLog};

/// Committed entries a window keeps for followers that lag, in bytes.
pub const WINDOW_KEEP_BYTES: usize = 16 << 20;
/// Offsets before the anchor read back into the window at open, so followers a little
/// behind a leader that just restarted still catch up from it.
const BACKFILL_OFFSETS: i64 = 20_000;
/// A follower that has not caught up with the leader for this long leaves the in-sync
/// replicas (Kafka's replica.lag.time.max.ms, whose default is 30 s; shorter here, so
/// min.insync.replicas reacts within seconds).
pub const REPLICA_LAG_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// Bytes per read while rebuilding the window.
const READ_BYTES: usize = 1 << 20;

/// What a leader is asked to append.
#[derive(Debug, Clone)]
pub enum Proposal {
    /// A client's record batch (checked, stamped, its producer's sequence recorded).
    Records(bytes::Bytes),
    /// The transaction coordinator's marker for one producer (min.insync.replicas does
    /// not apply: the decision is already taken, the marker must get through).
    Marker(crate::storage::TxnMarker),
}

/// What a produce request is told once its batch is in (or not).
#[derive(Debug)]
pub enum ProposeOutcome {
    Appended {
        base_offset: Offset,
        log_append_time_ms: Option<i64>,
        log_start: Offset,
    },
    /// The storage refused the batch (validation, sequence, duplicate...).
    Refused(AppendError),
    /// This replica does not lead the group (any more): the client asks again.
    NotLeader,
    NotEnoughReplicas {
        in_sync: usize,
        min_insync: i32,
    },
    /// Not committed within the request's timeout; it may still commit.
    TimedOut,
    /// The replica failed (its log cannot be written); it may have been committed.
    Failed(String),
}

impl Waiter {
    /// What the request is told once the entry at its index (of `term`) is durable or
    /// committed: appended, if that entry is still the one it proposed.
    pub fn outcome_for(&self, term: Option<u64>, log_start: Offset) -> ProposeOutcome {
        if term != Some(self.term) {
            return ProposeOutcome::NotLeader;
        }
        ProposeOutcome::Appended {
            base_offset: self.base_offset,
            log_append_time_ms: self.log_append_time_ms,
            log_start,
        }
    }
}

/// A produce request waiting for its entry.
#[derive(Debug)]
pub struct Waiter {
    /// The term it was proposed in: it is answered only if the entry at its index is
    /// still of that term (a leader deposed and elected again may find another leader's
    /// entry there).
    pub term: u64,
    pub acks: i16,
    pub base_offset: Offset,
    pub log_append_time_ms: Option<i64>,
    /// When the leader proposed it (`tern_replication_commit_seconds`).
    pub proposed_at: Instant,
    pub deadline: Instant,
    pub reply: oneshot::Sender<ProposeOutcome>,
}

pub struct ReplicaGroup {
    pub partition: TopicPartition,
    pub topic_id: [u8; 16],
    /// The partition's replicas in the cluster metadata (preferred leader first).
    pub replicas: Vec<i32>,
    /// The replicas a reassignment in progress moves the group to (`shard::reassignment`).
    pub target: Option<ReassignmentTarget>,
    /// Leader: when it last asked the controller to record a finished reassignment.
    pub completion_asked: Option<Instant>,
    pub node: RawNode<WindowStorage>,
    pub window: Rc<RefCell<Window>>,
    pub log: PartitionLog,
    /// The state last written to `raft-state`.
    pub persisted: ReplicaState,
    pub persisted_at: Instant,
    /// Produce requests by the index of their entry (leader only).
    pub waiters: BTreeMap<u64, Vec<Waiter>>,
    /// Entries this leader prepared (producer sequences recorded) and not yet written.
    pub prepared: BTreeSet<u64>,
    /// Follower: a leader's snapshot waiting for the log to be copied up to it
    /// (`shard::catch_up`); `true` once the copy runs.
    pub catch_up: Option<(raft::eraftpb::Message, bool)>,
    /// When each peer was last heard from in this group (any message).
    pub heard_at: std::collections::HashMap<u64, Instant>,
    /// Leader: when each follower last held everything the leader had a tick before.
    pub caught_up_at: std::collections::HashMap<u64, Instant>,
    /// Leader: its last index at the previous tick.
    pub last_index_seen: u64,
    /// A follower not heard from for this long is out of sync.
    pub heard_window: std::time::Duration,
    /// Leader: the index of its term's first entry (everything earlier leaders committed
    /// is committed here once this is).
    pub term_start_index: u64,
    /// `__consumer_offsets` and `__transaction_state` groups: the term in which this
    /// leader loaded the partition's state and took over coordination.
    pub coordinator_loaded_term: Option<u64>,
    /// Leader: ticks since it last checked for its preferred replica.
    pub balance_ticks: u32,
    /// Leader: ticks each follower has spent in Raft's snapshot state.
    pub snapshot_ticks: std::collections::HashMap<u64, u32>,
    /// Leader as last published to the leader table, and its term.
    pub published: Option<(i32, u64, Vec<i32>)>,
    pub role: StateRole,
    /// The group has gone quiet and does not tick (`shard::quiescence`).
    pub quiesced: bool,
    /// Leader: ticks in a row with nothing to do, at last index `quiet_index`.
    pub quiet_ticks: u32,
    pub quiet_index: u64,
    /// A message was stepped since the last round (a quiet group is looked at in a round
    /// only then: a thousand quiet groups cost no Ready checks).
    pub stepped: bool,
    /// Leader: when it went quiet, and the followers that answered its quiesce heartbeat.
    pub quiet_since: Instant,
    pub quiet_acks: BTreeSet<u64>,
    /// A follower's leader whose process is known gone, and what was done about it
    /// (`cluster::departure`).
    pub gone_leader: Option<crate::cluster::departure::GoneLeader>,
    /// Follower: appends stepped and not yet acknowledged, as (their last index, when
    /// they arrived), oldest first (`tern_replication_follower_ack_seconds`).
    pub appends_unacknowledged: std::collections::VecDeque<(u64, Instant)>,
}

impl std::fmt::Debug for ReplicaGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaGroup")
            .field("partition", &self.partition)
            .field("role", &self.role)
            .field("term", &self.node.raft.term)
            .finish()
    }
}

/// Everything needed to open a group.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub partition: TopicPartition,
    pub topic_id: [u8; 16],
    pub replicas: Vec<i32>,
    pub target: Option<ReassignmentTarget>,
    pub node_id: i32,
}

impl ReplicaGroup {
    /// Opens the group of `log`: reads (or creates) its state file, loads the entries
    /// after the anchor (and some before it) into the window, and starts the raft-rs node.
    pub async fn open(spec: GroupSpec, log: PartitionLog, cluster: &ClusterConfig) -> Result<ReplicaGroup, String> {
        let dir = log.dir().to_path_buf();
        let env = log.storage_env();
        let offsets = log.offsets();
        let state = match ReplicaState::read(&dir, &env).await.map_err(|e| e.to_string())? {
            Some(state) => state,
            None if offsets.log_end.offset() > offsets.log_start.offset() => {
                // Records written before this partition was replicated (by a version
                // that kept them on the first replica only): the replicas' histories
                // differ, and Raft cannot reconcile them.
                return Err(format!(
                    "its log holds records ({}..{}) written before the partition was replicated; \
                     move the directory away to let this replica copy the leader's",
                    offsets.log_start, offsets.log_end
                ));
            }
            None => {
                let state = ReplicaState::fresh(offsets.log_end.offset());
                state.write(&dir, &env).await.map_err(|e| format!("cannot write the replica state: {e}"))?;
                state
            }
        };
        // A replica joining by a move copies the leader's log (a catch-up) before it has
        // a configuration: the snapshot that ends the copy brings one, and the state file
        // records it. A crash between the two leaves a copy the state does not describe
        // (which configuration changes among the entries were applied to what). Such a
        // replica never voted nor counted toward a commit: it starts over empty.
        let mut log = log;
        let no_conf = state.conf.as_ref().is_none_or(|conf| has_no_members(&ConfState::from(conf)));
        let offsets = if no_conf
            && !spec.replicas.contains(&spec.node_id)
            && offsets.log_end.offset() > state.anchor.next_offset()
        {
            tracing::warn!(
                partition = %spec.partition, log_end = %offsets.log_end, anchor = %state.anchor.next_offset(),
                "a copy from the leader that no snapshot recorded; the replica starts over empty"
            );
            log.replicate(state.anchor.next_offset());
            log = crate::storage::truncate::truncate(log, state.anchor.next_offset())
                .await
                .map_err(|e| format!("cannot empty the replica: {e}"))?;
            log.offsets()
        } else {
            offsets
        };
        if state.anchor.next_offset() > offsets.log_end.offset() {
            return Err(format!(
                "the replica state says entry {} ends at offset {}, past the log end {}",
                state.anchor.index, state.anchor.next_offset, offsets.log_end
            ));
        }
        // Compacted logs have gaps below the anchor: counting batches back from it would
        // not find the right indexes, so their window starts at the anchor.
        let (base, mut entries) =
            if log.config().compact { (state.anchor, Vec::new()) } else { backfill(&log, state.anchor).await? };
        log.set_clean_limit(state.anchor.next_offset());
        let after = read_entries(&log, state.anchor.next_offset(), offsets.log_end.offset()).await?;
        for (header_epoch, data) in after {
            if header_epoch < 1 {
                return Err("a batch after the replica's anchor has no leader epoch".into());
            }
            entries.push((header_epoch as u64, data));
        }
        // The configuration as of the anchor. A state file from before configurations
        // changed has none: the metadata's replicas are the voters then, and a replica that
        // joins by a reassignment starts with none (the leader's snapshot brings it one).
        let conf = match &state.conf {
            Some(conf) => ConfState::from(conf),
            None if spec.replicas.contains(&spec.node_id) => {
                ConfState::from((spec.replicas.iter().map(|&id| id as u64).collect::<Vec<u64>>(), vec![]))
            }
            None => ConfState::default(),
        };
        let mut window = Window::new(base, HardState::default(), conf);
        let mut next = base.next_offset();
        let mut last_term = base.term;
        for (term, data) in entries {
            let count = offsets_of(&data).ok_or("a batch in the replica's log does not parse")?;
            let end = Offset(next.value() + count);
            let conf_change = conf_change_in(&data);
            window.push(WindowEntry { term, base_offset: next, next_offset: end, data, conf_change });
            next = end;
            last_term = last_term.max(term);
        }
        let commit = state.commit.clamp(window.base().index, window.last_index());
        let hard_state = HardState { term: state.term.max(last_term), vote: state.vote, commit, ..Default::default() };
        let term = hard_state.term;
        window.hard_state = hard_state;
        let commit_offset = window.next_offset_after(commit).expect("the commit is inside the window");
        log.replicate(commit_offset);
        let window = Rc::new(RefCell::new(window));
        // Applied through the anchor: the committed entries after it come back in the first
        // Ready, and the configuration changes among them are applied again.
        let config = raft::Config {
            id: spec.node_id as u64,
            election_tick: ClusterConfig::ELECTION_TICKS,
            heartbeat_tick: ClusterConfig::HEARTBEAT_TICKS,
            applied: state.anchor.index.clamp(window.borrow().base().index, commit),
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 64,
            // Followers learn a new commit with the next append or heartbeat instead of
            // an empty append of its own per commit: they serve no reads, and the leader
            // answers producers from its own commit. At a fixed 600 k records/s on RF=3
            // it cut the brokers' CPU per record by about 6% (perf/README.md).
            skip_bcast_commit: true,
            ..raft::Config::default()
        };
        config.validate().map_err(|e| e.to_string())?;
        let node = RawNode::new(
            &config,
            WindowStorage(window.clone()),
            &crate::cluster::logger::raft_group_logger(spec.node_id, spec.partition.to_string()),
        )
        .map_err(|e| format!("cannot start the replica group: {e}"))?;
        tracing::info!(
            partition = %spec.partition, replicas = ?spec.replicas, term, commit,
            first_index = window.borrow().first_index(), last_index = window.borrow().last_index(),
            tick_ms = cluster.replica_tick().as_millis() as u64,
            "replica group opened"
        );
        Ok(ReplicaGroup {
            partition: spec.partition,
            topic_id: spec.topic_id,
            replicas: spec.replicas,
            target: spec.target,
            completion_asked: None,
            node,
            window,
            log,
            persisted: state,
            persisted_at: Instant::now(),
            waiters: BTreeMap::new(),
            prepared: BTreeSet::new(),
            catch_up: None,
            heard_at: std::collections::HashMap::new(),
            caught_up_at: std::collections::HashMap::new(),
            last_index_seen: 0,
            heard_window: 2 * cluster.replica_election_timeout,
            balance_ticks: 0,
            term_start_index: u64::MAX,
            coordinator_loaded_term: None,
            snapshot_ticks: std::collections::HashMap::new(),
            published: None,
            role: StateRole::Follower,
            quiesced: false,
            quiet_ticks: 0,
            quiet_index: 0,
            stepped: false,
            quiet_since: Instant::now(),
            quiet_acks: BTreeSet::new(),
            gone_leader: None,
            appends_unacknowledged: std::collections::VecDeque::new(),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The offset the next proposed entry will get: the end of the written entries,
    /// plus the entries Raft holds that are not written yet (this leader's proposals and
    /// the empty entry of its term).
    pub fn next_entry_offset(&self) -> Offset {
        let window = self.window.borrow();
        let last = window.last_index();
        let mut end = window.next_offset_after(last).expect("the last entry is in the window").value();
        for entry in &self.node.raft.raft_log.unstable.entries {
            if entry.index > last {
                end += offsets_of(&entry.data).unwrap_or(1);
            }
        }
        Offset(end)
    }

    /// The replicas in sync with this leader (Kafka's ISR): itself, and every follower
    /// that held everything this leader had a tick earlier at some point within
    /// `REPLICA_LAG_MAX` (Kafka's replica.lag.time.max.ms rule) and was heard from within
    /// two election timeouts (a follower that died with nothing new to replicate
    /// would otherwise look caught up for ever). A quiet leader's followers are all in
    /// sync (see `shard::quiescence`).
    pub fn in_sync(&self) -> Vec<i32> {
        if self.quiesced && self.is_leader() {
            let mut all = self.replicas.clone();
            all.sort_unstable();
            return all;
        }
        let now = Instant::now();
        let raft = &self.node.raft;
        let mut in_sync: Vec<i32> = raft
            .prs()
            .iter()
            // Voters only: a learner joining by a reassignment is not in sync yet.
            .filter(|(&id, _)| raft.prs().conf().voters().contains(id))
            .filter(|(&id, _)| {
                id == raft.id
                    || (self.caught_up_at.get(&id).is_some_and(|at| now.duration_since(*at) <= REPLICA_LAG_MAX)
                        && self.heard_at.get(&id).is_some_and(|at| now.duration_since(*at) <= self.heard_window))
            })
            .map(|(&id, _)| id as i32)
            .collect();
        in_sync.sort_unstable();
        in_sync
    }

    /// Leader, every tick: followers that now hold everything this leader had at the
    /// previous tick are caught up as of now.
    pub fn track_caught_up(&mut self, now: Instant) {
        let raft = &self.node.raft;
        for (&id, progress) in raft.prs().iter() {
            if id != raft.id && progress.matched >= self.last_index_seen {
                self.caught_up_at.insert(id, now);
            }
        }
        self.last_index_seen = raft.raft_log.last_index();
    }

    /// Leader: hands the leadership to the preferred replica (the partition's first) when
    /// that is another broker that is active and holds every entry this leader has.
    pub fn return_to_preferred(&mut self) {
        // During a reassignment the preferred replica is the target's first.
        let desired = self.target.as_ref().map_or(&self.replicas, |target| &target.replicas);
        let Some(&preferred) = desired.first() else { return };
        let raft = &self.node.raft;
        // Only to a voter of the incoming configuration (one that is leaving could not
        // lead once the joint configuration is left).
        if preferred as u64 == raft.id
            || raft.lead_transferee.is_some()
            || !self.window.borrow().conf_state.voters.contains(&(preferred as u64))
        {
            return;
        }
        let last = raft.raft_log.last_index();
        let caught_up = raft.prs().get(preferred as u64).is_some_and(|p| p.recent_active && p.matched == last);
        if caught_up {
            tracing::info!(partition = %self.partition, preferred, "handing the leadership back to the preferred replica");
            self.node.transfer_leader(preferred as u64);
        }
    }

    /// The anchor to persist: the last applied entry (committed, and any configuration
    /// change in it taken) that is durable here.
    pub fn durable_anchor(&self) -> Anchor {
        let window = self.window.borrow();
        let durable_end = self.log.durable_end();
        let mut index = self.node.raft.raft_log.applied.min(window.last_index()).max(window.base().index);
        while index > window.base().index && window.next_offset_after(index).is_some_and(|end| end > durable_end) {
            index -= 1;
        }
        window.anchor_at(index).expect("inside the window")
    }

    /// The replica state as it should be on disk now.
    pub fn current_state(&self) -> ReplicaState {
        let anchor = self.durable_anchor();
        let raft = &self.node.raft;
        let conf = Some((&self.window.borrow().conf_state).into());
        ReplicaState { term: raft.term, vote: raft.vote, commit: anchor.index, anchor, conf }
    }

    /// Answers every waiting produce request with `outcome`.
    pub fn fail_waiters(&mut self, outcome: impl Fn() -> ProposeOutcome) {
        for (_, waiters) in std::mem::take(&mut self.waiters) {
            for waiter in waiters {
                let _ = waiter.reply.send(outcome());
            }
        }
    }
}

/// A configuration with nobody in it: a replica that joins by a move holds one until the
/// leader's snapshot brings the group's.
pub fn has_no_members(conf: &ConfState) -> bool {
    conf.voters.is_empty() && conf.learners.is_empty() && conf.voters_outgoing.is_empty()
}

/// A leader takes a produce request (or a transaction marker): checks, stamps and
/// proposes the batch.
pub fn propose(
    group: &mut ReplicaGroup,
    proposal: Proposal,
    acks: i16,
    timeout: Duration,
    reply: oneshot::Sender<ProposeOutcome>,
) {
    if !group.is_leader() {
        let _ = reply.send(ProposeOutcome::NotLeader);
        return;
    }
    if acks == -1 && matches!(proposal, Proposal::Records(_)) {
        let min_insync = group.log.config().min_insync_replicas;
        let in_sync = group.in_sync().len();
        if (in_sync as i32) < min_insync {
            let _ = reply.send(ProposeOutcome::NotEnoughReplicas { in_sync, min_insync });
            return;
        }
    }
    let base_offset = group.next_entry_offset();
    let term = group.node.raft.term;
    let prepared = match proposal {
        Proposal::Records(batch) => group.log.prepare_entry(BytesMut::from(&batch[..]), base_offset, epoch_of(term)),
        Proposal::Marker(marker) => group.log.marker_entry(marker, base_offset, epoch_of(term)),
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            let _ = reply.send(ProposeOutcome::Refused(error));
            return;
        }
    };
    let entry = Entry { data: prepared.bytes, ..Default::default() };
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgPropose);
    message.from = group.node.raft.id;
    message.entries = vec![entry].into();
    if group.node.step(message).is_err() {
        group.log.forget_producers_from(base_offset);
        let _ = reply.send(ProposeOutcome::NotLeader);
        return;
    }
    let index = group.node.raft.raft_log.last_index();
    group.prepared.insert(index);
    let term = group.node.raft.term;
    let now = Instant::now();
    group.waiters.entry(index).or_default().push(Waiter {
        term,
        acks,
        base_offset,
        log_append_time_ms: prepared.log_append_time_ms,
        proposed_at: now,
        deadline: now + timeout,
        reply,
    });
}

/// Leader: a follower that has been in Raft's snapshot state for a minute (its
/// catch-up failed, or its answer was lost) gets a fresh snapshot.
pub fn retry_stalled_snapshots(group: &mut ReplicaGroup, limit: u32) {
    if !group.is_leader() {
        group.snapshot_ticks.clear();
        return;
    }
    let in_snapshot: Vec<u64> = group
        .node
        .raft
        .prs()
        .iter()
        .filter(|(_, progress)| progress.state == raft::ProgressState::Snapshot)
        .map(|(&id, _)| id)
        .collect();
    group.snapshot_ticks.retain(|id, _| in_snapshot.contains(id));
    for id in in_snapshot {
        let ticks = group.snapshot_ticks.entry(id).or_default();
        *ticks += 1;
        if *ticks >= limit {
            *ticks = 0;
            group.node.report_snapshot(id, raft::SnapshotStatus::Failure);
        }
    }
}

/// acks=1: answered once the leader's own write is durable.
pub fn answer_durable(group: &mut ReplicaGroup, written_through: u64) {
    let log_start = group.log.offsets().log_start.offset();
    let done: Vec<u64> = group
        .waiters
        .range(..=written_through)
        .filter(|(_, waiters)| waiters.iter().any(|w| w.acks != -1))
        .map(|(&index, _)| index)
        .collect();
    for index in done {
        let waiters = group.waiters.remove(&index).unwrap_or_default();
        let (durable, rest): (Vec<Waiter>, Vec<Waiter>) = waiters.into_iter().partition(|w| w.acks != -1);
        let term = group.window.borrow().term_of(index);
        for waiter in durable {
            let outcome = waiter.outcome_for(term, log_start);
            let _ = waiter.reply.send(outcome);
        }
        if !rest.is_empty() {
            group.waiters.insert(index, rest);
        }
    }
}

pub fn expire_waiters(group: &mut ReplicaGroup, now: Instant) {
    let expired: Vec<u64> =
        group.waiters.iter().filter(|(_, ws)| ws.iter().any(|w| w.deadline <= now)).map(|(&i, _)| i).collect();
    for index in expired {
        let waiters = group.waiters.remove(&index).unwrap_or_default();
        let (late, rest): (Vec<Waiter>, Vec<Waiter>) = waiters.into_iter().partition(|w| w.deadline <= now);
        for waiter in late {
            let _ = waiter.reply.send(ProposeOutcome::TimedOut);
        }
        if !rest.is_empty() {
            group.waiters.insert(index, rest);
        }
    }
}

/// The anchor's predecessors still in the log, as far back as `BACKFILL_OFFSETS`: the
/// window's base and the entries between it and the anchor.
async fn backfill(log: &PartitionLog, anchor: Anchor) -> Result<(Anchor, Vec<(u64, Bytes)>), String> {
    if anchor.index == 0 {
        return Ok((anchor, Vec::new()));
    }
    let log_start = log.offsets().log_start.offset();
    let from = Offset((anchor.next_offset - BACKFILL_OFFSETS).max(log_start.value()));
    let batches = match read_entries(log, from, anchor.next_offset()).await {
        Ok(batches) => batches,
        Err(_) => return Ok((anchor, Vec::new())),
    };
    // Only the batches written by the group (epoch >= 1) after the last older one count,
    // and at most `anchor.index` of them.
    let mut usable: Vec<(u64, Bytes)> = Vec::new();
    for (epoch, data) in batches {
        if epoch < 1 {
            usable.clear();
        } else {
            usable.push((epoch as u64, data));
        }
    }
    let keep = usable.len().min(anchor.index as usize);
    let mut usable = usable.split_off(usable.len() - keep);
    // The configuration is known as of the anchor: the window may not start before the
    // last configuration change (which becomes its base).
    let last_change = usable.iter().rposition(|(_, data)| conf_change_in(data).is_some());
    let mut first_index_floor = 1;
    if let Some(position) = last_change {
        first_index_floor = anchor.index - (usable.len() - position) as u64 + 1;
        usable = usable.split_off(position);
    }
    let ends_at_anchor = usable
        .last()
        .and_then(|(_, data)| crate::protocol::record_batch::BatchHeader::parse(data).ok().map(|h| h.next_offset()))
        == Some(anchor.next_offset);
    if usable.is_empty() || !ends_at_anchor {
        return Ok((anchor, Vec::new()));
    }
    let first_index = anchor.index - usable.len() as u64 + 1;
    let first_base =
        crate::protocol::record_batch::BatchHeader::parse(&usable[0].1).map_err(|e| e.to_string())?.base_offset;
    if first_index == 1 && last_change.is_none() {
        return Ok((Anchor { index: 0, term: 0, next_offset: first_base }, usable));
    }
    debug_assert!(first_index >= first_index_floor);
    // The oldest batch read becomes the base (its index, term and end are known).
    let (term, data) = usable.remove(0);
    let header = crate::protocol::record_batch::BatchHeader::parse(&data).map_err(|e| e.to_string())?;
    Ok((Anchor { index: first_index, term, next_offset: header.next_offset() }, usable))
}

/// The batches from `from` (whole, starting with the one holding it) up to `end`, each
/// with its leader epoch.
async fn read_entries(log: &PartitionLog, from: Offset, end: Offset) -> Result<Vec<(i32, Bytes)>, String> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < end {
        let read = log.read(offset, READ_BYTES).await.map_err(|e| format!("reading the replica's log: {e}"))?;
        if read.records.is_empty() {
            return Err(format!("the replica's log has nothing at offset {offset} below {end}"));
        }
        for chunk in read.records {
            for (header, range) in iter_batches(&chunk) {
                if header.next_offset() <= offset.value() {
                    continue;
                }
                if header.base_offset >= end.value() {
                    return Ok(out);
                }
                offset = Offset(header.next_offset());
                out.push((header.partition_leader_epoch, chunk.slice(range)));
            }
        }
    }
    Ok(out)
}
