//! A shard's state: its read-only copy of the cluster metadata, the partition logs it
//! owns, and its end of the cross-shard mesh. Lives on one executor thread (`Rc`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::{mpsc, oneshot};
use futures_util::future::{select, Either};
use glommio::channels::channel_mesh::Senders;

use crate::cluster::transport::{CatchUpReply, PartitionMessage, PeerFrame};
use crate::cluster::{ClusterConfig, ClusterView, MetadataQuorum};
use crate::config::ServeConfig;
use crate::group::coordinator::GroupCoordinator;
use crate::group::offsets::{partition_for_group, OFFSETS_TOPIC};
use crate::group::state::GroupConfig;
use crate::metadata::topic_config::log_config;
use crate::metadata::ClusterMetadata;
use crate::protocol::topic_partition::TopicPartition;
use crate::storage::batch_cache::BatchCache;
use crate::storage::partition_identity::{read_claim, set_aside, write_claim, DirectoryClaim};
use crate::storage::{PartitionLog, StorageEnv};

use super::mesh::{Reply, ShardRequest, ShardTask};
use super::replica_group::{GroupSpec, Proposal, ProposeOutcome, ReplicaGroup};
use super::replicas::ReplicaEvent;
use super::router::shard_for;

/// The topic id `__consumer_offsets` replica groups use in their messages (the topic is
/// not in the cluster metadata, which gives other topics theirs).
pub const OFFSETS_TOPIC_ID: [u8; 16] = *b"__consumer_offs_";
/// The same for `__transaction_state` replica groups.
pub const TXN_STATE_TOPIC_ID: [u8; 16] = *b"__transaction_s_";

/// The fixed topic id of an internal topic's replica groups (`None`: not internal).
pub fn internal_topic_id(topic: &str) -> Option<[u8; 16]> {
    match topic {
        OFFSETS_TOPIC => Some(OFFSETS_TOPIC_ID),
        crate::txn::TXN_STATE_TOPIC => Some(TXN_STATE_TOPIC_ID),
        _ => None,
    }
}

/// Logs a shard closes at the same time on shutdown.
const LOGS_CLOSED_AT_ONCE: usize = 1024;

/// Directory name infix of a deleted partition whose removal had not finished; such
/// leftovers are removed at startup.
pub const DELETED_MARKER: &str = ".deleted-";

#[derive(Debug)]
pub struct ShardContext {
    pub id: usize,
    pub shard_count: usize,
    pub config: Arc<ServeConfig>,
    metadata: RefCell<Arc<ClusterMetadata>>,
    logs: RefCell<HashMap<TopicPartition, PartitionLog>>,
    senders: Senders<ShardRequest>,
    /// Serializes controller operations (used on shard 0 only).
    pub(crate) controller_gate: glommio::sync::Semaphore,
    /// Consumer groups coordinated by this shard.
    pub groups: Rc<GroupCoordinator>,
    /// Transactional ids coordinated by this shard.
    pub txns: Rc<crate::txn::TxnCoordinator>,
    /// What this shard's logs share: the clock and the one batch cache of the shard.
    pub storage_env: StorageEnv,
    /// Bytes of requests this shard may hold being read or handled (its share of
    /// `--queued-max-request-bytes`): a connection whose next request does not fit
    /// waits, unread, until earlier requests finish (backpressure, not allocation).
    pub request_bytes_budget: Rc<glommio::sync::Semaphore>,
    pub request_bytes_budget_total: u64,
    /// Cluster mode: what every shard knows about the cluster (the controller's id).
    pub cluster: Option<Arc<ClusterView>>,
    /// Cluster mode, shard 0 only: the metadata quorum.
    quorum: RefCell<Option<Rc<MetadataQuorum>>>,
    /// Cluster mode, shard 0: the producer ids reserved for this broker, `next..end`.
    pub(crate) producer_id_block: Cell<(i64, i64)>,
    /// Cluster mode: the replica driver of this shard's replicated partitions.
    replica_events: RefCell<Option<mpsc::UnboundedSender<ReplicaEvent>>>,
    /// Catch-up requests sent by this shard's replicas, waiting for the leader's answer.
    catch_up_waiters: RefCell<HashMap<u64, oneshot::Sender<CatchUpReply>>>,
    next_catch_up_id: Cell<u64>,
    /// Paces the catch-up reads this shard serves (`--replica-catch-up-bytes-per-sec`).
    pub(crate) catch_up_pacer: RefCell<crate::shard::catch_up::Pacer>,
}

