//! Transaction coordination in a cluster: where a transactional id is coordinated, and
//! the `__transaction_state` partitions as Raft groups.
//!
//! `__transaction_state` partitions are placed as `__consumer_offsets` ones are: with
//! three nodes or more each is a Raft group of three replicas (the same replica driver
//! as every replicated partition), and the group's leader coordinates the partition's
//! transactional ids once its term's first entry is committed (its log then holds every
//! state earlier leaders wrote): it replays the partition and takes requests; a replica
//! that stops leading drops the ids at once. With one or two nodes a partition is not
//! replicated and its home node (round-robin) coordinates it.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;

use crate::protocol::topic_partition::TopicPartition;
use crate::txn::{partition_for_txn, TxnStateWriter, TXN_STATE_PARTITIONS, TXN_STATE_TOPIC};

use super::context::TXN_STATE_TOPIC_ID;
use super::replica_group::{GroupSpec, Proposal, ProposeOutcome, ReplicaGroup};
use super::replicas::ReplicaEvent;
use super::ShardContext;

/// How long a state record may take to be committed before the request fails.
const STATE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The node coordinating `transactional_id`: standalone this node; in a cluster the
/// leader of the id's `__transaction_state` partition (-1 while it elects one), or with
/// fewer than three nodes (not replicated) the partition's home node.
pub fn txn_coordinator_node(ctx: &ShardContext, transactional_id: &str) -> i32 {
    let Some(view) = &ctx.cluster else { return ctx.config.node_id };
    let partition = partition_for_txn(transactional_id);
    if view.txn_state_replicas(partition).is_none() {
        return view.offsets_partition_leader(partition);
    }
    match view.leadership(&TopicPartition::new(TXN_STATE_TOPIC, partition)) {
        Some(leadership) => leadership.leader,
        None => view.offsets_partition_leader(partition),
    }
}

/// Whether this node may serve `transactional_id` now: `Err` is NOT_COORDINATOR when
/// another node coordinates it, COORDINATOR_LOAD_IN_PROGRESS while this one, newly its
/// leader, loads the partition.
pub fn check_coordinator(ctx: &ShardContext, transactional_id: &str) -> Result<(), crate::txn::TxnError> {
    use crate::txn::TxnError;
    let Some(view) = &ctx.cluster else { return Ok(()) };
    if txn_coordinator_node(ctx, transactional_id) != ctx.config.node_id {
        return Err(TxnError::NotCoordinator);
    }
    let partition = partition_for_txn(transactional_id);
    if view.txn_state_replicas(partition).is_some() && !view.txn_state_ready(partition) {
        return Err(TxnError::CoordinatorLoadInProgress);
    }
    Ok(())
}

/// Whether this shard coordinates partition `partition`'s ids as soon as it is loaded:
/// standalone always; in a cluster only an unreplicated partition's home node (a
/// replicated one waits until its group elects this node).
pub fn coordinates_at_start(ctx: &ShardContext, partition: i32) -> bool {
    match &ctx.cluster {
        None => true,
        Some(view) => {
            view.txn_state_replicas(partition).is_none()
                && view.offsets_partition_leader(partition) == ctx.config.node_id
        }
    }
}

/// Cluster mode, three nodes or more: makes this shard's `__transaction_state`
/// partitions that this node is a replica of Raft groups; their records go through the
/// group. A partition log written before the node joined a cluster (standalone) is
/// moved aside: its ids start over (their producers' next InitProducerId gets a new
/// producer id).
pub async fn replicate_txn_state(ctx: &Rc<ShardContext>) -> Result<(), String> {
    let Some(view) = ctx.cluster.clone() else { return Ok(()) };
    for partition in 0..TXN_STATE_PARTITIONS {
        let Some(replicas) = view.txn_state_replicas(partition) else { return Ok(()) };
        if ctx.owner(TXN_STATE_TOPIC, partition) != ctx.id || !replicas.contains(&ctx.config.node_id) {
            continue;
        }
        let Some(log) = ctx.txns.partition_log(partition) else { continue };
        let log = match crate::replication::ReplicaState::read(log.dir(), &log.storage_env()).await {
            Ok(Some(_)) => log,
            Ok(None) => set_aside_unreplicated(ctx, partition).await?,
            Err(error) => return Err(format!("{TXN_STATE_TOPIC}-{partition}: {error}")),
        };
        let spec = GroupSpec {
            target: None,
            partition: TopicPartition::new(TXN_STATE_TOPIC, partition),
            topic_id: TXN_STATE_TOPIC_ID,
            replicas,
            node_id: ctx.config.node_id,
        };
        let group = ReplicaGroup::open(spec, log, ctx.cluster_config())
            .await
            .map_err(|reason| format!("{TXN_STATE_TOPIC}-{partition} cannot be replicated: {reason}"))?;
        ctx.replica_event(ReplicaEvent::Add(Box::new(group)));
        let weak = Rc::downgrade(ctx);
        let writer = TxnStateWriter(Rc::new(move |partition, batch| {
            let key = TopicPartition::new(TXN_STATE_TOPIC, partition);
            let proposed =
                weak.upgrade().map(|ctx| ctx.propose_now(key, Proposal::Records(batch), -1, STATE_WRITE_TIMEOUT));
            Box::pin(async move {
                let Some(proposed) = proposed else { return Err(ResponseError::CoordinatorNotAvailable.code()) };
                match proposed.await {
                    ProposeOutcome::Appended { .. } => Ok(()),
                    ProposeOutcome::NotLeader => Err(ResponseError::NotCoordinator.code()),
                    ProposeOutcome::TimedOut => Err(ResponseError::RequestTimedOut.code()),
                    other => {
                        tracing::warn!(partition, outcome = ?other, "transaction state write failed");
                        Err(ResponseError::CoordinatorNotAvailable.code())
                    }
                }
            }) as _
        }));
        ctx.txns.replicate_with(partition, writer);
    }
    Ok(())
}

/// Moves an unreplicated partition log aside (`<dir>.pre-replication-<ns>`) and opens
/// an empty one in its place, the same on every replica.
async fn set_aside_unreplicated(
    ctx: &Rc<ShardContext>,
    partition: i32,
) -> Result<crate::storage::PartitionLog, String> {
    let log = ctx.txns.partition_log(partition).expect("checked by the caller");
    let offsets = log.offsets();
    if offsets.log_end.offset() <= offsets.log_start.offset() {
        return Ok(log);
    }
    // Transactions still open or completing there are dropped with it: say which, so
    // an operator can end them on their partitions (`tern transaction find-hanging`).
    if let Ok(states) = crate::txn::store::replay_log(&log).await {
        for (id, meta) in
            states.iter().filter(|(_, m)| m.state == crate::txn::TxnState::Ongoing || m.state.is_preparing())
        {
            tracing::warn!(transactional_id = %id, state = ?meta.state, partitions = meta.partitions.len(),
                "a transaction open before the node joined a cluster is dropped; check its partitions for hanging transactions");
        }
    }
    log.close().await.map_err(|e| e.to_string())?;
    let dir = log.dir().to_path_buf();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let aside = dir.with_file_name(format!("{TXN_STATE_TOPIC}-{partition}.pre-replication-{nanos}"));
    std::fs::rename(&dir, &aside).map_err(|e| format!("moving {} aside: {e}", dir.display()))?;
    tracing::warn!(
        partition, kept = %aside.display(),
        "transaction state written before replication moved aside: its transactional ids start over"
    );
    ctx.txns.reopen(&ctx.config.data_dir, partition).await.map_err(|e| e.to_string())
}
