//! Kafka RecordBatch v2 ("magic 2") header: parsing, validation and the few in-place
//! patches a broker is allowed to make.
//!
//! Layout (all big-endian, KIP-98):
//!
//! ```text
//! 0  baseOffset i64 | 8  batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
//! 17 crc u32 (CRC-32C of bytes 21..end)  | 21 attributes i16 | 23 lastOffsetDelta i32
//! 27 baseTimestamp i64 | 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16
//! 53 baseSequence i32  | 57 recordCount i32   | 61 records...
//! ```
//!
//! The broker patches only the base offset, the partition leader epoch (both outside the
//! CRC) and, for LogAppendTime topics, the max timestamp and attribute bit 3, after which
//! the CRC is recomputed. Nothing here allocates.

use thiserror::Error;

/// Bytes of the fixed batch header that precede the records.
pub const BATCH_HEADER_BYTES: usize = 61;
/// `baseOffset` + `batchLength`: the part of the header not counted by `batchLength`.
pub const BATCH_LOG_OVERHEAD_BYTES: usize = 12;
/// The only record batch format Tern stores.
pub const MAGIC_V2: i8 = 2;

const OFFSET_BASE_OFFSET: usize = 0;
const OFFSET_BATCH_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORD_COUNT: usize = 57;

/// Attribute bit 3: the batch carries LogAppendTime timestamps.
pub const ATTRIBUTE_LOG_APPEND_TIME: i16 = 1 << 3;
/// Attribute bits 0..=2: the compression codec (0 = none).
pub const ATTRIBUTE_COMPRESSION_MASK: i16 = 0b111;
/// Attribute bit 4: the batch belongs to a transaction.
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 1 << 4;
/// Attribute bit 5: a control batch (transaction markers).
pub const ATTRIBUTE_CONTROL: i16 = 1 << 5;

/// Why a batch was refused. Each maps to one Kafka error code at the broker edge.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch is {available} bytes, shorter than the {BATCH_HEADER_BYTES}-byte v2 header")]
    TooShort { available: usize },
    #[error("batch length field says {declared} bytes but {available} are present")]
    LengthMismatch { declared: i64, available: usize },
    #[error("batch magic is {0}, only magic 2 record batches are supported")]
    UnsupportedMagic(i8),
    #[error("batch crc mismatch: header says {stored:#010x}, bytes hash to {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("batch record count {record_count} does not match last offset delta {last_offset_delta}")]
    RecordCountMismatch { record_count: i32, last_offset_delta: i32 },
    #[error("batch of {size} bytes exceeds max.message.bytes {limit}")]
    TooLarge { size: usize, limit: usize },
}

/// A read-only view of a v2 batch header. Construct with [`BatchHeader::parse`] (structure
/// only) or [`validate_batch`] (structure + CRC + counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total size of the batch on the wire and on disk, header included.
    pub total_bytes: usize,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the fixed header at the start of `bytes`. Checks only that the header is
    /// present, that the declared length is sane and that the magic is 2; the records may
    /// extend beyond `bytes` (see [`BatchHeader::total_bytes`]).
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::TooShort { available: bytes.len() });
        }
        let batch_length = read_i32(bytes, OFFSET_BATCH_LENGTH);
        let total = i64::from(batch_length) + BATCH_LOG_OVERHEAD_BYTES as i64;
        if total < BATCH_HEADER_BYTES as i64 {
            return Err(BatchError::LengthMismatch { declared: total, available: bytes.len() });
        }
        let magic = bytes[OFFSET_MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(BatchHeader {
            base_offset: read_i64(bytes, OFFSET_BASE_OFFSET),
            total_bytes: total as usize,
            partition_leader_epoch: read_i32(bytes, OFFSET_LEADER_EPOCH),
            magic,
            crc: read_u32(bytes, OFFSET_CRC),
            attributes: read_i16(bytes, OFFSET_ATTRIBUTES),
            last_offset_delta: read_i32(bytes, OFFSET_LAST_OFFSET_DELTA),
            base_timestamp: read_i64(bytes, OFFSET_BASE_TIMESTAMP),
            max_timestamp: read_i64(bytes, OFFSET_MAX_TIMESTAMP),
            producer_id: read_i64(bytes, OFFSET_PRODUCER_ID),
            producer_epoch: read_i16(bytes, OFFSET_PRODUCER_EPOCH),
            base_sequence: read_i32(bytes, OFFSET_BASE_SEQUENCE),
            record_count: read_i32(bytes, OFFSET_RECORD_COUNT),
        })
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    /// Offset that follows this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    pub fn compression_codec(&self) -> i16 {
        self.attributes & ATTRIBUTE_COMPRESSION_MASK
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    /// Part of a transaction (data batches of a transactional producer, and markers).
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }
}

