//! The clean-shutdown marker: what a cleanly closed log knows about its active segment
//! (size, next offset, index), so the next open can skip scanning it.
//!
//! Written by `PartitionLog::close` after the final fdatasync and truncate, only when the
//! log was healthy. At open it is trusted only if its CRC holds, it names the tail
//! segment, the file has exactly the recorded size, and the index's last entry points at
//! a batch with the expected offset; otherwise the tail is scanned as after a crash. It
//! is removed before the log accepts writes, so a later crash never trusts a stale one
//! (and if the removal itself is lost in a crash, the size check still rejects it once
//! anything was appended).

use super::index::SegmentIndex;
use super::offset::Offset;

pub const CLEAN_SHUTDOWN_MARKER: &str = "clean-shutdown";
const FORMAT_VERSION: u8 = 1;

#[derive(Debug, PartialEq, Eq)]
pub struct TailSummary {
    pub base: Offset,
    pub size: u64,
    pub next_offset: Offset,
    pub created_ms: i64,
    pub progress: [u8; 20],
    pub offset_index: Vec<u8>,
    pub time_index: Vec<u8>,
}

impl TailSummary {
    pub fn of(base: Offset, size: u64, next_offset: Offset, created_ms: i64, index: &SegmentIndex) -> TailSummary {
        TailSummary {
            base,
            size,
            next_offset,
            created_ms,
            progress: index.encode_progress(),
            offset_index: index.encode_offsets(),
            time_index: index.encode_times(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.offset_index.len() + self.time_index.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.base.value().to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.next_offset.value().to_be_bytes());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.progress);
        for part in [&self.offset_index, &self.time_index] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// `None` when the bytes are not a whole, intact marker of this format.
    pub fn decode(bytes: &[u8]) -> Option<TailSummary> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let part = body.get(at..at.checked_add(n)?)?;
            at += n;
            Some(part)
        };
        if take(1)? != [FORMAT_VERSION] {
            return None;
        }
        let i64_of = |b: &[u8]| i64::from_be_bytes(b.try_into().expect("8 bytes"));
        let base = Offset(i64_of(take(8)?));
        let size = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let next_offset = Offset(i64_of(take(8)?));
        let created_ms = i64_of(take(8)?);
        let progress: [u8; 20] = take(20)?.try_into().ok()?;
        let offsets_len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let offset_index = take(offsets_len)?.to_vec();
        let times_len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let time_index = take(times_len)?.to_vec();
        if at != body.len() {
            return None;
        }
        Some(TailSummary { base, size, next_offset, created_ms, progress, offset_index, time_index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_reject_damage() {
        let mut index = SegmentIndex::new();
        for n in 0..100u32 {
            index.on_batch(n * 10, n * 5000, 5000, 1_000 + i64::from(n));
        }
        let summary = TailSummary::of(Offset(500), 500_000, Offset(1_500), 42, &index);
        let bytes = summary.encode();
        assert_eq!(TailSummary::decode(&bytes), Some(summary));
        for cut in [0, 1, 10, bytes.len() - 1] {
            assert_eq!(TailSummary::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(TailSummary::decode(&flipped), None);
    }
}
