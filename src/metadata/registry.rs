//! The persisted topic registry.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::storage::disk::{read_small_file, write_file_atomic, StorageEnv};

/// Kafka's limit on topic name length.
const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Checks a topic name against Kafka's rules: 1..=249 of `[a-zA-Z0-9._-]`, not `.`/`..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!("topic name is longer than {TOPIC_NAME_BYTES_MAX} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return Err(format!("topic name {name:?} may only contain ASCII letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// Format 1 (round 1): topics and the producer id counter.
const MAGIC_V1: &[u8; 8] = b"TERNMETA";
/// Format 2: adds the dynamic broker configs.
const MAGIC_V2: &[u8; 8] = b"TERNMD02";
/// Format 3: adds the cluster (broker registrations, replica assignments, the index of
/// the last applied metadata-log entry).
const MAGIC_V3: &[u8; 8] = b"TERNMD03";
/// Format 4: adds the replica reassignments in progress.
const MAGIC: &[u8; 8] = b"TERNMD04";
pub const METADATA_FILE: &str = "cluster-metadata";

#[derive(
    Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, serde::Serialize, serde::Deserialize,
)]
pub struct TopicMetadata {
    /// Topic id (KIP-516), random at creation.
    pub id: [u8; 16],
    pub partitions: i32,
    /// Topic configs set explicitly (others take broker defaults).
    pub configs: BTreeMap<String, String>,
    /// Replica assignment per partition, preferred leader first (cluster mode). Empty on
    /// a single node without cluster flags: that node holds every partition.
    pub replicas: Vec<Vec<i32>>,
    /// Reassignments in progress: the replicas each moving partition is to have, preferred
    /// leader first (`shard::reassignment` moves the partition's Raft group there, and
    /// `replicas` becomes the target once it has).
    #[serde(default)]
    pub targets: BTreeMap<i32, Vec<i32>>,
    /// Brokers an earlier target of a moving partition added and its current target
    /// (after a cancellation or a new target) does not name: they may be voters of the
    /// group, so they keep their replica until the move completes.
    #[serde(default)]
    pub leaving: BTreeMap<i32, Vec<i32>>,
    /// The metadata version each target was set at: a leader's report that a move is
    /// complete names it, so a stale report (the target changed since) is refused.
    #[serde(default)]
    pub target_epochs: BTreeMap<i32, u64>,
}

/// Where a reassignment moves a partition, and the metadata version it was set at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReassignmentTarget {
    pub replicas: Vec<i32>,
    pub epoch: u64,
}

impl TopicMetadata {
    /// The brokers assigned `partition` (empty: the standalone node holds it). During a
    /// reassignment: the replicas it has until the move completes.
    pub fn replicas_of(&self, partition: i32) -> &[i32] {
        usize::try_from(partition).ok().and_then(|p| self.replicas.get(p)).map_or(&[], Vec::as_slice)
    }

    /// The replicas `partition` is moving to, if a reassignment is in progress.
    pub fn target_of(&self, partition: i32) -> Option<&[i32]> {
        self.targets.get(&partition).map(Vec::as_slice)
    }

    /// The reassignment in progress for `partition`, with its epoch.
    pub fn reassignment(&self, partition: i32) -> Option<ReassignmentTarget> {
        let replicas = self.targets.get(&partition)?.clone();
        Some(ReassignmentTarget { replicas, epoch: self.target_epochs.get(&partition).copied().unwrap_or(0) })
    }

    /// The replicas `partition` should end up with: its target, or its replicas.
    pub fn desired_replicas(&self, partition: i32) -> &[i32] {
        self.target_of(partition).unwrap_or_else(|| self.replicas_of(partition))
    }

    /// Every broker that holds (or is to hold) a replica of `partition`: the target first,
    /// then the replicas a reassignment removes (Kafka's Metadata order during a move).
    pub fn hosts_of(&self, partition: i32) -> Vec<i32> {
        let mut hosts = self.desired_replicas(partition).to_vec();
        let leaving = self.leaving.get(&partition).map_or(&[][..], Vec::as_slice);
        for &replica in self.replicas_of(partition).iter().chain(leaving) {
            if !hosts.contains(&replica) {
                hosts.push(replica);
            }
        }
        hosts
    }

    /// The brokers a move in progress takes `partition` from: its hosts outside the target.
    pub fn removing_of(&self, partition: i32) -> Vec<i32> {
        let Some(target) = self.target_of(partition) else { return Vec::new() };
        self.hosts_of(partition).into_iter().filter(|id| !target.contains(id)).collect()
    }
}

/// A broker as the metadata quorum knows it (Kafka's RegisterBrokerRecord plus fencing).
#[derive(
    Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, serde::Serialize, serde::Deserialize,
)]
pub struct BrokerRegistration {
    pub node_id: i32,
    /// Where Kafka clients reach it.
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Fenced: it stopped heartbeating; it leads nothing and is left out of Metadata
    /// until it heartbeats again.
    pub fenced: bool,
}

