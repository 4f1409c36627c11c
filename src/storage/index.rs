//! Sparse per-segment indexes: offset -> file position and max timestamp -> offset.
//!
//! One entry is added per ~[`INDEX_INTERVAL_BYTES`] of log. Both indexes key on the base
//! offset of a batch, relative to the segment's base offset (u32, as in Kafka):
//! - offset index entry `(relative base offset, position)`: the batch starting at
//!   `position` begins at that offset, so a read for offset `o` starts scanning at the
//!   last entry whose offset is `<= o`;
//! - time index entry `(max timestamp so far, relative base offset)`: every batch before
//!   that offset has a max timestamp `<=` the entry's, so a timestamp lookup for `t`
//!   starts scanning at the last entry whose timestamp is `< t`.
//!
//! The active segment's indexes live in memory and are rebuilt by scanning on recovery;
//! a closed segment's are written to `<base>.index` / `<base>.timeindex` when it is sealed
//! and loaded (and checked) on first use.

use thiserror::Error;

use super::config::INDEX_INTERVAL_BYTES;

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

/// A loaded index file is inconsistent and must be rebuilt from the segment.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("index file length {0} is not a whole number of entries")]
    Length(usize),
    #[error("index entry {0} is out of order")]
    Order(usize),
    #[error("index entry {0} points outside the segment")]
    Bounds(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    offsets: Vec<(u32, u32)>,
    times: Vec<(i64, u32)>,
    bytes_since_entry: u64,
    max_timestamp: i64,
    relative_offset_of_max_timestamp: u32,
    /// Bytes of log between entries (index.interval.bytes of the log's config for the
    /// active segment; the default for indexes rebuilt by a scan).
    interval_bytes: u64,
}

impl SegmentIndex {
    pub fn new() -> SegmentIndex {
        SegmentIndex { max_timestamp: -1, interval_bytes: INDEX_INTERVAL_BYTES, ..SegmentIndex::default() }
    }

    /// Changes the spacing of entries added from now on (index.interval.bytes).
    pub fn set_interval_bytes(&mut self, interval_bytes: u64) {
        self.interval_bytes = interval_bytes.max(1);
    }

    /// Size of the larger of the two index files this index would write.
    pub fn file_bytes_max(&self) -> u64 {
        ((self.offsets.len() * OFFSET_ENTRY_BYTES).max(self.times.len() * TIME_ENTRY_BYTES)) as u64
    }