/// Who leads a partition, as this node's metadata says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionLeader {
    /// No such topic or partition.
    Unknown,
    /// This node.
    Here,
    /// Another broker.
    Broker(i32),
    /// Its leader is fenced (or not registered): the partition is offline.
    Offline,
}

impl ShardContext {
    pub fn new(
        id: usize,
        config: Arc<ServeConfig>,
        metadata: Arc<ClusterMetadata>,
        senders: Senders<ShardRequest>,
        cluster: Option<Arc<ClusterView>>,
    ) -> ShardContext {
        let group_config = GroupConfig {
            initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            offsets_retention_ms: config.offsets_retention_ms,
        };
        let cache_bytes = config.batch_cache_bytes;
        let txn_config = crate::txn::TxnConfig {
            max_timeout_ms: config.transaction_max_timeout_ms,
            ..crate::txn::TxnConfig::default()
        };
        let sync_mode = config.sync_mode;
        let recycle_segments = config.recycle_segments;
        let request_bytes_budget_total = config.queued_request_bytes_per_shard;
        ShardContext {
            id,
            shard_count: senders.nr_consumers(),
            config,
            metadata: RefCell::new(metadata),
            logs: RefCell::new(HashMap::new()),
            senders,
            controller_gate: glommio::sync::Semaphore::new(1),
            groups: Rc::new(GroupCoordinator::new(group_config)),
            txns: Rc::new(crate::txn::TxnCoordinator::new(txn_config)),
            storage_env: StorageEnv {
                batch_cache: BatchCache::shared(cache_bytes),
                sync_mode,
                recycle_segments,
                ..StorageEnv::default()
            },
            request_bytes_budget: Rc::new(glommio::sync::Semaphore::new(request_bytes_budget_total)),
            request_bytes_budget_total,
            cluster,
            quorum: RefCell::new(None),
            producer_id_block: Cell::new((0, 0)),
            replica_events: RefCell::new(None),
            catch_up_waiters: RefCell::new(HashMap::new()),
            next_catch_up_id: Cell::new(1),
            catch_up_pacer: RefCell::new(crate::shard::catch_up::Pacer::default()),
        }
    }

    /// Cluster mode: starts this shard's replica driver (before the first metadata is
    /// applied, which opens the groups).
    pub fn start_replicas(self: &Rc<Self>) {
        if self.cluster.is_some() {
            *self.replica_events.borrow_mut() = Some(super::replicas::start(self.clone()));
        }
    }

    pub(crate) fn replica_event(&self, event: ReplicaEvent) -> bool {
        match self.replica_events.borrow().as_ref() {
            Some(events) => events.unbounded_send(event).is_ok(),
            None => false,
        }
    }

    /// Whether `partition` of a topic is replicated by a Raft group: cluster mode and
    /// more than one replica.
    pub fn is_replicated(&self, info: &crate::metadata::TopicMetadata, partition: i32) -> bool {
        self.cluster.is_some() && info.replicas_of(partition).len() > 1
    }

    /// Proposes a produce request's batch to the partition's group (on its owner shard).
    pub async fn propose(
        &self,
        partition: TopicPartition,
        batch: bytes::Bytes,
        acks: i16,
        timeout: std::time::Duration,
    ) -> ProposeOutcome {
        self.propose_now(partition, Proposal::Records(batch), acks, timeout).await
    }

