//! The group coordinator of one shard: the groups whose `__consumer_offsets` partition
//! this shard owns, their pending JoinGroup/SyncGroup requests, and their committed
//! offsets. The state machine (`state.rs`) decides; this file keeps requests waiting,
//! delivers delayed answers, drives timers (a tick every `TICK`), and persists offsets.
//!
//! The coordinating shard for a group is `shard_for("__consumer_offsets",
//! partition_for_group(group), shards)`; requests arriving elsewhere are forwarded there
//! over the mesh (`GroupRequest`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::select;
use kafka_protocol::error::ResponseError;

use crate::protocol::topic_partition::TopicPartition;
use crate::storage::clock::{Clock, SystemClock};

use futures_util::future::LocalBoxFuture;

use super::offsets::{
    encode_entries, encode_staged, encode_staged_end, partition_for_group, replay, CommittedOffset, OffsetKey,
    OffsetPartition, OFFSETS_PARTITIONS, OFFSETS_TOPIC,
};
use super::state::{
    Effect, Group, GroupConfig, GroupState, JoinRequest, JoinResult, LeavingMember, MemberAssignment,
    MemberDescription, Reply, SyncResult,
};

/// How often group timers (sessions, rebalance and sync timeouts) are checked.
pub const TICK: Duration = Duration::from_millis(100);
/// Offsets maintenance (retention of empty groups' offsets) runs at most this often...
const MAINTENANCE_INTERVAL_MS_MAX: i64 = 60_000;
/// ...and at least this often relative to the retention, so a short retention is kept.
const MAINTENANCE_PER_RETENTION: i64 = 4;

type Sender<T> = oneshot::Sender<T>;

/// A group as DescribeGroups / ListGroups show it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub error_code: i16,
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// One committed offset in an OffsetCommit or OffsetFetch.
#[derive(Debug, Clone)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub error_code: i16,
}

/// OffsetDelete's answer: the group's error, and one code per partition asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDeletion {
    pub error_code: i16,
    pub partition_codes: Vec<i16>,
}

#[derive(Debug)]
pub enum GroupRequest {
    Join {
        group_id: String,
        request: JoinRequest,
        reply: Sender<JoinResult>,
    },
    Sync {
        group_id: String,
        member_id: String,
        generation: i32,
        instance_id: Option<String>,
        assignments: Vec<MemberAssignment>,
        reply: Sender<SyncResult>,
    },
    Heartbeat {
        group_id: String,
        member_id: String,
        generation: i32,
        instance_id: Option<String>,
        reply: Sender<i16>,
    },
    Leave {
        group_id: String,
        members: Vec<LeavingMember>,
        reply: Sender<Vec<i16>>,
    },
    Commit {
        group_id: String,
        member_id: String,
        generation: i32,
        instance_id: Option<String>,
        offsets: Vec<PartitionOffset>,
        reply: Sender<Vec<i16>>,
    },
    /// `None` partitions: every committed offset of the group. With `require_stable`, a
    /// partition an open transaction staged an offset for answers UNSTABLE_OFFSET_COMMIT.
    FetchOffsets {
        group_id: String,
        partitions: Option<Vec<TopicPartition>>,
        require_stable: bool,
        reply: Sender<Vec<PartitionOffset>>,
    },
    /// TxnOffsetCommit: stage offsets in `producer_id`'s transaction.
    TxnCommit {
        group_id: String,
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        member_id: String,
        generation: i32,
        instance_id: Option<String>,
        offsets: Vec<PartitionOffset>,
        reply: Sender<Vec<i16>>,
    },
    /// `producer_id`'s transaction ended: the offsets it staged in offsets partition
    /// `partition` are committed or dropped. `Err` is a Kafka error code.
    EndTxn {
        partition: i32,
        producer_id: i64,
        commit: bool,
        reply: Sender<Result<(), i16>>,
    },
    List {
        reply: Sender<Vec<GroupDescription>>,
    },
    Describe {
        group_id: String,
        reply: Sender<GroupDescription>,
    },
    Delete {
        group_id: String,
        reply: Sender<i16>,
    },
    DeleteOffsets {
        group_id: String,
        partitions: Vec<TopicPartition>,
        reply: Sender<OffsetDeletion>,
    },
}

/// How a replicated offsets partition's entries are written: proposed to the
/// partition's Raft group (installed by the shard in cluster mode). `Err` is the Kafka
/// error code for the client (NOT_COORDINATOR when this node no longer leads it).
#[derive(Clone)]
pub struct OffsetsWriter(pub Rc<OffsetsWrite>);

/// Writes one batch of offsets entries to a partition; `Err` is a Kafka error code.
pub type OffsetsWrite = dyn Fn(i32, bytes::BytesMut) -> LocalBoxFuture<'static, Result<(), i16>>;

/// An offsets entry: a key and its new value (`None` deletes it).
type OffsetsEntry = (OffsetKey, Option<CommittedOffset>);

