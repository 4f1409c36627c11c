//! The metadata quorum: a raft-rs `RawNode` driven by shard 0's event loop.
//!
//! One task (`drive`) owns the node. Everything reaches it as an `Event` on one channel
//! (clock ticks, peers' frames, proposals), and after each batch of events it runs one
//! Ready round, in the order raft-rs requires:
//! 1. send the leader's messages (they may go before its own write);
//! 2. append new entries and the hard state to the log file and fdatasync them;
//! 3. apply committed entries: decode each entry's commands, apply them to the state
//!    (`metadata::commands::apply`) and persist the state with its applied index; a
//!    separate task (`publish_in_order`) installs each new state on every shard and only
//!    then answers the proposers, so shard work (opening thousands of logs for a big
//!    topic) never holds up Raft's ticks and heartbeats;
//! 4. send the messages that needed the write (votes, append responses), advance.
//!
//! Entries are JSON `LogEntry`s: the proposing node, its proposal id (so that node can
//! answer its caller once the entry is applied) and the commands. The state file records
//! the index it includes, so a restart applies exactly the entries after it.
//!
//! Safety beyond Raft's own: pre-vote and check-quorum are on (a returning or isolated
//! node cannot depose a working leader; a leader cut off from the majority steps down),
//! and a leader refuses a proposal unless it heard from a majority within the last
//! election timeout, so a minority fails fast instead of queueing a change that might
//! surface later.
//!
//! The log is never compacted: it grows only with metadata changes (topic changes,
//! registrations, fencings, producer-id blocks), so snapshots are not needed yet.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use glommio::net::TcpListener;
use raft::eraftpb::{ConfState, Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};

use crate::metadata::commands::{self, CommandEffect, MetadataCommand};
use crate::metadata::{BrokerRegistration, ClusterMetadata};

use super::liveness::LivenessTracker;
use super::raft_log::RaftLogFile;
use super::transport::{accept_peers, Inbound, PeerFrame, Transport};
use super::{ClusterConfig, ClusterView};

/// A random delay below `period` (from the clock's nanoseconds and the thread).
pub fn random_phase(period: std::time::Duration) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let nanos = period.as_nanos().max(1) as u64;
    std::time::Duration::from_nanos(hasher.finish() % nanos)
}

/// A proposal not applied within this long is answered with a timeout.
/// When the controller's process is gone, the other voters campaign this many ticks
/// apart (`cluster::departure`): a whole election timeout, as for partition groups, so a
/// second campaign never overtakes a first one whose vote is still being written.
const DEPARTURE_STAGGER_TICKS: u32 = ClusterConfig::ELECTION_TICKS as u32;
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A forwarded request not answered within this long fails.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// What the quorum needs from the shards above it.
#[allow(missing_debug_implementations)] // closures
pub struct QuorumHooks {
    /// Installs a newly applied (and persisted) state on every shard.
    pub publish: Rc<dyn Fn(Arc<ClusterMetadata>) -> LocalBoxFuture<'static, ()>>,
    /// Executes a controller request a peer forwarded to this node; returns the answer.
    pub forwarded: Rc<dyn Fn(Vec<u8>) -> LocalBoxFuture<'static, Vec<u8>>>,
    /// Delivers partition replication frames (replica groups' Raft messages, catch-up
    /// requests and replies) from peer `from` to their shards.
    pub partition_frames: Rc<dyn Fn(i32, PeerFrame)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    #[error("this node is not the controller (the controller is {0:?})")]
    NotLeader(Option<i32>),
    #[error("the metadata quorum has no leader: fewer than {needed} of {total} nodes can reach each other")]
    NoLeader { needed: usize, total: usize },
    #[error("the metadata quorum has no majority: {reachable} of {total} nodes reachable, {needed} needed")]
    NoQuorum { reachable: usize, needed: usize, total: usize },
    #[error("the metadata quorum did not answer within {0:?}; the change may still be applied")]
    Timeout(Duration),
    #[error("the controller changed before the change was committed; it may still be applied")]
    LeadershipLost,
}

#[derive(Debug, Serialize, Deserialize)]
struct LogEntry {
    proposer: i32,
    proposal: u64,
    commands: Vec<MetadataCommand>,
}

type ProposalReply = oneshot::Sender<Result<Vec<CommandEffect>, QuorumError>>;

