//! Committed offsets, stored in the internal `__consumer_offsets` log.
//!
//! The log has `OFFSETS_PARTITIONS` partitions, each a normal storage-engine log in
//! `<data-dir>/__consumer_offsets-<p>/` with the durable flush policy. A group's offsets
//! (and its coordinator) live in partition `fnv1a_32(group) mod OFFSETS_PARTITIONS`,
//! owned by the shard the partition routing rule names, so the layout survives a change
//! of `--cores`. A commit is one record batch, appended and fdatasync'ed before the
//! OffsetCommit is answered; on startup each shard replays its partitions (latest value
//! per group/topic/partition; a null value is a tombstone). The logs are compacted
//! (`cleanup.policy=compact`, as in Kafka) by the shard's general log cleaner
//! (`storage::cleaner`), so replay reads about one record per live key.
//!
//! Record format (internal; big-endian): key `[1u8][u16 len][group][u16 len][topic][i32
//! partition]`; value `[i64 offset][i32 leader epoch][i64 commit ms][u16 len][metadata]`.
//!
//! Transactional commits (TxnOffsetCommit) are staged under key `[2u8][i64 producer id]`
//! followed by the same group/topic/partition, with the same value: durable, but not
//! visible to OffsetFetch. When the transaction ends, one batch turns them into
//! committed offsets (commit) or drops them (abort) and deletes the staged keys, so a
//! crash leaves either the staged or the final state, never half of each.

use std::collections::HashMap;
use std::path::Path;

use bytes::BytesMut;

use crate::protocol::record_batch::build;
use crate::storage::{AppendError, LogConfig, PartitionLog, StorageEnv, StorageError};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
pub const OFFSETS_PARTITIONS: i32 = 16;
/// Segment size of the offsets logs.
pub const OFFSETS_SEGMENT_BYTES: u64 = 16 << 20;

/// Which `__consumer_offsets` partition holds a group.
pub fn partition_for_group(group_id: &str) -> i32 {
    (crate::stable_hash::fnv1a_32(group_id.as_bytes()) % OFFSETS_PARTITIONS as u32) as i32
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

/// (group, topic, partition)
pub type OffsetKey = (String, String, i32);

/// Offsets a transaction staged, by producer id.
pub type StagedOffsets = HashMap<i64, HashMap<OffsetKey, CommittedOffset>>;

/// What a replay of an offsets log finds.
#[derive(Debug, Default)]
pub struct Replayed {
    pub offsets: HashMap<OffsetKey, CommittedOffset>,
    pub staged: StagedOffsets,
    /// Stable groups' members and generations (see `membership`).
    pub groups: HashMap<String, super::membership::GroupSnapshot>,
}

#[derive(Debug)]
pub struct OffsetPartition {
    log: PartitionLog,
    offsets: HashMap<OffsetKey, CommittedOffset>,
    /// Transactional commits waiting for their transaction's end.
    staged: StagedOffsets,
    /// Stable groups found when the log was opened, until the coordinator takes them.
    restored_groups: HashMap<String, super::membership::GroupSnapshot>,
    /// Serializes writers (commits, deletions) so the log's order is the
    /// order in which entries are applied.
    gate: std::rc::Rc<glommio::sync::Semaphore>,
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    out.extend_from_slice(&(value.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&value.as_bytes()[..value.len().min(u16::MAX as usize)]);
}

fn encode_key((group, topic, partition): &OffsetKey) -> Vec<u8> {
    let mut out = vec![1u8];
    put_str(&mut out, group);
    put_str(&mut out, topic);
    out.extend_from_slice(&partition.to_be_bytes());
    out
}

fn encode_value(value: &CommittedOffset) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&value.offset.to_be_bytes());
    out.extend_from_slice(&value.leader_epoch.to_be_bytes());
    out.extend_from_slice(&value.commit_ms.to_be_bytes());
    put_str(&mut out, value.metadata.as_deref().unwrap_or(""));
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn string(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.bytes(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.bytes(len)?.to_vec()).ok()
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.bytes(8)?.try_into().ok()?))
    }
}