impl std::fmt::Debug for OffsetsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OffsetsWriter")
    }
}

/// The transactional producer of a TxnOffsetCommit.
#[derive(Debug, Clone)]
pub struct TxnProducer {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// Asks the transaction coordinator whether `producer`'s transaction is open and includes
/// offsets partition `partition` (installed by the shard layer); `Err` is a Kafka error
/// code.
#[derive(Clone)]
pub struct TxnVerifier(pub Rc<TxnVerify>);

/// See [`TxnVerifier`].
pub type TxnVerify = dyn Fn(TxnProducer, i32) -> LocalBoxFuture<'static, Result<(), i16>>;

impl std::fmt::Debug for TxnVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TxnVerifier")
    }
}

#[derive(Debug, Default)]
pub struct GroupCoordinator {
    /// Checks TxnOffsetCommit requests with the transaction coordinator (none: refused).
    txn_verifier: RefCell<Option<TxnVerifier>>,
    /// Cluster mode: the offsets partitions replicated by a Raft group, and how their
    /// entries are written (standalone, and unreplicated partitions, append directly).
    replicated: RefCell<HashMap<i32, OffsetsWriter>>,
    /// Offsets committed before their partition was replicated (a standalone node that
    /// joined a cluster), to be written through the Raft group when this node leads it.
    pending_import: RefCell<HashMap<i32, Vec<OffsetsEntry>>>,
    groups: RefCell<HashMap<String, Group>>,
    pending_joins: RefCell<HashMap<(String, String), Sender<JoinResult>>>,
    pending_syncs: RefCell<HashMap<(String, String), Sender<SyncResult>>>,
    offsets: RefCell<HashMap<i32, OffsetPartition>>,
    config: GroupConfig,
    clock: SystemClock,
    /// Set while the timer loop sleeps with no group needing ticks.
    wake_timers: RefCell<Option<oneshot::Sender<()>>>,
    /// Each group's membership record as the log has it (see `membership`).
    membership_written: RefCell<HashMap<String, crate::group::membership::GroupSnapshot>>,
    /// Groups whose emptied membership is being removed by the timer loop.
    membership_removing: Rc<RefCell<std::collections::HashSet<String>>>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> GroupCoordinator {
        GroupCoordinator { config, ..GroupCoordinator::default() }
    }

    /// Every committed offset this shard holds: ((group, topic, partition), offset).
    pub fn committed_offsets(&self) -> Vec<(OffsetKey, i64)> {
        let partitions = self.offsets.borrow();
        partitions.values().flat_map(|p| p.all().map(|(key, value)| (key.clone(), value.offset))).collect()
    }

    /// Opens and replays the offsets partitions `owns` says are this shard's.
    pub async fn load(&self, data_dir: &Path, owns: impl Fn(i32) -> bool) -> Result<(), String> {
        for partition in (0..OFFSETS_PARTITIONS).filter(|p| owns(*p)) {
            let mut loaded = OffsetPartition::open(data_dir, partition)
                .await
                .map_err(|e| format!("cannot load {OFFSETS_TOPIC}-{partition}: {e}"))?;
            self.restore_groups(loaded.take_restored_groups());
            self.offsets.borrow_mut().insert(partition, loaded);
        }
        Ok(())
    }

    /// Runs group timers forever (spawned once per shard), and offsets maintenance
    /// (retention of empty groups' offsets) every minute, or more often when
    /// the offsets retention is short. While no group has members or a phase under way
    /// the loop sleeps until the next maintenance or the next group request, so an idle
    /// shard does not wake ten times a second for nothing.
    pub async fn run_timers(self: Rc<Self>) {
        let interval_ms = (self.config.offsets_retention_ms / MAINTENANCE_PER_RETENTION)
            .clamp(TICK.as_millis() as i64, MAINTENANCE_INTERVAL_MS_MAX);
        let maintenance_interval = Duration::from_millis(interval_ms as u64);
        let mut next_maintenance = Instant::now() + maintenance_interval;
        loop {
            if self.groups.borrow().values().any(Group::needs_ticks) {
                glommio::timer::sleep(TICK).await;
            } else {
                let (wake, woken) = oneshot::channel();
                *self.wake_timers.borrow_mut() = Some(wake);
                let rest = next_maintenance.saturating_duration_since(Instant::now());
                let _ = select(Box::pin(glommio::timer::sleep(rest)), woken).await;
                self.wake_timers.borrow_mut().take();
            }
            if Instant::now() >= next_maintenance {
                next_maintenance = Instant::now() + maintenance_interval;
                self.maintain_offsets().await;
            }
            let now = self.clock.now_ms();
            let mut all = Vec::new();
            for (id, group) in self.groups.borrow_mut().iter_mut() {
                let effects = group.tick(now);
                if !effects.is_empty() {
                    all.push((id.clone(), effects));
                }
            }
            for (id, effects) in all {
                self.deliver(&id, effects);
            }
            // Groups whose members all expired: their membership record goes.
            let emptied: Vec<String> = {
                let groups = self.groups.borrow();
                self.membership_written
                    .borrow()
                    .keys()
                    .filter(|id| groups.get(*id).is_none_or(Group::is_empty))
                    .cloned()
                    .collect()
            };
            for id in emptied {
                if !self.membership_removing.borrow_mut().insert(id.clone()) {
                    continue;
                }
                let coordinator = self.clone();
                glommio::spawn_local(async move {
                    let _ = coordinator.save_membership(&id).await;
                    coordinator.membership_removing.borrow_mut().remove(&id);
                })
                .detach();
            }
        }
    }

