//! Looking inside a record batch for compaction: the key, offset, timestamp and
//! tombstone flag of every record, and rebuilding a batch that keeps only some of them.
//!
//! A rebuilt batch keeps everything Kafka's cleaner keeps (`MemoryRecords.filterTo`):
//! the base offset and the last offset delta (so the batch still ends where it ended and
//! offsets never move), both timestamps, the producer id, epoch and base sequence, and
//! the codec. Only the record count, the length, the records and the CRC change. Kept
//! records are copied byte for byte; a compressed batch is decompressed once and its
//! kept records are compressed again with the same codec.

use std::ops::Range;

use bytes::BytesMut;

use super::compression::{self, Codec, CompressionError};
use super::record_batch::{read_varint, BatchHeader, BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD_BYTES};

/// One record as the cleaner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The value is null: a tombstone, deleting the key.
    pub tombstone: bool,
}

/// Why a batch's records could not be walked.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FilterError {
    #[error(transparent)]
    Compression(#[from] CompressionError),
    #[error("record {index} of the batch at offset {base_offset} is malformed")]
    Malformed { base_offset: i64, index: i32 },
}

/// What filtering did to a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Every record was kept: store the original bytes.
    Unchanged,
    /// No record was kept: the batch disappears.
    Empty,
    /// Some records were kept: the rebuilt batch (valid header and CRC).
    Rewritten(BytesMut),
}

/// A record's place in an uncompressed records section.
struct RecordSpan<'a> {
    meta: RecordMeta<'a>,
    /// The whole record, its length varint included.
    bytes: Range<usize>,
}

/// Walks the records of an uncompressed section of `header.record_count` records.
fn spans<'a>(section: &'a [u8], header: &BatchHeader) -> Result<Vec<RecordSpan<'a>>, FilterError> {
    let malformed = |index| FilterError::Malformed { base_offset: header.base_offset, index };
    let mut out = Vec::with_capacity(header.record_count.clamp(0, 4096) as usize);
    let mut at = 0usize;
    for index in 0..header.record_count {
        let span = record_at(section, at, header).ok_or_else(|| malformed(index))?;
        at = span.bytes.end;
        out.push(span);
    }
    Ok(out)
}

fn record_at<'a>(section: &'a [u8], at: usize, header: &BatchHeader) -> Option<RecordSpan<'a>> {
    let (length, used) = read_varint(section.get(at..)?)?;
    let start = at + used;
    let end = start.checked_add(usize::try_from(length).ok()?)?;
    let record = section.get(start..end)?;
    let mut pos = 1; // attributes
    let (timestamp_delta, n) = read_varint(record.get(pos..)?)?;
    pos += n;
    let (offset_delta, n) = read_varint(record.get(pos..)?)?;
    pos += n;
    let (key_len, n) = read_varint(record.get(pos..)?)?;
    pos += n;
    let key = if key_len >= 0 {
        let len = usize::try_from(key_len).ok()?;
        let key = record.get(pos..pos.checked_add(len)?)?;
        pos += len;
        Some(key)
    } else {
        None
    };
    let (value_len, n) = read_varint(record.get(pos..)?)?;
    pos += n;
    let value = if value_len >= 0 {
        let len = usize::try_from(value_len).ok()?;
        Some(record.get(pos..pos.checked_add(len)?)?)
    } else {
        None
    };
    let timestamp = if header.is_log_append_time() {
        header.max_timestamp
    } else {
        header.base_timestamp.checked_add(timestamp_delta)?
    };
    let offset = header.base_offset.checked_add(offset_delta)?;
    let meta = RecordMeta { offset, timestamp, key, value, tombstone: value.is_none() };
    Some(RecordSpan { meta, bytes: at..end })
}