fn decode_key(bytes: &[u8]) -> Option<OffsetKey> {
    let mut reader = Reader(bytes);
    if reader.bytes(1)? != [1u8] {
        return None;
    }
    Some((reader.string()?, reader.string()?, reader.i32()?))
}

fn encode_staged_key(producer_id: i64, (group, topic, partition): &OffsetKey) -> Vec<u8> {
    let mut out = vec![2u8];
    out.extend_from_slice(&producer_id.to_be_bytes());
    put_str(&mut out, group);
    put_str(&mut out, topic);
    out.extend_from_slice(&partition.to_be_bytes());
    out
}

fn decode_staged_key(bytes: &[u8]) -> Option<(i64, OffsetKey)> {
    let mut reader = Reader(bytes);
    if reader.bytes(1)? != [2u8] {
        return None;
    }
    let producer_id = reader.i64()?;
    Some((producer_id, (reader.string()?, reader.string()?, reader.i32()?)))
}

fn decode_value(bytes: &[u8]) -> Option<CommittedOffset> {
    let mut reader = Reader(bytes);
    let offset = reader.i64()?;
    let leader_epoch = reader.i32()?;
    let commit_ms = reader.i64()?;
    let metadata = reader.string()?;
    Some(CommittedOffset { offset, leader_epoch, commit_ms, metadata: (!metadata.is_empty()).then_some(metadata) })
}

fn append_error(error: AppendError) -> StorageError {
    match error {
        AppendError::Storage(storage) => storage,
        other => StorageError::InvalidConfig { reason: format!("offset commit batch refused: {other}") },
    }
}

impl OffsetPartition {
    /// Opens the partition's log and replays it.
    pub async fn open(data_dir: &Path, partition: i32) -> Result<OffsetPartition, StorageError> {
        let dir = data_dir.join(format!("{OFFSETS_TOPIC}-{partition}"));
        // Compacted like Kafka's (offsets.topic.segment.bytes is smaller than a topic's
        // default, so superseded commits become cleanable soon and replay stays short).
        // Read only by the replay at startup: no need for the shard's batch cache.
        let config = LogConfig {
            retention_ms: -1,
            segment_bytes: OFFSETS_SEGMENT_BYTES,
            use_batch_cache: false,
            compact: true,
            delete_by_retention: false,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&dir, config, StorageEnv::default()).await?;
        let Replayed { offsets, staged, groups } = replay(&log).await?;
        tracing::info!(
            partition,
            offsets = offsets.len(),
            staged_transactions = staged.len(),
            "loaded committed offsets"
        );
        Ok(OffsetPartition {
            log,
            offsets,
            staged,
            restored_groups: groups,
            gate: std::rc::Rc::new(glommio::sync::Semaphore::new(1)),
        })
    }

    /// The stable groups the log held when it was opened (taken once, by the
    /// coordinator that restores them).
    pub fn take_restored_groups(&mut self) -> HashMap<String, super::membership::GroupSnapshot> {
        std::mem::take(&mut self.restored_groups)
    }

    /// Replaces the in-memory offsets with the log's (a replica that became leader: its
    /// log took the previous leader's commits through Raft).
    pub fn reset(&mut self, replayed: Replayed) {
        self.offsets = replayed.offsets;
        self.staged = replayed.staged;
    }

    /// Stages a transaction's offsets (already written with [`encode_staged`]).
    pub fn stage(&mut self, producer_id: i64, entries: Vec<(OffsetKey, CommittedOffset)>) {
        self.staged.entry(producer_id).or_default().extend(entries);
    }