    fn deliver(&self, group_id: &str, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Join { member_id, result } => {
                    if let Some(sender) = self.pending_joins.borrow_mut().remove(&(group_id.to_string(), member_id)) {
                        let _ = sender.send(result);
                    }
                }
                Effect::Sync { member_id, result } => {
                    if let Some(sender) = self.pending_syncs.borrow_mut().remove(&(group_id.to_string(), member_id)) {
                        let _ = sender.send(result);
                    }
                }
            }
        }
    }

    fn with_group<T>(&self, group_id: &str, create: bool, f: impl FnOnce(&mut Group) -> T) -> Option<T> {
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group_id) {
            if !create {
                return None;
            }
            groups.insert(group_id.to_string(), Group::new(group_id.to_string(), self.config));
        }
        groups.get_mut(group_id).map(f)
    }

    pub async fn execute(&self, request: GroupRequest) {
        // The request may start a group's timers: let the timer loop tick again.
        if let Some(wake) = self.wake_timers.borrow_mut().take() {
            let _ = wake.send(());
        }
        let now = self.clock.now_ms();
        match request {
            GroupRequest::Join { group_id, request, reply } => {
                let (answer, effects) = self.with_group(&group_id, true, |g| g.join(now, request)).expect("created");
                self.deliver(&group_id, effects);
                match answer {
                    Reply::Now(result) => {
                        let _ = reply.send(result);
                    }
                    Reply::Later { member_id } => {
                        if let Some(old) = self.pending_joins.borrow_mut().insert((group_id, member_id.clone()), reply)
                        {
                            let _ = old.send(error_join(ResponseError::RebalanceInProgress, &member_id));
                        }
                    }
                }
            }
            GroupRequest::Sync { group_id, member_id, generation, instance_id, assignments, reply } => {
                let outcome = self.with_group(&group_id, false, |g| {
                    g.sync(now, &member_id, generation, instance_id.as_deref(), assignments)
                });
                match outcome {
                    None => {
                        let _ = reply.send(error_sync(ResponseError::UnknownMemberId));
                    }
                    Some((answer, effects)) => {
                        // The leader's assignments complete a generation: it is written
                        // before any member hears of it. A failed write fails the sync
                        // (the members find the coordinator again and rejoin).
                        let (answer, effects) = match self.save_membership(&group_id).await {
                            Ok(()) => (answer, effects),
                            Err(code) => failed_sync(code, answer, effects),
                        };
                        self.deliver(&group_id, effects);
                        match answer {
                            Reply::Now(result) => {
                                let _ = reply.send(result);
                            }
                            Reply::Later { member_id } => {
                                self.pending_syncs.borrow_mut().insert((group_id, member_id), reply);
                            }
                        }
                    }
                }
            }
            GroupRequest::Heartbeat { group_id, member_id, generation, instance_id, reply } => {
                let code = self
                    .with_group(&group_id, false, |g| g.heartbeat(now, &member_id, generation, instance_id.as_deref()))
                    .unwrap_or(ResponseError::UnknownMemberId.code());
                let _ = reply.send(code);
            }
            GroupRequest::Leave { group_id, members, reply } => {
                let outcome = self.with_group(&group_id, false, |g| g.leave(now, &members));
                let codes = match outcome {
                    None => vec![ResponseError::UnknownMemberId.code(); members.len()],
                    Some((codes, effects)) => {
                        self.deliver(&group_id, effects);
                        codes
                    }
                };
                let _ = reply.send(codes);
                let _ = self.save_membership(&group_id).await;
            }
            GroupRequest::Commit { group_id, member_id, generation, instance_id, offsets, reply } => {
                let _ = reply
                    .send(self.commit(now, &group_id, &member_id, generation, instance_id.as_deref(), offsets).await);
            }
            GroupRequest::FetchOffsets { group_id, partitions, require_stable, reply } => {
                let _ = reply.send(self.fetch_offsets(&group_id, partitions, require_stable));
            }
            GroupRequest::TxnCommit {
                group_id,
                transactional_id,
                producer_id,
                producer_epoch,
                member_id,
                generation,
                instance_id,
                offsets,
                reply,
            } => {
                // Without a member and generation (v0-2, or a producer outside the
                // group) Kafka checks nothing; with them, what OffsetCommit checks.
                let valid = if generation < 0 && member_id.is_empty() {
                    Ok(())
                } else {
                    self.with_group(&group_id, true, |g| {
                        g.validate_commit(now, &member_id, generation, instance_id.as_deref())
                    })
                    .expect("created")
                };
                let codes = match valid {
                    Err(code) => vec![code; offsets.len()],
                    Ok(()) => {
                        let producer = TxnProducer { transactional_id, producer_id, producer_epoch };
                        self.stage_txn_offsets(now, &group_id, producer, &offsets).await
                    }
                };
                let _ = reply.send(codes);
            }
            GroupRequest::EndTxn { partition, producer_id, commit, reply } => {
                let _ = reply.send(self.end_txn_offsets(now, partition, producer_id, commit).await);
            }
            GroupRequest::List { reply } => {
                let mut names: Vec<String> = self.groups.borrow().keys().cloned().collect();
                for partition in self.offsets.borrow().values() {
                    names.extend(partition.groups());
                }
                names.sort();
                names.dedup();
                let _ =
                    reply.send(names.iter().map(|name| self.describe(name)).filter(|d| d.state != "Dead").collect());
            }
            GroupRequest::Describe { group_id, reply } => {
                let _ = reply.send(self.describe(&group_id));
            }
            GroupRequest::Delete { group_id, reply } => {
                let _ = reply.send(self.delete(&group_id).await);
                let _ = self.save_membership(&group_id).await;
            }
            GroupRequest::DeleteOffsets { group_id, partitions, reply } => {
                let _ = reply.send(self.delete_offsets(&group_id, partitions).await);
            }
        }
    }

    /// Writes offsets entries to partition `partition`: through its Raft group when it
    /// is replicated, straight to its log otherwise. `Err` is the client's error code.
    async fn write(
        &self,
        partition: i32,
        log: &crate::storage::PartitionLog,
        entries: &[(OffsetKey, Option<CommittedOffset>)],
    ) -> Result<(), i16> {
        match encode_entries(entries) {
            Some(batch) => self.write_batch(partition, log, batch).await,
            None => Ok(()),
        }
    }

    /// Writes one batch of offsets records to partition `partition` (see `write`).
    async fn write_batch(
        &self,
        partition: i32,
        log: &crate::storage::PartitionLog,
        batch: bytes::BytesMut,
    ) -> Result<(), i16> {
        let writer = self.replicated.borrow().get(&partition).cloned();
        match writer {
            Some(writer) => (writer.0)(partition, batch).await,
            None => log.append(batch).await.map(drop).map_err(|error| {
                tracing::warn!(partition, %error, "offsets write failed");
                ResponseError::CoordinatorNotAvailable.code()
            }),
        }
    }

    /// Stages a transaction's offsets for `group_id` (durably; visible once it commits).
    /// Under the partition's gate the transaction coordinator confirms the transaction is
    /// open with this partition and the producer is current: the end of the transaction
    /// (`end_txn_offsets`) takes the same gate, so a late or fenced request can never
    /// stage offsets the end has already passed.
    async fn stage_txn_offsets(
        &self,
        now: i64,
        group_id: &str,
        producer: TxnProducer,
        offsets: &[PartitionOffset],
    ) -> Vec<i16> {
        let Some((log, gate)) = self.offsets_log(group_id) else {
            return vec![ResponseError::NotCoordinator.code(); offsets.len()];
        };
        let _permit = gate.acquire_permit(1).await.expect("offsets gate never closes");
        let Some(verify) = self.txn_verifier.borrow().clone() else {
            return vec![ResponseError::CoordinatorNotAvailable.code(); offsets.len()];
        };
        let producer_id = producer.producer_id;
        if let Err(code) = (verify.0)(producer, partition_for_group(group_id)).await {
            return vec![code; offsets.len()];
        }
        let entries = committed_entries(group_id, offsets, now);
        let Some(batch) = encode_staged(producer_id, &entries, now) else { return Vec::new() };
        let partition = partition_for_group(group_id);
        match self.write_batch(partition, &log, batch).await {
            Ok(()) => {
                if let Some(offsets_partition) = self.offsets.borrow_mut().get_mut(&partition) {
                    offsets_partition.stage(producer_id, entries);
                }
                vec![0; offsets.len()]
            }
            Err(code) => vec![code; offsets.len()],
        }
    }

    /// Commits or drops what `producer_id`'s transaction staged in offsets partition
    /// `partition` (nothing staged: nothing to do).
    async fn end_txn_offsets(&self, now: i64, partition: i32, producer_id: i64, commit: bool) -> Result<(), i16> {
        let Some((log, gate)) = self.offsets.borrow().get(&partition).map(|p| (p.log(), p.gate())) else {
            return Err(ResponseError::NotCoordinator.code());
        };
        let _permit = gate.acquire_permit(1).await.expect("offsets gate never closes");
        let staged = self.offsets.borrow().get(&partition).map(|p| p.staged_by(producer_id)).unwrap_or_default();
        let Some(batch) = encode_staged_end(producer_id, &staged, commit, now) else { return Ok(()) };
        self.write_batch(partition, &log, batch).await?;
        if let Some(offsets_partition) = self.offsets.borrow_mut().get_mut(&partition) {
            offsets_partition.end_staged(producer_id, commit);
        }
        Ok(())
    }

    /// Installs the check of TxnOffsetCommit requests against the transaction coordinator.
    pub fn verify_transactions_with(&self, verifier: TxnVerifier) {
        *self.txn_verifier.borrow_mut() = Some(verifier);
    }

    /// Cluster mode: offsets partition `partition` is replicated; its entries go through
    /// `writer`.
    pub fn replicate_offsets(&self, partition: i32, writer: OffsetsWriter) {
        self.replicated.borrow_mut().insert(partition, writer);
        // Its groups come back when this node leads it (`lead_offsets`).
        self.follow_offsets(partition);
    }

    /// The log of offsets partition `partition`, if this shard holds it.
    pub fn offsets_partition_log(&self, partition: i32) -> Option<crate::storage::PartitionLog> {
        self.offsets.borrow().get(&partition).map(OffsetPartition::log)
    }

    /// The replica group reopened the partition's log.
    pub fn replace_offsets_log(&self, partition: i32, log: crate::storage::PartitionLog) {
        if let Some(offsets) = self.offsets.borrow_mut().get_mut(&partition) {
            offsets.set_log(log);
        }
    }

    /// This node now leads replicated offsets partition `partition`, and its log holds
    /// every commit of earlier leaders: reload the offsets from it.
    pub async fn lead_offsets(&self, partition: i32) -> Result<usize, String> {
        let Some(gate) = self.offsets.borrow().get(&partition).map(OffsetPartition::gate) else {
            return Err(format!("{OFFSETS_TOPIC}-{partition} is not on this shard"));
        };
        let _permit = gate.acquire_permit(1).await.expect("offsets gate never closes");
        let log = self.offsets_partition_log(partition).expect("checked above");
        let mut replayed = replay(&log).await.map_err(|e| e.to_string())?;
        self.restore_groups(std::mem::take(&mut replayed.groups));
        let count = replayed.offsets.len();
        let offsets = &replayed.offsets;
        let imported: Vec<(OffsetKey, Option<CommittedOffset>)> = self
            .pending_import
            .borrow()
            .get(&partition)
            .map(|entries| entries.iter().filter(|(key, _)| !offsets.contains_key(key)).cloned().collect())
            .unwrap_or_default();
        if let Some(offsets_partition) = self.offsets.borrow_mut().get_mut(&partition) {
            offsets_partition.reset(replayed);
        }
        if !imported.is_empty() {
            let log = self.offsets_partition_log(partition).expect("checked above");
            self.write(partition, &log, &imported).await.map_err(|code| format!("importing offsets: error {code}"))?;
            tracing::info!(partition, offsets = imported.len(), "offsets committed before replication imported");
            if let Some(offsets_partition) = self.offsets.borrow_mut().get_mut(&partition) {
                offsets_partition.apply(imported);
            }
        }
        self.pending_import.borrow_mut().remove(&partition);
        Ok(count)
    }

    /// Before partition `partition` becomes a Raft group: if its log holds offsets
    /// written without replication (a standalone node that joined a cluster), they are
    /// kept for import (written through the group once this node leads it), the old
    /// directory is moved aside (`<dir>.pre-replication-<ns>`) and the group starts on
    /// an empty log, the same on every replica. True when that happened.
    pub async fn set_aside_unreplicated(&self, data_dir: &Path, partition: i32) -> Result<bool, String> {
        let Some(log) = self.offsets_partition_log(partition) else { return Ok(false) };
        let offsets = log.offsets();
        if offsets.log_end.offset() <= offsets.log_start.offset() {
            return Ok(false);
        }
        let entries: Vec<(OffsetKey, Option<CommittedOffset>)> =
            self.offsets.borrow()[&partition].all().map(|(key, value)| (key.clone(), Some(value.clone()))).collect();
        log.close().await.map_err(|e| e.to_string())?;
        let dir = log.dir().to_path_buf();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let aside = dir.with_file_name(format!("{OFFSETS_TOPIC}-{partition}.pre-replication-{nanos}"));
        std::fs::rename(&dir, &aside).map_err(|e| format!("moving {} aside: {e}", dir.display()))?;
        let fresh = OffsetPartition::open(data_dir, partition).await.map_err(|e| e.to_string())?;
        tracing::warn!(
            partition, offsets = entries.len(), kept = %aside.display(),
            "offsets written before replication: moved aside, to be imported through the replica group"
        );
        self.offsets.borrow_mut().insert(partition, fresh);
        self.pending_import.borrow_mut().insert(partition, entries);
        Ok(true)
    }

    /// Groups as an earlier coordinator left them (stable, with their members and
    /// generation): their members go on without rejoining.
    fn restore_groups(&self, snapshots: HashMap<String, crate::group::membership::GroupSnapshot>) {
        let now = self.clock.now_ms();
        let mut groups = self.groups.borrow_mut();
        let mut written = self.membership_written.borrow_mut();
        for (id, snapshot) in snapshots {
            written.insert(id.clone(), snapshot.clone());
            tracing::info!(group = %id, generation = snapshot.generation, members = snapshot.members.len(), "restored a stable group");
            groups.insert(id.clone(), Group::restore(id, self.config, snapshot, now));
        }
        // Their members' sessions run from now: the timer loop must tick them.
        if let Some(wake) = self.wake_timers.borrow_mut().take() {
            let _ = wake.send(());
        }
    }

    /// Writes `group_id`'s membership when it changed: a new stable generation (before
    /// its members hear their assignments, as Kafka does, so a member never holds a
    /// generation a new coordinator does not know), or its tombstone once the group is
    /// empty or gone. `Err` is the Kafka error code of a failed write.
    async fn save_membership(&self, group_id: &str) -> Result<(), i16> {
        if self.membership_change(group_id).is_none() {
            return Ok(());
        }
        let Some((log, gate)) = self.offsets_log(group_id) else { return Ok(()) };
        let _permit = gate.acquire_permit(1).await.expect("offsets gate never closes");
        let Some(change) = self.membership_change(group_id) else { return Ok(()) };
        let now = self.clock.now_ms();
        let Some(batch) = crate::group::offsets::encode_membership(group_id, change.as_ref(), now) else {
            return Ok(());
        };
        match self.write_batch(partition_for_group(group_id), &log, batch).await {
            Ok(()) => {
                let mut written = self.membership_written.borrow_mut();
                match change {
                    Some(snapshot) => written.insert(group_id.to_string(), snapshot),
                    None => written.remove(group_id),
                };
                Ok(())
            }
            Err(code) => {
                tracing::debug!(group = %group_id, code, "could not save the group's membership");
                Err(code)
            }
        }
    }

    /// What `group_id`'s membership record should change to: `Some(Some(snapshot))` a
    /// stable group that differs from the record (a new generation, or a static member
    /// replaced within one), `Some(None)` the tombstone of a group that emptied or went,
    /// `None` nothing.
    fn membership_change(&self, group_id: &str) -> Option<Option<crate::group::membership::GroupSnapshot>> {
        let groups = self.groups.borrow();
        let group = groups.get(group_id);
        let written = self.membership_written.borrow();
        let written = written.get(group_id);
        match (group.and_then(Group::snapshot), written) {
            (Some(snapshot), written) if written != Some(&snapshot) => Some(Some(snapshot)),
            (None, Some(_)) if group.is_none_or(Group::is_empty) => Some(None),
            _ => None,
        }
    }

    /// This node no longer leads offsets partition `partition`: its groups' members,
    /// generations and waiting requests go (their clients find the new coordinator and
    /// rejoin there).
    pub fn follow_offsets(&self, partition: i32) {
        let mine = |group: &str| partition_for_group(group) == partition;
        self.groups.borrow_mut().retain(|group, _| !mine(group));
        self.membership_written.borrow_mut().retain(|group, _| !mine(group));
        self.pending_joins.borrow_mut().retain(|(group, _), _| !mine(group));
        self.pending_syncs.borrow_mut().retain(|(group, _), _| !mine(group));
    }

    fn offsets_log(&self, group_id: &str) -> Option<(crate::storage::PartitionLog, Rc<glommio::sync::Semaphore>)> {
        self.offsets.borrow().get(&partition_for_group(group_id)).map(|p| (p.log(), p.gate()))
    }

    async fn commit(
        &self,
        now: i64,
        group_id: &str,
        member_id: &str,
        generation: i32,
        instance_id: Option<&str>,
        offsets: Vec<PartitionOffset>,
    ) -> Vec<i16> {
        let valid = self
            .with_group(group_id, true, |g| g.validate_commit(now, member_id, generation, instance_id))
            .expect("created");
        if let Err(code) = valid {
            return vec![code; offsets.len()];
        }
        let Some((log, gate)) = self.offsets_log(group_id) else {
            return vec![ResponseError::NotCoordinator.code(); offsets.len()];
        };
        let _permit = gate.acquire_permit(1).await.expect("offsets gate never closes");
        let entries: Vec<(OffsetKey, Option<CommittedOffset>)> =
            committed_entries(group_id, &offsets, now).into_iter().map(|(key, value)| (key, Some(value))).collect();
        match self.write(partition_for_group(group_id), &log, &entries).await {
            Ok(()) => {
                if let Some(partition) = self.offsets.borrow_mut().get_mut(&partition_for_group(group_id)) {
                    partition.apply(entries);
                }
                vec![0; offsets.len()]
            }
            Err(code) => {
                tracing::warn!(group = group_id, code, "offset commit failed");
                vec![code; offsets.len()]
            }
        }
    }

    fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Vec<TopicPartition>>,
        require_stable: bool,
    ) -> Vec<PartitionOffset> {
        let offsets = self.offsets.borrow();
        let Some(partition) = offsets.get(&partition_for_group(group_id)) else { return Vec::new() };
        let found = |topic: &str, p: i32| {
            let key = (group_id.to_string(), topic.to_string(), p);
            if require_stable && partition.is_unstable(&key) {
                return PartitionOffset {
                    topic: topic.to_string(),
                    partition: p,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: None,
                    error_code: ResponseError::UnstableOffsetCommit.code(),
                };
            }
            match partition.get(&key) {
                Some(c) => PartitionOffset {
                    topic: topic.to_string(),
                    partition: p,
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata: c.metadata.clone(),
                    error_code: 0,
                },
                None => PartitionOffset {
                    topic: topic.to_string(),
                    partition: p,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: None,
                    error_code: 0,
                },
            }
        };
        match partitions {
            Some(list) => list.iter().map(|tp| found(&tp.topic, tp.partition)).collect(),
            None => partition.group_offsets(group_id).into_iter().map(|((_, t, p), _)| found(&t, p)).collect(),
        }
    }

    fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.groups.borrow();
        match groups.get(group_id) {
            Some(group) => GroupDescription {
                error_code: 0,
                group_id: group_id.to_string(),
                state: group.state().name().to_string(),
                protocol_type: group.protocol_type().unwrap_or("").to_string(),
                protocol: group.protocol().unwrap_or("").to_string(),
                members: group.describe(),
            },
            None => {
                let has_offsets = self
                    .offsets
                    .borrow()
                    .get(&partition_for_group(group_id))
                    .is_some_and(|p| !p.group_offsets(group_id).is_empty());
                GroupDescription {
                    error_code: 0,
                    group_id: group_id.to_string(),
                    state: if has_offsets { "Empty" } else { "Dead" }.to_string(),
                    protocol_type: if has_offsets { "consumer" } else { "" }.to_string(),
                    protocol: String::new(),
                    members: Vec::new(),
                }
            }
        }
    }

    async fn delete(&self, group_id: &str) -> i16 {
        let state = self.groups.borrow().get(group_id).map(Group::state);
        let has_offsets = self
            .offsets
            .borrow()
            .get(&partition_for_group(group_id))
            .is_some_and(|p| !p.group_offsets(group_id).is_empty());
        match state {
            Some(GroupState::Empty) | Some(GroupState::Dead) => {}
            Some(_) => return ResponseError::NonEmptyGroup.code(),
            None if !has_offsets => return ResponseError::GroupIdNotFound.code(),
            None => {}
        }
        if let Some((log, gate)) = self.offsets_log(group_id) {
            let _permit = gate.acquire_permit(1).await.expect("offsets gate never closes");
            let entries: Vec<(OffsetKey, Option<CommittedOffset>)> = self
                .offsets
                .borrow()
                .get(&partition_for_group(group_id))
                .map(|p| p.group_offsets(group_id).into_iter().map(|(k, _)| (k, None)).collect())
                .unwrap_or_default();
            if let Err(code) = self.write(partition_for_group(group_id), &log, &entries).await {
                return code;
            }
            if let Some(partition) = self.offsets.borrow_mut().get_mut(&partition_for_group(group_id)) {
                partition.apply(entries);
            }
        }
        if let Some(group) = self.groups.borrow_mut().get_mut(group_id) {
            group.mark_dead();
        }
        self.groups.borrow_mut().remove(group_id);
        0
    }

    async fn delete_offsets(&self, group_id: &str, partitions: Vec<TopicPartition>) -> OffsetDeletion {
        let subscribed = self
            .groups
            .borrow()
            .get(group_id)
            .filter(|g| !g.is_empty())
            .map(|g| g.subscribed_topics())
            .unwrap_or_default();
        let Some((log, gate)) = self.offsets_log(group_id) else {
            return OffsetDeletion {
                error_code: ResponseError::NotCoordinator.code(),
                partition_codes: vec![0; partitions.len()],
            };
        };
        let _permit = gate.acquire_permit(1).await.expect("offsets gate never closes");
        let codes: Vec<i16> = partitions
            .iter()
            .map(|tp| if subscribed.contains(&tp.topic) { ResponseError::GroupSubscribedToTopic.code() } else { 0 })
            .collect();
        let entries: Vec<(OffsetKey, Option<CommittedOffset>)> = partitions
            .iter()
            .zip(&codes)
            .filter(|(_, code)| **code == 0)
            .map(|(tp, _)| ((group_id.to_string(), tp.topic.clone(), tp.partition), None))
            .collect();
        if let Err(code) = self.write(partition_for_group(group_id), &log, &entries).await {
            return OffsetDeletion { error_code: code, partition_codes: codes };
        }
        if let Some(partition) = self.offsets.borrow_mut().get_mut(&partition_for_group(group_id)) {
            partition.apply(entries);
        }
        OffsetDeletion { error_code: 0, partition_codes: codes }
    }

    /// Removes committed offsets of topics that no longer exist (after DeleteTopics).
    pub async fn forget_topics(&self, live: &[String]) {
        let partitions: Vec<i32> = self.offsets.borrow().keys().copied().collect();
        for p in partitions {
            let gate = self.offsets.borrow()[&p].gate();
            let _permit = gate.acquire_permit(1).await.expect("offsets gate never closes");
            let (log, entries) = {
                let offsets = self.offsets.borrow();
                let partition = &offsets[&p];
                let orphaned = partition.orphaned(&|topic| live.iter().any(|t| t == topic));
                (partition.log(), orphaned.into_iter().map(|k| (k, None)).collect::<Vec<_>>())
            };
            if entries.is_empty() {
                continue;
            }
            match self.write(p, &log, &entries).await {
                Ok(()) => {
                    if let Some(partition) = self.offsets.borrow_mut().get_mut(&p) {
                        partition.apply(entries);
                    }
                }
                // A follower replica leaves it to the partition's leader.
                Err(code) => tracing::debug!(partition = p, code, "offsets of deleted topics not removed here"),
            }
        }
    }

    /// Drops the offsets of groups that have been empty (no members) with no commit for
    /// the configured offsets retention (tombstones; the log cleaner compacts the logs).
    pub async fn maintain_offsets(&self) {
        let now = self.clock.now_ms();
        let partitions: Vec<i32> = self.offsets.borrow().keys().copied().collect();
        for p in partitions {
            let gate = self.offsets.borrow()[&p].gate();
            let _permit = gate.acquire_permit(1).await.expect("offsets gate never closes");
            let (log, expired) = {
                let offsets = self.offsets.borrow();
                let partition = &offsets[&p];
                let groups = self.groups.borrow();
                let expired: Vec<(OffsetKey, Option<CommittedOffset>)> = partition
                    .stale_groups(now - self.config.offsets_retention_ms)
                    .into_iter()
                    .filter(|g| groups.get(g).is_none_or(|group| group.is_empty()))
                    .flat_map(|g| partition.group_offsets(&g).into_iter().map(|(k, _)| (k, None)))
                    .collect();
                (partition.log(), expired)
            };
            if !expired.is_empty() && self.write(p, &log, &expired).await.is_ok() {
                tracing::info!(partition = p, offsets = expired.len(), "expired offsets of empty groups");
                if let Some(partition) = self.offsets.borrow_mut().get_mut(&p) {
                    partition.apply(expired);
                }
            }
        }
    }

    /// The logs of the offsets partitions this shard owns (the log cleaner compacts them).
    pub fn offset_logs(&self) -> Vec<crate::storage::PartitionLog> {
        self.offsets.borrow().values().map(OffsetPartition::log).collect()
    }

    /// Closes the offsets logs (clean shutdown).
    pub async fn close(&self) {
        let logs: Vec<_> = self.offsets.borrow().values().map(OffsetPartition::log).collect();
        for log in logs {
            let _ = log.close().await;
        }
    }
}

