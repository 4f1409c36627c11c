//! Writing one partition's transaction marker on this node, for the coordinator (its
//! own partitions, or those another node's coordinator forwards here) and for
//! WriteTxnMarkers. A data partition gets a control batch: appended to its log, or
//! proposed to its Raft group when it is replicated (committed by a majority before it
//! counts). A `__consumer_offsets` partition's "marker" commits or drops the offsets the
//! producer staged there, on the node coordinating its groups.

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use crate::group::coordinator::GroupRequest;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::protocol::topic_partition::TopicPartition;
use crate::storage::{AppendError, TxnMarker};

use super::mesh::ShardRequest;
use super::replica_group::{Proposal, ProposeOutcome};
use super::ShardContext;

/// How long a replicated marker may take to be committed before this attempt fails (the
/// coordinator tries again).
const MARKER_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `marker` to `partition` here; the Kafka error code (0 when written, and
/// UNKNOWN_TOPIC_OR_PARTITION for a partition that no longer exists). Another node's
/// partition is NOT_LEADER_OR_FOLLOWER (offsets: NOT_COORDINATOR).
pub async fn write_marker_here(ctx: &Rc<ShardContext>, partition: TopicPartition, marker: TxnMarker) -> i16 {
    if partition.topic == OFFSETS_TOPIC {
        return end_staged_offsets(ctx, partition.partition, marker).await;
    }
    let TopicPartition { topic, partition: index } = partition;
    let known = ctx.metadata().topics.get(&topic).is_some_and(|t| (0..t.partitions).contains(&index));
    if !known {
        return ResponseError::UnknownTopicOrPartition.code();
    }
    let name = topic.clone();
    let outcome = ctx
        .on_partition(&name, index, move |ctx, log| async move {
            let log = match log {
                Ok(log) => log,
                Err(code) => return code,
            };
            let metadata = ctx.metadata();
            let replicated = metadata.topics.get(&topic).is_some_and(|info| ctx.is_replicated(info, index));
            if !replicated {
                return match log.append_marker(marker).await {
                    Ok(_) => 0,
                    Err(error) => append_error_code(&error),
                };
            }
            // After every transactional batch already admitted (see
            // `PartitionLog::transactional_gate`; proposals reach the group in order),
            // and before any batch that arrives meanwhile: the gate is held until the
            // marker is in the log, where it closes the transaction, so a later batch of
            // the producer is checked as the first of a new transaction (or fenced by
            // the marker's epoch), never taken as part of the one just ended.
            let gate = log.transactional_gate();
            let _permit = gate.acquire_permit(1).await.expect("the gate is never closed");
            let key = TopicPartition::new(topic, index);
            let proposed = ctx.propose_now(key, Proposal::Marker(marker), -1, MARKER_COMMIT_TIMEOUT);
            match proposed.await {
                ProposeOutcome::Appended { .. } => 0,
                ProposeOutcome::NotLeader => ResponseError::NotLeaderOrFollower.code(),
                ProposeOutcome::TimedOut => ResponseError::RequestTimedOut.code(),
                ProposeOutcome::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas.code(),
                ProposeOutcome::Refused(error) => append_error_code(&error),
                ProposeOutcome::Failed(_) => ResponseError::KafkaStorageError.code(),
            }
        })
        .await;
    outcome.unwrap_or(ResponseError::NotLeaderOrFollower.code())
}

fn append_error_code(error: &AppendError) -> i16 {
    match error {
        AppendError::Storage(_) => ResponseError::KafkaStorageError.code(),
        AppendError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch.code(),
        AppendError::CoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced.code(),
        _ => ResponseError::InvalidRecord.code(),
    }
}

/// The end of a transaction in offsets partition `partition`: only the node
/// coordinating its groups holds the staged offsets.
async fn end_staged_offsets(ctx: &Rc<ShardContext>, partition: i32, marker: TxnMarker) -> i16 {
    if ctx.offsets_coordinator_node(partition) != ctx.config.node_id {
        return ResponseError::NotCoordinator.code();
    }
    if let Some(view) = &ctx.cluster {
        if view.offsets_replicas(partition).is_some() && !view.offsets_ready(partition) {
            return ResponseError::CoordinatorLoadInProgress.code();
        }
    }
    let (producer_id, commit) = (marker.producer_id, marker.committed);
    let shard = ctx.owner(OFFSETS_TOPIC, partition);
    match ctx
        .call(shard, move |reply| ShardRequest::Group(GroupRequest::EndTxn { partition, producer_id, commit, reply }))
        .await
    {
        Some(Ok(())) => 0,
        Some(Err(code)) => code,
        None => ResponseError::CoordinatorNotAvailable.code(),
    }
}
