//! `__transaction_state`: where the coordinator persists every transactional id's state.
//!
//! `TXN_STATE_PARTITIONS` partitions, each a compacted log in
//! `<data-dir>/__transaction_state-<p>/` with the durable flush policy. An id lives in
//! partition `fnv1a_32(id) mod TXN_STATE_PARTITIONS`, owned by the shard the routing rule
//! names (so the layout survives a change of `--cores`). Every state change is one record
//! appended and fdatasync'ed before it takes effect; at startup each shard replays its
//! partitions (latest value per id; a null value forgets it).

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use bytes::BytesMut;

use crate::protocol::record_batch::build;
use crate::storage::{AppendError, LogConfig, PartitionLog, PendingAppend, StorageEnv, StorageError};

use super::metadata::{decode_key, decode_value, encode_key, encode_value, TxnMetadata};

pub const TXN_STATE_TOPIC: &str = "__transaction_state";
pub const TXN_STATE_PARTITIONS: i32 = 16;
const TXN_STATE_SEGMENT_BYTES: u64 = 16 << 20;

/// Which `__transaction_state` partition holds a transactional id.
pub fn partition_for_txn(transactional_id: &str) -> i32 {
    (crate::stable_hash::fnv1a_32(transactional_id.as_bytes()) % TXN_STATE_PARTITIONS as u32) as i32
}

/// One partition of `__transaction_state`: its log, and a gate that keeps the log's order
/// the order in which state changes apply.
#[derive(Debug)]
pub struct TxnStatePartition {
    log: PartitionLog,
    gate: Rc<glommio::sync::Semaphore>,
}

impl TxnStatePartition {
    /// Opens the partition's log and replays it.
    pub async fn open(
        data_dir: &Path,
        partition: i32,
    ) -> Result<(TxnStatePartition, HashMap<String, TxnMetadata>), StorageError> {
        let dir = data_dir.join(format!("{TXN_STATE_TOPIC}-{partition}"));
        let config = LogConfig {
            retention_ms: -1,
            segment_bytes: TXN_STATE_SEGMENT_BYTES,
            use_batch_cache: false,
            compact: true,
            delete_by_retention: false,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&dir, config, StorageEnv::default()).await?;
        let states = replay(&log).await?;
        Ok((TxnStatePartition { log, gate: Rc::new(glommio::sync::Semaphore::new(1)) }, states))
    }

    pub fn log(&self) -> PartitionLog {
        self.log.clone()
    }

    /// Writes one id's new state (`None` forgets it) and waits until it is durable.
    pub async fn write(&self, transactional_id: &str, meta: Option<&TxnMetadata>) -> Result<(), StorageError> {
        self.queue(transactional_id, meta).await?.durable().await?;
        Ok(())
    }

    /// Queues one id's new state after every state queued before it; the returned
    /// append resolves once it is durable.
    pub async fn queue(
        &self,
        transactional_id: &str,
        meta: Option<&TxnMetadata>,
    ) -> Result<PendingAppend, StorageError> {
        let _permit = self.gate.acquire_permit(1).await;
        let key = encode_key(transactional_id);
        let value = meta.map(encode_value);
        let now_ms = meta.map_or(0, |m| m.update_ms);
        let batch = build::keyed_batch(&[(Some(key.as_slice()), value.as_deref())], now_ms);
        self.log.append_nowait(BytesMut::from(&batch[..])).map_err(|error| match error {
            AppendError::Storage(storage) => storage,
            other => StorageError::InvalidConfig { reason: format!("transaction state record refused: {other}") },
        })
    }
}

/// Every id's latest state in `log` up to its high watermark.
async fn replay(log: &PartitionLog) -> Result<HashMap<String, TxnMetadata>, StorageError> {
    let mut states = HashMap::new();
    log.replay_records(|key, value| {
        let Some(id) = key.and_then(decode_key) else { return };
        match value.and_then(decode_value) {
            Some(meta) => states.insert(id, meta),
            None => states.remove(&id),
        };
    })
    .await?;
    Ok(states)
}
