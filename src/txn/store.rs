//! `__transaction_state`: where the coordinator persists every transactional id's state.
//!
//! `TXN_STATE_PARTITIONS` partitions, each a compacted log in
//! `<data-dir>/__transaction_state-<p>/` with the durable flush policy. An id lives in
//! partition `fnv1a_32(id) mod TXN_STATE_PARTITIONS`, owned by the shard the routing rule
//! names (so the layout survives a change of `--cores`). Every state change is one record
//! appended and fdatasync'ed before it takes effect (in a cluster with three nodes or
//! more: proposed to the partition's Raft group and committed by a majority, through the
//! writer the shard layer installs); at startup each shard replays its partitions (latest
//! value per id; a null value forgets it).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;

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

/// How a replicated partition's records are written (installed by the shard layer in
/// cluster mode): proposed to the partition's Raft group *when the function is called*,
/// so calls keep their order; the future resolves once the record is committed. `Err`
/// is the Kafka error code (NOT_COORDINATOR when this node no longer leads the group).
#[derive(Clone)]
pub struct TxnStateWriter(pub Rc<TxnStateWrite>);

/// See [`TxnStateWriter`].
pub type TxnStateWrite = dyn Fn(i32, Bytes) -> LocalBoxFuture<'static, Result<(), i16>>;

impl std::fmt::Debug for TxnStateWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TxnStateWriter")
    }
}

/// Why a state record was not written.
#[derive(Debug, thiserror::Error)]
pub enum TxnStoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The replicated write failed with this Kafka error code.
    #[error("the replicated write failed with error {0}")]
    Replicated(i16),
}

/// A state record on its way to the disk (or to a majority of the replicas).
pub type QueuedState = LocalBoxFuture<'static, Result<(), TxnStoreError>>;

/// One partition of `__transaction_state`: its log, and a gate that keeps the log's order
/// the order in which state changes apply.
#[derive(Debug)]
pub struct TxnStatePartition {
    partition: i32,
    log: RefCell<PartitionLog>,
    gate: Rc<glommio::sync::Semaphore>,
    /// Cluster mode: the partition is a Raft group and its records go through it.
    writer: RefCell<Option<TxnStateWriter>>,
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
        let store = TxnStatePartition {
            partition,
            log: RefCell::new(log),
            gate: Rc::new(glommio::sync::Semaphore::new(1)),
            writer: RefCell::new(None),
        };
        Ok((store, states))
    }

    pub fn log(&self) -> PartitionLog {
        self.log.borrow().clone()
    }

    /// The replica group reopened the log (after cutting it back).
    pub fn set_log(&self, log: PartitionLog) {
        *self.log.borrow_mut() = log;
    }

    /// Cluster mode: from now on records go through the partition's Raft group.
    pub fn replicate_with(&self, writer: TxnStateWriter) {
        *self.writer.borrow_mut() = Some(writer);
    }

    pub fn is_replicated(&self) -> bool {
        self.writer.borrow().is_some()
    }

    /// Every id's latest state in the log as it is now (a new leader's view).
    pub async fn replay(&self) -> Result<HashMap<String, TxnMetadata>, StorageError> {
        replay(&self.log()).await
    }

    /// Writes one id's new state (`None` forgets it) and waits until it is durable.
    pub async fn write(&self, transactional_id: &str, meta: Option<&TxnMetadata>) -> Result<(), TxnStoreError> {
        self.queue(transactional_id, meta).await?.await
    }

    /// Queues one id's new state after every state queued before it; the returned
    /// future resolves once it is durable (replicated: committed by a majority).
    pub async fn queue(
        &self,
        transactional_id: &str,
        meta: Option<&TxnMetadata>,
    ) -> Result<QueuedState, TxnStoreError> {
        let _permit = self.gate.acquire_permit(1).await;
        let key = encode_key(transactional_id);
        let value = meta.map(encode_value);
        let now_ms = meta.map_or(0, |m| m.update_ms);
        let batch = build::keyed_batch(&[(Some(key.as_slice()), value.as_deref())], now_ms);
        let writer = self.writer.borrow().clone();
        if let Some(writer) = writer {
            let proposed = (writer.0)(self.partition, Bytes::from(batch));
            return Ok(Box::pin(async move { proposed.await.map_err(TxnStoreError::Replicated) }));
        }
        let pending = self.log().append_nowait(BytesMut::from(&batch[..])).map_err(|error| match error {
            AppendError::Storage(storage) => storage,
            other => StorageError::InvalidConfig { reason: format!("transaction state record refused: {other}") },
        })?;
        Ok(Box::pin(durable(pending)))
    }
}

async fn durable(pending: PendingAppend) -> Result<(), TxnStoreError> {
    pending.durable().await?;
    Ok(())
}

/// Every id's latest state in a `__transaction_state` partition log.
pub async fn replay_log(log: &PartitionLog) -> Result<HashMap<String, TxnMetadata>, StorageError> {
    replay(log).await
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
