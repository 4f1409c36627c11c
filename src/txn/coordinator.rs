//! A shard's transaction coordinator state: the transactional ids of the
//! `__transaction_state` partitions this shard owns, and their logs.
//!
//! Each id changes state one request at a time: a request takes the id's lock
//! ([`TxnCoordinator::lock`]) for its whole check-persist-apply sequence, and a second
//! request for the same id meanwhile gets CONCURRENT_TRANSACTIONS (clients retry it).
//! A state change takes effect in memory only after its record is durable.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use crate::storage::{PartitionLog, StorageError};

use super::metadata::{TxnError, TxnMetadata, TxnState};
use super::store::{
    partition_for_txn, TxnStatePartition, TxnStateWriter, TxnStoreError, TXN_STATE_PARTITIONS, TXN_STATE_TOPIC,
};

/// Broker-wide transaction settings.
#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    /// transaction.max.timeout.ms: the longest timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// How often open transactions are checked for their timeout
    /// (transaction.abort.timed.out.transaction.cleanup.interval.ms).
    pub timeout_check_interval_ms: u64,
}

impl Default for TxnConfig {
    fn default() -> TxnConfig {
        TxnConfig { max_timeout_ms: 900_000, timeout_check_interval_ms: 1_000 }
    }
}

#[derive(Debug, Default)]
pub struct TxnCoordinator {
    pub config: TxnConfig,
    partitions: RefCell<HashMap<i32, Rc<TxnStatePartition>>>,
    /// The ids of the partitions this shard coordinates now (`ready`).
    txns: RefCell<HashMap<String, TxnMetadata>>,
    busy: Rc<RefCell<HashSet<String>>>,
    loaded: Cell<bool>,
    /// Partitions whose ids this shard coordinates: standalone every partition it owns;
    /// in a cluster those this node leads (replicated) or is the home of (not
    /// replicated), once their state is loaded.
    ready: RefCell<HashSet<i32>>,
    /// The epoch this shard coordinates each partition in (its Raft leader epoch; 0 when
    /// not replicated): markers carry it, and partitions refuse a lower one than they
    /// have applied (a deposed coordinator's late marker).
    epochs: RefCell<HashMap<i32, i32>>,
}

/// The right to change one id's state; released when dropped.
#[derive(Debug)]
pub struct TxnLock {
    id: String,
    busy: Rc<RefCell<HashSet<String>>>,
}

