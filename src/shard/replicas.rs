//! The replica driver of a shard: one task that runs every Raft group of the partitions
//! this shard owns (cluster mode, topics with more than one replica).
//!
//! Everything reaches the task as a [`ReplicaEvent`] on one channel: clock ticks, peers'
//! Raft messages, produce requests, groups opened or removed. After each batch of events
//! it runs one round over the groups that have work, in the order raft-rs requires:
//! 1. take each group's Ready; send the leader's messages at once (a leader may send
//!    before it writes, so followers write in parallel with it);
//! 2. write every group's new entries to its partition log (a follower first cuts a
//!    divergent uncommitted suffix, `storage::truncate`), and the replica state of
//!    groups whose term or vote changed; then wait for all of those writes together,
//!    so one round costs one write per log and one wait for the whole shard;
//! 3. send the messages that needed the write (votes, append acknowledgements),
//!    advance each node, move each log's high watermark to the commit, and answer the
//!    produce requests: acks=1 once the leader's write is durable, acks=all once the
//!    entry is committed (a majority of replicas has it durable).
//!
//! A group with nothing to replicate goes quiet: it skips the clock's ticks until a
//! write, a peer's message or a peer's silent replica driver wakes it
//! (`shard::quiescence`).
//!
//! A leader takes a produce request in the event handler: the log validates the batch,
//! checks the producer's sequence and stamps offset and epoch (`prepare_entry`), and the
//! batch is proposed as one Raft entry. Every replica then writes the same bytes at the
//! same offset (`append_entry`).

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::StateRole;

use crate::cluster::peer_liveness::DRIVER_HEARTBEATS_PER_TIMEOUT;
use crate::cluster::transport::{LeaderUpdate, PartitionMessage, PeerFrame};
use crate::cluster::ClusterConfig;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::protocol::topic_partition::TopicPartition;
use crate::replication::entry::{conf_change_batch, leader_noop_batch, offsets_of};
use crate::replication::WindowEntry;
use crate::storage::{Offset, PendingAppend, StorageError};

use super::leadership::{leader_update, publish_leadership};
use super::quiescence;
use super::replica_group::{
    answer_durable, expire_waiters, propose, retry_stalled_snapshots, Proposal, ProposeOutcome, ReplicaGroup,
    WINDOW_KEEP_BYTES,
};
use super::ShardContext;

/// The commit anchor is written at most this often per group (and at close).
const STATE_WRITE_INTERVAL: Duration = Duration::from_secs(2);
/// A follower that has not finished catching up to a snapshot within this long gets a
/// new one (its copy failed, or its answer was lost).
const SNAPSHOT_RETRY: Duration = Duration::from_secs(60);
/// Leaders announce what they lead to every broker this often (and at every change).
const LEADER_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(5);
/// Fault injection for tests: a file name in the data dir; while that file exists, the
/// driver's rounds wait, as they would on a disk write that never returns (the broker
/// and its other tasks live on). Unset in production.
const STALL_FAULT_VARIABLE: &str = "TERN_FAULT_STALL_REPLICAS";

pub enum ReplicaEvent {
    Tick,
    Peer {
        from: i32,
        messages: Vec<PartitionMessage>,
    },
    Propose {
        partition: TopicPartition,
        proposal: Proposal,
        acks: i16,
        timeout: Duration,
        reply: oneshot::Sender<ProposeOutcome>,
    },
    Add(Box<ReplicaGroup>),
    /// The cluster metadata changed a group's replicas or its reassignment target.
    Assign {
        partition: TopicPartition,
        replicas: Vec<i32>,
        target: Option<crate::metadata::ReassignmentTarget>,
    },
    Remove {
        partition: TopicPartition,
        reply: oneshot::Sender<()>,
    },
    /// A catch-up copy (`shard::catch_up::run`) ended.
    CaughtUp {
        partition: TopicPartition,
        result: Result<(), String>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

impl std::fmt::Debug for ReplicaEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaEvent::Tick => f.write_str("Tick"),
            ReplicaEvent::Peer { from, messages } => write!(f, "Peer({from}, {} messages)", messages.len()),
            ReplicaEvent::Propose { partition, .. } => write!(f, "Propose({partition})"),
            ReplicaEvent::Add(group) => write!(f, "Add({})", group.partition),
            ReplicaEvent::Remove { partition, .. } => write!(f, "Remove({partition})"),
            ReplicaEvent::Assign { partition, replicas, target } => {
                write!(f, "Assign({partition}, {replicas:?} -> {target:?})")
            }
            ReplicaEvent::CaughtUp { partition, result } => write!(f, "CaughtUp({partition}, {result:?})"),
            ReplicaEvent::Close { .. } => f.write_str("Close"),
        }
    }
}

