//! Idempotent-producer state of one partition: for each producer id, its epoch and its
//! last five batches' sequence ranges and offsets (Kafka keeps five, matching
//! `max.in.flight.requests.per.connection <= 5` for idempotent producers).
//!
//! Checked when a batch is appended: a retried batch (same epoch and sequence range) is
//! a duplicate and is answered with its original offsets, not written twice; a gap in
//! sequence numbers is OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is fenced.
//!
//! Transactions (KIP-98): a producer's first transactional batch opens its transaction
//! on this partition (its first offset bounds the last stable offset, LSO); the
//! coordinator's marker closes it, and an abort marker yields the aborted range the
//! partition's aborted-transaction index keeps for read_committed fetches.
//!
//! Survives restarts: a snapshot is written on clean close and used when the log ends
//! exactly where the snapshot was taken, and one is written at every segment roll;
//! after a crash the state is rebuilt from the roll snapshot of the active segment (if
//! there is one) plus the batches of the active segment, which recovery scans anyway.
//! Without a roll snapshot, a producer last seen only in older segments is unknown, and
//! its next batch is accepted as is.

use std::collections::{HashMap, VecDeque};

use crate::protocol::record_batch::BatchHeader;

use super::offset::Offset;

/// Batches remembered per producer.
pub const PRODUCER_BATCHES_MAX: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: Offset,
    pub last_offset: Offset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<ProducerBatch>,
    /// When this producer last appended (wall clock), for expiry.
    last_append_ms: i64,
    /// The first offset of its open transaction on this partition.
    txn_first_offset: Option<Offset>,
    /// The highest coordinator epoch of the markers applied for it (-1: none): a marker
    /// from an older coordinator (one deposed while its marker was on the way) is refused.
    coordinator_epoch: i32,
}

/// A transaction a marker closed on this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    /// The marker's offset.
    pub last_offset: Offset,
    pub committed: bool,
}

/// A producer as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Sequence of its last batch's last record (-1 when none is remembered).
    pub last_sequence: i32,
    pub last_append_ms: i64,
    /// First offset of its open transaction here.
    pub txn_first_offset: Option<Offset>,
    /// The coordinator epoch of its last marker here (-1: none known).
    pub coordinator_epoch: i32,
}

/// First byte of a version-2 snapshot (a version-1 one starts with a non-negative
/// offset, so its first byte is below 0x80).
const SNAPSHOT_V2: u8 = 0xF2;
/// First byte of a version-3 snapshot (v2 plus each producer's coordinator epoch).
const SNAPSHOT_V3: u8 = 0xF3;

impl ProducerEntry {
    fn new(epoch: i16, now_ms: i64) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            last_append_ms: now_ms,
            txn_first_offset: None,
            coordinator_epoch: -1,
        }
    }
}

/// Why a transaction marker is refused (`ProducerStates::check_marker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerRefusal {
    ProducerFenced { current_epoch: i16 },
    CoordinatorFenced { current_epoch: i32 },
}

/// Producers idle this long are forgotten (Kafka's producer.id.expiration.ms default).
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent, or the next batch in sequence: append it.
    Append,
    /// Already written: answer with these offsets.
    Duplicate(ProducerBatch),
    OutOfOrder {
        expected: i32,
        received: i32,
    },
    /// The producer's epoch is older than one already seen: a newer instance fenced it.
    Fenced {
        current_epoch: i16,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Replicated logs: transactions closed by markers that are not committed yet. A
    /// replica that cuts such a marker (a new leader never had it) reopens them
    /// (`forget_from`); committed ones are dropped (`forget_completions_below`). Not in
    /// snapshots: a reopened log rebuilds its state from the segments.
    uncommitted_completions: Vec<UncommittedCompletion>,
}

/// A transaction a marker at `marker` closed, on a replicated log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UncommittedCompletion {
    marker: Offset,
    producer_id: i64,
    first_offset: Offset,
}