/// A persisted state for the shards, and the proposers to answer once they have it.
struct Publication {
    state: Arc<ClusterMetadata>,
    answers: Vec<(ProposalReply, Vec<CommandEffect>)>,
    /// False when the state did not change (nothing for the shards to install).
    install: bool,
}

enum Event {
    Tick,
    Peer(Inbound),
    Propose { commands: Vec<MetadataCommand>, reply: Option<ProposalReply> },
}

struct Pending {
    reply: ProposalReply,
    deadline: Instant,
}

/// State only the driver task touches.
struct Driver {
    node: RawNode<MemStorage>,
    log: RaftLogFile,
    pending: HashMap<u64, Pending>,
    /// When each peer was last heard from (any Raft message).
    last_heard: HashMap<u64, Instant>,
    /// The controller's view of broker liveness (leader only).
    liveness: Option<LivenessTracker>,
    ticks: u64,
    last_tick: Instant,
    heartbeat_due: bool,
    /// The controller, if its process is known gone (`cluster::departure`).
    gone_leader: Option<super::departure::GoneLeader>,
}

pub struct MetadataQuorum {
    config: ClusterConfig,
    registration: BrokerRegistration,
    data_dir: PathBuf,
    view: Arc<ClusterView>,
    events: mpsc::UnboundedSender<Event>,
    transport: Rc<Transport>,
    hooks: QuorumHooks,
    state: RefCell<Arc<ClusterMetadata>>,
    leader: Cell<Option<i32>>,
    forwards: RefCell<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
    next_id: Cell<u64>,
    publications: mpsc::UnboundedSender<Publication>,
    /// Index of the first entry of this node's current term as leader.
    term_start_index: Cell<u64>,
    /// Index of the last entry whose state every shard of this node has installed.
    published_index: Cell<u64>,
}

impl std::fmt::Debug for MetadataQuorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataQuorum")
            .field("node_id", &self.config.node_id)
            .field("leader", &self.leader.get())
            .finish()
    }
}

impl MetadataQuorum {
    /// Opens the quorum's log, starts the transport and the driver. `state` is the
    /// persisted metadata (its `applied_index` says which entries it already holds).
    pub fn start(
        config: ClusterConfig,
        registration: BrokerRegistration,
        data_dir: PathBuf,
        state: ClusterMetadata,
        view: Arc<ClusterView>,
        hooks: QuorumHooks,
        listener: TcpListener,
    ) -> Result<Rc<MetadataQuorum>, String> {
        let (log, recovered) = RaftLogFile::open(&data_dir)
            .map_err(|e| format!("cannot read the metadata log in {}: {e}", data_dir.display()))?;
        let id = config.node_id as u64;
        let voters: Vec<u64> = config.peers.iter().map(|p| p.node_id as u64).collect();
        let storage = MemStorage::new_with_conf_state(ConfState::from((voters, vec![])));
        let last_index = recovered.entries.last().map_or(0, |e| e.index);
        let applied = state.applied_index.min(last_index);
        {
            let mut core = storage.wl();
            if !recovered.entries.is_empty() {
                core.append(&recovered.entries).map_err(|e| format!("metadata log does not replay: {e}"))?;
            }
            let mut hard_state = recovered.hard_state;
            hard_state.commit = hard_state.commit.max(applied).min(last_index);
            core.set_hardstate(hard_state);
        }
        let raft_config = raft::Config {
            id,
            election_tick: ClusterConfig::ELECTION_TICKS,
            heartbeat_tick: ClusterConfig::HEARTBEAT_TICKS,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..raft::Config::default()
        };
        raft_config.validate().map_err(|e| format!("metadata quorum settings: {e}"))?;
        let node = RawNode::new(&raft_config, storage, &super::logger::raft_logger(config.node_id))
            .map_err(|e| format!("cannot start the metadata quorum: {e}"))?;
        tracing::info!(
            node_id = config.node_id,
            entries = recovered.entries.len(),
            applied,
            voters = ?config.peer_ids(),
            "metadata quorum starting"
        );

        crate::metrics::cluster_gauges().enabled.store(true, Ordering::Relaxed);
        crate::metrics::cluster_gauges().controller_id.store(-1, Ordering::Relaxed);
        let transport = Transport::start(config.node_id, &config.peers, view.clone());
        let (events, receiver) = mpsc::unbounded();
        let (publications, to_publish) = mpsc::unbounded();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos());
        let quorum = Rc::new(MetadataQuorum {
            config,
            registration,
            data_dir,
            view,
            events,
            transport,
            hooks,
            state: RefCell::new(Arc::new(state)),
            leader: Cell::new(None),
            forwards: RefCell::new(HashMap::new()),
            // Proposal ids differ across restarts, so an entry proposed by an earlier
            // run of this node is never taken for one of this run's proposals.
            next_id: Cell::new((nanos as u64) | 1),
            publications,
            term_start_index: Cell::new(u64::MAX),
            published_index: Cell::new(applied),
        });
        glommio::spawn_local(quorum.clone().publish_in_order(to_publish)).detach();
        let driver = Driver {
            node,
            log,
            pending: HashMap::new(),
            last_heard: HashMap::new(),
            liveness: None,
            ticks: 0,
            last_tick: Instant::now(),
            heartbeat_due: false,
            gone_leader: None,
        };
        glommio::spawn_local(quorum.clone().drive(driver, receiver)).detach();
        glommio::spawn_local(quorum.clone().tick()).detach();
        let (inbound, peer_frames) = mpsc::unbounded();
        glommio::spawn_local(accept_peers(
            listener,
            quorum.config.node_id,
            quorum.config.peers.clone(),
            inbound,
            quorum.view.clone(),
        ))
        .detach();
        glommio::spawn_local(quorum.clone().route_peer_frames(peer_frames)).detach();
        Ok(quorum)
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The current leader (controller), as far as this node knows.
    pub fn leader(&self) -> Option<i32> {
        self.leader.get()
    }

