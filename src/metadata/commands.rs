//! Changes to cluster metadata as typed commands (Kafka's metadata records: TopicRecord,
//! PartitionRecord, ConfigRecord, RegisterBrokerRecord, FenceBrokerRecord,
//! ProducerIdsRecord).
//!
//! The controller validates a request against the current state and turns it into
//! commands; a standalone node applies them at once, a cluster node proposes them to the
//! metadata quorum and every node applies them, in log order, with [`apply`]. `apply` is
//! a pure function of the state and the command, so every node reaches the same state;
//! a command that no longer fits the state (a topic created twice by two leaders in a
//! row) is skipped the same way everywhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::registry::{BrokerRegistration, ClusterMetadata, ReassignmentTarget, TopicMetadata};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    CreateTopic {
        name: String,
        id: [u8; 16],
        partitions: i32,
        configs: BTreeMap<String, String>,
        /// One replica list per partition (empty on a standalone node).
        replicas: Vec<Vec<i32>>,
    },
    DeleteTopic {
        name: String,
    },
    /// Replaces a topic's explicit configs.
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Replaces the dynamic configs of a broker ("" : the cluster default); empty removes.
    SetBrokerConfigs {
        key: String,
        configs: BTreeMap<String, String>,
    },
    /// Raises a topic's partition count; `replicas` assigns the new partitions.
    AddPartitions {
        name: String,
        count: i32,
        replicas: Vec<Vec<i32>>,
    },
    /// Reserves the next `count` producer ids (Kafka's ProducerIdsRecord).
    AllocateProducerIds {
        count: i64,
    },
    /// A broker joined, changed its address, or came back (unfences it).
    RegisterBroker(BrokerRegistration),
    /// A broker stopped heartbeating.
    FenceBroker {
        node_id: i32,
    },
    /// Starts, redirects or cancels (`target: None`) the reassignment of one partition
    /// (Kafka's PartitionChangeRecord with target replicas, KIP-455). A cancelled move
    /// goes back to the partition's replicas: its target becomes them, and the brokers
    /// the move was adding stay hosts (`leaving`) until the group is back. A target equal
    /// to the replicas with no move in progress changes nothing.
    ReassignPartition {
        name: String,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// The partition's Raft group now has exactly `replicas` as voters: they become its
    /// replicas and the reassignment ends. Skipped unless `replicas` is still the target.
    CompleteReassignment {
        name: String,
        partition: i32,
        replicas: Vec<i32>,
        /// The target's epoch (`TopicMetadata::target_epochs`) the leader acted on.
        epoch: u64,
    },
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandEffect {
    Done,
    /// The command did not fit the state it met and changed nothing.
    Skipped(String),
    /// The first id of an allocated producer id block.
    ProducerIds {
        first: i64,
    },
}

/// Applies one command. Bumps `version` when the state changed.
pub fn apply(state: &mut ClusterMetadata, command: &MetadataCommand) -> CommandEffect {
    let effect = apply_inner(state, command);
    if !matches!(effect, CommandEffect::Skipped(_)) {
        state.version += 1;
    }
    effect
}

fn apply_inner(state: &mut ClusterMetadata, command: &MetadataCommand) -> CommandEffect {
    use MetadataCommand::*;
    // The version this command's change gets (the same on every node).
    let version = state.version + 1;
    match command {
        CreateTopic { name, id, partitions, configs, replicas } => {
            if state.topics.contains_key(name) {
                return CommandEffect::Skipped(format!("topic {name:?} already exists"));
            }
            state.topics.insert(
                name.clone(),
                TopicMetadata {
                    id: *id,
                    partitions: *partitions,
                    configs: configs.clone(),
                    replicas: replicas.clone(),
                    targets: BTreeMap::new(),
                    leaving: BTreeMap::new(),
                    target_epochs: BTreeMap::new(),
                },
            );
        }
        DeleteTopic { name } => {
            if state.topics.remove(name).is_none() {
                return CommandEffect::Skipped(format!("topic {name:?} does not exist"));
            }
        }
        SetTopicConfigs { name, configs } => match state.topics.get_mut(name) {
            Some(topic) => topic.configs = configs.clone(),
            None => return CommandEffect::Skipped(format!("topic {name:?} does not exist")),
        },
        SetBrokerConfigs { key, configs } => {
            if configs.is_empty() {
                state.broker_configs.remove(key);
            } else {
                state.broker_configs.insert(key.clone(), configs.clone());
            }
        }
        AddPartitions { name, count, replicas } => match state.topics.get_mut(name) {
            Some(topic)
                if *count > topic.partitions
                    && (replicas.is_empty() || replicas.len() == (*count - topic.partitions) as usize) =>
            {
                if !topic.replicas.is_empty() || !replicas.is_empty() {
                    topic.replicas.extend(replicas.iter().cloned());
                }
                topic.partitions = *count;
            }
            Some(topic) => {
                return CommandEffect::Skipped(format!(
                    "topic {name:?} has {} partitions; cannot grow to {count} with {} new assignments",
                    topic.partitions,
                    replicas.len()
                ))
            }
            None => return CommandEffect::Skipped(format!("topic {name:?} does not exist")),
        },
        AllocateProducerIds { count } => {
            let first = state.next_producer_id;
            state.next_producer_id = first.saturating_add(*count);
            return CommandEffect::ProducerIds { first };
        }
        RegisterBroker(registration) => {
            state.brokers.insert(registration.node_id, registration.clone());
        }
        FenceBroker { node_id } => match state.brokers.get_mut(node_id) {
            Some(broker) if !broker.fenced => broker.fenced = true,
            _ => return CommandEffect::Skipped(format!("broker {node_id} is not registered or already fenced")),
        },
        ReassignPartition { name, partition, target } => {
            let Some(topic) = state.topics.get_mut(name).filter(|t| (0..t.partitions).contains(partition)) else {
                return CommandEffect::Skipped(format!("partition {name}-{partition} does not exist"));
            };
            let replicas = topic.replicas_of(*partition).to_vec();
            let new_target = target.clone().unwrap_or_else(|| replicas.clone());
            match topic.targets.get(partition).cloned() {
                None if new_target == replicas => {
                    return CommandEffect::Skipped(format!("{name}-{partition} already has replicas {replicas:?}"));
                }
                None => {
                    topic.targets.insert(*partition, new_target);
                    topic.target_epochs.insert(*partition, version);
                }
                Some(old_target) => {
                    // Every broker the move reached keeps its replica until it completes.
                    let mut leaving = topic.leaving.remove(partition).unwrap_or_default();
                    leaving.extend(old_target);
                    leaving.retain(|id| !new_target.contains(id) && !replicas.contains(id));
                    leaving.sort_unstable();
                    leaving.dedup();
                    if !leaving.is_empty() {
                        topic.leaving.insert(*partition, leaving);
                    }
                    topic.targets.insert(*partition, new_target);
                    topic.target_epochs.insert(*partition, version);
                }
            }
        }
        CompleteReassignment { name, partition, replicas, epoch } => {
            let Some(topic) = state.topics.get_mut(name) else {
                return CommandEffect::Skipped(format!("topic {name:?} does not exist"));
            };
            let current = topic.reassignment(*partition);
            if current.as_ref() != Some(&ReassignmentTarget { replicas: replicas.clone(), epoch: *epoch }) {
                return CommandEffect::Skipped(format!(
                    "{name}-{partition} is not moving to {replicas:?} (epoch {epoch}); its move is {current:?}"
                ));
            }
            let Some(slot) = usize::try_from(*partition).ok().and_then(|p| topic.replicas.get_mut(p)) else {
                return CommandEffect::Skipped(format!("{name}-{partition} has no replica list"));
            };
            *slot = replicas.clone();
            topic.targets.remove(partition);
            topic.leaving.remove(partition);
            topic.target_epochs.remove(partition);
        }
    }
    CommandEffect::Done
}

/// Assigns `partitions` partitions (numbered from `first_partition`) of `topic` to
/// `replication_factor` of `brokers` each: consecutive brokers from a start that depends
/// on the topic and the partition, so leaders (the first replica) spread round-robin over
/// the brokers and no broker holds two replicas of one partition.
pub fn place_replicas(
    topic: &str,
    first_partition: i32,
    partitions: i32,
    replication_factor: usize,
    brokers: &[i32],
) -> Result<Vec<Vec<i32>>, String> {
    if replication_factor == 0 || replication_factor > brokers.len() {
        return Err(format!(
            "replication factor {replication_factor} needs that many live brokers; {} are live",
            brokers.len()
        ));
    }
    let mut sorted = brokers.to_vec();
    sorted.sort_unstable();
    let start = crate::stable_hash::fnv1a_32(topic.as_bytes()) as usize;
    Ok((first_partition..first_partition + partitions)
        .map(|partition| {
            let first = (start + partition as usize) % sorted.len();
            (0..replication_factor).map(|r| sorted[(first + r) % sorted.len()]).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(node_id: i32) -> BrokerRegistration {
        BrokerRegistration { node_id, host: "127.0.0.1".into(), port: 9092 + node_id, rack: None, fenced: false }
    }

    #[test]
    fn commands_apply_in_order_and_skip_what_no_longer_fits() {
        let mut state = ClusterMetadata { next_producer_id: 1000, ..ClusterMetadata::default() };
        let create = MetadataCommand::CreateTopic {
            name: "t".into(),
            id: [1; 16],
            partitions: 2,
            configs: BTreeMap::new(),
            replicas: vec![vec![1, 2], vec![2, 1]],
        };
        assert_eq!(apply(&mut state, &create), CommandEffect::Done);
        assert!(matches!(apply(&mut state, &create), CommandEffect::Skipped(_)));
        let version = state.version;
        let grow = MetadataCommand::AddPartitions { name: "t".into(), count: 3, replicas: vec![vec![1, 2]] };
        assert_eq!(apply(&mut state, &grow), CommandEffect::Done);
        assert_eq!(state.topics["t"].replicas_of(2), &[1, 2]);
        assert!(matches!(apply(&mut state, &grow), CommandEffect::Skipped(_)));
        assert_eq!(
            apply(&mut state, &MetadataCommand::AllocateProducerIds { count: 1000 }),
            CommandEffect::ProducerIds { first: 1000 }
        );
        assert_eq!(
            apply(&mut state, &MetadataCommand::AllocateProducerIds { count: 1000 }),
            CommandEffect::ProducerIds { first: 2000 }
        );
        assert!(state.version > version);
        assert_eq!(apply(&mut state, &MetadataCommand::RegisterBroker(broker(1))), CommandEffect::Done);
        assert_eq!(apply(&mut state, &MetadataCommand::FenceBroker { node_id: 1 }), CommandEffect::Done);
        assert!(state.brokers[&1].fenced);
        assert!(matches!(apply(&mut state, &MetadataCommand::FenceBroker { node_id: 1 }), CommandEffect::Skipped(_)));
        assert_eq!(apply(&mut state, &MetadataCommand::RegisterBroker(broker(1))), CommandEffect::Done);
        assert!(!state.brokers[&1].fenced);
        let reassign =
            |target: Option<Vec<i32>>| MetadataCommand::ReassignPartition { name: "t".into(), partition: 1, target };
        let complete = |replicas: Vec<i32>, epoch: u64| MetadataCommand::CompleteReassignment {
            name: "t".into(),
            partition: 1,
            replicas,
            epoch,
        };
        assert_eq!(apply(&mut state, &reassign(Some(vec![3, 1]))), CommandEffect::Done);
        assert_eq!(state.topics["t"].hosts_of(1), vec![3, 1, 2]);
        let epoch = state.topics["t"].reassignment(1).unwrap().epoch;
        assert_eq!(epoch, state.version, "the version of the change");
        assert!(matches!(apply(&mut state, &complete(vec![1, 3], epoch)), CommandEffect::Skipped(_)), "not the target");
        assert!(matches!(apply(&mut state, &complete(vec![3, 1], epoch - 1)), CommandEffect::Skipped(_)), "stale");
        assert_eq!(apply(&mut state, &complete(vec![3, 1], epoch)), CommandEffect::Done);
        assert_eq!((state.topics["t"].replicas_of(1), state.topics["t"].target_of(1)), (&[3, 1][..], None));
        assert!(matches!(apply(&mut state, &complete(vec![3, 1], epoch)), CommandEffect::Skipped(_)), "already done");
        assert_eq!(apply(&mut state, &reassign(Some(vec![2, 1]))), CommandEffect::Done);
        let first = state.topics["t"].reassignment(1).unwrap().epoch;
        assert_eq!(apply(&mut state, &reassign(Some(vec![4, 1]))), CommandEffect::Done, "redirected");
        assert_eq!(state.topics["t"].hosts_of(1), vec![4, 1, 3, 2], "2 may be a voter already: it stays");
        assert_eq!(apply(&mut state, &reassign(Some(vec![2, 1]))), CommandEffect::Done, "and back");
        assert!(
            matches!(apply(&mut state, &complete(vec![2, 1], first)), CommandEffect::Skipped(_)),
            "a report on the first [2, 1] target comes too late: 4 may be a voter now"
        );
        assert_eq!(apply(&mut state, &reassign(None)), CommandEffect::Done);
        assert_eq!(state.topics["t"].target_of(1), Some(&[3, 1][..]), "cancelled: back to the replicas");
        assert_eq!(state.topics["t"].removing_of(1), vec![2, 4]);
        let epoch = state.topics["t"].reassignment(1).unwrap().epoch;
        assert_eq!(apply(&mut state, &complete(vec![3, 1], epoch)), CommandEffect::Done);
        assert_eq!(state.topics["t"].hosts_of(1), vec![3, 1], "back, and the others leave");
        assert!(
            matches!(apply(&mut state, &reassign(Some(vec![3, 1]))), CommandEffect::Skipped(_)),
            "the replicas it has: nothing to move"
        );
        assert!(matches!(
            apply(&mut state, &MetadataCommand::ReassignPartition { name: "t".into(), partition: 9, target: None }),
            CommandEffect::Skipped(_)
        ));
        assert_eq!(apply(&mut state, &MetadataCommand::DeleteTopic { name: "t".into() }), CommandEffect::Done);
        assert!(state.topics.is_empty());
    }

    #[test]
    fn placement_spreads_leaders_and_never_doubles_a_replica() {
        let replicas = place_replicas("orders", 0, 6, 3, &[3, 1, 2]).unwrap();
        let mut leaders = [0; 4];
        for set in &replicas {
            let mut unique = set.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), 3);
            leaders[set[0] as usize] += 1;
        }
        assert_eq!(&leaders[1..], &[2, 2, 2]);
        assert!(place_replicas("orders", 0, 1, 4, &[1, 2, 3]).is_err());
        assert!(place_replicas("orders", 0, 1, 1, &[]).is_err());
    }
}