/// A commit's offsets as entries of the offsets log, committed at `now`.
fn committed_entries(group_id: &str, offsets: &[PartitionOffset], now: i64) -> Vec<(OffsetKey, CommittedOffset)> {
    offsets
        .iter()
        .map(|o| {
            let key = (group_id.to_string(), o.topic.clone(), o.partition);
            let value = CommittedOffset {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata.clone(),
                commit_ms: now,
            };
            (key, value)
        })
        .collect()
}

fn error_join(error: ResponseError, member_id: &str) -> JoinResult {
    JoinResult::error(error.code(), member_id)
}

/// A sync whose generation could not be written: every member waiting on it is told
/// `code` (NOT_COORDINATOR, or COORDINATOR_NOT_AVAILABLE for any other failure).
fn failed_sync(code: i16, answer: Reply<SyncResult>, effects: Vec<Effect>) -> (Reply<SyncResult>, Vec<Effect>) {
    let error = if code == ResponseError::NotCoordinator.code() {
        ResponseError::NotCoordinator
    } else {
        ResponseError::CoordinatorNotAvailable
    };
    let answer = match answer {
        Reply::Now(_) => Reply::Now(error_sync(error)),
        later => later,
    };
    let effects = effects
        .into_iter()
        .map(|effect| match effect {
            Effect::Sync { member_id, .. } => Effect::Sync { member_id, result: error_sync(error) },
            other => other,
        })
        .collect();
    (answer, effects)
}

fn error_sync(error: ResponseError) -> SyncResult {
    SyncResult::error(error.code())
}