    /// Records a batch appended (or found by a scan) at `position`.
    pub fn on_batch(&mut self, relative_offset: u32, position: u32, batch_bytes: u32, max_timestamp: i64) {
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.relative_offset_of_max_timestamp = relative_offset;
        }
        if self.bytes_since_entry >= self.interval_bytes {
            self.push_offset(relative_offset, position);
            if self.times.last().is_none_or(|&(ts, _)| self.max_timestamp > ts) {
                self.times.push((self.max_timestamp, relative_offset));
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += u64::from(batch_bytes);
    }

    fn push_offset(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_offset, last_position)) = self.offsets.last() {
            assert!(relative_offset > last_offset && position > last_position, "offset index must grow");
        }
        self.offsets.push((relative_offset, position));
    }

    /// Adds the final time entry so the last entry carries the segment's max timestamp.
    /// Called when the segment is sealed.
    pub fn seal(&mut self) {
        if self.max_timestamp >= 0 && self.times.last().is_none_or(|&(ts, _)| self.max_timestamp > ts) {
            self.times.push((self.max_timestamp, self.relative_offset_of_max_timestamp));
        }
    }

    /// The file position to start scanning from for `relative_offset`.
    pub fn position_for(&self, relative_offset: u32) -> u32 {
        match self.offsets.partition_point(|&(offset, _)| offset <= relative_offset) {
            0 => 0,
            n => self.offsets[n - 1].1,
        }
    }

    /// The last offset-index entry `(relative offset, position)` with a position at or
    /// before `position_max` and a relative offset below `relative_limit`: a batch
    /// boundary that whole batches below the limit end at.
    pub fn last_entry_within(&self, position_max: u64, relative_limit: u32) -> Option<(u32, u32)> {
        let n = self
            .offsets
            .partition_point(|&(offset, position)| u64::from(position) <= position_max && offset < relative_limit);
        n.checked_sub(1).map(|i| self.offsets[i])
    }

    /// The relative offset to start scanning from for the first batch with a max
    /// timestamp `>= timestamp`.
    pub fn relative_offset_for_timestamp(&self, timestamp: i64) -> u32 {
        match self.times.partition_point(|&(ts, _)| ts < timestamp) {
            0 => 0,
            n => self.times[n - 1].1,
        }
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Drops entries at or after `position` (used when an unacknowledged tail is cut).
    pub fn truncate_to(
        &mut self,
        position: u32,
        relative_end_offset: u32,
        max_timestamp: i64,
        relative_offset_of_max: u32,
    ) {
        self.offsets.retain(|&(_, p)| p < position);
        self.times.retain(|&(_, o)| o < relative_end_offset);
        self.max_timestamp = max_timestamp;
        self.relative_offset_of_max_timestamp = relative_offset_of_max;
        self.bytes_since_entry = 0;
    }

    pub fn relative_offset_of_max_timestamp(&self) -> u32 {
        self.relative_offset_of_max_timestamp
    }

    pub fn last_offset_entry(&self) -> Option<(u32, u32)> {
        self.offsets.last().copied()
    }

    pub fn offset_entries(&self) -> usize {
        self.offsets.len()
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES);
        for &(offset, position) in &self.offsets {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
        }
        out
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_BYTES);
        for &(timestamp, offset) in &self.times {
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out
    }

    /// The in-memory state beyond the entries that an active segment's index needs to go
    /// on growing exactly as before a clean shutdown.
    pub fn encode_progress(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..8].copy_from_slice(&self.bytes_since_entry.to_be_bytes());
        out[8..16].copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[16..].copy_from_slice(&self.relative_offset_of_max_timestamp.to_be_bytes());
        out
    }

    /// Restores what [`SegmentIndex::encode_progress`] saved (after [`SegmentIndex::decode`]).
    pub fn restore_progress(&mut self, bytes: &[u8; 20]) {
        self.bytes_since_entry = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        self.max_timestamp = i64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
        self.relative_offset_of_max_timestamp = u32::from_be_bytes(bytes[16..].try_into().expect("4 bytes"));
    }

    /// Decodes and checks a sealed segment's index files against the segment's size and
    /// offset span. Any inconsistency is an error; the caller rebuilds from the log.
    pub fn decode(
        offset_bytes: &[u8],
        time_bytes: &[u8],
        segment_bytes: u64,
        relative_end_offset: u64,
    ) -> Result<SegmentIndex, IndexError> {
        if offset_bytes.len() % OFFSET_ENTRY_BYTES != 0 {
            return Err(IndexError::Length(offset_bytes.len()));
        }
        if time_bytes.len() % TIME_ENTRY_BYTES != 0 {
            return Err(IndexError::Length(time_bytes.len()));
        }
        let mut index = SegmentIndex::new();
        for (n, entry) in offset_bytes.chunks_exact(OFFSET_ENTRY_BYTES).enumerate() {
            let offset = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let position = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
            if u64::from(offset) >= relative_end_offset || u64::from(position) >= segment_bytes {
                return Err(IndexError::Bounds(n));
            }
            if index.offsets.last().is_some_and(|&(o, p)| offset <= o || position <= p) {
                return Err(IndexError::Order(n));
            }
            index.offsets.push((offset, position));
        }
        for (n, entry) in time_bytes.chunks_exact(TIME_ENTRY_BYTES).enumerate() {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&entry[..8]);
            let timestamp = i64::from_be_bytes(ts);
            let offset = u32::from_be_bytes([entry[8], entry[9], entry[10], entry[11]]);
            if u64::from(offset) >= relative_end_offset {
                return Err(IndexError::Bounds(n));
            }
            if index.times.last().is_some_and(|&(t, _)| timestamp <= t) {
                return Err(IndexError::Order(n));
            }
            index.times.push((timestamp, offset));
        }
        if let Some(&(timestamp, offset)) = index.times.last() {
            index.max_timestamp = timestamp;
            index.relative_offset_of_max_timestamp = offset;
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut index = SegmentIndex::new();
        // 10 batches of 1 KiB, 5 records each, timestamps rising by 10.
        for n in 0..10u32 {
            index.on_batch(n * 5, n * 1024, 1024, 100 + i64::from(n) * 10);
        }
        index.seal();
        index
    }

    #[test]
    fn entries_are_sparse_and_lookups_floor() {
        let index = sample();
        assert_eq!(index.offset_entries(), 2, "one entry per 4 KiB of log");
        assert_eq!(index.position_for(0), 0);
        assert_eq!(index.position_for(19), 0);
        assert_eq!(index.position_for(20), 4096);
        assert_eq!(index.position_for(49), 8192);
        assert_eq!(index.max_timestamp(), 190);
    }

    #[test]
    fn timestamp_lookup_starts_at_or_before_the_first_match() {
        let index = sample();
        // The batch with max timestamp >= 175 is batch 8 (ts 180, offset 40).
        let start = index.relative_offset_for_timestamp(175);
        assert!(start <= 40);
        assert_eq!(index.relative_offset_for_timestamp(50), 0);
    }

    #[test]
    fn encode_decode_round_trip_and_corruption_is_detected() {
        let index = sample();
        let offsets = index.encode_offsets();
        let times = index.encode_times();
        let decoded = SegmentIndex::decode(&offsets, &times, 10 * 1024, 50).expect("consistent");
        assert_eq!(decoded.position_for(49), index.position_for(49));
        assert_eq!(decoded.max_timestamp(), 190);
        assert_eq!(SegmentIndex::decode(&offsets[..5], &times, 10 * 1024, 50), Err(IndexError::Length(5)));
        assert!(matches!(SegmentIndex::decode(&offsets, &times, 4096, 50), Err(IndexError::Bounds(_))));
        let mut swapped = offsets.clone();
        swapped.rotate_left(8);
        assert!(SegmentIndex::decode(&swapped, &times, 10 * 1024, 50).is_err());
    }
}
