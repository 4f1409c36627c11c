//! Coordination of the replicated internal partitions: the leader of a
//! `__consumer_offsets` partition coordinates its consumer groups, the leader of a
//! `__transaction_state` partition its transactional ids. Both follow one rule
//! (`coordinate`):
//!
//! - a leader takes over once its term's first entry is committed (so its log holds
//!   everything earlier leaders committed): it reloads the partition's state, then is
//!   marked ready (FindCoordinator names it; requests are taken);
//! - a load that fails (a read error) is tried again while the term lasts;
//! - a replica that stops leading drops the partition's state and stops taking requests
//!   at once; one deposed while loading drops what it loaded, unless it leads again in a
//!   newer term (that term's own load decides).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;

use crate::cluster::ClusterView;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::protocol::topic_partition::TopicPartition;
use crate::replication::entry::epoch_of;

use super::replica_group::ReplicaGroup;
use super::ShardContext;

/// Loads a partition's state to coordinate it (with the coordinator epoch); resolves to
/// how many entries it loaded.
pub type LoadPartition = fn(Rc<ShardContext>, i32, i32) -> LocalBoxFuture<'static, Result<usize, String>>;

/// How one internal topic's partitions are coordinated.
pub struct Coordination {
    pub topic: &'static str,
    /// What is coordinated, for the logs ("consumer groups", "transactional ids").
    pub what: &'static str,
    pub set_ready: fn(&ClusterView, i32, bool),
    pub load: LoadPartition,
    /// Drops the partition's state.
    pub follow: fn(&ShardContext, i32),
}

impl std::fmt::Debug for Coordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordination").field("topic", &self.topic).finish()
    }
}

/// `__consumer_offsets`: consumer groups.
pub static OFFSETS: Coordination = Coordination {
    topic: OFFSETS_TOPIC,
    what: "consumer groups",
    set_ready: |view, partition, ready| view.set_offsets_ready(partition, ready),
    load: |ctx, partition, _| Box::pin(async move { ctx.groups.lead_offsets(partition).await }),
    follow: |ctx, partition| ctx.groups.follow_offsets(partition),
};

/// `__transaction_state`: transactional ids.
pub static TXN_STATE: Coordination = Coordination {
    topic: crate::txn::TXN_STATE_TOPIC,
    what: "transactional ids",
    set_ready: |view, partition, ready| view.set_txn_state_ready(partition, ready),
    load: |ctx, partition, epoch| Box::pin(async move { ctx.txns.lead(partition, epoch).await }),
    follow: |ctx, partition| ctx.txns.follow(partition),
};

/// Applies the rule of the module header to `group` after one of its rounds.
pub fn coordinate(
    ctx: &Rc<ShardContext>,
    view: &Arc<ClusterView>,
    group: &mut ReplicaGroup,
    how: &'static Coordination,
) {
    let partition = group.partition.partition;
    let term = group.node.raft.term;
    if !group.is_leader() {
        if group.coordinator_loaded_term.take().is_some() {
            (how.set_ready)(view, partition, false);
            (how.follow)(ctx, partition);
            tracing::info!(topic = how.topic, partition, "no longer coordinating the {} of this partition", how.what);
        }
        return;
    }
    if group.coordinator_loaded_term == Some(term) || group.node.raft.raft_log.committed < group.term_start_index {
        return;
    }
    group.coordinator_loaded_term = Some(term);
    (how.set_ready)(view, partition, false);
    let ctx = ctx.clone();
    let view = view.clone();
    let node_id = ctx.config.node_id;
    glommio::spawn_local(async move {
        let key = TopicPartition::new(how.topic, partition);
        let leading =
            |view: &ClusterView| view.leadership(&key).is_some_and(|l| l.leader == node_id && l.epoch == epoch_of(term));
        let mut attempt = 0u32;
        let loaded = loop {
            match (how.load)(ctx.clone(), partition, epoch_of(term)).await {
                Ok(count) => break Some(count),
                Err(error) => {
                    tracing::error!(topic = how.topic, partition, %error, attempt, "cannot load the partition to coordinate it");
                    attempt += 1;
                    glommio::timer::sleep(Duration::from_millis(200 * u64::from(attempt.min(25)))).await;
                    if !leading(&view) {
                        break None;
                    }
                }
            }
        };
        match loaded {
            Some(count) if leading(&view) => {
                (how.set_ready)(&view, partition, true);
                tracing::info!(topic = how.topic, partition, count, term, "coordinating the {} of this partition", how.what);
            }
            _ => {
                if view.leadership(&key).is_none_or(|l| l.leader != node_id) {
                    (how.follow)(&ctx, partition);
                }
            }
        }
    })
    .detach();
}
