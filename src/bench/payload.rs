//! Record batches for the load tool, built from a template so the hot loop does not
//! encode records one by one: the records section for a full batch is encoded once, and
//! a batch of `n` records is its first `n` records (each record's offset delta is its
//! index, so any prefix is a valid records section). Per batch only the send stamps in
//! the values, the header fields and the CRC-32C change, which is what a real producer
//! pays for too (plus compression when asked for).
//!
//! Values are random upper-case letters, like kafka-producer-perf-test's payloads, so
//! compression ratios are comparable. When a value has at least 8 bytes, its first 8
//! hold the record's intended send time (ns on the bench clock, little-endian); the e2e
//! consumer reads it back.

use bytes::Bytes;
use kafka_protocol::records::Compression;

use crate::client::records::{compress_records, seal_batch_as, BatchProducer};
use crate::client::ClientError;
use crate::protocol::record_batch::{put_varint, BATCH_HEADER_BYTES};

/// Bytes of the send stamp at the start of each value.
pub const STAMP_BYTES: usize = 8;

#[derive(Debug)]
pub struct BatchTemplate {
    records: Vec<u8>,
    /// End of record `i` in `records`.
    record_ends: Vec<usize>,
    /// Where record `i`'s value starts in `records` (its stamp goes there), if the value
    /// is long enough to carry one.
    stamp_at: Vec<Option<usize>>,
    codec: Compression,
}

impl BatchTemplate {
    /// A template for batches of up to `max_records` records of `key_size`-byte keys (no
    /// key when 0) and `value_size`-byte values.
    pub fn new(max_records: usize, key_size: usize, value_size: usize, codec: Compression, seed: u64) -> BatchTemplate {
        let max_records = max_records.max(1);
        let mut rng = seed | 1;
        let mut letters = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    // xorshift64: cheap, deterministic filler.
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    b'A' + (rng % 26) as u8
                })
                .collect()
        };
        let mut records = Vec::with_capacity(max_records * (key_size + value_size + 16));
        let mut record_ends = Vec::with_capacity(max_records);
        let mut stamp_at = Vec::with_capacity(max_records);
        let mut body = Vec::with_capacity(key_size + value_size + 16);
        for index in 0..max_records {
            body.clear();
            body.push(0); // attributes
            put_varint(&mut body, 0); // timestamp delta: every record carries the batch's timestamp
            put_varint(&mut body, index as i64); // offset delta
            if key_size == 0 {
                put_varint(&mut body, -1);
            } else {
                put_varint(&mut body, key_size as i64);
                let mut key = format!("{index:0key_size$}").into_bytes();
                key.truncate(key_size);
                body.extend_from_slice(&key);
            }
            put_varint(&mut body, value_size as i64);
            let value_at = body.len();
            body.extend_from_slice(&letters(value_size));
            put_varint(&mut body, 0); // no headers
            put_varint(&mut records, body.len() as i64);
            let body_at = records.len();
            records.extend_from_slice(&body);
            record_ends.push(records.len());
            stamp_at.push((value_size >= STAMP_BYTES).then_some(body_at + value_at));
        }
        BatchTemplate { records, record_ends, stamp_at, codec }
    }

    pub fn max_records(&self) -> usize {
        self.record_ends.len()
    }

    /// Builds a batch of `count` records (base offset 0, no producer id) timestamped
    /// `timestamp_ms`, with record `i` stamped `stamp(i)`.
    pub fn build(&self, count: usize, timestamp_ms: i64, stamp: impl Fn(usize) -> u64) -> Result<Bytes, ClientError> {
        self.build_as(count, timestamp_ms, stamp, BatchProducer::NONE)
    }

    /// [`BatchTemplate::build`] for an idempotent or transactional producer.
    pub fn build_as(
        &self,
        count: usize,
        timestamp_ms: i64,
        stamp: impl Fn(usize) -> u64,
        producer: BatchProducer,
    ) -> Result<Bytes, ClientError> {
        let count = count.clamp(1, self.max_records());
        let mut section = self.records[..self.record_ends[count - 1]].to_vec();
        for (index, at) in self.stamp_at[..count].iter().enumerate() {
            if let Some(at) = at {
                section[*at..*at + STAMP_BYTES].copy_from_slice(&stamp(index).to_le_bytes());
            }
        }
        let section = match self.codec {
            Compression::None => Bytes::from(section),
            codec => compress_records(codec, &section)?,
        };
        Ok(seal_batch_as(count, timestamp_ms, timestamp_ms, self.codec, &section, producer))
    }
}

/// Reads the send stamp from a value written by [`BatchTemplate::build`].
pub fn read_stamp(value: &[u8]) -> Option<u64> {
    value.get(..STAMP_BYTES).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// How many `key_size` + `value_size` records fit in a batch of `batch_bytes`.
pub fn records_per_batch(batch_bytes: usize, key_size: usize, value_size: usize) -> usize {
    let per_record = key_size + value_size + 12; // length, attributes, deltas, lengths, headers
    (batch_bytes.saturating_sub(BATCH_HEADER_BYTES) / per_record).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::records::decode_records;
    use crate::protocol::record_batch::{records, validate_batch};

    #[test]
    fn every_prefix_is_a_valid_batch_with_its_stamps() {
        let template = BatchTemplate::new(50, 4, 100, Compression::None, 7);
        for count in [1, 2, 17, 50] {
            let batch = template.build(count, 1_000, |i| 10_000 + i as u64).unwrap();
            let header = validate_batch(&batch, 1 << 20).expect("valid batch");
            assert_eq!(header.record_count as usize, count);
            let records = records(&batch, &header).expect("uncompressed");
            assert_eq!(records.len(), count);
            for (i, record) in records.iter().enumerate() {
                assert_eq!(record.offset, i as i64);
                assert_eq!(record.key.unwrap().len(), 4);
                let value = record.value.unwrap();
                assert_eq!(value.len(), 100);
                assert_eq!(read_stamp(value), Some(10_000 + i as u64));
                assert!(value[STAMP_BYTES..].iter().all(u8::is_ascii_uppercase));
            }
        }
    }

    #[test]
    fn compressed_batches_decode_to_the_same_records() {
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let template = BatchTemplate::new(20, 0, 64, codec, 3);
            let batch = template.build(20, 5, |i| i as u64).unwrap();
            validate_batch(&batch, 1 << 20).expect("valid batch");
            let decoded = decode_records(&batch).unwrap();
            assert_eq!(decoded.len(), 20, "{codec:?}");
            assert_eq!(read_stamp(decoded[19].value.as_ref().unwrap()), Some(19));
            assert!(decoded[0].key.is_none());
        }
    }

    #[test]
    fn batch_sizing_fits_the_budget() {
        let n = records_per_batch(16 << 10, 0, 100);
        let template = BatchTemplate::new(n, 0, 100, Compression::None, 1);
        let batch = template.build(n, 0, |_| 0).unwrap();
        assert!(batch.len() <= 16 << 10, "{} bytes", batch.len());
        assert!(batch.len() > 15 << 10, "{} bytes", batch.len());
    }
}