/// Starts the shard's replica driver and its clock; returns the event channel.
pub fn start(ctx: Rc<ShardContext>) -> mpsc::UnboundedSender<ReplicaEvent> {
    let (events, receiver) = mpsc::unbounded();
    let tick = ctx.cluster_config().replica_tick();
    let driver = Driver {
        ctx: ctx.clone(),
        groups: HashMap::new(),
        outbound: HashMap::new(),
        state_due: BTreeSet::new(),
        leader_updates: Vec::new(),
        ticks: 0,
        stall_file: std::env::var_os(STALL_FAULT_VARIABLE).map(|name| ctx.config.data_dir.join(name)),
    };
    glommio::spawn_local(driver.run(receiver)).detach();
    let clock = events.clone();
    glommio::spawn_local(async move {
        // Out of phase with the other nodes' drivers (see `random_phase`).
        glommio::timer::sleep(crate::cluster::quorum::random_phase(tick)).await;
        loop {
            glommio::timer::sleep(tick).await;
            if clock.unbounded_send(ReplicaEvent::Tick).is_err() {
                return;
            }
        }
    })
    .detach();
    events
}

struct Driver {
    ctx: Rc<ShardContext>,
    groups: HashMap<TopicPartition, ReplicaGroup>,
    /// Messages for each peer, sent once per phase.
    outbound: HashMap<i32, Vec<PartitionMessage>>,
    /// Groups whose commit anchor should be written this round.
    state_due: BTreeSet<TopicPartition>,
    /// Leadership news for the other brokers, sent with the round's messages.
    leader_updates: Vec<LeaderUpdate>,
    ticks: u64,
    /// Fault injection (`STALL_FAULT_VARIABLE`): rounds wait while this file exists.
    stall_file: Option<std::path::PathBuf>,
}

/// A group's Ready after its writes were queued, waiting for them.
struct InFlight {
    partition: TopicPartition,
    /// `None` when only the replica state is due.
    ready: Option<raft::Ready>,
    writes: Vec<PendingAppend>,
    write_state: bool,
    /// The leader's acks=1 requests up to this index are durable once the writes are.
    written_through: u64,
}