impl TxnLock {
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for TxnLock {
    fn drop(&mut self) {
        self.busy.borrow_mut().remove(&self.id);
    }
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> TxnCoordinator {
        TxnCoordinator { config, ..TxnCoordinator::default() }
    }

    /// Opens and replays the `__transaction_state` partitions `owns` says are this shard's,
    /// and coordinates those `coordinates` names at once (the others wait for
    /// [`TxnCoordinator::lead`]).
    pub async fn load(
        &self,
        data_dir: &Path,
        owns: impl Fn(i32) -> bool,
        coordinates: impl Fn(i32) -> bool,
    ) -> Result<(), String> {
        for partition in (0..TXN_STATE_PARTITIONS).filter(|p| owns(*p)) {
            let (store, states) = TxnStatePartition::open(data_dir, partition)
                .await
                .map_err(|e| format!("cannot load {TXN_STATE_TOPIC}-{partition}: {e}"))?;
            self.partitions.borrow_mut().insert(partition, Rc::new(store));
            if coordinates(partition) {
                tracing::info!(partition, transactional_ids = states.len(), "loaded transaction state");
                self.txns.borrow_mut().extend(states);
                self.ready.borrow_mut().insert(partition);
            }
        }
        self.loaded.set(true);
        Ok(())
    }

    /// The log of partition `partition`, if this shard holds it.
    pub fn partition_log(&self, partition: i32) -> Option<PartitionLog> {
        self.partitions.borrow().get(&partition).map(|p| p.log())
    }

    /// Opens partition `partition` afresh (its directory was moved aside).
    pub async fn reopen(&self, data_dir: &Path, partition: i32) -> Result<PartitionLog, StorageError> {
        let (store, _) = TxnStatePartition::open(data_dir, partition).await?;
        let log = store.log();
        self.partitions.borrow_mut().insert(partition, Rc::new(store));
        Ok(log)
    }

    /// The replica group reopened partition `partition`'s log.
    pub fn replace_log(&self, partition: i32, log: PartitionLog) {
        if let Some(store) = self.partitions.borrow().get(&partition) {
            store.set_log(log);
        }
    }

    /// Cluster mode: partition `partition` is replicated; its records go through `writer`.
    pub fn replicate_with(&self, partition: i32, writer: TxnStateWriter) {
        if let Some(store) = self.partitions.borrow().get(&partition) {
            store.replicate_with(writer);
        }
    }

    /// This node now leads replicated partition `partition` and its log holds every
    /// record earlier leaders committed: its ids are reloaded from it and coordinated
    /// here. Returns how many ids it holds.
    pub async fn lead(&self, partition: i32, coordinator_epoch: i32) -> Result<usize, String> {
        let store = self
            .partitions
            .borrow()
            .get(&partition)
            .cloned()
            .ok_or_else(|| format!("{TXN_STATE_TOPIC}-{partition} is not on this shard"))?;
        let states = store.replay().await.map_err(|e| e.to_string())?;
        let count = states.len();
        let mut txns = self.txns.borrow_mut();
        txns.retain(|id, _| partition_for_txn(id) != partition);
        txns.extend(states);
        self.ready.borrow_mut().insert(partition);
        self.epochs.borrow_mut().insert(partition, coordinator_epoch);
        Ok(count)
    }

    /// The coordinator epoch of partition `partition` here (see `epochs`).
    pub fn coordinator_epoch(&self, partition: i32) -> i32 {
        self.epochs.borrow().get(&partition).copied().unwrap_or(0)
    }

    /// This node no longer leads partition `partition`: its ids are coordinated elsewhere.
    pub fn follow(&self, partition: i32) {
        self.ready.borrow_mut().remove(&partition);
        self.txns.borrow_mut().retain(|id, _| partition_for_txn(id) != partition);
    }

    /// Takes `id`'s lock, or says the id is busy (CONCURRENT_TRANSACTIONS).
    pub fn lock(&self, id: &str) -> Result<TxnLock, TxnError> {
        if !self.loaded.get() {
            return Err(TxnError::CoordinatorLoadInProgress);
        }
        if !self.ready.borrow().contains(&partition_for_txn(id)) {
            return Err(TxnError::NotCoordinator);
        }
        if !self.busy.borrow_mut().insert(id.to_string()) {
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok(TxnLock { id: id.to_string(), busy: self.busy.clone() })
    }

    pub fn get(&self, id: &str) -> Option<TxnMetadata> {
        self.txns.borrow().get(id).cloned()
    }

    /// Persists `meta` as `lock`'s id's new state, then applies it.
    pub async fn persist(&self, lock: &TxnLock, meta: TxnMetadata) -> Result<(), TxnError> {
        let partition = partition_for_txn(&lock.id);
        let store = self.partitions.borrow().get(&partition).cloned().ok_or(TxnError::NotCoordinator)?;
        store.write(&lock.id, Some(&meta)).await.map_err(|error| store_error(&lock.id, error))?;
        self.apply(partition, &lock.id, meta)
    }

    /// Applies a persisted state, unless this shard stopped coordinating the id's
    /// partition meanwhile (the new leader has the record from the log).
    fn apply(&self, partition: i32, id: &str, meta: TxnMetadata) -> Result<(), TxnError> {
        if !self.ready.borrow().contains(&partition) {
            return Err(TxnError::NotCoordinator);
        }
        self.txns.borrow_mut().insert(id.to_string(), meta);
        Ok(())
    }

    /// Applies `meta` as `lock`'s id's new state now and makes it durable in the
    /// background: for a state whose loss in a crash is harmless (a completion: the
    /// restarted coordinator finds the Prepare state and writes the markers again, which
    /// changes nothing where they are already written). A later state of the id is
    /// queued behind it, so once that one is durable, this one is too.
    pub async fn persist_in_background(&self, lock: &TxnLock, meta: TxnMetadata) -> Result<(), TxnError> {
        let partition = partition_for_txn(&lock.id);
        let store = self.partitions.borrow().get(&partition).cloned().ok_or(TxnError::NotCoordinator)?;
        let pending = store.queue(&lock.id, Some(&meta)).await.map_err(|error| store_error(&lock.id, error))?;
        self.apply(partition, &lock.id, meta)?;
        let id = lock.id.clone();
        glommio::spawn_local(async move {
            if let Err(error) = pending.await {
                tracing::warn!(transactional_id = %id, %error, "a transaction's completion did not reach the disk");
            }
        })
        .detach();
        Ok(())
    }

    /// Every id with its state, sorted by id.
    pub fn all(&self) -> Vec<(String, TxnMetadata)> {
        let mut all: Vec<_> = self.txns.borrow().iter().map(|(id, m)| (id.clone(), m.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Ids whose open transaction has outlived its timeout.
    pub fn expired(&self, now_ms: i64) -> Vec<String> {
        self.txns.borrow().iter().filter(|(_, m)| m.expired(now_ms)).map(|(id, _)| id.clone()).collect()
    }

    /// Ids with no open transaction whose state has not changed since `cutoff_ms`.
    pub fn idle_since(&self, cutoff_ms: i64) -> Vec<String> {
        self.txns
            .borrow()
            .iter()
            .filter(|(_, m)| {
                !matches!(m.state, TxnState::Ongoing) && !m.state.is_preparing() && m.update_ms < cutoff_ms
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Forgets `lock`'s id (a tombstone in its log, then out of memory).
    pub async fn forget(&self, lock: &TxnLock) -> Result<(), TxnError> {
        let partition = partition_for_txn(&lock.id);
        let store = self.partitions.borrow().get(&partition).cloned().ok_or(TxnError::NotCoordinator)?;
        store.write(&lock.id, None).await.map_err(|error| store_error(&lock.id, error))?;
        self.txns.borrow_mut().remove(&lock.id);
        Ok(())
    }

    /// Ids whose markers were being written (after a restart: to finish).
    pub fn preparing(&self) -> Vec<String> {
        self.txns.borrow().iter().filter(|(_, m)| m.state.is_preparing()).map(|(id, _)| id.clone()).collect()
    }

    /// Whether any transaction is open or completing (the timeout check then runs).
    pub fn has_open(&self) -> bool {
        self.txns.borrow().values().any(|m| matches!(m.state, TxnState::Ongoing) || m.state.is_preparing())
    }

    pub fn logs(&self) -> Vec<PartitionLog> {
        self.partitions.borrow().values().map(|p| p.log()).collect()
    }

    pub async fn close(&self) -> Result<(), StorageError> {
        for log in self.logs() {
            log.close().await?;
        }
        Ok(())
    }
}

/// The client's error for a state record that was not written.
fn store_error(id: &str, error: TxnStoreError) -> TxnError {
    tracing::warn!(transactional_id = %id, %error, "could not persist transaction state");
    match error {
        TxnStoreError::Replicated(code) if code == kafka_protocol::error::ResponseError::NotCoordinator.code() => {
            TxnError::NotCoordinator
        }
        _ => TxnError::CoordinatorNotAvailable,
    }
}
