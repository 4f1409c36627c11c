//! What a replica group tells the rest of the node, and the other brokers, about its
//! leadership: the node's leader table (read by every shard's Metadata and routing) and
//! the leader updates a leader sends every broker at each change.

use crate::cluster::transport::LeaderUpdate;
use crate::cluster::Leadership;
use crate::replication::entry::epoch_of;

use super::replica_group::ReplicaGroup;

/// Publishes the group's leader, epoch and ISR to the node's leader table when they
/// change; a leader's change also goes to every other broker (`updates`).
///
/// A follower that lost touch with its leader (a pre-vote changes no term) keeps naming
/// the leader of its term: that is still the newest leader it knows, and a client that
/// asks this broker can then reach it, as with Kafka's metadata cache. A replica that no
/// longer leads itself, or has moved to a newer term, names none (-1).
pub fn publish_leadership(
    view: &crate::cluster::ClusterView,
    group: &mut ReplicaGroup,
    updates: &mut Vec<LeaderUpdate>,
) {
    let raft = &group.node.raft;
    let leader = match (raft.leader_id, &group.published) {
        (0, Some((last, term, _))) if *last >= 0 && *last as u64 != raft.id && *term == raft.term => *last,
        (0, _) => -1,
        (id, _) => id as i32,
    };
    let epoch = epoch_of(raft.term);
    let in_sync = if group.is_leader() {
        group.in_sync()
    } else {
        // A follower knows the in-sync set only from its leader's updates.
        match view.leadership(&group.partition) {
            Some(known) if known.epoch == epoch && known.leader == leader => known.in_sync,
            _ => group.replicas.clone(),
        }
    };
    let current = (leader, raft.term, in_sync);
    if group.published.as_ref() == Some(&current) {
        return;
    }
    if group.published.as_ref().map(|p| p.0) != Some(leader) {
        tracing::info!(partition = %group.partition, leader, term = raft.term, "partition leader changed");
        if leader >= 0 {
            crate::metrics::replication_gauges().leader_changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    view.set_leadership(group.partition.clone(), Leadership { leader, epoch, in_sync: current.2.clone() });
    if group.is_leader() {
        updates.push(leader_update(group, &current.2));
    }
    group.published = Some(current);
}

pub fn leader_update(group: &ReplicaGroup, in_sync: &[i32]) -> LeaderUpdate {
    LeaderUpdate {
        topic: group.partition.topic.clone(),
        topic_id: group.topic_id,
        partition: group.partition.partition,
        leader: group.node.raft.id as i32,
        epoch: epoch_of(group.node.raft.term),
        in_sync: in_sync.to_vec(),
    }
}
