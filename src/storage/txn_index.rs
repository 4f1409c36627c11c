//! The aborted-transaction index of one partition (Kafka's `.txnindex`): for every
//! transaction an abort marker closed, the producer, its first offset and the marker's
//! offset. A read_committed Fetch returns the entries overlapping the fetched range, and
//! the consumer drops those producers' batches from each first offset up to the marker.
//!
//! Kept in memory, sorted by marker offset, and persisted as one file per log
//! (`aborted-txns`) that is rewritten (atomically, synced) before an abort marker is
//! queued: the entry then ends at the log end of that moment, at or before its marker
//! (nothing of the producer can come in between), and is moved to the marker's offset
//! in memory once the marker is appended, or at the next open. Writes are serialized per log and each
//! writes the latest list, so the last one to finish holds everything. On open the file
//! is read and merged with the markers the recovery scan of the active segment found
//! (the file may lack one whose write a crash interrupted); entries past the recovered
//! log end are dropped. Entries wholly below the log start are pruned at the next write.

use super::offset::Offset;

/// File name of the persisted index in the log directory.
pub const ABORTED_TXNS_FILE: &str = "aborted-txns";

/// One aborted transaction on this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    /// The abort marker's offset.
    pub last_offset: Offset,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TxnIndex {
    /// Sorted by `last_offset`.
    aborted: Vec<AbortedTxn>,
}

const ENTRY_BYTES: usize = 24;

impl TxnIndex {
    pub fn len(&self) -> usize {
        self.aborted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.aborted.is_empty()
    }

    /// Adds an entry (markers arrive in offset order; a duplicate is ignored). An entry
    /// for a transaction already listed (same producer and first offset) moves that
    /// entry's end up to the marker: the entry was written ahead of its marker.
    pub fn push(&mut self, entry: AbortedTxn) {
        if self.aborted.iter().any(|e| e.last_offset == entry.last_offset) {
            return;
        }
        let same_txn = self
            .aborted
            .iter_mut()
            .find(|e| e.producer_id == entry.producer_id && e.first_offset == entry.first_offset);
        if let Some(existing) = same_txn {
            if entry.last_offset > existing.last_offset {
                existing.last_offset = entry.last_offset;
                self.aborted.sort_by_key(|e| e.last_offset);
            }
            return;
        }
        let at = self.aborted.partition_point(|e| e.last_offset < entry.last_offset);
        self.aborted.insert(at, entry);
    }

    /// The aborted transactions a read of `from..upto` may contain records of: their
    /// marker is at or after `from` and their first offset below `upto`.
    pub fn overlapping(&self, from: Offset, upto: Offset) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|e| e.last_offset < from);
        self.aborted[start..].iter().filter(|e| e.first_offset < upto).copied().collect()
    }

    /// Forgets entries whose marker is at or after `offset` (a truncated tail).
    pub fn forget_from(&mut self, offset: Offset) {
        self.aborted.retain(|e| e.last_offset < offset);
    }

    /// Forgets entries wholly below `log_start`.
    pub fn forget_below(&mut self, log_start: Offset) {
        self.aborted.retain(|e| e.last_offset >= log_start);
    }

    /// `[count u32]` then per entry `[producer id i64][first i64][last i64]`, then a CRC-32C.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.aborted.len() * ENTRY_BYTES);
        out.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for e in &self.aborted {
            out.extend_from_slice(&e.producer_id.to_be_bytes());
            out.extend_from_slice(&e.first_offset.value().to_be_bytes());
            out.extend_from_slice(&e.last_offset.value().to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes the file; `None` if it is damaged.
    pub fn decode(bytes: &[u8]) -> Option<TxnIndex> {
        let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
        if crc32c::crc32c(body).to_be_bytes() != crc || body.len() < 4 {
            return None;
        }
        let count = u32::from_be_bytes(body[..4].try_into().ok()?) as usize;
        let entries = &body[4..];
        if entries.len() != count.checked_mul(ENTRY_BYTES)? {
            return None;
        }
        let mut index = TxnIndex::default();
        for chunk in entries.chunks_exact(ENTRY_BYTES) {
            let field = |i: usize| i64::from_be_bytes(chunk[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            index.push(AbortedTxn {
                producer_id: field(0),
                first_offset: Offset(field(1)),
                last_offset: Offset(field(2)),
            });
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn txn(producer_id: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn { producer_id, first_offset: Offset(first), last_offset: Offset(last) }
    }

    #[test]
    fn overlapping_entries_are_those_a_read_can_meet() {
        let mut index = TxnIndex::default();
        index.push(txn(1, 0, 5));
        index.push(txn(2, 3, 9));
        index.push(txn(3, 10, 12));
        index.push(txn(3, 10, 12));
        assert_eq!(index.len(), 3, "a duplicate marker is one entry");
        assert_eq!(index.overlapping(Offset(6), Offset(10)), vec![txn(2, 3, 9)]);
        assert_eq!(index.overlapping(Offset(0), Offset(100)).len(), 3);
        assert_eq!(index.overlapping(Offset(13), Offset(100)), vec![]);
        index.forget_from(Offset(9));
        assert_eq!(index.overlapping(Offset(0), Offset(100)), vec![txn(1, 0, 5)]);
        let decoded = TxnIndex::decode(&index.encode()).unwrap();
        assert_eq!(decoded, index);
        index.forget_below(Offset(6));
        assert!(index.is_empty());
    }

    #[test]
    fn an_entry_written_ahead_of_its_marker_moves_to_the_marker() {
        let mut index = TxnIndex::default();
        index.push(txn(4, 10, 20));
        index.push(txn(1, 0, 12)); // written ahead: ends at the log end of that moment
        index.push(txn(1, 0, 15)); // the marker's offset
        assert_eq!(index.len(), 2);
        assert_eq!(index.overlapping(Offset(0), Offset(100)), vec![txn(1, 0, 15), txn(4, 10, 20)]);
        index.push(txn(1, 0, 13));
        assert_eq!(index.overlapping(Offset(14), Offset(100))[0], txn(1, 0, 15), "never moves back");
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = TxnIndex::decode(&bytes);
        }
    }
}