/// Calls `each` for every record of a complete batch, decompressing at most `limit` bytes.
pub fn for_each_record(
    batch: &[u8],
    header: &BatchHeader,
    limit: usize,
    mut each: impl FnMut(&RecordMeta<'_>),
) -> Result<(), FilterError> {
    let section = compression::records_section(batch, header, limit)?;
    for span in spans(&section, header)? {
        each(&span.meta);
    }
    Ok(())
}

/// Keeps the records of a complete batch for which `keep` is true (see the module docs
/// for what a rebuilt batch preserves).
pub fn filter_batch(
    batch: &[u8],
    header: &BatchHeader,
    limit: usize,
    mut keep: impl FnMut(&RecordMeta<'_>) -> bool,
) -> Result<Filtered, FilterError> {
    let section = compression::records_section(batch, header, limit)?;
    let spans = spans(&section, header)?;
    let kept: Vec<&RecordSpan<'_>> = spans.iter().filter(|span| keep(&span.meta)).collect();
    if kept.len() == spans.len() {
        return Ok(Filtered::Unchanged);
    }
    if kept.is_empty() {
        return Ok(Filtered::Empty);
    }
    let mut raw = Vec::with_capacity(kept.iter().map(|s| s.bytes.len()).sum());
    for span in &kept {
        raw.extend_from_slice(&section[span.bytes.clone()]);
    }
    let codec = Codec::from_attributes(header.attributes)?;
    let encoded = match codec {
        Codec::None => raw,
        codec => compression::compress(codec, &raw, None)?,
    };
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + encoded.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(&encoded);
    let batch_length = (out.len() - BATCH_LOG_OVERHEAD_BYTES) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Filtered::Rewritten(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::compression::recompress_batch;
    use crate::protocol::record_batch::{build, check_crc, set_base_offset, BatchHeader};
    use proptest::prelude::*;

    fn batch_at(entries: &[build::KeyValue<'_>], base: i64) -> Vec<u8> {
        let mut bytes = build::keyed_batch(entries, 1_000);
        set_base_offset(&mut bytes, base);
        bytes
    }

    fn metas(batch: &[u8]) -> Vec<(i64, Option<Vec<u8>>, bool)> {
        let header = BatchHeader::parse(batch).unwrap();
        let mut out = Vec::new();
        for_each_record(batch, &header, 1 << 20, |r| out.push((r.offset, r.key.map(<[u8]>::to_vec), r.tombstone)))
            .unwrap();
        out
    }

    #[test]
    fn filtering_keeps_offsets_and_the_batch_end() {
        let bytes = batch_at(&[(Some(b"a"), Some(b"1")), (Some(b"b"), None), (Some(b"a"), Some(b"2"))], 100);
        let header = BatchHeader::parse(&bytes).unwrap();
        let Filtered::Rewritten(out) = filter_batch(&bytes, &header, 1 << 20, |r| r.offset != 100).unwrap() else {
            panic!("one record dropped: rewritten")
        };
        let new = BatchHeader::parse(&out).unwrap();
        check_crc(&out, &new).unwrap();
        assert_eq!((new.base_offset, new.last_offset_delta, new.record_count), (100, 2, 2));
        assert_eq!((new.base_timestamp, new.max_timestamp), (header.base_timestamp, header.max_timestamp));
        assert_eq!(metas(&out), vec![(101, Some(b"b".to_vec()), true), (102, Some(b"a".to_vec()), false)]);
        assert_eq!(filter_batch(&bytes, &header, 1 << 20, |_| true).unwrap(), Filtered::Unchanged);
        assert_eq!(filter_batch(&bytes, &header, 1 << 20, |_| false).unwrap(), Filtered::Empty);
    }

    #[test]
    fn compressed_batches_are_filtered_and_stay_compressed() {
        let plain = batch_at(&[(Some(b"k1"), Some(b"v1")), (Some(b"k2"), Some(b"v2")), (Some(b"k1"), Some(b"v3"))], 7);
        let header = BatchHeader::parse(&plain).unwrap();
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let compressed = recompress_batch(&plain, &header, codec, None, 1 << 20).unwrap();
            let compressed_header = BatchHeader::parse(&compressed).unwrap();
            let Filtered::Rewritten(out) =
                filter_batch(&compressed, &compressed_header, 1 << 20, |r| r.offset != 7).unwrap()
            else {
                panic!("rewritten")
            };
            let new = BatchHeader::parse(&out).unwrap();
            check_crc(&out, &new).unwrap();
            assert_eq!(Codec::from_attributes(new.attributes).unwrap(), codec);
            assert_eq!(metas(&out).iter().map(|m| m.0).collect::<Vec<_>>(), vec![8, 9], "{codec:?}");
        }
    }

    proptest! {
        #[test]
        fn garbage_records_are_an_error_not_a_panic(tail in proptest::collection::vec(any::<u8>(), 0..200), count in 0i32..50) {
            let mut bytes = batch_at(&[(Some(b"a"), Some(b"1"))], 0);
            bytes.truncate(BATCH_HEADER_BYTES);
            bytes.extend_from_slice(&tail);
            let length = (bytes.len() - BATCH_LOG_OVERHEAD_BYTES) as i32;
            bytes[8..12].copy_from_slice(&length.to_be_bytes());
            bytes[57..61].copy_from_slice(&count.to_be_bytes());
            let header = BatchHeader::parse(&bytes).unwrap();
            let _ = filter_batch(&bytes, &header, 1 << 20, |r| r.offset % 2 == 0);
            let _ = for_each_record(&bytes, &header, 1 << 20, |_| {});
        }
    }
}
