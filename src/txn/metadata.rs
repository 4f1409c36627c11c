//! One transactional id's state, as the coordinator keeps it and `__transaction_state`
//! stores it, and the rules for moving it (Kafka's `TransactionMetadata`).
//!
//! ```text
//! Empty ──AddPartitions──▶ Ongoing ──EndTxn(commit)──▶ PrepareCommit ──markers──▶ CompleteCommit
//!   ▲                        │    └──EndTxn(abort) / timeout / InitProducerId──▶ PrepareAbort ──markers──▶ CompleteAbort
//!   └──InitProducerId─────── Complete* (epoch bumped) ◀─────────────────────────────────────────────┘
//! ```
//!
//! Record format in `__transaction_state` (internal; big-endian): key `[1u8][u16 len][id]`;
//! value `[i64 producer id][i16 epoch][i32 timeout ms][u8 state][i64 start ms][i64 update ms]
//! [u32 n] n x [u16 len][topic][i32 partition]`; a null value forgets the id.

use std::collections::BTreeSet;

use crate::protocol::topic_partition::TopicPartition;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    /// No transaction open (a fresh id, or one whose producer was just initialized).
    Empty,
    /// Partitions have been added: records may be in the log.
    Ongoing,
    /// Commit decided (durable); markers being written.
    PrepareCommit,
    /// Abort decided (durable); markers being written.
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// The name Kafka's admin APIs use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }

    pub const ALL: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];

    fn code(self) -> u8 {
        TxnState::ALL.iter().position(|s| *s == self).expect("listed") as u8
    }

    fn from_code(code: u8) -> Option<TxnState> {
        TxnState::ALL.get(usize::from(code)).copied()
    }

    /// Markers are being written: the id takes no new work until they are.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// A transactional id's producer and its current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// When the current transaction got its first partition (wall clock), -1 when none.
    pub start_ms: i64,
    pub update_ms: i64,
    /// Partitions in the transaction, `__consumer_offsets` ones included (AddOffsetsToTxn).
    pub partitions: BTreeSet<TopicPartition>,
}

/// The highest epoch a producer id is given; past it the id gets a new producer id.
pub const EPOCH_MAX: i16 = i16::MAX - 1;

impl TxnMetadata {
    /// Whether a request from `producer_id`/`producer_epoch` is this id's current producer:
    /// `Err(code)` names the Kafka error otherwise.
    pub fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if producer_epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(())
    }

    /// Has the open transaction outlived its timeout at `now_ms`?
    pub fn expired(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing && self.start_ms >= 0 && now_ms - self.start_ms > i64::from(self.timeout_ms)
    }
}

/// Why a transactional request is refused (mapped to Kafka error codes by the handlers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("the producer id does not belong to this transactional id")]
    InvalidProducerIdMapping,
    #[error("a newer producer with the same transactional id fenced this one")]
    ProducerFenced,
    #[error("the transaction is completing; retry")]
    ConcurrentTransactions,
    #[error("the request is not valid in the transaction's state")]
    InvalidTxnState,
    #[error("the transaction timeout is above transaction.max.timeout.ms or not positive")]
    InvalidTransactionTimeout,
    #[error("this broker does not coordinate the transactional id")]
    NotCoordinator,
    #[error("the transaction coordinator is loading its state")]
    CoordinatorLoadInProgress,
    #[error("the coordinator could not allocate a producer id or write its state")]
    CoordinatorNotAvailable,
    #[error("no such transactional id")]
    TransactionalIdNotFound,
}

