//! Consumer group coordination in a cluster: the leader of a replicated
//! `__consumer_offsets` partition coordinates its groups (the transaction state's
//! counterpart is `txn_cluster`).

use std::rc::Rc;
use std::sync::Arc;

use crate::group::offsets::OFFSETS_TOPIC;
use crate::protocol::topic_partition::TopicPartition;
use crate::replication::entry::epoch_of;

use super::replica_group::ReplicaGroup;
use super::ShardContext;

/// A `__consumer_offsets` group's leader coordinates its consumer groups once its term's
/// first entry is committed (so its log holds every commit of earlier leaders): it
/// reloads the offsets, then takes requests. A replica that stops leading drops its
/// groups' state and stops taking requests at once.
pub fn coordinate_offsets(ctx: &Rc<ShardContext>, view: &Arc<crate::cluster::ClusterView>, group: &mut ReplicaGroup) {
    let partition = group.partition.partition;
    let term = group.node.raft.term;
    if !group.is_leader() {
        if group.coordinator_loaded_term.take().is_some() {
            view.set_offsets_ready(partition, false);
            ctx.groups.follow_offsets(partition);
            tracing::info!(partition, "no longer coordinating the groups of this offsets partition");
        }
        return;
    }
    if group.coordinator_loaded_term == Some(term) || group.node.raft.raft_log.committed < group.term_start_index {
        return;
    }
    group.coordinator_loaded_term = Some(term);
    view.set_offsets_ready(partition, false);
    let ctx = ctx.clone();
    let view = view.clone();
    let node_id = ctx.config.node_id;
    glommio::spawn_local(async move {
        match ctx.groups.lead_offsets(partition).await {
            Ok(offsets) => {
                let key = TopicPartition::new(OFFSETS_TOPIC, partition);
                let still = view.leadership(&key).is_some_and(|l| l.leader == node_id && l.epoch == epoch_of(term));
                if still {
                    view.set_offsets_ready(partition, true);
                    tracing::info!(partition, offsets, term, "coordinating the groups of this offsets partition");
                }
            }
            Err(error) => tracing::error!(partition, %error, "cannot load the offsets partition to coordinate it"),
        }
    })
    .detach();
}