fn last_sequence(header: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX back to 0.
    ((i64::from(header.base_sequence) + i64::from(header.last_offset_delta)) % (i64::from(i32::MAX) + 1)) as i32
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

impl ProducerStates {
    pub fn is_idempotent(header: &BatchHeader) -> bool {
        header.producer_id >= 0 && header.base_sequence >= 0
    }

    pub fn check(&self, header: &BatchHeader) -> SequenceCheck {
        if !Self::is_idempotent(header) {
            return SequenceCheck::Append;
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return SequenceCheck::Append;
        };
        if header.producer_epoch < entry.epoch {
            return SequenceCheck::Fenced { current_epoch: entry.epoch };
        }
        if header.producer_epoch > entry.epoch {
            // A new epoch starts over at sequence 0 (KIP-360 epoch bump).
            return if header.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder { expected: 0, received: header.base_sequence }
            };
        }
        let last = last_sequence(header);
        if let Some(batch) =
            entry.batches.iter().find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last)
        {
            return SequenceCheck::Duplicate(*batch);
        }
        match entry.batches.back() {
            Some(previous) if header.base_sequence != next_sequence(previous.last_sequence) => {
                SequenceCheck::OutOfOrder {
                    expected: next_sequence(previous.last_sequence),
                    received: header.base_sequence,
                }
            }
            _ => SequenceCheck::Append,
        }
    }

    /// Remembers a batch appended at `base_offset` at wall-clock time `now_ms`.
    pub fn record(&mut self, header: &BatchHeader, base_offset: Offset, now_ms: i64) {
        if !Self::is_idempotent(header) {
            return;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch, now_ms));
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if header.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(base_offset);
        }
        entry.batches.push_back(ProducerBatch {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence(header),
            base_offset,
            last_offset: Offset(base_offset.value() + i64::from(header.last_offset_delta)),
        });
        while entry.batches.len() > PRODUCER_BATCHES_MAX {
            entry.batches.pop_front();
        }
    }

    /// Applies a transaction marker written at `offset` (`committed` or aborted): the
    /// producer's open transaction here, if it had one, is closed and returned.
    pub fn record_marker(
        &mut self,
        header: &BatchHeader,
        committed: bool,
        offset: Offset,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Option<CompletedTxn> {
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch, now_ms));
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        if header.producer_epoch > entry.epoch {
            // The coordinator bumped the epoch (an abort on timeout or fencing): the old
            // instance's sequences no longer apply.
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        let first_offset = entry.txn_first_offset.take()?;
        Some(CompletedTxn { producer_id: header.producer_id, first_offset, last_offset: offset, committed })
    }

    /// Whether a marker for `producer_id` from a coordinator at `coordinator_epoch`, with
    /// `producer_epoch`, may be written: not when the producer has moved to a newer
    /// epoch, nor when a newer coordinator already wrote one (Kafka's checks; `Err` is
    /// the refusal).
    pub fn check_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), MarkerRefusal> {
        let Some(entry) = self.producers.get(&producer_id) else { return Ok(()) };
        if producer_epoch < entry.epoch {
            return Err(MarkerRefusal::ProducerFenced { current_epoch: entry.epoch });
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(MarkerRefusal::CoordinatorFenced { current_epoch: entry.coordinator_epoch });
        }
        Ok(())
    }

    /// The first offset of the oldest open transaction: the last stable offset cannot
    /// pass it.
    pub fn first_unstable_offset(&self) -> Option<Offset> {
        self.producers.values().filter_map(|e| e.txn_first_offset).min()
    }

    /// Whether `producer_id` has a transaction open on this partition.
    pub fn has_open_txn(&self, producer_id: i64) -> bool {
        self.open_txn_first(producer_id).is_some()
    }

    /// The first offset of `producer_id`'s open transaction on this partition.
    pub fn open_txn_first(&self, producer_id: i64) -> Option<Offset> {
        self.producers.get(&producer_id).and_then(|e| e.txn_first_offset)
    }

    /// Every producer this partition remembers, by producer id.
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut out: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ProducerSummary {
                producer_id,
                producer_epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_sequence),
                last_append_ms: e.last_append_ms,
                txn_first_offset: e.txn_first_offset,
                coordinator_epoch: e.coordinator_epoch,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    /// Remembers that a marker at `marker` closed `txn` on a replicated log, until the
    /// marker is committed.
    pub fn remember_completion(&mut self, marker: Offset, txn: &CompletedTxn) {
        self.uncommitted_completions.push(UncommittedCompletion {
            marker,
            producer_id: txn.producer_id,
            first_offset: txn.first_offset,
        });
    }

    /// Markers below `commit` are committed: their transactions stay closed.
    pub fn forget_completions_below(&mut self, commit: Offset) {
        self.uncommitted_completions.retain(|c| c.marker >= commit);
    }

    /// Forgets batches at or after `offset` (they were rolled back, never acknowledged),
    /// and transactions they opened; transactions closed by markers at or after it are
    /// open again (if their first batch stays).
    pub fn forget_from(&mut self, offset: Offset) {
        let (cut, kept): (Vec<UncommittedCompletion>, Vec<UncommittedCompletion>) =
            self.uncommitted_completions.iter().partition(|c| c.marker >= offset);
        self.uncommitted_completions = kept;
        for completion in cut.into_iter().filter(|c| c.first_offset < offset) {
            if let Some(entry) = self.producers.get_mut(&completion.producer_id) {
                if entry.txn_first_offset.is_none() {
                    entry.txn_first_offset = Some(completion.first_offset);
                }
            }
        }
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.base_offset < offset);
            if entry.txn_first_offset.is_some_and(|first| first >= offset) {
                entry.txn_first_offset = None;
            }
        }
        self.producers.retain(|_, entry| !entry.batches.is_empty() || entry.txn_first_offset.is_some());
    }

    /// Forgets producers that have not appended for `max_idle_ms` (never one with an
    /// open transaction: its marker is still to come).
    pub fn expire(&mut self, now_ms: i64, max_idle_ms: i64) {
        self.producers.retain(|_, entry| {
            entry.txn_first_offset.is_some() || now_ms.saturating_sub(entry.last_append_ms) < max_idle_ms
        });
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Snapshot: `[0xF3][as_of i64][count u32]` then per producer `[id i64][epoch i16]
    /// [last append ms i64][open transaction's first offset i64, -1 for none]
    /// [coordinator epoch i32][n u8]` and n x `[first i32][last i32][base i64][last_offset
    /// i64]`, then a CRC-32C. (Version 2, `0xF2` without the coordinator epoch, and
    /// version 1, without the leading byte and the transaction field, are still read.)
    pub fn encode(&self, as_of: Offset) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_V3];
        out.extend_from_slice(&as_of.value().to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, entry) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.extend_from_slice(&entry.last_append_ms.to_be_bytes());
            out.extend_from_slice(&entry.txn_first_offset.map_or(-1, Offset::value).to_be_bytes());
            out.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.first_sequence.to_be_bytes());
                out.extend_from_slice(&b.last_sequence.to_be_bytes());
                out.extend_from_slice(&b.base_offset.value().to_be_bytes());
                out.extend_from_slice(&b.last_offset.value().to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a snapshot; `None` if it is damaged.
    pub fn decode(bytes: &[u8]) -> Option<(Offset, ProducerStates)> {
        let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let (version, body) = match body.split_first() {
            Some((&SNAPSHOT_V3, rest)) => (3, rest),
            Some((&SNAPSHOT_V2, rest)) => (2, rest),
            _ => (1, body),
        };
        let mut reader = Reader(body);
        let as_of = Offset(reader.i64()?);
        let count = reader.u32()?;
        let mut states = ProducerStates::default();
        for _ in 0..count {
            let id = reader.i64()?;
            let epoch = reader.i16()?;
            let last_append_ms = reader.i64()?;
            let txn_first_offset =
                if version >= 2 { Some(reader.i64()?).filter(|&o| o >= 0).map(Offset) } else { None };
            let coordinator_epoch = if version >= 3 { reader.i32()? } else { -1 };
            let n = reader.u8()?;
            let mut batches = VecDeque::new();
            for _ in 0..n {
                batches.push_back(ProducerBatch {
                    first_sequence: reader.i32()?,
                    last_sequence: reader.i32()?,
                    base_offset: Offset(reader.i64()?),
                    last_offset: Offset(reader.i64()?),
                });
            }
            states
                .producers
                .insert(id, ProducerEntry { epoch, batches, last_append_ms, txn_first_offset, coordinator_epoch });
        }
        reader.0.is_empty().then_some((as_of, states))
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::build;

    fn header(producer_id: i64, epoch: i16, sequence: i32, records: usize) -> BatchHeader {
        let values: Vec<&[u8]> = (0..records).map(|_| &b"v"[..]).collect();
        let mut bytes = build::batch(&values, 1);
        bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
        bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
        bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
        BatchHeader::parse(&bytes).unwrap()
    }

    #[test]
    fn duplicates_gaps_and_fencing() {
        let mut states = ProducerStates::default();
        let first = header(7, 0, 0, 3);
        assert_eq!(states.check(&first), SequenceCheck::Append);
        states.record(&first, Offset(100), 0);
        let Some(SequenceCheck::Duplicate(batch)) = Some(states.check(&first)) else { panic!("duplicate") };
        assert_eq!(batch.base_offset, Offset(100));
        assert_eq!(states.check(&header(7, 0, 3, 1)), SequenceCheck::Append);
        assert_eq!(states.check(&header(7, 0, 5, 1)), SequenceCheck::OutOfOrder { expected: 3, received: 5 });
        states.record(&header(7, 1, 0, 1), Offset(103), 0);
        assert_eq!(states.check(&header(7, 0, 4, 1)), SequenceCheck::Fenced { current_epoch: 1 });
        assert_eq!(states.check(&header(7, 2, 3, 1)), SequenceCheck::OutOfOrder { expected: 0, received: 3 });
        assert_eq!(states.check(&header(-1, -1, -1, 1)), SequenceCheck::Append, "not idempotent");
    }

    fn transactional(producer_id: i64, epoch: i16, sequence: i32) -> BatchHeader {
        let mut h = header(producer_id, epoch, sequence, 1);
        h.attributes |= crate::protocol::record_batch::ATTRIBUTE_TRANSACTIONAL;
        h
    }

    #[test]
    fn transactions_open_at_their_first_batch_and_close_at_the_marker() {
        let mut states = ProducerStates::default();
        states.record(&header(1, 0, 0, 1), Offset(0), 0);
        assert_eq!(states.first_unstable_offset(), None, "plain idempotent batches open nothing");
        states.record(&transactional(2, 0, 0), Offset(1), 0);
        states.record(&transactional(3, 0, 0), Offset(2), 0);
        states.record(&transactional(2, 0, 1), Offset(3), 0);
        assert_eq!(states.first_unstable_offset(), Some(Offset(1)));
        let marker = transactional(2, 0, -1);
        let done = states.record_marker(&marker, false, Offset(4), 0, 0).unwrap();
        assert_eq!(
            done,
            CompletedTxn { producer_id: 2, first_offset: Offset(1), last_offset: Offset(4), committed: false }
        );
        assert_eq!(states.first_unstable_offset(), Some(Offset(2)));
        assert_eq!(states.record_marker(&marker, true, Offset(5), 0, 0), None, "nothing open: nothing closed");
        let bytes = states.encode(Offset(6));
        assert_eq!(ProducerStates::decode(&bytes).unwrap().1, states, "open transactions survive a snapshot");
        states.expire(i64::MAX, 1);
        let open = states.summaries().iter().filter(|p| p.txn_first_offset.is_some()).count();
        assert_eq!(open, 1, "a producer with an open transaction does not expire");
        states.forget_from(Offset(2));
        assert_eq!(states.first_unstable_offset(), None, "a rolled-back batch opens nothing");
    }

    #[test]
    fn cutting_an_uncommitted_marker_reopens_its_transaction() {
        let mut states = ProducerStates::default();
        let mut batch = header(9, 0, 0, 1);
        batch.attributes |= crate::protocol::record_batch::ATTRIBUTE_TRANSACTIONAL;
        states.record(&batch, Offset(10), 0);
        let mut marker = header(9, 0, 0, 1);
        marker.attributes |= crate::protocol::record_batch::ATTRIBUTE_TRANSACTIONAL;
        let done = states.record_marker(&marker, true, Offset(11), 2, 0).unwrap();
        states.remember_completion(Offset(11), &done);
        assert!(!states.has_open_txn(9));
        let mut cut = states.clone();
        cut.forget_from(Offset(11));
        assert_eq!(cut.open_txn_first(9), Some(Offset(10)), "the marker is gone: the transaction is open again");
        states.forget_completions_below(Offset(12));
        states.forget_from(Offset(12));
        assert!(!states.has_open_txn(9), "a committed marker stays");
    }

    #[test]
    fn version_one_snapshots_are_read() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(&10i64.to_be_bytes());
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&7i64.to_be_bytes());
        v1.extend_from_slice(&2i16.to_be_bytes());
        v1.extend_from_slice(&5i64.to_be_bytes());
        v1.push(0);
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        let (as_of, states) = ProducerStates::decode(&v1).unwrap();
        assert_eq!((as_of, states.len()), (Offset(10), 1));
    }

    #[test]
    fn snapshot_round_trip_and_rollback() {
        let mut states = ProducerStates::default();
        for n in 0..8 {
            states.record(&header(1, 0, n, 1), Offset(i64::from(n)), 10);
        }
        states.record(&header(2, 3, 0, 2), Offset(8), 20);
        let bytes = states.encode(Offset(10));
        let (as_of, decoded) = ProducerStates::decode(&bytes).unwrap();
        assert_eq!((as_of, &decoded), (Offset(10), &states));
        assert!(ProducerStates::decode(&bytes[..bytes.len() - 1]).is_none());
        states.forget_from(Offset(6));
        assert_eq!(states.check(&header(1, 0, 6, 1)), SequenceCheck::Append, "rolled back batch may be retried");
        assert_eq!(states.len(), 1);
        states.record(&header(3, 0, 0, 1), Offset(20), 1_000);
        states.expire(1_000 + 500, 1_000);
        assert_eq!(states.len(), 1, "the idle producer expired, the recent one stays");
    }
}