    /// What `producer_id`'s transaction staged here.
    pub fn staged_by(&self, producer_id: i64) -> Vec<(OffsetKey, CommittedOffset)> {
        let mut out: Vec<_> = self
            .staged
            .get(&producer_id)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Ends `producer_id`'s staged offsets (written with [`encode_staged_end`]): on
    /// commit they become committed offsets.
    pub fn end_staged(&mut self, producer_id: i64, commit: bool) {
        let Some(staged) = self.staged.remove(&producer_id) else { return };
        if commit {
            self.offsets.extend(staged);
        }
    }

    /// Whether an open transaction staged an offset for `key` (OffsetFetch with
    /// require_stable answers UNSTABLE_OFFSET_COMMIT then).
    pub fn is_unstable(&self, key: &OffsetKey) -> bool {
        self.staged.values().any(|m| m.contains_key(key))
    }

    /// The replica group reopened the log (after cutting its uncommitted tail).
    pub fn set_log(&mut self, log: PartitionLog) {
        self.log = log;
    }
}

/// Every committed offset in `log` up to its high watermark (latest value per key; a
/// null value deletes).
pub async fn replay(log: &PartitionLog) -> Result<Replayed, StorageError> {
    let mut offsets = HashMap::new();
    let mut staged: StagedOffsets = HashMap::new();
    let mut groups = HashMap::new();
    log.replay_records(|key, value| {
        if let Some(group) = key.and_then(super::membership::decode_key) {
            match value.and_then(super::membership::decode_value) {
                Some(snapshot) => groups.insert(group, snapshot),
                None => groups.remove(&group),
            };
            return;
        }
        if let Some((producer_id, key)) = key.and_then(decode_staged_key) {
            let txn = staged.entry(producer_id).or_default();
            match value.and_then(decode_value) {
                Some(value) => txn.insert(key, value),
                None => txn.remove(&key),
            };
            if txn.is_empty() {
                staged.remove(&producer_id);
            }
            return;
        }
        let Some(key) = key.and_then(decode_key) else { return };
        match value.and_then(decode_value) {
            Some(value) => offsets.insert(key, value),
            None => offsets.remove(&key),
        };
    })
    .await?;
    Ok(Replayed { offsets, staged, groups })
}

impl OffsetPartition {
    /// Applies entries already written with [`append_entries`].
    pub fn apply(&mut self, entries: Vec<(OffsetKey, Option<CommittedOffset>)>) {
        for (key, value) in entries {
            match value {
                Some(value) => self.offsets.insert(key, value),
                None => self.offsets.remove(&key),
            };
        }
    }

    pub fn get(&self, key: &OffsetKey) -> Option<&CommittedOffset> {
        self.offsets.get(key)
    }

    /// Every committed offset of a group.
    pub fn group_offsets(&self, group: &str) -> Vec<(OffsetKey, CommittedOffset)> {
        let mut out: Vec<_> =
            self.offsets.iter().filter(|(k, _)| k.0 == group).map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Keys whose topic is not in `live_topics` (the topic was deleted).
    pub fn orphaned(&self, live_topics: &dyn Fn(&str) -> bool) -> Vec<OffsetKey> {
        self.offsets.keys().filter(|(_, topic, _)| !live_topics(topic)).cloned().collect()
    }

    /// Groups with offsets in this partition.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self.offsets.keys().map(|(g, _, _)| g.clone()).collect();
        groups.sort();
        groups.dedup();
        groups
    }

    pub fn log(&self) -> PartitionLog {
        self.log.clone()
    }

    pub fn gate(&self) -> std::rc::Rc<glommio::sync::Semaphore> {
        self.gate.clone()
    }

    /// Every committed offset of the partition.
    pub fn all(&self) -> impl Iterator<Item = (&OffsetKey, &CommittedOffset)> {
        self.offsets.iter()
    }