/// Validates one complete batch occupying exactly `bytes`: header structure, length,
/// CRC-32C over bytes 21..end, `lastOffsetDelta + 1 == recordCount > 0`, and the size
/// limit. This is what Produce runs on every batch before it reaches the log.
pub fn validate_batch(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if header.total_bytes != bytes.len() {
        return Err(BatchError::LengthMismatch { declared: header.total_bytes as i64, available: bytes.len() });
    }
    if bytes.len() > max_batch_bytes {
        return Err(BatchError::TooLarge { size: bytes.len(), limit: max_batch_bytes });
    }
    check_crc(bytes, &header)?;
    if header.record_count <= 0 || i64::from(header.last_offset_delta) + 1 != i64::from(header.record_count) {
        return Err(BatchError::RecordCountMismatch {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Checks the stored CRC of a complete batch against its bytes.
pub fn check_crc(bytes: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let computed = crc32c::crc32c(&bytes[OFFSET_ATTRIBUTES..header.total_bytes]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch { stored: header.crc, computed });
    }
    Ok(())
}

/// Writes the broker-assigned base offset. Outside the CRC, so the CRC stays valid.
pub fn set_base_offset(bytes: &mut [u8], base_offset: i64) {
    bytes[OFFSET_BASE_OFFSET..OFFSET_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch. Outside the CRC, so the CRC stays valid.
pub fn set_partition_leader_epoch(bytes: &mut [u8], epoch: i32) {
    bytes[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Stamps a batch with LogAppendTime: sets attribute bit 3 and the max timestamp to
/// `now_ms`, then recomputes the CRC (Kafka does the same for v2 batches; the records'
/// own timestamp deltas are left alone and clients read the batch max timestamp).
pub fn set_log_append_time(bytes: &mut [u8], now_ms: i64) {
    let attributes = read_i16(bytes, OFFSET_ATTRIBUTES) | ATTRIBUTE_LOG_APPEND_TIME;
    bytes[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    bytes[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[OFFSET_ATTRIBUTES..]);
    bytes[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Reads the batches packed back to back in `bytes`, stopping at the first incomplete or
/// malformed one. Yields each header with its byte range.
pub fn iter_batches(bytes: &[u8]) -> impl Iterator<Item = (BatchHeader, std::ops::Range<usize>)> + '_ {
    let mut position = 0usize;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(bytes.get(position..)?).ok()?;
        let end = position.checked_add(header.total_bytes)?;
        if end > bytes.len() {
            return None;
        }
        let range = position..end;
        position = end;
        Some((header, range))
    })
}

fn read_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(raw)
}

/// Builders for well-formed batches, used by tests, benchmarks and the load tool.
pub mod build {
    use super::*;

    /// A record's key and value, either of which may be null.
    pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    /// Builds an uncompressed v2 batch with `values.len()` records, all timestamped
    /// `timestamp_ms` (record i gets timestamp_ms + i), base offset 0 and a valid CRC.
    pub fn batch(values: &[&[u8]], timestamp_ms: i64) -> Vec<u8> {
        let records: Vec<KeyValue<'_>> = values.iter().map(|v| (None, Some(*v))).collect();
        keyed_batch(&records, timestamp_ms)
    }

    /// Like [`batch`], with a key and a value (either may be null) per record.
    pub fn keyed_batch(entries: &[KeyValue<'_>], timestamp_ms: i64) -> Vec<u8> {
        assert!(!entries.is_empty(), "a batch holds at least one record");
        let mut records = Vec::new();
        for (index, (key, value)) in entries.iter().enumerate() {
            let mut record = Vec::with_capacity(value.map_or(0, <[u8]>::len) + key.map_or(0, <[u8]>::len) + 16);
            record.push(0); // attributes
            put_varint(&mut record, index as i64); // timestamp delta
            put_varint(&mut record, index as i64); // offset delta
            for field in [key, value] {
                match field {
                    None => put_varint(&mut record, -1),
                    Some(bytes) => {
                        put_varint(&mut record, bytes.len() as i64);
                        record.extend_from_slice(bytes);
                    }
                }
            }
            put_varint(&mut record, 0); // no headers
            put_varint(&mut records, record.len() as i64);
            records.extend_from_slice(&record);
        }
        let count = entries.len() as i32;
        let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
        out.extend_from_slice(&0i64.to_be_bytes());
        out.extend_from_slice(&((BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES + records.len()) as i32).to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&(count - 1).to_be_bytes());
        out.extend_from_slice(&timestamp_ms.to_be_bytes());
        out.extend_from_slice(&(timestamp_ms + i64::from(count) - 1).to_be_bytes());
        out.extend_from_slice(&(-1i64).to_be_bytes());
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&records);
        let crc = crc32c::crc32c(&out[OFFSET_ATTRIBUTES..]);
        out[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Builds a batch of about `total_bytes` bytes (at least the header plus one record)
    /// holding `record_count` records of equal size filled with `fill`.
    pub fn batch_of_size(total_bytes: usize, record_count: usize, fill: u8, timestamp_ms: i64) -> Vec<u8> {
        let record_count = record_count.max(1);
        let overhead_per_record = 12;
        let payload = total_bytes.saturating_sub(BATCH_HEADER_BYTES) / record_count;
        let value_len = payload.saturating_sub(overhead_per_record).max(1);
        let value = vec![fill; value_len];
        let values: Vec<&[u8]> = (0..record_count).map(|_| value.as_slice()).collect();
        batch(&values, timestamp_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn built_batch_validates_and_reports_its_fields() {
        let bytes = build::batch(&[b"a", b"bc", b"def"], 1_000);
        let header = validate_batch(&bytes, 1 << 20).expect("valid batch");
        assert_eq!(header.record_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.total_bytes, bytes.len());
        assert_eq!(header.base_timestamp, 1_000);
        assert_eq!(header.max_timestamp, 1_002);
    }

    #[test]
    fn flipped_bit_fails_the_crc() {
        let mut bytes = build::batch(&[b"hello"], 1);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(validate_batch(&bytes, 1 << 20), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn offset_and_epoch_patches_keep_the_crc_valid() {
        let mut bytes = build::batch(&[b"x"], 1);
        set_base_offset(&mut bytes, 42);
        set_partition_leader_epoch(&mut bytes, 7);
        let header = validate_batch(&bytes, 1 << 20).expect("still valid");
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
    }

    #[test]
    fn log_append_time_patch_sets_bit_timestamp_and_crc() {
        let mut bytes = build::batch(&[b"x", b"y"], 1);
        set_log_append_time(&mut bytes, 99_000);
        let header = validate_batch(&bytes, 1 << 20).expect("crc recomputed");
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, 99_000);
    }

    #[test]
    fn wrong_magic_count_and_size_are_refused() {
        let mut bytes = build::batch(&[b"x"], 1);
        bytes[OFFSET_MAGIC] = 1;
        assert_eq!(validate_batch(&bytes, 1 << 20), Err(BatchError::UnsupportedMagic(1)));

        let bytes = build::batch(&[b"x"], 1);
        assert!(matches!(validate_batch(&bytes, 10), Err(BatchError::TooLarge { .. })));

        let mut bytes = build::batch(&[b"x"], 1);
        bytes[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[OFFSET_ATTRIBUTES..]);
        bytes[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate_batch(&bytes, 1 << 20), Err(BatchError::RecordCountMismatch { .. })));
    }

    #[test]
    fn iter_batches_stops_at_a_torn_batch() {
        let mut log = build::batch(&[b"one"], 1);
        log.extend(build::batch(&[b"two", b"three"], 2));
        let full = log.len();
        log.extend(&build::batch(&[b"four"], 3)[..20]);
        let found: Vec<_> = iter_batches(&log).collect();
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].1.end, full);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), limit in 0usize..512) {
            let _ = validate_batch(&bytes, limit);
            let _ = BatchHeader::parse(&bytes);
            let _ = iter_batches(&bytes).count();
        }

        #[test]
        fn mutated_valid_batch_never_panics(seed in proptest::collection::vec(any::<u8>(), 1..64), flip in any::<usize>(), value in any::<u8>()) {
            let mut bytes = build::batch(&[&seed], 5);
            let at = flip % bytes.len();
            bytes[at] = value;
            let _ = validate_batch(&bytes, 1 << 20);
        }
    }
}

/// In an uncompressed batch, the first record whose timestamp is `>= timestamp`, as
/// `(offset, timestamp)`. `None` for compressed batches (their records are not decoded
/// here) or when no record qualifies. Walks the records' varint framing only.
pub fn first_record_at_or_after(bytes: &[u8], header: &BatchHeader, timestamp: i64) -> Option<(i64, i64)> {
    if header.compression_codec() != 0 {
        return None;
    }
    if header.is_log_append_time() {
        return (header.max_timestamp >= timestamp).then_some((header.base_offset, header.max_timestamp));
    }
    let mut at = BATCH_HEADER_BYTES;
    let end = header.total_bytes.min(bytes.len());
    for _ in 0..header.record_count {
        let (length, used) = read_varint(bytes.get(at..end)?)?;
        let record_start = at + used;
        let record_end = record_start.checked_add(usize::try_from(length).ok()?)?;
        let record = bytes.get(record_start..record_end.min(end))?;
        // attributes (1 byte), timestampDelta (varlong), offsetDelta (varint)
        let (timestamp_delta, used_ts) = read_varint(record.get(1..)?)?;
        let (offset_delta, _) = read_varint(record.get(1 + used_ts..)?)?;
        let record_timestamp = header.base_timestamp.checked_add(timestamp_delta)?;
        if record_timestamp >= timestamp {
            return Some((header.base_offset.checked_add(offset_delta)?, record_timestamp));
        }
        at = record_end;
    }
    None
}

/// The smallest and largest record timestamp in an uncompressed records section of
/// `count` records whose batch has `base_timestamp` (Kafka checks every record's
/// timestamp against message.timestamp.before/after.max.ms, not only the header's).
/// Records without a timestamp (-1) are left out, as Kafka does not check them; with
/// none left the range is empty (`i64::MAX, i64::MIN`). `None` when the section is
/// malformed.
pub fn record_timestamp_range(section: &[u8], base_timestamp: i64, count: i32) -> Option<(i64, i64)> {
    let mut at = 0usize;
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for _ in 0..count {
        let (length, used) = read_varint(section.get(at..)?)?;
        let record_start = at + used;
        let record_end = record_start.checked_add(usize::try_from(length).ok()?)?;
        let record = section.get(record_start..record_end)?;
        // attributes (1 byte), then timestampDelta (varlong)
        let (timestamp_delta, _) = read_varint(record.get(1..)?)?;
        let timestamp = base_timestamp.checked_add(timestamp_delta)?;
        if timestamp != NO_TIMESTAMP {
            min = min.min(timestamp);
            max = max.max(timestamp);
        }
        at = record_end;
    }
    (count > 0).then_some((min, max))
}

/// Whether every one of the `count` records of an uncompressed records section has a
/// key (false too when the section is malformed).
pub fn record_keys_present(section: &[u8], count: i32) -> bool {
    let mut at = 0usize;
    for _ in 0..count {
        let Some((length, used)) = section.get(at..).and_then(read_varint) else { return false };
        let start = at + used;
        let Some(end) = usize::try_from(length).ok().and_then(|l| start.checked_add(l)) else { return false };
        let Some(record) = section.get(start..end) else { return false };
        // attributes (1 byte), timestampDelta, offsetDelta, then keyLength (-1: null)
        let key_length = (|| {
            let mut pos = 1;
            for _ in 0..2 {
                pos += read_varint(record.get(pos..)?)?.1;
            }
            Some(read_varint(record.get(pos..)?)?.0)
        })();
        if key_length.is_none_or(|len| len < 0) {
            return false;
        }
        at = end;
    }
    true
}

/// A record timestamp of -1: the producer set none.
pub const NO_TIMESTAMP: i64 = -1;

/// A record of an uncompressed batch: its offset, key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The records of an uncompressed batch (`None` for a compressed one or a malformed
/// record section).
pub fn records<'a>(bytes: &'a [u8], header: &BatchHeader) -> Option<Vec<RecordView<'a>>> {
    if header.compression_codec() != 0 {
        return None;
    }
    let end = header.total_bytes.min(bytes.len());
    let mut at = BATCH_HEADER_BYTES;
    let mut out = Vec::with_capacity(header.record_count.clamp(0, 4096) as usize);
    for _ in 0..header.record_count {
        let (length, used) = read_varint(bytes.get(at..end)?)?;
        let start = at + used;
        let record_end = start.checked_add(usize::try_from(length).ok()?)?;
        let record = bytes.get(start..record_end)?;
        let mut pos = 1; // attributes
        let (_, n) = read_varint(record.get(pos..)?)?; // timestamp delta
        pos += n;
        let (offset_delta, n) = read_varint(record.get(pos..)?)?;
        pos += n;
        let mut fields = [None, None];
        for field in &mut fields {
            let (len, n) = read_varint(record.get(pos..)?)?;
            pos += n;
            if len >= 0 {
                let len = usize::try_from(len).ok()?;
                *field = Some(record.get(pos..pos.checked_add(len)?)?);
                pos += len;
            }
        }
        out.push(RecordView {
            offset: header.base_offset.checked_add(offset_delta)?,
            key: fields[0],
            value: fields[1],
        });
        at = record_end;
    }
    Some(out)
}

/// Encodes a zigzag varint (Kafka's record field encoding).
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        if v < 0x80 {
            out.push(v as u8);
            return;
        }
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
}

/// Decodes a zigzag varint; returns the value and the bytes used.
pub(crate) fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut raw = 0u64;
    for (n, &byte) in bytes.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * n);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), n + 1));
        }
    }
    None
}

