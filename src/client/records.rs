//! Record batches on the client side: the compression codecs (the codec implementations
//! come from `kafka-protocol`), whole-batch encoding for the CLI, and decoding of fetched
//! batches, compressed or not.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

use super::error::ClientError;

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

/// Encodes `records` as one v2 batch (base offset 0) compressed with `codec`.
pub fn encode_batch(records: &[Record], codec: Compression) -> Result<Bytes, ClientError> {
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: codec };
    RecordBatchEncoder::encode(&mut out, records.iter(), &options)
        .map_err(|e| ClientError::Protocol(format!("cannot encode records: {e}")))?;
    Ok(out.freeze())
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
            key: None,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: IndexMap::new(),
        }
    }

    #[test]
    fn batches_round_trip_through_every_codec() {
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let codec = parse_compression(codec).unwrap();
            let batch = encode_batch(&[record("a"), record("bb")], codec).unwrap();
            let mut two = BytesMut::from(&batch[..]);
            two.extend_from_slice(&batch[..20]); // a cut batch at the end is ignored
            let records = decode_records(&two.freeze()).unwrap();
            let values: Vec<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
            assert_eq!(values, vec![Bytes::from_static(b"a"), Bytes::from_static(b"bb")], "{codec:?}");
        }
    }
}
