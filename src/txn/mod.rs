//! Transactions (KIP-98): the transaction coordinator's state.
//!
//! ```text
//! metadata.rs     a transactional id's state (producer, epoch, partitions) and its records
//! store.rs        __transaction_state: one compacted, durable log per partition, replayed
//! coordinator.rs  a shard's coordinator: the ids it owns, one state change at a time each
//! ```
//!
//! The coordinator of an id is the shard owning the id's `__transaction_state` partition.
//! What needs the rest of the broker (allocating producer ids, writing markers to the
//! transaction's partitions, completing transactional offset commits, timeouts) is
//! driven from the shard layer (`shard::transactions`), on top of this state.

pub mod coordinator;
pub mod metadata;
pub mod store;

pub use coordinator::{TxnConfig, TxnCoordinator, TxnLock};
pub use metadata::{TxnError, TxnMetadata, TxnState};
pub use store::{partition_for_txn, TxnStateWriter, TXN_STATE_PARTITIONS, TXN_STATE_TOPIC};