impl Driver {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<ReplicaEvent>) {
        while let Some(event) = events.next().await {
            let mut close = self.handle(event);
            while let Ok(event) = events.try_recv() {
                if close.is_none() {
                    close = self.handle(event);
                } else if let ReplicaEvent::Propose { reply, .. } = event {
                    let _ = reply.send(ProposeOutcome::NotLeader);
                }
            }
            self.round().await;
            if let Some(reply) = close {
                self.close().await;
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Applies one event; returns the reply of a Close.
    fn handle(&mut self, event: ReplicaEvent) -> Option<oneshot::Sender<()>> {
        match event {
            ReplicaEvent::Tick => {
                let now = Instant::now();
                let node_id = self.ctx.config.node_id;
                let tick = self.ctx.cluster_config().replica_tick();
                // Leaders repeat their news now and then, for brokers that (re)started
                // since the last change.
                self.ticks += 1;
                let announce =
                    self.ticks % (LEADER_ANNOUNCE_INTERVAL.as_millis() / tick.as_millis().max(1)).max(1) as u64 == 0;
                let snapshot_retry_ticks = (SNAPSHOT_RETRY.as_millis() / tick.as_millis().max(1)) as u32;
                let balance_ticks = self
                    .ctx
                    .cluster_config()
                    .leader_rebalance_interval
                    .map(|every| (every.as_millis() / tick.as_millis().max(1)).max(1) as u32);
                let mut counts =
                    crate::metrics::ShardGroupCounts { groups: self.groups.len() as u64, ..Default::default() };
                for group in self.groups.values() {
                    counts.quiesced += group.quiesced as u64;
                    if group.is_leader() {
                        counts.leaders += 1;
                        // A quiet leader's replicas are all in sync.
                        if !group.quiesced && group.in_sync().len() < group.replicas.len() {
                            counts.under_replicated += 1;
                        }
                    }
                }
                crate::metrics::replication_gauges().set_shard(self.ctx.id, counts);
                let view = self.ctx.cluster.clone()?;
                // This driver's heartbeat to every peer, from its own loop (see
                // `cluster::peer_liveness`): it stops when the driver does.
                let every = (ClusterConfig::ELECTION_TICKS as u64 / DRIVER_HEARTBEATS_PER_TIMEOUT as u64).max(1);
                if self.ticks % every == 0 {
                    for peer in view.peer_ids.iter().copied().filter(|&p| p != node_id) {
                        let heartbeat = quiescence::driver_heartbeat(self.ctx.id, self.ctx.shard_count);
                        self.outbound.entry(peer).or_default().push(heartbeat);
                    }
                }
                let around = quiescence::Surroundings::of(&self.ctx, &view, now);
                for (partition, group) in &mut self.groups {
                    if group.quiesced {
                        match quiescence::tick_wakes(group, &around) {
                            None => {
                                if announce && group.is_leader() {
                                    let in_sync = group.in_sync();
                                    self.leader_updates.push(leader_update(group, &in_sync));
                                }
                                continue;
                            }
                            Some(reason) => {
                                tracing::debug!(partition = %partition, ?reason, "quiet replica group wakes");
                                quiescence::wake(group, Some(reason), &around);
                            }
                        }
                    }
                    // Judged on the state the last round left (a tick adds heartbeats).
                    if group.is_leader() && quiescence::leader_tick(group, &around) {
                        let heartbeats = quiescence::go_quiet(group, now);
                        queue_messages(&mut self.outbound, group, heartbeats);
                        if group.current_state() != group.persisted {
                            self.state_due.insert(partition.clone());
                        }
                        continue;
                    }
                    group.node.tick();
                    // A new group's preferred replica keeps asking for votes (a pre-vote
                    // disturbs nobody) until some replica leads: the other replicas may
                    // not have opened the group yet when it first asks.
                    if group.node.raft.term == 0 && group.replicas.first() == Some(&node_id) {
                        let _ = group.node.campaign();
                    }
                    retry_stalled_snapshots(group, snapshot_retry_ticks);
                    if group.is_leader() {
                        group.track_caught_up(now);
                        if let Some(done) = super::reassignment::drive(group, now) {
                            report_completion(&self.ctx, partition.clone(), done);
                        }
                        group.balance_ticks += 1;
                        if balance_ticks.is_some_and(|every| group.balance_ticks >= every) {
                            group.balance_ticks = 0;
                            group.return_to_preferred();
                        }
                    } else {
                        group.balance_ticks = 0;
                    }
                    expire_waiters(group, now);
                    publish_leadership(&view, group, &mut self.leader_updates);
                    if announce && group.is_leader() {
                        let in_sync = group.in_sync();
                        self.leader_updates.push(leader_update(group, &in_sync));
                    }
                    if now.duration_since(group.persisted_at) >= STATE_WRITE_INTERVAL
                        && group.current_state() != group.persisted
                    {
                        self.state_due.insert(partition.clone());
                    }
                }
            }
            ReplicaEvent::Peer { from, messages } => {
                for PartitionMessage { topic, topic_id, partition, message } in messages {
                    let key = TopicPartition::new(topic, partition);
                    let Some(group) = self.groups.get_mut(&key) else { continue };
                    if group.topic_id != topic_id {
                        continue;
                    }
                    let now = Instant::now();
                    group.heard_at.insert(message.from, now);
                    match quiescence::Signal::of(group, &message) {
                        Some(quiescence::Signal::Abdication) => {
                            tracing::info!(partition = %key, from, "the leader stops leading here; electing another");
                            quiescence::leader_abdicated(group);
                            continue;
                        }
                        Some(quiescence::Signal::QuietAck) => {
                            group.quiet_acks.insert(message.from);
                        }
                        None => {}
                    }
                    if group.quiesced && quiescence::message_wakes(group, &message) {
                        if let Some(view) = &self.ctx.cluster {
                            let around = quiescence::Surroundings::of(&self.ctx, view, now);
                            quiescence::wake(group, None, &around);
                        }
                    }
                    let quiesce = quiescence::QuiesceRequest::of(&message);
                    match message.get_msg_type() {
                        // Too far behind: copy the log first, then step it (`catch_up`).
                        MessageType::MsgSnapshot => {
                            if group.catch_up.is_none() && message.term >= group.node.raft.term {
                                tracing::info!(partition = %key, from, index = message.get_snapshot().get_metadata().index, "replica is behind the leader's window; catching up from its log");
                                group.catch_up = Some((message, false));
                            }
                            continue;
                        }
                        // While the copy writes the log, nothing else may.
                        MessageType::MsgAppend if group.catch_up.is_some() => continue,
                        _ => {}
                    }
                    group.stepped = true;
                    if let Err(error) = group.node.step(message) {
                        tracing::debug!(partition = %key, from, %error, "raft message ignored");
                    }
                    if let Some(request) = quiesce {
                        if !group.quiesced && quiescence::follower_accepts(group, request) {
                            group.quiesced = true;
                            if group.current_state() != group.persisted {
                                self.state_due.insert(key);
                            }
                        }
                    }
                }
            }
            ReplicaEvent::Propose { partition, proposal, acks, timeout, reply } => {
                match self.groups.get_mut(&partition) {
                    Some(group) => {
                        // A quiet follower answers NotLeader without waking.
                        if group.quiesced && group.is_leader() {
                            if let Some(view) = &self.ctx.cluster {
                                let around = quiescence::Surroundings::of(&self.ctx, view, Instant::now());
                                quiescence::wake(group, None, &around);
                            }
                        }
                        propose(group, proposal, acks, timeout, reply)
                    }
                    None => {
                        let _ = reply.send(ProposeOutcome::NotLeader);
                    }
                }
            }
            ReplicaEvent::Add(group) => {
                let key = group.partition.clone();
                if let Some(mut old) = self.groups.insert(key.clone(), *group) {
                    old.fail_waiters(|| ProposeOutcome::NotLeader);
                }
                // A new group whose first replica is this node starts an election at
                // once, so a new topic has leaders without waiting a timeout.
                let group = self.groups.get_mut(&key).expect("just added");
                if group.replicas.first() == Some(&self.ctx.config.node_id) && group.node.raft.term == 0 {
                    let _ = group.node.campaign();
                }
            }
            ReplicaEvent::Assign { partition, replicas, target } => {
                if let Some(group) = self.groups.get_mut(&partition) {
                    group.replicas = replicas;
                    group.target = target;
                    group.completion_asked = None;
                    if group.quiesced && super::reassignment::in_progress(group) {
                        if let Some(view) = &self.ctx.cluster {
                            let around = quiescence::Surroundings::of(&self.ctx, view, Instant::now());
                            quiescence::wake(group, None, &around);
                        }
                    }
                }
            }
            ReplicaEvent::Remove { partition, reply } => {
                if let Some(mut group) = self.groups.remove(&partition) {
                    group.fail_waiters(|| ProposeOutcome::NotLeader);
                }
                if let Some(view) = &self.ctx.cluster {
                    view.forget_leadership(&partition);
                }
                let _ = reply.send(());
            }
            ReplicaEvent::CaughtUp { partition, result } => {
                let group = self.groups.get_mut(&partition)?;
                let (snapshot, _) = group.catch_up.take()?;
                if result.is_ok() {
                    if let Err(error) = group.node.step(snapshot) {
                        tracing::warn!(%partition, %error, "the leader's snapshot was not taken after the catch-up");
                    }
                }
            }
            ReplicaEvent::Close { reply } => return Some(reply),
        }
        None
    }

    /// One round over every group with work (see the module header).
    async fn round(&mut self) {
        if let Some(file) = &self.stall_file {
            while file.exists() {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
        self.start_catch_ups().await;
        let mut in_flight = Vec::new();
        // Only the groups with work (a Ready or a state write due): a round that serves
        // one busy partition does not copy the names of a thousand idle ones.
        let mut keys: Vec<TopicPartition> = Vec::new();
        for (key, group) in &mut self.groups {
            let due = self.state_due.contains(key);
            let looked_at = due || !group.quiesced || std::mem::take(&mut group.stepped);
            if looked_at && (due || group.node.has_ready()) {
                keys.push(key.clone());
            }
        }
        for key in keys {
            let due = self.state_due.remove(&key);
            let group = self.groups.get_mut(&key).expect("listed");
            if !group.node.has_ready() {
                if due {
                    in_flight.push(InFlight::state_only(key, group));
                }
                continue;
            }
            match self.start_ready(&key, due).await {
                Ok(flight) => in_flight.push(flight),
                Err(error) => self.fail_group(&key, error),
            }
        }
        self.flush();
        let mut finished = Vec::new();
        let waits = in_flight.into_iter().map(|mut flight| {
            let group = self.groups.get(&flight.partition);
            let state = group.map(|g| (g.log.dir().to_path_buf(), g.log.storage_env(), g.current_state()));
            // Abort markers written this round: their index entries reach the disk
            // before Raft hears the entries are persisted.
            let aborts = group.map(|g| g.log.clone()).filter(|log| log.take_unsaved_aborts());
            async move {
                let mut failure = None;
                for write in std::mem::take(&mut flight.writes) {
                    if let Err(error) = write.durable().await {
                        failure.get_or_insert(error);
                    }
                }
                if let (Some(log), None) = (aborts, &failure) {
                    if let Err(error) = log.persist_aborted_index().await {
                        failure = Some(error);
                    }
                }
                let mut written_state = None;
                if let (true, Some((dir, env, state)), None) = (flight.write_state, state, &failure) {
                    match state.write(&dir, &env).await {
                        Ok(()) => written_state = Some(state),
                        Err(error) => failure = Some(StorageError::io(&dir, error)),
                    }
                }
                (flight, failure, written_state)
            }
        });
        for (flight, failure, written_state) in futures_util::future::join_all(waits).await {
            match failure {
                Some(error) => self.fail_group(&flight.partition, error.to_string()),
                None => finished.push((flight, written_state)),
            }
        }
        for (flight, written_state) in finished {
            self.finish_ready(flight, written_state);
        }
        self.flush();
    }

    /// Followers with a snapshot to catch up to: cut the log back to the commit and
    /// start copying the leader's log.
    async fn start_catch_ups(&mut self) {
        let waiting: Vec<TopicPartition> = self
            .groups
            .iter()
            .filter(|(_, g)| matches!(g.catch_up, Some((_, false))))
            .map(|(key, _)| key.clone())
            .collect();
        for key in waiting {
            let group = self.groups.get_mut(&key).expect("listed");
            let commit = group.node.raft.raft_log.committed.min(group.window.borrow().last_index());
            if commit < group.window.borrow().last_index() {
                if let Err(error) = cut_back(&self.ctx, group, commit).await {
                    self.fail_group(&key, error);
                    continue;
                }
            }
            let Some((snapshot, started)) = group.catch_up.as_mut() else { continue };
            *started = true;
            let until = match serde_json::from_slice::<super::catch_up::SnapshotDescriptor>(
                &snapshot.get_snapshot().data,
            ) {
                Ok(descriptor) => Offset(descriptor.next_offset),
                Err(error) => {
                    tracing::warn!(partition = %key, %error, "the leader's snapshot does not describe a log offset");
                    group.catch_up = None;
                    continue;
                }
            };
            let leader = snapshot.from as i32;
            let task =
                super::catch_up::run(self.ctx.clone(), leader, key.clone(), group.topic_id, group.log.clone(), until);
            glommio::spawn_local(task).detach();
        }
    }

    /// Phase 1 for one group: its Ready's messages out, its entries queued for writing.
    async fn start_ready(&mut self, key: &TopicPartition, state_due: bool) -> Result<InFlight, String> {
        let group = self.groups.get_mut(key).expect("listed");
        let mut ready = group.node.ready();
        if let Some(soft) = ready.ss() {
            if soft.raft_state == StateRole::Leader && group.role != StateRole::Leader {
                // A new leader starts with the replicas it just heard from (its voters)
                // in sync, as Kafka keeps the in-sync set across a leader change; one
                // that does not catch up leaves it after REPLICA_LAG_MAX.
                let now = Instant::now();
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
        queue_messages(&mut self.outbound, group, ready.take_messages());
        let installed = !ready.snapshot().is_empty();
        if installed {
            install_snapshot(group, ready.snapshot())?;
        }
        let entries = ready.take_entries();
        let mut writes = Vec::with_capacity(entries.len());
        if let Some(first) = entries.first() {
            let keep = first.index - 1;
            let last = group.window.borrow().last_index();
            if keep < last {
                cut_back(&self.ctx, group, keep).await?;
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
            // Deposed with proposals Raft dropped: their producer sequences were
            // recorded when they were prepared, and they will never be written.
            group.prepared.clear();
            let log_end = group.log.offsets().log_end.offset();
            group.log.forget_producers_from(log_end);
        }
        Ok(InFlight { partition: key.clone(), ready: Some(ready), writes, write_state, written_through })
    }

    /// Phase 3 for one group, once its writes are durable.
    fn finish_ready(&mut self, flight: InFlight, written_state: Option<crate::replication::ReplicaState>) {
        let Some(group) = self.groups.get_mut(&flight.partition) else { return };
        if let Some(state) = written_state {
            group.log.set_clean_limit(state.anchor.next_offset());
            group.persisted = state;
            group.persisted_at = Instant::now();
        }
        if let Some(mut ready) = flight.ready {
            let persisted = ready.take_persisted_messages();
            queue_messages(&mut self.outbound, group, persisted);
            // Committed entries are in the log already; configuration changes among
            // them take effect now.
            let mut changed = match super::reassignment::apply_committed(group, ready.take_committed_entries()) {
                Ok(changed) => changed,
                Err(error) => return self.fail_group(&flight.partition, error),
            };
            let mut light = group.node.advance(ready);
            queue_messages(&mut self.outbound, group, light.take_messages());
            changed |= match super::reassignment::apply_committed(group, light.take_committed_entries()) {
                Ok(changed) => changed,
                Err(error) => return self.fail_group(&flight.partition, error),
            };
            group.node.advance_apply();
            if changed {
                // The new configuration is on disk before the next round acts on it.
                self.state_due.insert(flight.partition.clone());
            }
        }
        if group.is_leader() {
            answer_durable(group, flight.written_through);
        }
        settle(group);
        if let Some(view) = &self.ctx.cluster {
            publish_leadership(view, group, &mut self.leader_updates);
            if group.partition.topic == OFFSETS_TOPIC {
                super::coordination::coordinate(&self.ctx, view, group, &super::coordination::OFFSETS);
            } else if group.partition.topic == crate::txn::TXN_STATE_TOPIC {
                super::coordination::coordinate(&self.ctx, view, group, &super::coordination::TXN_STATE);
            }
        }
    }

    fn flush(&mut self) {
        for (peer, messages) in self.outbound.drain() {
            if !messages.is_empty() {
                self.ctx.send_peer_frame(peer, PeerFrame::PartitionRaft(messages));
            }
        }
        if !self.leader_updates.is_empty() {
            let updates = std::mem::take(&mut self.leader_updates);
            let node_id = self.ctx.config.node_id;
            for peer in self.ctx.cluster_config().peer_ids().into_iter().filter(|&p| p != node_id) {
                self.ctx.send_peer_frame(peer, PeerFrame::LeaderUpdates(updates.clone()));
            }
        }
    }

    /// A group whose log failed stops: its requests fail, its partition goes offline here.
    fn fail_group(&mut self, key: &TopicPartition, error: String) {
        tracing::error!(partition = %key, %error, "replica failed; the partition is offline on this broker");
        if let Some(mut group) = self.groups.remove(key) {
            group.fail_waiters(|| ProposeOutcome::Failed(error.clone()));
            queue_messages(&mut self.outbound, &group, quiescence::abdication(&group));
        }
        if let Some(view) = &self.ctx.cluster {
            view.forget_leadership(key);
        }
    }

    /// Shutdown: writes every group's state (the anchor as of now), answers waiters.
    async fn close(&mut self) {
        // Followers of the groups led here elect others at once.
        for group in self.groups.values() {
            queue_messages(&mut self.outbound, group, quiescence::abdication(group));
        }
        self.flush();
        for (_, mut group) in self.groups.drain() {
            let state = group.current_state();
            if state != group.persisted {
                if let Err(error) = state.write(group.log.dir(), &group.log.storage_env()).await {
                    tracing::warn!(partition = %group.partition, %error, "could not save the replica state");
                }
            }
            group.fail_waiters(|| ProposeOutcome::NotLeader);
        }
    }
}

impl InFlight {
    fn state_only(partition: TopicPartition, group: &ReplicaGroup) -> InFlight {
        let written_through = group.window.borrow().last_index();
        InFlight { partition, ready: None, writes: Vec::new(), write_state: true, written_through }
    }
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

/// Cuts the log and the window back to entry `keep` (a new leader's entries follow).
async fn cut_back(ctx: &Rc<ShardContext>, group: &mut ReplicaGroup, keep: u64) -> Result<(), String> {
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
    ctx.replace_log(&group.partition, log);
    crate::metrics::replication_gauges().truncations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(partition = %group.partition, keep, %offset, "replica cut its uncommitted entries back to the leader's");
    Ok(())
}

/// Moves the log's high watermark to the commit, answers committed acks=all requests
/// and trims the window.
fn settle(group: &mut ReplicaGroup) {
    let committed = group.node.raft.raft_log.committed;
    let applied = group.node.raft.raft_log.applied;
    let (commit_index, commit_offset) = {
        let window = group.window.borrow();
        let index = committed.min(window.last_index()).max(window.base().index);
        (index, window.next_offset_after(index).expect("inside the window"))
    };
    group.log.set_commit(commit_offset);
    let log_start = group.log.offsets().log_start.offset();
    let done: Vec<u64> = group.waiters.range(..=commit_index).map(|(&index, _)| index).collect();
    for index in done {
        for waiter in group.waiters.remove(&index).unwrap_or_default() {
            let _ = waiter.reply.send(ProposeOutcome::Appended {
                base_offset: waiter.base_offset,
                log_append_time_ms: waiter.log_append_time_ms,
                log_start,
            });
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

/// Asks the controller (through shard 0) to record that `partition` moved; a refusal is
/// retried by the next ticks (`reassignment::COMPLETION_RETRY`).
fn report_completion(ctx: &Rc<super::ShardContext>, partition: TopicPartition, done: super::reassignment::Completed) {
    let ctx = ctx.clone();
    glommio::spawn_local(async move {
        let TopicPartition { topic, partition } = partition;
        let replicas = done.target.replicas.clone();
        let request = {
            let (topic, target) = (topic.clone(), done.target);
            move |reply| {
                super::mesh::ShardRequest::Controller(super::mesh::ControllerRequest::CompleteReassignment {
                    topic,
                    partition,
                    target,
                    reply,
                })
            }
        };
        match ctx.call(0, request).await {
            Some(reply) if reply.error_code == 0 => {
                tracing::info!(%topic, partition, ?replicas, "partition reassignment complete")
            }
            Some(reply) => {
                tracing::info!(%topic, partition, code = reply.error_code, message = ?reply.message, "the controller did not record the reassignment yet")
            }
            None => {}
        }
    })
    .detach();
}

fn queue_messages(outbound: &mut HashMap<i32, Vec<PartitionMessage>>, group: &ReplicaGroup, messages: Vec<Message>) {
    for message in messages {
        outbound.entry(message.to as i32).or_default().push(PartitionMessage {
            topic: group.partition.topic.clone(),
            topic_id: group.topic_id,
            partition: group.partition.partition,
            message,
        });
    }
}
