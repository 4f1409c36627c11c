//! The replica driver of a shard: one task that runs every Raft group of the partitions
//! this shard owns (cluster mode, topics with more than one replica).
//!
//! Everything reaches the task as a [`ReplicaEvent`] on one channel: clock ticks, peers'
//! Raft messages, produce requests, groups opened or removed. After each batch of events
//! it runs one round over the groups that have work, in the order raft-rs requires:
//! 1. take each group's Ready; send the leader's messages at once (a leader may send
//!    before it writes, so followers write in parallel with it);
//! 2. queue every group's new entries to its partition log (a follower first cuts a
//!    divergent uncommitted suffix, `storage::truncate`, once its earlier writes are
//!    done), and the replica state of groups whose term or vote changed; each group's
//!    writes become a *flight* that a small task waits for, so the round ends at once and
//!    the next batch of events (new proposals, a follower's acknowledgement, the next
//!    append from the leader) starts the next round while the disk works: the partition
//!    logs' writers merge what the rounds queue into their write rounds;
//! 3. when a flight is durable (flights of a group end in the order they started, at
//!    most [`FLIGHTS_PER_GROUP_MAX`] at a time), send the messages that needed the write
//!    (votes, append acknowledgements), tell the node, move the log's high watermark
//!    to the commit, and answer the produce requests: acks=1 once the leader's write is
//!    durable, acks=all once the entry is committed (a majority of replicas has it
//!    durable, this one included).
//!
//! Each group's part of a round is `shard::group_round` (shared with the deterministic
//! simulation, `tests/replica_sim.rs`); this file holds the shard's side: events,
//! ticks, messages to peers, catch-ups, leadership news.
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
use raft::eraftpb::{Message, MessageType};

use crate::cluster::departure::{self, Departure};
use crate::cluster::peer_liveness::DRIVER_HEARTBEATS_PER_TIMEOUT;
use crate::cluster::transport::{LeaderUpdate, PartitionMessage, PeerFrame};
use crate::cluster::ClusterConfig;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::protocol::topic_partition::TopicPartition;
use crate::storage::Offset;

use super::group_round::{self, DurableWait, GroupFlight, Started};
use super::leadership::{leader_update, publish_leadership};
use super::quiescence;
use super::replica_group::{expire_waiters, propose, retry_stalled_snapshots, Proposal, ProposeOutcome, ReplicaGroup};
use super::ShardContext;

/// The commit anchor is written at most this often per group (and at close).
const STATE_WRITE_INTERVAL: Duration = Duration::from_secs(2);
/// A follower that has not finished catching up to a snapshot within this long gets a
/// new one (its copy failed, or its answer was lost).
const SNAPSHOT_RETRY: Duration = Duration::from_secs(60);
/// Leaders announce what they lead to every broker this often (and at every change).
const LEADER_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(5);
/// Flights (Readys being written) one group may have at a time; a group with more waits
/// for the oldest before its next Ready.
const FLIGHTS_PER_GROUP_MAX: usize = 8;
/// When a leader's process is gone, the surviving voters campaign this many ticks apart
/// (`cluster::departure`): time for the first one's election to finish. With many groups
/// electing at once the first one's vote requests wait for its votes to be written, one
/// state file per group (over 150 ms for 333 groups on the test machine): a second
/// campaign in that time would split the vote. Only when the first candidate's log is
/// behind does the next one's turn matter, and then it comes within one election timeout.
const DEPARTURE_STAGGER_TICKS: u32 = ClusterConfig::ELECTION_TICKS as u32;
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

/// A flight of a group ended (its writes durable, or failed).
struct FlightDone {
    partition: TopicPartition,
    /// The group's flights' serial when it started: a group removed and opened again
    /// since then does not take it.
    serial: u64,
    flight: GroupFlight,
    result: Result<Option<crate::replication::ReplicaState>, crate::storage::StorageError>,
}

/// What the driver's loop takes: an event, or a flight that ended.
enum DriverInput {
    Event(ReplicaEvent),
    Flight(FlightDone),
    /// The event channel closed.
    Closed,
}

/// A group's flights in progress.
struct GroupFlights {
    serial: u64,
    in_progress: usize,
    /// Resolves when the last flight started so far has ended (each flight waits for
    /// the one before it).
    tail: Option<oneshot::Receiver<()>>,
}