    /// The applied state.
    pub fn state(&self) -> Arc<ClusterMetadata> {
        self.state.borrow().clone()
    }

    /// Waits (up to `limit`) until some node leads.
    pub async fn wait_for_leader(&self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(leader) = self.leader.get() {
                return Some(leader);
            }
            if Instant::now() >= deadline {
                return None;
            }
            glommio::timer::sleep(self.config.tick()).await;
        }
    }

    /// Waits (up to `limit`) until this node leads and has applied every entry of
    /// earlier terms, so the state the controller validates against is the latest.
    /// False when it does not lead (or not yet) at the deadline.
    pub async fn wait_ready_to_lead(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.leader.get() != Some(self.config.node_id) {
                return false;
            }
            if self.state.borrow().applied_index >= self.term_start_index.get() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Index of the last entry applied here.
    pub fn applied_index(&self) -> u64 {
        self.state.borrow().applied_index
    }

    /// Waits (up to `limit`) until every shard of this node has installed the state of
    /// entry `index` (a change another node's controller made).
    pub async fn wait_published(&self, index: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.published_index.get() < index && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The error for "no controller right now".
    pub fn no_leader(&self) -> QuorumError {
        QuorumError::NoLeader { needed: self.config.quorum_size(), total: self.config.peers.len() }
    }

    /// Proposes `commands` (this node must lead) and returns their effects once they are
    /// committed and applied here.
    pub async fn propose(&self, commands: Vec<MetadataCommand>) -> Result<Vec<CommandEffect>, QuorumError> {
        let (reply, answer) = oneshot::channel();
        if self.events.unbounded_send(Event::Propose { commands, reply: Some(reply) }).is_err() {
            return Err(QuorumError::LeadershipLost);
        }
        answer.await.unwrap_or(Err(QuorumError::LeadershipLost))
    }

    /// Sends a controller request to `leader` and waits for its answer.
    pub async fn forward(&self, leader: i32, body: Vec<u8>) -> Result<Vec<u8>, QuorumError> {
        let id = self.fresh_id();
        let (reply, answer) = oneshot::channel();
        self.forwards.borrow_mut().insert(id, reply);
        if !self.transport.send(leader, &PeerFrame::ForwardRequest { id, body }) {
            self.forwards.borrow_mut().remove(&id);
            return Err(QuorumError::NotLeader(Some(leader)));
        }
        let timeout = glommio::timer::sleep(FORWARD_TIMEOUT);
        let outcome = futures_util::future::select(answer, Box::pin(timeout)).await;
        self.forwards.borrow_mut().remove(&id);
        match outcome {
            futures_util::future::Either::Left((Ok(body), _)) => Ok(body),
            futures_util::future::Either::Left((Err(_), _)) => Err(QuorumError::LeadershipLost),
            futures_util::future::Either::Right(_) => Err(QuorumError::Timeout(FORWARD_TIMEOUT)),
        }
    }

    /// Queues a frame for `to` on this node's link to it (partition replication: Raft
    /// messages, catch-up, leader updates); false when it was dropped.
    pub fn send_frame(&self, to: i32, frame: &PeerFrame) -> bool {
        self.transport.send(to, frame)
    }

    fn fresh_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(2));
        id
    }

    /// Installs states on the shards one after the other, in log order, then answers
    /// the proposals they include.
    async fn publish_in_order(self: Rc<Self>, mut publications: mpsc::UnboundedReceiver<Publication>) {
        while let Some(Publication { state, answers, install }) = publications.next().await {
            let index = state.applied_index;
            if install {
                (self.hooks.publish)(state).await;
            }
            self.published_index.set(self.published_index.get().max(index));
            for (reply, effects) in answers {
                let _ = reply.send(Ok(effects));
            }
        }
    }

    async fn tick(self: Rc<Self>) {
        let tick = self.config.tick();
        // Nodes started together would tick in phase, and two followers that drew the
        // same randomized election timeout would then campaign at the same instant and
        // split the vote: a random phase makes one of them first.
        glommio::timer::sleep(random_phase(tick)).await;
        loop {
            glommio::timer::sleep(tick).await;
            if self.events.unbounded_send(Event::Tick).is_err() {
                return;
            }
        }
    }

    /// Replies and forwarded requests are handled here; the rest goes to the driver.
    async fn route_peer_frames(self: Rc<Self>, mut frames: mpsc::UnboundedReceiver<Inbound>) {
        while let Some(inbound) = frames.next().await {
            match inbound.frame {
                PeerFrame::ForwardReply { id, body } => {
                    if let Some(reply) = self.forwards.borrow_mut().remove(&id) {
                        let _ = reply.send(body);
                    }
                }
                PeerFrame::ForwardRequest { id, body } => {
                    let quorum = self.clone();
                    glommio::spawn_local(async move {
                        let answer = (quorum.hooks.forwarded)(body).await;
                        quorum.transport.send(inbound.from, &PeerFrame::ForwardReply { id, body: answer });
                    })
                    .detach();
                }
                frame @ (PeerFrame::PartitionRaft(_)
                | PeerFrame::CatchUpRequest(_)
                | PeerFrame::CatchUpReply(_)
                | PeerFrame::LeaderUpdates(_)) => (self.hooks.partition_frames)(inbound.from, frame),
                _ => {
                    if self.events.unbounded_send(Event::Peer(inbound)).is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn drive(self: Rc<Self>, mut driver: Driver, mut events: mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = events.next().await {
            self.handle(&mut driver, event);
            while let Ok(event) = events.try_recv() {
                self.handle(&mut driver, event);
            }
            if std::mem::take(&mut driver.heartbeat_due) {
                self.heartbeat(&mut driver, Instant::now());
            }
            if let Err(error) = self.on_ready(&mut driver).await {
                tracing::error!(%error, "the metadata log cannot be written; stopping the broker");
                crate::stop::request_stop();
                return;
            }
        }
    }

    fn handle(&self, driver: &mut Driver, event: Event) {
        let now = Instant::now();
        match event {
            Event::Tick => {
                driver.node.tick();
                driver.ticks += 1;
                // A controller whose process is gone is replaced at once.
                let at = super::departure::Departure {
                    node: &mut driver.node,
                    gone_leader: &mut driver.gone_leader,
                    order: &self.view.peer_ids,
                    name: &"metadata quorum",
                };
                let stagger = self.config.tick() * DEPARTURE_STAGGER_TICKS;
                super::departure::take_turn(at, &self.view.peers_heard, stagger, now);
                self.expire_proposals(driver, now);
                // A driver that could not run for a while (a long fsync, a busy shard)
                // heard nobody meanwhile: that says nothing about the brokers.
                if now.duration_since(driver.last_tick) > self.config.session_timeout / 2 {
                    if let Some(liveness) = driver.liveness.as_mut() {
                        liveness.restart_sessions(now);
                    }
                }
                driver.last_tick = now;
                let tick = self.config.tick().as_millis().max(1) as u64;
                let every = (self.config.heartbeat_interval.as_millis() as u64 / tick).max(1);
                if driver.ticks % every == 0 {
                    // After this batch's heartbeats are handled (see `drive`).
                    driver.heartbeat_due = true;
                }
            }
            Event::Peer(Inbound { from, frame }) => match frame {
                PeerFrame::Raft(message) => {
                    driver.last_heard.insert(from as u64, now);
                    if let Err(error) = driver.node.step(message) {
                        tracing::debug!(from, %error, "raft message ignored");
                    }
                }
                PeerFrame::Heartbeat(registration) => {
                    let state = self.state();
                    let command = driver.liveness.as_mut().and_then(|l| l.heard(&registration, &state, now));
                    if let Some(command) = command {
                        self.propose_now(driver, vec![command], None);
                    }
                }
                _ => {}
            },
            Event::Propose { commands, reply } => self.propose_now(driver, commands, reply),
        }
    }

    /// Every node heartbeats to the controller; the controller checks for expired
    /// sessions.
    fn heartbeat(&self, driver: &mut Driver, now: Instant) {
        match self.leader.get() {
            Some(leader) if leader == self.config.node_id => {
                let state = self.state();
                let Some(liveness) = driver.liveness.as_mut() else { return };
                let mut commands: Vec<MetadataCommand> =
                    liveness.heard(&self.registration, &state, now).into_iter().collect();
                commands.extend(liveness.expired(&state, now));
                if !commands.is_empty() {
                    for command in &commands {
                        if let MetadataCommand::FenceBroker { node_id } = command {
                            tracing::warn!(node_id, "broker missed its session; fencing it");
                        }
                    }
                    self.propose_now(driver, commands, None);
                }
            }
            Some(leader) => {
                self.transport.send(leader, &PeerFrame::Heartbeat(self.registration.clone()));
            }
            None => {}
        }
    }

    fn propose_now(&self, driver: &mut Driver, commands: Vec<MetadataCommand>, reply: Option<ProposalReply>) {
        let refuse = |reply: Option<ProposalReply>, error: QuorumError| {
            if let Some(reply) = reply {
                let _ = reply.send(Err(error));
            }
        };
        if driver.node.raft.state != StateRole::Leader {
            return refuse(reply, QuorumError::NotLeader(self.leader.get()));
        }
        let reachable = 1 + self
            .config
            .peers
            .iter()
            .filter(|p| p.node_id != self.config.node_id)
            .filter(|p| {
                driver.last_heard.get(&(p.node_id as u64)).is_some_and(|at| at.elapsed() < self.config.election_timeout)
            })
            .count();
        if reachable < self.config.quorum_size() {
            return refuse(
                reply,
                QuorumError::NoQuorum { reachable, needed: self.config.quorum_size(), total: self.config.peers.len() },
            );
        }
        let proposal = self.fresh_id();
        let entry = LogEntry { proposer: self.config.node_id, proposal, commands };
        let data = serde_json::to_vec(&entry).expect("log entries encode");
        match driver.node.propose(Vec::new(), data) {
            Ok(()) => {
                if let Some(reply) = reply {
                    driver.pending.insert(proposal, Pending { reply, deadline: Instant::now() + PROPOSAL_TIMEOUT });
                }
            }
            Err(error) => {
                tracing::debug!(%error, "proposal dropped");
                refuse(reply, QuorumError::NotLeader(self.leader.get()));
            }
        }
    }

    fn expire_proposals(&self, driver: &mut Driver, now: Instant) {
        let expired: Vec<u64> = driver.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(&id, _)| id).collect();
        for id in expired {
            if let Some(pending) = driver.pending.remove(&id) {
                let _ = pending.reply.send(Err(QuorumError::Timeout(PROPOSAL_TIMEOUT)));
            }
        }
    }

    fn send(&self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to as i32;
            self.transport.send(to, &PeerFrame::Raft(message));
        }
    }

    async fn on_ready(&self, driver: &mut Driver) -> std::io::Result<()> {
        if !driver.node.has_ready() {
            return Ok(());
        }
        let mut ready = driver.node.ready();
        if let Some(soft) = ready.ss() {
            self.role_changed(driver, soft.leader_id, soft.raft_state);
        }
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            // Leaders never compact the log, so no snapshot is ever sent.
            tracing::error!("metadata quorum received a snapshot, which this version never sends; ignored");
        }
        let committed = ready.take_committed_entries();
        if !ready.entries().is_empty() {
            driver.log.append_entries(ready.entries());
            driver.node.mut_store().wl().append(ready.entries()).map_err(std::io::Error::other)?;
        }
        if let Some(hard_state) = ready.hs() {
            driver.log.set_hard_state(hard_state);
            driver.node.mut_store().wl().set_hardstate(hard_state.clone());
        }
        driver.log.sync().await?;
        self.apply(driver, committed).await?;
        self.send(ready.take_persisted_messages());
        let mut light = driver.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut store = driver.node.mut_store().wl();
            store.mut_hard_state().commit = commit;
            driver.log.set_hard_state(store.hard_state());
        }
        driver.log.sync().await?;
        self.send(light.take_messages());
        self.apply(driver, light.take_committed_entries()).await?;
        driver.node.advance_apply();
        self.fail_orphaned_proposals(driver);
        Ok(())
    }

    fn role_changed(&self, driver: &mut Driver, leader_id: u64, role: StateRole) {
        let leader = (leader_id != 0).then_some(leader_id as i32);
        let gauges = crate::metrics::cluster_gauges();
        if leader != self.leader.get() {
            tracing::info!(node_id = self.config.node_id, leader = ?leader, "metadata quorum leader changed");
            gauges.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
        gauges.controller_id.store(leader.map_or(-1, i64::from), Ordering::Relaxed);
        gauges.is_controller.store(u64::from(role == StateRole::Leader), Ordering::Relaxed);
        self.leader.set(leader);
        self.view.set_controller_id(leader);
        if role == StateRole::Leader {
            // Raft appended an empty entry for the new term: once it is applied here,
            // so is everything earlier leaders committed, and the controller may act.
            self.term_start_index.set(driver.node.raft.raft_log.last_index());
            if driver.liveness.is_none() {
                driver.liveness =
                    Some(LivenessTracker::new(self.config.session_timeout, &self.config.peer_ids(), Instant::now()));
            }
        } else {
            driver.liveness = None;
            // Proposals still pending are failed after this round's committed entries
            // are applied (`fail_orphaned_proposals`): some of them may be among those.
        }
    }

    /// After losing leadership: proposals whose entries were not among the committed
    /// ones applied so far may never commit; their callers get LeadershipLost.
    fn fail_orphaned_proposals(&self, driver: &mut Driver) {
        if driver.node.raft.state == StateRole::Leader || driver.pending.is_empty() {
            return;
        }
        for (_, pending) in driver.pending.drain() {
            let _ = pending.reply.send(Err(QuorumError::LeadershipLost));
        }
    }

    async fn apply(&self, driver: &mut Driver, entries: Vec<Entry>) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut state = (*self.state()).clone();
        let version = state.version;
        let mut answers = Vec::new();
        for entry in entries {
            if entry.index <= state.applied_index {
                continue; // already in the persisted state
            }
            state.applied_index = entry.index;
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let log_entry: LogEntry = match serde_json::from_slice(&entry.data) {
                Ok(log_entry) => log_entry,
                Err(error) => {
                    // Skipping it would leave this node's state different from the
                    // others' for good; stop before applying anything after it.
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "metadata log entry {} does not decode ({error}): a newer version wrote it?",
                            entry.index
                        ),
                    ));
                }
            };
            let effects: Vec<CommandEffect> =
                log_entry.commands.iter().map(|c| commands::apply(&mut state, c)).collect();
            for command in &log_entry.commands {
                match command {
                    MetadataCommand::RegisterBroker(BrokerRegistration { node_id, .. })
                    | MetadataCommand::FenceBroker { node_id } => {
                        if let Some(liveness) = driver.liveness.as_mut() {
                            liveness.settled(*node_id);
                        }
                    }
                    _ => {}
                }
            }
            if log_entry.proposer == self.config.node_id {
                if let Some(pending) = driver.pending.remove(&log_entry.proposal) {
                    answers.push((pending.reply, effects));
                }
            }
        }
        if state.version != version || !state.cluster_member {
            state.cluster_member = true;
            state.persist(&self.data_dir).await?;
        }
        let gauges = crate::metrics::cluster_gauges();
        let fenced = state.brokers.values().filter(|b| b.fenced).count() as u64;
        gauges.brokers_fenced.store(fenced, Ordering::Relaxed);
        gauges.brokers_live.store(state.brokers.len() as u64 - fenced, Ordering::Relaxed);
        gauges.applied_index.store(state.applied_index, Ordering::Relaxed);
        let state = Arc::new(state);
        *self.state.borrow_mut() = state.clone();
        // Every applied state goes through the publisher, in order, so `published_index`
        // never passes a state still waiting to be installed; an unchanged one only
        // moves the index.
        let install = state.version != version;
        let _ = self.publications.unbounded_send(Publication { state, answers, install });
        Ok(())
    }
}