/// The topic layout of formats 1 and 2.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct TopicMetadataV2 {
    id: [u8; 16],
    partitions: i32,
    configs: BTreeMap<String, String>,
}

impl From<TopicMetadataV2> for TopicMetadata {
    fn from(old: TopicMetadataV2) -> TopicMetadata {
        TopicMetadata {
            id: old.id,
            partitions: old.partitions,
            configs: old.configs,
            replicas: Vec::new(),
            targets: BTreeMap::new(),
            leaving: BTreeMap::new(),
            target_epochs: BTreeMap::new(),
        }
    }
}

/// The topic layout of format 3.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct TopicMetadataV3 {
    id: [u8; 16],
    partitions: i32,
    configs: BTreeMap<String, String>,
    replicas: Vec<Vec<i32>>,
}

impl From<TopicMetadataV3> for TopicMetadata {
    fn from(old: TopicMetadataV3) -> TopicMetadata {
        TopicMetadata {
            id: old.id,
            partitions: old.partitions,
            configs: old.configs,
            replicas: old.replicas,
            targets: BTreeMap::new(),
            leaving: BTreeMap::new(),
            target_epochs: BTreeMap::new(),
        }
    }
}

/// The format-3 layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ClusterMetadataV3 {
    version: u64,
    topics: BTreeMap<String, TopicMetadataV3>,
    next_producer_id: i64,
    broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    brokers: BTreeMap<i32, BrokerRegistration>,
    cluster_member: bool,
    applied_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ClusterMetadata {
    /// Bumped on every change.
    pub version: u64,
    pub topics: BTreeMap<String, TopicMetadata>,
    /// Next producer id InitProducerId hands out.
    pub next_producer_id: i64,
    /// Dynamic broker configs set with AlterConfigs on a BROKER resource, by resource
    /// name: "" for the cluster-wide default, a node id for one broker.
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Registered brokers by node id (cluster mode; empty on a standalone node).
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    /// True once this state comes from the metadata quorum (the data dir belongs to a
    /// cluster node); false on a standalone node.
    pub cluster_member: bool,
    /// Index of the last metadata-log entry applied to this state (cluster mode).
    pub applied_index: u64,
}

/// The format-1 layout, read once and converted when an older data dir is opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ClusterMetadataV1 {
    version: u64,
    topics: BTreeMap<String, TopicMetadataV2>,
    next_producer_id: i64,
}

/// The format-2 layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ClusterMetadataV2 {
    version: u64,
    topics: BTreeMap<String, TopicMetadataV2>,
    next_producer_id: i64,
    broker_configs: BTreeMap<String, BTreeMap<String, String>>,
}

fn upgrade_topics(topics: BTreeMap<String, TopicMetadataV2>) -> BTreeMap<String, TopicMetadata> {
    topics.into_iter().map(|(name, topic)| (name, topic.into())).collect()
}