    /// Groups whose every offset was committed before `cutoff_ms`.
    pub fn stale_groups(&self, cutoff_ms: i64) -> Vec<String> {
        let mut newest: HashMap<&str, i64> = HashMap::new();
        for ((group, _, _), value) in &self.offsets {
            let entry = newest.entry(group.as_str()).or_insert(i64::MIN);
            *entry = (*entry).max(value.commit_ms);
        }
        let mut stale: Vec<String> =
            newest.into_iter().filter(|(_, t)| *t < cutoff_ms).map(|(g, _)| g.to_string()).collect();
        stale.sort();
        stale
    }
}

/// Writes entries (value `None` deletes) to an offsets partition's log as one batch and
/// waits until it is durable. Apply them with [`OffsetPartition::apply`] afterwards.
pub async fn append_entries(
    log: &PartitionLog,
    entries: &[(OffsetKey, Option<CommittedOffset>)],
) -> Result<(), StorageError> {
    let Some(batch) = encode_entries(entries) else { return Ok(()) };
    log.append(batch).await.map_err(append_error)?;
    Ok(())
}

/// Entries as one record batch (`None` when there are none).
pub fn encode_entries(entries: &[(OffsetKey, Option<CommittedOffset>)]) -> Option<BytesMut> {
    let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        entries.iter().map(|(key, value)| (encode_key(key), value.as_ref().map(encode_value))).collect();
    let now_ms = entries.iter().filter_map(|(_, v)| v.as_ref().map(|v| v.commit_ms)).max().unwrap_or(0);
    encode_records(&encoded, now_ms)
}

fn encode_records(encoded: &[(Vec<u8>, Option<Vec<u8>>)], now_ms: i64) -> Option<BytesMut> {
    if encoded.is_empty() {
        return None;
    }
    let views: Vec<build::KeyValue<'_>> =
        encoded.iter().map(|(key, value)| (Some(key.as_slice()), value.as_deref())).collect();
    let batch = build::keyed_batch(&views, now_ms);
    Some(BytesMut::from(&batch[..]))
}

/// A group's membership record (`None`: its tombstone) as one record batch.
pub fn encode_membership(
    group_id: &str,
    snapshot: Option<&super::membership::GroupSnapshot>,
    now_ms: i64,
) -> Option<BytesMut> {
    let encoded = [(super::membership::encode_key(group_id), snapshot.map(super::membership::encode_value))];
    encode_records(&encoded, now_ms)
}

/// A transaction's staged offsets as one record batch.
pub fn encode_staged(producer_id: i64, entries: &[(OffsetKey, CommittedOffset)], now_ms: i64) -> Option<BytesMut> {
    let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        entries.iter().map(|(key, value)| (encode_staged_key(producer_id, key), Some(encode_value(value)))).collect();
    encode_records(&encoded, now_ms)
}

/// The end of a transaction's staged offsets as one batch: the committed offsets (on
/// commit) and the deletion of every staged key.
pub fn encode_staged_end(
    producer_id: i64,
    staged: &[(OffsetKey, CommittedOffset)],
    commit: bool,
    now_ms: i64,
) -> Option<BytesMut> {
    let mut encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(staged.len() * 2);
    if commit {
        encoded.extend(staged.iter().map(|(key, value)| (encode_key(key), Some(encode_value(value)))));
    }
    encoded.extend(staged.iter().map(|(key, _)| (encode_staged_key(producer_id, key), None)));
    encode_records(&encoded, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let key = ("group".to_string(), "topic.a".to_string(), 7);
        assert_eq!(decode_key(&encode_key(&key)), Some(key.clone()));
        let value = CommittedOffset { offset: 42, leader_epoch: -1, metadata: Some("m".into()), commit_ms: 9 };
        assert_eq!(decode_value(&encode_value(&value)), Some(value));
        assert_eq!(decode_key(b"\x02junk"), None);
        assert_eq!(decode_staged_key(&encode_staged_key(9, &key)), Some((9, key.clone())));
        assert_eq!(decode_staged_key(&encode_key(&key)), None);
        assert_eq!(decode_value(b"short"), None);
        assert!((0..OFFSETS_PARTITIONS).contains(&partition_for_group("any-group")));
    }
}