impl GroupFlights {
    /// Waits until every flight started so far has ended.
    async fn drain(&mut self) {
        if let Some(tail) = self.tail.take() {
            let _ = tail.await;
        }
    }
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
    let (flight_done, flights_ended) = mpsc::unbounded();
    let driver = Driver {
        ctx: ctx.clone(),
        groups: HashMap::new(),
        flights: HashMap::new(),
        flight_serial: 0,
        flight_done,
        outbound: HashMap::new(),
        state_due: BTreeSet::new(),
        leader_updates: Vec::new(),
        ticks: 0,
        stall_file: std::env::var_os(STALL_FAULT_VARIABLE).map(|name| ctx.config.data_dir.join(name)),
    };
    glommio::spawn_local(driver.run(receiver, flights_ended)).detach();
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
    /// Each group's flights in progress (an entry once it started one).
    flights: HashMap<TopicPartition, GroupFlights>,
    flight_serial: u64,
    /// Where a flight's task reports its end (to this driver's loop).
    flight_done: mpsc::UnboundedSender<FlightDone>,
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

impl Driver {
    async fn run(
        mut self,
        events: mpsc::UnboundedReceiver<ReplicaEvent>,
        flights_ended: mpsc::UnboundedReceiver<FlightDone>,
    ) {
        let events = events.map(DriverInput::Event).chain(futures_util::stream::iter([DriverInput::Closed]));
        let mut inputs = futures_util::stream::select(events, flights_ended.map(DriverInput::Flight));
        while let Some(input) = inputs.next().await {
            let mut close = None;
            let mut next = Some(input);
            while let Some(input) = next.take() {
                match input {
                    DriverInput::Event(event) if close.is_none() => close = self.handle(event),
                    DriverInput::Event(ReplicaEvent::Propose { reply, .. }) => {
                        let _ = reply.send(ProposeOutcome::NotLeader);
                    }
                    DriverInput::Event(_) => {}
                    DriverInput::Flight(done) => self.finish_flight(done),
                    DriverInput::Closed => return,
                }
                next = futures_util::FutureExt::now_or_never(inputs.next()).flatten();
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
                let stagger = tick * DEPARTURE_STAGGER_TICKS;
                for (partition, group) in &mut self.groups {
                    let at = Departure {
                        node: &mut group.node,
                        gone_leader: &mut group.gone_leader,
                        order: &group.replicas,
                        name: partition,
                    };
                    let turn = departure::take_turn(at, &view.peers_heard, stagger, now);
                    if turn == departure::Turn::Campaigned {
                        group.stepped = true;
                    }
                    if group.quiesced && turn != departure::Turn::None {
                        tracing::debug!(partition = %partition, "quiet replica group wakes: its leader is gone");
                        group.quiesced = false;
                        group.quiet_ticks = 0;
                    }
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
                    // Judged on the state the last round left (a tick adds heartbeats),
                    // with every write of the group done.
                    let writing = self.flights.get(partition).is_some_and(|f| f.in_progress > 0);
                    if group.is_leader() && !writing && quiescence::leader_tick(group, &around) {
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
                    let mut message = message;
                    group_round::before_step(group, &mut message);
                    if !group_round::may_answer(group, &message) {
                        continue;
                    }
                    let quiesce = quiescence::QuiesceRequest::of(&message);
                    match message.get_msg_type() {
                        // Too far behind: copy the log first, then step it (`catch_up`).
                        MessageType::MsgSnapshot if !group_round::snapshot_needs_catch_up(group, &message) => {}
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
                    group_round::note_append_received(group, &message, now);
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
                    // The old group's flights end unheeded; the new group's first flight
                    // still waits for them (they may write the same state file).
                    self.flight_serial += 1;
                    if let Some(flights) = self.flights.get_mut(&key) {
                        flights.serial = self.flight_serial;
                        flights.in_progress = 0;
                    }
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
                // The caller may delete the directory: answered once the group's
                // writes are done.
                match self.flights.remove(&partition) {
                    Some(mut flights) => {
                        glommio::spawn_local(async move {
                            flights.drain().await;
                            let _ = reply.send(());
                        })
                        .detach();
                    }
                    None => {
                        let _ = reply.send(());
                    }
                }
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
        // Only the groups with work (a Ready or a state write due): a round that serves
        // one busy partition does not copy the names of a thousand idle ones.
        let mut keys: Vec<TopicPartition> = Vec::new();
        for (key, group) in &mut self.groups {
            let due = self.state_due.contains(key);
            let looked_at = due || !group.quiesced || std::mem::take(&mut group.stepped);
            if !looked_at || !(due || group.node.has_ready()) {
                continue;
            }
            if self.flights.get(key).is_some_and(|f| f.in_progress >= FLIGHTS_PER_GROUP_MAX) {
                // Its next Ready waits for the oldest flight (whose end is a new round).
                continue;
            }
            keys.push(key.clone());
        }
        for key in keys {
            let due = self.state_due.remove(&key);
            let group = self.groups.get_mut(&key).expect("listed");
            if !group.node.has_ready() {
                if due {
                    let flight = GroupFlight::state_only(group);
                    self.start_flight(key, flight);
                }
                continue;
            }
            if group_round::ready_cuts_back(group) {
                if let Some(flights) = self.flights.get_mut(&key) {
                    flights.drain().await;
                }
            }
            let group = self.groups.get_mut(&key).expect("listed");
            let mut messages = Vec::new();
            let started = group_round::start_ready(group, due, &mut messages).await;
            queue_messages(&mut self.outbound, group, messages);
            match started {
                Ok(Started { flight, replaced_log, conf_changed }) => {
                    if let Some(log) = replaced_log {
                        self.ctx.replace_log(&key, log);
                    }
                    if conf_changed {
                        // The new configuration is on disk before the next round acts on it.
                        self.state_due.insert(key.clone());
                    }
                    if flight.snapshot_index.is_some() {
                        self.install_now(key, flight).await;
                    } else {
                        self.start_flight(key, flight);
                    }
                }
                Err(error) => self.fail_group(&key, error),
            }
        }
        self.flush();
    }

    /// A Ready that installed a snapshot (after a catch-up) is waited for in the round:
    /// until it is persisted, Raft may not apply it, and a group whose window starts at
    /// the snapshot while its applied index is below it cannot campaign or step down
    /// (raft-rs reads the entries after the applied index then).
    async fn install_now(&mut self, key: TopicPartition, mut flight: GroupFlight) {
        if let Some(flights) = self.flights.get_mut(&key) {
            flights.drain().await;
        }
        let Some(group) = self.groups.get(&key) else { return };
        let result = DurableWait::of(group).wait(&mut flight).await;
        // Counted as started, so that ending it below balances.
        let flights = self.flights_of(&key);
        flights.in_progress += 1;
        let serial = flights.serial;
        self.finish_flight(FlightDone { partition: key, serial, flight, result });
    }

    fn flights_of(&mut self, key: &TopicPartition) -> &mut GroupFlights {
        self.flights.entry(key.clone()).or_insert_with(|| {
            self.flight_serial += 1;
            GroupFlights { serial: self.flight_serial, in_progress: 0, tail: None }
        })
    }

    /// Phase 2 for one group: a task waits for the flight (after the group's previous
    /// one) and reports its end to the driver's loop.
    fn start_flight(&mut self, key: TopicPartition, mut flight: GroupFlight) {
        let Some(group) = self.groups.get(&key) else { return };
        let wait = DurableWait::of(group);
        let flights = self.flights_of(&key);
        flights.in_progress += 1;
        let serial = flights.serial;
        let previous = flights.tail.take();
        let (ended, tail) = oneshot::channel();
        flights.tail = Some(tail);
        let report = self.flight_done.clone();
        glommio::spawn_local(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let result = wait.wait(&mut flight).await;
            let _ = report.unbounded_send(FlightDone { partition: key, serial, flight, result });
            let _ = ended.send(());
        })
        .detach();
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
            let writing = self.flights.get(&key).is_some_and(|f| f.in_progress > 0);
            if writing || !group_round::may_start_catch_up(group) {
                continue;
            }
            let needed = group
                .catch_up
                .as_ref()
                .is_some_and(|(snapshot, _)| group_round::snapshot_needs_catch_up(group, snapshot));
            if !needed {
                // An ordinary append got here first: Raft only moves the commit.
                if let Some((snapshot, _)) = group.catch_up.take() {
                    let _ = group.node.step(snapshot);
                }
                continue;
            }
            let Some((snapshot, _)) = group.catch_up.as_ref() else { continue };
            let keep = group_round::catch_up_keep(group, snapshot);
            if keep < group.window.borrow().last_index() {
                match group_round::cut_back(group, keep).await {
                    Ok(log) => self.ctx.replace_log(&key, log),
                    Err(error) => {
                        self.fail_group(&key, error);
                        continue;
                    }
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

    /// Phase 3 for one group, once a flight ended (`group_round::finish_flight`), then
    /// what the shard does with the outcome: leadership news, coordination.
    fn finish_flight(&mut self, done: FlightDone) {
        let FlightDone { partition, serial, flight, result } = done;
        match self.flights.get_mut(&partition) {
            Some(flights) if flights.serial == serial => flights.in_progress -= 1,
            _ => return,
        }
        let written_state = match result {
            Ok(written_state) => written_state,
            Err(error) => return self.fail_group(&partition, error.to_string()),
        };
        let Some(group) = self.groups.get_mut(&partition) else { return };
        let mut messages = Vec::new();
        group_round::finish_flight(group, flight, written_state, &mut messages);
        // The node may have more to do now (committed entries, messages): the next round
        // looks at it even if it is quiet.
        group.stepped = true;
        queue_messages(&mut self.outbound, group, messages);
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
        // Its flights still in progress end unheeded.
        if let Some(flights) = self.flights.get_mut(key) {
            self.flight_serial += 1;
            flights.serial = self.flight_serial;
            flights.in_progress = 0;
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
        // Writes still in flight end first (their state writes would race this one).
        for flights in self.flights.values_mut() {
            flights.drain().await;
        }
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