impl TxnError {
    pub fn code(self) -> i16 {
        use kafka_protocol::error::ResponseError as E;
        match self {
            TxnError::InvalidProducerIdMapping => E::InvalidProducerIdMapping.code(),
            TxnError::ProducerFenced => E::ProducerFenced.code(),
            TxnError::ConcurrentTransactions => E::ConcurrentTransactions.code(),
            TxnError::InvalidTxnState => E::InvalidTxnState.code(),
            TxnError::InvalidTransactionTimeout => E::InvalidTransactionTimeout.code(),
            TxnError::NotCoordinator => E::NotCoordinator.code(),
            TxnError::CoordinatorLoadInProgress => E::CoordinatorLoadInProgress.code(),
            TxnError::CoordinatorNotAvailable => E::CoordinatorNotAvailable.code(),
            TxnError::TransactionalIdNotFound => E::TransactionalIdNotFound.code(),
        }
    }
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    let len = value.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&value.as_bytes()[..len]);
}

pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut out = vec![1u8];
    put_str(&mut out, transactional_id);
    out
}

pub fn encode_value(meta: &TxnMetadata) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + meta.partitions.len() * 24);
    out.extend_from_slice(&meta.producer_id.to_be_bytes());
    out.extend_from_slice(&meta.producer_epoch.to_be_bytes());
    out.extend_from_slice(&meta.timeout_ms.to_be_bytes());
    out.push(meta.state.code());
    out.extend_from_slice(&meta.start_ms.to_be_bytes());
    out.extend_from_slice(&meta.update_ms.to_be_bytes());
    out.extend_from_slice(&(meta.partitions.len() as u32).to_be_bytes());
    for tp in &meta.partitions {
        put_str(&mut out, &tp.topic);
        out.extend_from_slice(&tp.partition.to_be_bytes());
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn string(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.array()?);
        String::from_utf8(self.take(usize::from(len))?.to_vec()).ok()
    }
}

pub fn decode_key(bytes: &[u8]) -> Option<String> {
    let mut reader = Reader(bytes);
    if reader.array::<1>()? != [1] {
        return None;
    }
    let id = reader.string()?;
    reader.0.is_empty().then_some(id)
}

pub fn decode_value(bytes: &[u8]) -> Option<TxnMetadata> {
    let mut r = Reader(bytes);
    let producer_id = i64::from_be_bytes(r.array()?);
    let producer_epoch = i16::from_be_bytes(r.array()?);
    let timeout_ms = i32::from_be_bytes(r.array()?);
    let state = TxnState::from_code(r.array::<1>()?[0])?;
    let start_ms = i64::from_be_bytes(r.array()?);
    let update_ms = i64::from_be_bytes(r.array()?);
    let count = u32::from_be_bytes(r.array()?);
    let mut partitions = BTreeSet::new();
    for _ in 0..count {
        let topic = r.string()?;
        let partition = i32::from_be_bytes(r.array()?);
        partitions.insert(TopicPartition { topic, partition });
    }
    r.0.is_empty().then_some(TxnMetadata {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        start_ms,
        update_ms,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip() {
        let meta = TxnMetadata {
            producer_id: 42,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            start_ms: 1_000,
            update_ms: 2_000,
            partitions: [TopicPartition { topic: "orders".into(), partition: 2 }].into_iter().collect(),
        };
        assert_eq!(decode_value(&encode_value(&meta)), Some(meta));
        assert_eq!(decode_key(&encode_key("app-1")), Some("app-1".to_string()));
        for state in TxnState::ALL {
            assert_eq!(TxnState::from_name(state.name()), Some(state));
        }
    }

    #[test]
    fn the_current_producer_is_the_one_with_the_id_and_epoch() {
        let meta = TxnMetadata {
            producer_id: 7,
            producer_epoch: 2,
            timeout_ms: 1_000,
            state: TxnState::Ongoing,
            start_ms: 0,
            update_ms: 0,
            partitions: BTreeSet::new(),
        };
        assert_eq!(meta.check_producer(7, 2), Ok(()));
        assert_eq!(meta.check_producer(7, 1), Err(TxnError::ProducerFenced));
        assert_eq!(meta.check_producer(8, 2), Err(TxnError::InvalidProducerIdMapping));
        assert!(!meta.expired(1_000) && meta.expired(1_001));
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = decode_value(&bytes);
            let _ = decode_key(&bytes);
        }
    }
}
