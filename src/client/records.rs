//! Record batches on the client side: the compression codecs (the codec implementations
//! come from `kafka-protocol`), whole-batch encoding for the CLI (by hand: the
//! `kafka-protocol` encoder splits non-idempotent records into one batch each), and
//! decoding of fetched batches, compressed or not.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};

use super::error::ClientError;
use crate::protocol::record_batch::{put_varint, BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD_BYTES, MAGIC_V2};

/// Parses `none|gzip|snappy|lz4|zstd`.
pub fn parse_compression(name: &str) -> Result<Compression, String> {
    match name.to_ascii_lowercase().as_str() {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        other => Err(format!("unknown compression {other:?}: use none, gzip, snappy, lz4 or zstd")),
    }
}

/// Compresses an encoded records section (what follows a batch header) with `codec`.
pub fn compress_records(codec: Compression, raw: &[u8]) -> Result<Bytes, ClientError> {
    let mut out = BytesMut::with_capacity(raw.len() / 2 + 64);
    let fill = |tmp: &mut BytesMut| {
        tmp.put_slice(raw);
        Ok(())
    };
    let result = match codec {
        Compression::None => {
            out.put_slice(raw);
            Ok(())
        }
        Compression::Gzip => Gzip::compress(&mut out, fill),
        Compression::Snappy => Snappy::compress(&mut out, fill),
        Compression::Lz4 => Lz4::compress(&mut out, fill),
        Compression::Zstd => Zstd::compress(&mut out, fill),
    };
    result.map_err(|e| ClientError::Protocol(format!("cannot compress with {codec:?}: {e}")))?;
    Ok(out.freeze())
}

/// Encodes `records` as one v2 batch (base offset 0, no producer id, CreateTime)
/// compressed with `codec`. Offsets are 0, 1, 2... in order; the records' own offset,
/// sequence and producer fields are ignored.
pub fn encode_batch(records: Vec<Record>, codec: Compression) -> Result<Bytes, ClientError> {
    let count = records.len();
    if count == 0 {
        return Err(ClientError::Usage("a batch needs at least one record".into()));
    }
    let base_timestamp = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut section = Vec::new();
    let mut body = Vec::new();
    for (index, record) in records.iter().enumerate() {
        body.clear();
        body.push(0); // attributes
        put_varint(&mut body, record.timestamp - base_timestamp);
        put_varint(&mut body, index as i64);
        put_bytes(&mut body, record.key.as_deref());
        put_bytes(&mut body, record.value.as_deref());
        put_varint(&mut body, record.headers.len() as i64);
        for (name, value) in &record.headers {
            put_bytes(&mut body, Some(name.as_bytes()));
            put_bytes(&mut body, value.as_deref());
        }
        put_varint(&mut section, body.len() as i64);
        section.extend_from_slice(&body);
    }
    let section = compress_records(codec, &section)?;
    Ok(seal_batch(count, base_timestamp, max_timestamp, codec, &section))
}

/// Puts the v2 batch header (base offset 0, no producer id or sequence, CreateTime,
/// `codec`) in front of an encoded (and possibly compressed) records section of `count`
/// records and computes the CRC-32C.
pub fn seal_batch(count: usize, base_timestamp: i64, max_timestamp: i64, codec: Compression, section: &[u8]) -> Bytes {
    seal_batch_as(count, base_timestamp, max_timestamp, codec, section, BatchProducer::NONE)
}

/// Who wrote a batch: an idempotent or transactional producer's id, epoch and the
/// batch's first sequence number, or nobody (`NONE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
}

impl BatchProducer {
    pub const NONE: BatchProducer =
        BatchProducer { producer_id: -1, producer_epoch: -1, base_sequence: -1, transactional: false };
}

/// [`seal_batch`] for a batch of `producer`.
pub fn seal_batch_as(
    count: usize,
    base_timestamp: i64,
    max_timestamp: i64,
    codec: Compression,
    section: &[u8],
    producer: BatchProducer,
) -> Bytes {
    let attributes =
        codec as i16 | if producer.transactional { crate::protocol::record_batch::ATTRIBUTE_TRANSACTIONAL } else { 0 };
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + section.len());
    out.put_i64(0); // base offset
    out.put_i32((BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES + section.len()) as i32);
    out.put_i32(-1); // partition leader epoch
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // crc, below
    out.put_i16(attributes);
    out.put_i32(count as i32 - 1);
    out.put_i64(base_timestamp);
    out.put_i64(max_timestamp);
    out.put_i64(producer.producer_id);
    out.put_i16(producer.producer_epoch);
    out.put_i32(producer.base_sequence);
    out.put_i32(count as i32);
    out.put_slice(section);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// Varint length then bytes; -1 for null.
fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

/// Decodes every record of the whole batches in `bytes` (a fetch response's records).
/// A partial batch at the end (the broker may cut one) is ignored. Control records are
/// skipped.
pub fn decode_records(bytes: &Bytes) -> Result<Vec<Record>, ClientError> {
    let whole = whole_batches_len(bytes);
    let mut buffer = bytes.slice(..whole);
    let sets = RecordBatchDecoder::decode_all(&mut buffer)
        .map_err(|e| ClientError::Protocol(format!("cannot decode fetched records: {e}")))?;
    Ok(sets.into_iter().flat_map(|set| set.records).filter(|r| !r.control).collect())
}

/// Length of the prefix of `bytes` made of complete batches.
pub fn whole_batches_len(bytes: &[u8]) -> usize {
    let mut at = 0;
    while bytes.len() - at >= 12 {
        let length = i32::from_be_bytes([bytes[at + 8], bytes[at + 9], bytes[at + 10], bytes[at + 11]]);
        if length <= 0 {
            break;
        }
        let end = at + 12 + length as usize;
        if end > bytes.len() {
            break;
        }
        at = end;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;

    fn record(value: &str) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 1,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: IndexMap::from([(
                kafka_protocol::protocol::StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"v")),
            )]),
        }
    }

    #[test]
    fn batches_round_trip_through_every_codec() {
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let codec = parse_compression(codec).unwrap();
            let batch = encode_batch(vec![record("a"), record("bb")], codec).unwrap();
            crate::protocol::record_batch::validate_batch(&batch, 1 << 20).expect("a valid batch");
            let mut two = BytesMut::from(&batch[..]);
            two.extend_from_slice(&batch[..20]); // a cut batch at the end is ignored
            let records = decode_records(&two.freeze()).unwrap();
            let values: Vec<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
            assert!(records.iter().all(|r| r.key.as_deref() == Some(&b"k"[..]) && r.headers.len() == 1));
            assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 1]);
            assert_eq!(values, vec![Bytes::from_static(b"a"), Bytes::from_static(b"bb")], "{codec:?}");
        }
    }
}