#[cfg(test)]
mod record_scan_tests {
    use super::*;

    #[test]
    fn keyed_records_round_trip() {
        let bytes = build::keyed_batch(&[(Some(b"k1"), Some(b"v1")), (Some(b"k2"), None), (None, Some(b""))], 5);
        let header = validate_batch(&bytes, 1 << 20).expect("valid");
        let records = records(&bytes, &header).expect("uncompressed");
        assert_eq!(records.len(), 3);
        assert_eq!((records[0].key, records[0].value), (Some(&b"k1"[..]), Some(&b"v1"[..])));
        assert_eq!((records[1].key, records[1].value, records[1].offset), (Some(&b"k2"[..]), None, 1));
        assert_eq!((records[2].key, records[2].value), (None, Some(&b""[..])));
    }

    #[test]
    fn finds_the_exact_record_by_timestamp() {
        let bytes = build::batch(&[b"a", b"b", b"c", b"d"], 1_000);
        let mut patched = bytes.clone();
        set_base_offset(&mut patched, 100);
        let header = validate_batch(&patched, 1 << 20).expect("valid");
        assert_eq!(first_record_at_or_after(&patched, &header, 1_002), Some((102, 1_002)));
        assert_eq!(first_record_at_or_after(&patched, &header, 0), Some((100, 1_000)));
        assert_eq!(first_record_at_or_after(&patched, &header, 5_000), None);
    }
}