    /// Hands `proposal` to the partition's group at once (so proposals made one after
    /// the other are ordered that way, even before anyone waits); the future resolves
    /// with the outcome.
    pub fn propose_now(
        &self,
        partition: TopicPartition,
        proposal: Proposal,
        acks: i16,
        timeout: std::time::Duration,
    ) -> impl Future<Output = ProposeOutcome> + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.replica_event(ReplicaEvent::Propose { partition, proposal, acks, timeout, reply });
        async move {
            if !sent {
                return ProposeOutcome::NotLeader;
            }
            answer.await.unwrap_or(ProposeOutcome::NotLeader)
        }
    }

    /// Shard 0: hands a partition replication frame from `from` to the shard owning its
    /// partition (Raft messages, catch-up requests and replies).
    pub fn deliver_partition_frame(self: &Rc<Self>, from: i32, frame: PeerFrame) {
        match frame {
            PeerFrame::PartitionRaft(messages) => {
                let mut by_shard: HashMap<usize, Vec<PartitionMessage>> = HashMap::new();
                for message in messages {
                    if let Some((shard, shard_count)) = super::quiescence::as_driver_heartbeat(&message) {
                        if let Some(view) = &self.cluster {
                            view.peers_heard.driver_heard(from, shard, shard_count);
                        }
                        continue;
                    }
                    by_shard.entry(self.owner(&message.topic, message.partition)).or_default().push(message);
                }
                for (shard, messages) in by_shard {
                    self.on_shard(shard, move |ctx| {
                        ctx.replica_event(ReplicaEvent::Peer { from, messages });
                    });
                }
            }
            PeerFrame::CatchUpRequest(request) => {
                let shard = self.owner(&request.topic, request.partition);
                self.on_shard(shard, move |ctx| {
                    glommio::spawn_local(super::catch_up::serve(ctx, from, request)).detach();
                });
            }
            PeerFrame::LeaderUpdates(updates) => {
                let (Some(view), metadata) = (&self.cluster, self.metadata()) else { return };
                for update in updates {
                    let current = if let Some(id) = internal_topic_id(&update.topic) {
                        update.topic_id == id
                    } else {
                        metadata.topics.get(&update.topic).is_some_and(|info| info.id == update.topic_id)
                    };
                    if current {
                        view.set_leadership(
                            TopicPartition::new(update.topic, update.partition),
                            crate::cluster::Leadership {
                                leader: update.leader,
                                epoch: update.epoch,
                                in_sync: update.in_sync,
                            },
                        );
                    }
                }
            }
            PeerFrame::CatchUpReply(reply) => {
                let shard = self.owner(&reply.topic, reply.partition);
                self.on_shard(shard, move |ctx| {
                    if let Some(waiter) = ctx.catch_up_waiters.borrow_mut().remove(&reply.id) {
                        let _ = waiter.send(reply);
                    }
                });
            }
            _ => {}
        }
    }

    /// Runs `work` on `shard` (inline when it is this one), without waiting for it.
    fn on_shard(self: &Rc<Self>, shard: usize, work: impl FnOnce(Rc<ShardContext>) + Send + 'static) {
        if shard == self.id {
            work(self.clone());
            return;
        }
        let ctx = self.clone();
        glommio::spawn_local(async move {
            ctx.run_on(shard, move |ctx| async move { work(ctx) }).await;
        })
        .detach();
    }

    /// Sends a frame to `peer` over shard 0's link to it, without waiting.
    pub fn send_peer_frame(self: &Rc<Self>, peer: i32, frame: PeerFrame) {
        self.on_shard(0, move |ctx| {
            if let Some(quorum) = ctx.quorum() {
                quorum.send_frame(peer, &frame);
            }
        });
    }

    /// Registers a catch-up request this shard is about to send; the reply resolves the
    /// returned receiver.
    pub fn expect_catch_up_reply(&self) -> (u64, oneshot::Receiver<CatchUpReply>) {
        let id = self.next_catch_up_id.get();
        self.next_catch_up_id.set(id + 1);
        let (sender, receiver) = oneshot::channel();
        self.catch_up_waiters.borrow_mut().insert(id, sender);
        (id, receiver)
    }

    pub fn forget_catch_up(&self, id: u64) {
        self.catch_up_waiters.borrow_mut().remove(&id);
    }

    /// A replica group reopened its log (after cutting it back): later requests use it.
    pub fn replace_log(&self, partition: &TopicPartition, log: PartitionLog) {
        if partition.topic == OFFSETS_TOPIC {
            self.groups.replace_offsets_log(partition.partition, log);
        } else if partition.topic == crate::txn::TXN_STATE_TOPIC {
            self.txns.replace_log(partition.partition, log);
        } else {
            self.logs.borrow_mut().insert(partition.clone(), log);
        }
    }

    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
    }

    /// The metadata quorum (cluster mode, shard 0).
    pub fn quorum(&self) -> Option<Rc<MetadataQuorum>> {
        self.quorum.borrow().clone()
    }

    pub(crate) fn set_quorum(&self, quorum: Rc<MetadataQuorum>) {
        *self.quorum.borrow_mut() = Some(quorum);
    }

    /// The cluster settings; only called in cluster mode.
    pub fn cluster_config(&self) -> &ClusterConfig {
        self.config.cluster.as_ref().expect("cluster mode")
    }

    /// Who leads `topic`-`partition`. Standalone, this node leads every partition. In a
    /// cluster a replicated partition is led by its Raft group's leader (as the local
    /// replica knows it; a node without a replica falls back to the first replica, which
    /// answers NOT_LEADER_OR_FOLLOWER if it does not lead); an unreplicated one by its
    /// only replica. A fenced leader makes the partition offline.
    pub fn partition_leader(&self, metadata: &ClusterMetadata, topic: &str, partition: i32) -> PartitionLeader {
        let Some(info) = metadata.topics.get(topic) else { return PartitionLeader::Unknown };
        if partition < 0 || partition >= info.partitions {
            return PartitionLeader::Unknown;
        }
        let Some(view) = &self.cluster else { return PartitionLeader::Here };
        if self.is_replicated(info, partition) {
            if let Some(leadership) = view.leadership(&TopicPartition::new(topic, partition)) {
                return match leadership.leader {
                    -1 => PartitionLeader::Offline,
                    leader if leader == self.config.node_id => PartitionLeader::Here,
                    leader if metadata.brokers.get(&leader).is_some_and(|b| !b.fenced) => {
                        PartitionLeader::Broker(leader)
                    }
                    _ => PartitionLeader::Offline,
                };
            }
        }
        match info.replicas_of(partition).first() {
            Some(&leader) if metadata.brokers.get(&leader).is_some_and(|b| !b.fenced) => {
                if leader == self.config.node_id {
                    PartitionLeader::Here
                } else {
                    PartitionLeader::Broker(leader)
                }
            }
            _ => PartitionLeader::Offline,
        }
    }

    /// The leader epoch of `topic`-`partition` as this node knows it: a replicated
    /// partition's Raft term; 0 standalone and for unreplicated partitions (what
    /// Metadata reports).
    pub fn leader_epoch(&self, topic: &str, partition: i32) -> i32 {
        self.cluster
            .as_ref()
            .and_then(|view| view.leadership(&TopicPartition::new(topic, partition)))
            .map_or(0, |leadership| leadership.epoch)
    }

    /// Whether this node stores `topic`-`partition`: standalone every partition; in a
    /// cluster the partitions it is a replica of, or is becoming one of (a reassignment).
    fn stores(&self, info: &crate::metadata::TopicMetadata, partition: i32) -> bool {
        self.cluster.is_none() || info.hosts_of(partition).contains(&self.config.node_id)
    }

    /// Runs a consumer-group request on the shard coordinating `group_id`. `Err` holds the
    /// Kafka error when this node cannot: NOT_COORDINATOR when another broker coordinates
    /// the group (the client asks FindCoordinator again), COORDINATOR_NOT_AVAILABLE when
    /// the coordinating shard is gone (shutdown).
    pub async fn call_group<T>(
        self: &Rc<Self>,
        group_id: &str,
        make: impl FnOnce(Reply<T>) -> ShardRequest,
    ) -> Result<T, i16> {
        use kafka_protocol::error::ResponseError;
        if self.group_coordinator_node(group_id) != self.config.node_id {
            return Err(ResponseError::NotCoordinator.code());
        }
        if let Some(view) = &self.cluster {
            let partition = partition_for_group(group_id);
            if view.offsets_replicas(partition).is_some() && !view.offsets_ready(partition) {
                // Leading, but still loading the offsets earlier leaders committed.
                return Err(ResponseError::CoordinatorLoadInProgress.code());
            }
        }
        self.call(self.group_shard(group_id), make).await.ok_or(ResponseError::CoordinatorNotAvailable.code())
    }

    /// The node coordinating `group_id`: standalone this node; in a cluster the leader
    /// of the group's `__consumer_offsets` partition (-1 while it elects one), or with
    /// fewer than three nodes (not replicated) the node that holds that partition.
    pub fn group_coordinator_node(&self, group_id: &str) -> i32 {
        self.offsets_coordinator_node(partition_for_group(group_id))
    }

    /// The node coordinating the groups of `__consumer_offsets` partition `partition`
    /// (see `group_coordinator_node`).
    pub fn offsets_coordinator_node(&self, partition: i32) -> i32 {
        let Some(view) = &self.cluster else { return self.config.node_id };
        if view.offsets_replicas(partition).is_none() {
            return view.offsets_partition_leader(partition);
        }
        match view.leadership(&TopicPartition::new(OFFSETS_TOPIC, partition)) {
            Some(leadership) => leadership.leader,
            None => view.offsets_partition_leader(partition),
        }
    }

    /// Cluster mode, three nodes or more: makes this shard's `__consumer_offsets`
    /// partitions that this node is a replica of Raft groups, whose leader coordinates
    /// their consumer groups; commits go through the group.
    pub async fn replicate_offsets(self: &Rc<Self>) -> Result<(), String> {
        use crate::group::coordinator::OffsetsWriter;
        let Some(view) = self.cluster.clone() else { return Ok(()) };
        for partition in 0..crate::group::offsets::OFFSETS_PARTITIONS {
            let Some(replicas) = view.offsets_replicas(partition) else { return Ok(()) };
            if self.owner(OFFSETS_TOPIC, partition) != self.id || !replicas.contains(&self.config.node_id) {
                continue;
            }
            let Some(log) = self.groups.offsets_partition_log(partition) else { continue };
            let log = match crate::replication::ReplicaState::read(log.dir(), &log.storage_env()).await {
                Ok(Some(_)) => log,
                Ok(None) => {
                    self.groups.set_aside_unreplicated(&self.config.data_dir, partition).await?;
                    self.groups.offsets_partition_log(partition).expect("reopened")
                }
                Err(error) => return Err(format!("{OFFSETS_TOPIC}-{partition}: {error}")),
            };
            let spec = GroupSpec {
                partition: TopicPartition::new(OFFSETS_TOPIC, partition),
                topic_id: OFFSETS_TOPIC_ID,
                replicas,
                target: None,
                node_id: self.config.node_id,
            };
            let group = ReplicaGroup::open(spec, log, self.cluster_config())
                .await
                .map_err(|reason| format!("{OFFSETS_TOPIC}-{partition} cannot be replicated: {reason}"))?;
            self.replica_event(ReplicaEvent::Add(Box::new(group)));
            let ctx = self.clone();
            let writer = OffsetsWriter(Rc::new(move |partition, batch: bytes::BytesMut| {
                let ctx = ctx.clone();
                Box::pin(async move {
                    use kafka_protocol::error::ResponseError;
                    let key = TopicPartition::new(OFFSETS_TOPIC, partition);
                    match ctx.propose(key, batch.freeze(), -1, std::time::Duration::from_secs(30)).await {
                        ProposeOutcome::Appended { .. } => Ok(()),
                        ProposeOutcome::NotLeader => Err(ResponseError::NotCoordinator.code()),
                        ProposeOutcome::TimedOut => Err(ResponseError::RequestTimedOut.code()),
                        other => {
                            tracing::warn!(partition, outcome = ?other, "offsets write failed");
                            Err(ResponseError::CoordinatorNotAvailable.code())
                        }
                    }
                }) as _
            }));
            self.groups.replicate_offsets(partition, writer);
        }
        Ok(())
    }

    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        shard_for(topic, partition, self.shard_count)
    }

    /// The shard coordinating a consumer group: the owner of the group's
    /// `__consumer_offsets` partition.
    pub fn group_shard(&self, group_id: &str) -> usize {
        shard_for(OFFSETS_TOPIC, partition_for_group(group_id), self.shard_count)
    }

    /// Checked on arrival of every partition request: the routing rule must name us.
    pub fn assert_owner(&self, topic: &str, partition: i32) {
        assert_eq!(self.owner(topic, partition), self.id, "partition {topic}-{partition} routed to the wrong shard");
    }

    pub fn log(&self, topic: &str, partition: i32) -> Option<PartitionLog> {
        self.logs.borrow().get(&TopicPartition::new(topic, partition)).cloned()
    }

    /// Every log of this shard with its topic and partition.
    pub fn named_logs(&self) -> Vec<(TopicPartition, PartitionLog)> {
        self.logs.borrow().iter().map(|(key, log)| (key.clone(), log.clone())).collect()
    }

    pub fn logs(&self) -> Vec<PartitionLog> {
        self.logs.borrow().values().cloned().collect()
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Runs `make(reply)` on `shard` and waits for its answer. The owning shard is found
    /// by the caller with `owner`; a call to ourselves runs inline, others cross the mesh.
    /// `None` when the shard is gone (shutting down).
    pub async fn call<T>(self: &Rc<Self>, shard: usize, make: impl FnOnce(Reply<T>) -> ShardRequest) -> Option<T> {
        let (sender, receiver) = oneshot::channel();
        let request = make(sender);
        if shard == self.id {
            // Run it as its own task, exactly as a request from another shard would: if
            // the caller goes away (client disconnects), work such as a controller commit
            // still runs to the end instead of being cancelled halfway.
            glommio::spawn_local(super::handler::execute(self.clone(), request)).detach();
        } else {
            crate::metrics::probes().cross_shard_calls.add(1);
            if self.senders.send_to(shard, request).await.is_err() {
                return None;
            }
        }
        receiver.await.ok()
    }

    /// Runs `work` on `shard` with that shard's context and returns its result (`None`
    /// when the shard is gone). `work` is built here and must be `Send`; the future it
    /// makes is built and polled on the target shard, so it may use that shard's `Rc`
    /// state freely.
    pub async fn run_on<T, F, Fut>(self: &Rc<Self>, shard: usize, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<ShardContext>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.call(shard, move |reply| {
            ShardRequest::Run(ShardTask(Box::new(move |ctx| {
                Box::pin(async move {
                    let _ = reply.send(work(ctx).await);
                })
            })))
        })
        .await
    }

    /// Like [`ShardContext::run_on`], for work that only matters while the caller waits
    /// for it (a long poll's wait for data): when the caller goes away, the work is
    /// dropped on its shard instead of running to its own end. Work with effects (an
    /// append, a metadata change) uses `run_on`, which always finishes.
    pub async fn run_on_while_awaited<T, F, Fut>(self: &Rc<Self>, shard: usize, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<ShardContext>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.call(shard, move |mut reply| {
            ShardRequest::Run(ShardTask(Box::new(move |ctx| {
                Box::pin(async move {
                    let work = Box::pin(work(ctx));
                    let value = match select(work, reply.cancellation()).await {
                        Either::Left((value, _)) => value,
                        Either::Right(_) => return, // the caller is gone
                    };
                    let _ = reply.send(value);
                })
            })))
        })
        .await
    }

    /// Runs `work` on the shard that owns the partition (`shard_for`), with the
    /// partition's log there, or the Kafka error code for why this broker cannot serve
    /// it (`unavailable_code`). The owner asserts the routing rule names it before the
    /// work starts.
    pub async fn on_partition<T, F, Fut>(self: &Rc<Self>, topic: &str, partition: i32, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<ShardContext>, Result<PartitionLog, i16>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let owner = self.owner(topic, partition);
        let topic = topic.to_string();
        self.run_on(owner, move |ctx| {
            ctx.assert_owner(&topic, partition);
            let metadata = ctx.metadata();
            let log = match ctx.partition_leader(&metadata, &topic, partition) {
                PartitionLeader::Here => ctx.log(&topic, partition),
                _ => None,
            };
            let log = log.ok_or_else(|| ctx.unavailable_code(&metadata, &topic, partition));
            work(ctx, log)
        })
        .await
    }

    /// The error for a partition request this broker cannot serve: NOT_LEADER_OR_FOLLOWER
    /// when the partition exists but another broker leads it (the client refreshes its
    /// metadata and goes there), LEADER_NOT_AVAILABLE when its leader is fenced,
    /// UNKNOWN_TOPIC_OR_PARTITION when there is no such partition.
    pub fn unavailable_code(&self, metadata: &ClusterMetadata, topic: &str, partition: i32) -> i16 {
        use kafka_protocol::error::ResponseError;
        match self.partition_leader(metadata, topic, partition) {
            PartitionLeader::Unknown => ResponseError::UnknownTopicOrPartition.code(),
            PartitionLeader::Offline => ResponseError::LeaderNotAvailable.code(),
            // Here without a log: it is being opened, or failed to open.
            PartitionLeader::Broker(_) | PartitionLeader::Here => ResponseError::NotLeaderOrFollower.code(),
        }
    }

    /// Installs a new metadata snapshot: opens logs for partitions this shard now owns,
    /// applies config changes, and closes and deletes logs of removed topics.
    pub async fn apply_metadata(&self, metadata: Arc<ClusterMetadata>) {
        if metadata.version < self.metadata.borrow().version {
            return; // an older snapshot: never go back
        }
        let mut wanted = Vec::new();
        for (topic, info) in &metadata.topics {
            for partition in 0..info.partitions {
                if self.owner(topic, partition) == self.id && self.stores(info, partition) {
                    wanted.push((topic.clone(), partition));
                }
            }
        }
        let previous = self.metadata.borrow().clone();
        // A topic whose id changed was deleted and created again (both in one state, as
        // a node catching up can see them): its old logs go like a deleted topic's.
        let id_changed = |topic: &str| matches!((previous.topics.get(topic), metadata.topics.get(topic)), (Some(old), Some(new)) if old.id != new.id);
        let topics_removed = previous.topics.keys().any(|t| !metadata.topics.contains_key(t) || id_changed(t));
        *self.metadata.borrow_mut() = metadata.clone();

        let removed: Vec<(TopicPartition, PartitionLog)> = {
            let logs = self.logs.borrow();
            logs.iter()
                .filter(|(TopicPartition { topic, partition }, _)| {
                    // Deleted, or (a finished or cancelled reassignment) no longer here.
                    metadata
                        .topics
                        .get(topic)
                        .is_none_or(|info| *partition >= info.partitions || !self.stores(info, *partition))
                        || id_changed(topic)
                })
                .map(|(key, log)| (key.clone(), log.clone()))
                .collect()
        };
        for (TopicPartition { topic, partition }, log) in removed {
            let key = TopicPartition::new(topic.clone(), partition);
            let (reply, removed_group) = oneshot::channel();
            if self.replica_event(ReplicaEvent::Remove { partition: key.clone(), reply }) {
                let _ = removed_group.await;
            }
            self.logs.borrow_mut().remove(&key);
            if let Err(error) = log.close().await {
                tracing::warn!(%topic, partition, %error, "closing deleted partition");
            }
            // Move the directory aside first: a topic created again under the same name
            // gets a fresh directory, whatever the old log's handles still try.
            let dir = self.partition_dir(&topic, partition);
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let tombstone = dir.with_file_name(format!("{topic}-{partition}{DELETED_MARKER}{nanos}"));
            let removed = std::fs::rename(&dir, &tombstone).and_then(|()| std::fs::remove_dir_all(&tombstone));
            if let Err(error) = removed {
                tracing::warn!(dir = %dir.display(), %error, "removing deleted partition's data");
            }
            tracing::info!(%topic, partition, "partition deleted");
        }

        if topics_removed {
            let live: Vec<String> = metadata.topics.keys().cloned().collect();
            self.groups.forget_topics(&live).await;
        }
        for (topic, partition) in wanted {
            let configs = &metadata.topics[&topic].configs;
            let layers = metadata.broker_layers(self.config.node_id, &self.config.static_broker_configs);
            let config = match log_config(configs, layers) {
                Ok(config) => config,
                Err(reason) => {
                    tracing::error!(%topic, %reason, "topic config rejected by storage; using defaults");
                    crate::storage::LogConfig { flush: self.config.flush, ..Default::default() }
                }
            };
            if let Some(log) = self.log(&topic, partition) {
                let info = &metadata.topics[&topic];
                let assigned = |m: &ClusterMetadata| {
                    m.topics.get(&topic).map(|t| (t.replicas_of(partition).to_vec(), t.reassignment(partition)))
                };
                if self.is_replicated(info, partition) && assigned(&previous) != assigned(&metadata) {
                    let (replicas, target) = assigned(&metadata).expect("the topic exists");
                    let partition = TopicPartition::new(topic.clone(), partition);
                    self.replica_event(ReplicaEvent::Assign { partition, replicas, target });
                }
                if log.config() != config {
                    if let Err(error) = log.set_config(config) {
                        tracing::warn!(%topic, partition, %error, "applying topic config");
                    }
                }
                continue;
            }
            let dir = self.partition_dir(&topic, partition);
            let id = metadata.topics[&topic].id;
            let claim = read_claim(&dir);
            if let DirectoryClaim::Topic(owner) = claim {
                if owner != id {
                    // Another topic's data under this name (a deleted topic's, or a
                    // standalone node's that was not imported): keep it, out of the way.
                    match set_aside(&dir, owner) {
                        Ok(moved) => tracing::warn!(
                            %topic, partition, kept = %moved.display(),
                            "partition directory belongs to another topic id; set aside"
                        ),
                        Err(error) => {
                            tracing::error!(%topic, partition, %error, "partition offline: its directory belongs to another topic id");
                            continue;
                        }
                    }
                }
            }
            match PartitionLog::open(&dir, config, self.storage_env.clone()).await {
                Ok(mut log) => {
                    if claim != DirectoryClaim::Topic(id) {
                        if let Err(error) = write_claim(&dir, id) {
                            tracing::warn!(%topic, partition, %error, "cannot record the partition's topic id");
                        }
                    }
                    let info = &metadata.topics[&topic];
                    if self.is_replicated(info, partition) {
                        let spec = GroupSpec {
                            partition: TopicPartition::new(topic.clone(), partition),
                            topic_id: id,
                            replicas: info.replicas_of(partition).to_vec(),
                            target: info.reassignment(partition),
                            node_id: self.config.node_id,
                        };
                        match ReplicaGroup::open(spec, log.clone(), self.cluster_config()).await {
                            Ok(group) => {
                                // Opening may have emptied the log (a new handle).
                                log = group.log.clone();
                                self.replica_event(ReplicaEvent::Add(Box::new(group)));
                            }
                            Err(reason) => {
                                tracing::error!(%topic, partition, %reason, "partition offline: its replica group could not start");
                                let _ = log.close().await;
                                continue;
                            }
                        }
                    }
                    self.logs.borrow_mut().insert(TopicPartition::new(topic, partition), log);
                }
                Err(error) => tracing::error!(%topic, partition, %error, "partition offline: could not open its log"),
            }
        }
    }

    /// Closes every log (clean shutdown): queued writes are flushed and synced.
    /// Logs are closed concurrently, at most `LOGS_CLOSED_AT_ONCE` at a time: each close
    /// is a few small file operations on the blocking pool, and one after the other they
    /// add up (5,000 partitions: 5.0 s one by one; 0.6-0.8 s for the whole shutdown now,
    /// see perf/README.md).
    pub async fn close_logs(&self) {
        use futures_util::stream::{self, StreamExt};
        // The replica driver first: it saves each group's state and stops writing.
        let (reply, closed) = oneshot::channel();
        if self.replica_event(ReplicaEvent::Close { reply }) {
            let _ = closed.await;
        }
        let logs: Vec<_> = self.logs.borrow_mut().drain().collect();
        stream::iter(logs)
            .for_each_concurrent(LOGS_CLOSED_AT_ONCE, |(TopicPartition { topic, partition }, log)| async move {
                if let Err(error) = log.close().await {
                    tracing::warn!(%topic, partition, %error, "closing log");
                }
            })
            .await;
    }
}