impl ClusterMetadata {
    /// The broker-level config layers topic defaults come from, as broker `node_id` sees
    /// them (`static_configs`: the ones it was started with).
    pub fn broker_layers<'a>(
        &'a self,
        node_id: i32,
        static_configs: &'a BTreeMap<String, String>,
    ) -> super::topic_config::BrokerLayers<'a> {
        super::topic_config::BrokerLayers {
            per_broker: self.broker_configs.get(&node_id.to_string()),
            cluster_default: self.broker_configs.get(""),
            static_configs,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let archived = rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("metadata serializes");
        let mut out = Vec::with_capacity(archived.len() + 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&crc32c::crc32c(&archived).to_be_bytes());
        out.extend_from_slice(&archived);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ClusterMetadata, String> {
        let magic = bytes.get(..8).unwrap_or_default();
        if bytes.len() < 12 || (magic != MAGIC && magic != MAGIC_V3 && magic != MAGIC_V2 && magic != MAGIC_V1) {
            return Err("not a tern metadata file".into());
        }
        let stored = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let body = &bytes[12..];
        if crc32c::crc32c(body) != stored {
            return Err("metadata checksum mismatch".into());
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        if magic == MAGIC_V1 {
            let old =
                rkyv::from_bytes::<ClusterMetadataV1, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())?;
            return Ok(ClusterMetadata {
                version: old.version,
                topics: upgrade_topics(old.topics),
                next_producer_id: old.next_producer_id,
                ..ClusterMetadata::default()
            });
        }
        if magic == MAGIC_V2 {
            let old =
                rkyv::from_bytes::<ClusterMetadataV2, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())?;
            return Ok(ClusterMetadata {
                version: old.version,
                topics: upgrade_topics(old.topics),
                next_producer_id: old.next_producer_id,
                broker_configs: old.broker_configs,
                ..ClusterMetadata::default()
            });
        }
        if magic == MAGIC_V3 {
            let old =
                rkyv::from_bytes::<ClusterMetadataV3, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())?;
            return Ok(ClusterMetadata {
                version: old.version,
                topics: old.topics.into_iter().map(|(name, topic)| (name, topic.into())).collect(),
                next_producer_id: old.next_producer_id,
                broker_configs: old.broker_configs,
                brokers: old.brokers,
                cluster_member: old.cluster_member,
                applied_index: old.applied_index,
            });
        }
        rkyv::from_bytes::<ClusterMetadata, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())
    }

    /// Loads the registry from `data_dir`, or an empty one if there is none yet.
    pub async fn load(data_dir: &Path) -> io::Result<ClusterMetadata> {
        match read_small_file(&data_dir.join(METADATA_FILE), &StorageEnv::default()).await? {
            None => Ok(ClusterMetadata { next_producer_id: 1000, ..ClusterMetadata::default() }),
            Some(bytes) => ClusterMetadata::decode(&bytes).map_err(|reason| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is damaged ({reason}): restore it from a backup",
                        data_dir.join(METADATA_FILE).display()
                    ),
                )
            }),
        }
    }

    pub async fn persist(&self, data_dir: &Path) -> io::Result<()> {
        write_file_atomic(&data_dir.join(METADATA_FILE), &self.encode(), &StorageEnv::default()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let mut metadata = ClusterMetadata { version: 3, next_producer_id: 77, ..ClusterMetadata::default() };
        metadata.broker_configs.insert(String::new(), [("log.retention.ms".into(), "5".into())].into());
        metadata.topics.insert(
            "orders".into(),
            TopicMetadata {
                id: [7; 16],
                partitions: 8,
                configs: [("retention.ms".into(), "1000".into())].into(),
                replicas: vec![vec![1, 2]; 8],
                targets: [(3, vec![2, 3])].into(),
                leaving: [(3, vec![4])].into(),
                target_epochs: [(3, 9)].into(),
            },
        );
        let bytes = metadata.encode();
        assert_eq!(ClusterMetadata::decode(&bytes).unwrap(), metadata);
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(ClusterMetadata::decode(&damaged).is_err());
        assert!(ClusterMetadata::decode(b"nope").is_err());
    }

    #[test]
    fn format_1_files_are_read_and_upgraded() {
        let old = ClusterMetadataV1 {
            version: 9,
            topics: [("t".to_string(), TopicMetadataV2 { id: [1; 16], partitions: 2, configs: BTreeMap::new() })]
                .into(),
            next_producer_id: 1234,
        };
        let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&archived).to_be_bytes());
        bytes.extend_from_slice(&archived);
        let upgraded = ClusterMetadata::decode(&bytes).unwrap();
        assert_eq!(upgraded.version, 9);
        assert_eq!(upgraded.next_producer_id, 1234);
        assert_eq!(upgraded.topics["t"].partitions, 2);
        assert!(upgraded.broker_configs.is_empty());
        assert_eq!(&upgraded.encode()[..8], MAGIC, "written back in the new format");
    }

    #[test]
    fn format_3_files_are_read_without_reassignments() {
        let topic =
            TopicMetadataV3 { id: [2; 16], partitions: 1, configs: BTreeMap::new(), replicas: vec![vec![1, 2, 3]] };
        let old = ClusterMetadataV3 {
            version: 4,
            topics: [("t".to_string(), topic)].into(),
            next_producer_id: 5000,
            cluster_member: true,
            applied_index: 17,
            ..ClusterMetadataV3::default()
        };
        let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let mut bytes = MAGIC_V3.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&archived).to_be_bytes());
        bytes.extend_from_slice(&archived);
        let upgraded = ClusterMetadata::decode(&bytes).unwrap();
        assert_eq!(upgraded.topics["t"].replicas_of(0), &[1, 2, 3]);
        assert!(upgraded.topics["t"].targets.is_empty());
        assert_eq!((upgraded.applied_index, upgraded.next_producer_id), (17, 5000));
        assert!(upgraded.cluster_member);
    }

    #[test]
    fn a_moving_partition_is_hosted_by_its_target_and_its_old_replicas() {
        let topic = TopicMetadata {
            id: [1; 16],
            partitions: 2,
            configs: BTreeMap::new(),
            replicas: vec![vec![1, 2, 3], vec![2, 3, 1]],
            targets: [(0, vec![4, 2, 1])].into(),
            leaving: [(0, vec![5])].into(),
            target_epochs: [(0, 4)].into(),
        };
        assert_eq!(topic.reassignment(0), Some(ReassignmentTarget { replicas: vec![4, 2, 1], epoch: 4 }));
        assert_eq!(topic.hosts_of(0), vec![4, 2, 1, 3, 5]);
        assert_eq!(topic.removing_of(0), vec![3, 5]);
        assert!(topic.removing_of(1).is_empty());
        assert_eq!(topic.desired_replicas(0), &[4, 2, 1]);
        assert_eq!(topic.hosts_of(1), vec![2, 3, 1]);
        assert_eq!(topic.target_of(1), None);
    }
}
