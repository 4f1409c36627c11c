//! Record-batch compression as the broker needs it: the codec of a batch (attribute bits
//! 0..=2), bounded decompression of a records section, compression at a chosen level, and
//! the rebuild of a v2 batch around a re-encoded records section (Kafka's LogValidator
//! does the same when a topic's `compression.type` differs from the producer's codec).
//!
//! The framings are Kafka's: gzip (RFC 1952, several members allowed), snappy in the
//! xerial block framing the Java client writes (raw snappy accepted on input, as
//! snappy-java does), LZ4 frames, zstd frames. Decompression never produces more than
//! the caller's limit, so a small "compression bomb" cannot take the broker's memory.

use std::borrow::Cow;
use std::io::{Read, Write};

use bytes::BytesMut;

use thiserror::Error;

use super::record_batch::{BatchHeader, ATTRIBUTE_COMPRESSION_MASK, BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD_BYTES};

/// Kafka's codec numbers (record batch attributes bits 0..=2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Codec {
    pub fn from_attributes(attributes: i16) -> Result<Codec, CompressionError> {
        match attributes & ATTRIBUTE_COMPRESSION_MASK {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(CompressionError::UnknownCodec(other)),
        }
    }

    /// The codec's name in `compression.type` (`uncompressed` for none).
    pub fn config_name(self) -> &'static str {
        match self {
            Codec::None => "uncompressed",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CompressionError {
    #[error("compression codec {0} is not one of Kafka's (0-4)")]
    UnknownCodec(i16),
    #[error("{codec:?} records section does not decompress: {reason}")]
    Corrupt { codec: Codec, reason: String },
    #[error("{codec:?} records section decompresses to more than {limit} bytes")]
    TooLarge { codec: Codec, limit: usize },
    #[error("compressing with {codec:?} failed: {reason}")]
    Compress { codec: Codec, reason: String },
}

/// xerial snappy-java stream header (magic, version 1, compatible version 1).
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// Block size of the xerial framing (SnappyOutputStream's default).
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

/// Decompresses a records section; at most `limit` output bytes.
pub fn decompress(codec: Codec, section: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
    let corrupt = |reason: String| CompressionError::Corrupt { codec, reason };
    match codec {
        Codec::None => {
            if section.len() > limit {
                return Err(CompressionError::TooLarge { codec, limit });
            }
            Ok(section.to_vec())
        }
        Codec::Gzip => read_bounded(codec, flate2::read::MultiGzDecoder::new(section), limit),
        Codec::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(section).map_err(|e| corrupt(e.to_string()))?;
            read_bounded(codec, decoder, limit)
        }
        Codec::Lz4 => {
            let decoder = lz4::Decoder::new(section).map_err(|e| corrupt(e.to_string()))?;
            read_bounded(codec, decoder, limit)
        }
        Codec::Snappy => decompress_snappy(section, limit),
    }
}

fn read_bounded(codec: Codec, reader: impl Read, limit: usize) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| CompressionError::Corrupt { codec, reason: e.to_string() })?;
    if out.len() > limit {
        return Err(CompressionError::TooLarge { codec, limit });
    }
    Ok(out)
}

fn decompress_snappy(section: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
    let codec = Codec::Snappy;
    let corrupt = |reason: &str| CompressionError::Corrupt { codec, reason: reason.to_string() };
    let raw_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), CompressionError> {
        let len = snap::raw::decompress_len(block).map_err(|e| corrupt(&e.to_string()))?;
        if out.len() + len > limit {
            return Err(CompressionError::TooLarge { codec, limit });
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new().decompress(block, &mut out[start..]).map_err(|e| corrupt(&e.to_string()))?;
        Ok(())
    };
    let mut out = Vec::new();
    // Like snappy-java: the xerial framing when the magic is there, raw snappy otherwise.
    let Some(mut rest) = section.strip_prefix(&XERIAL_HEADER[..8]) else {
        raw_block(section, &mut out)?;
        return Ok(out);
    };
    rest = rest.get(8..).ok_or_else(|| corrupt("truncated xerial header"))?;
    while !rest.is_empty() {
        let length: [u8; 4] =
            rest.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt("truncated block length"))?;
        let length = u32::from_be_bytes(length) as usize;
        let block = rest.get(4..4 + length).ok_or_else(|| corrupt("truncated block"))?;
        raw_block(block, &mut out)?;
        rest = &rest[4 + length..];
    }
    Ok(out)
}

/// Compresses a records section with `codec` at `level` (`None`: the codec's default;
/// Kafka's ranges: gzip 1..=9, lz4 1..=17, zstd -131072..=22; snappy has no levels).
pub fn compress(codec: Codec, raw: &[u8], level: Option<i32>) -> Result<Vec<u8>, CompressionError> {
    let failed = |e: std::io::Error| CompressionError::Compress { codec, reason: e.to_string() };
    match codec {
        Codec::None => Ok(raw.to_vec()),
        Codec::Gzip => {
            let level =
                level.map_or(flate2::Compression::default(), |l| flate2::Compression::new(l.clamp(1, 9) as u32));
            let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 2), level);
            encoder.write_all(raw).map_err(failed)?;
            encoder.finish().map_err(failed)
        }
        Codec::Zstd => zstd::stream::encode_all(raw, level.unwrap_or(3)).map_err(failed),
        Codec::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .level(level.unwrap_or(9).clamp(1, 17) as u32)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::with_capacity(raw.len() / 2))
                .map_err(failed)?;
            encoder.write_all(raw).map_err(failed)?;
            let (out, result) = encoder.finish();
            result.map_err(failed)?;
            Ok(out)
        }
        Codec::Snappy => {
            let mut out = Vec::with_capacity(raw.len() / 2 + XERIAL_HEADER.len());
            out.extend_from_slice(XERIAL_HEADER);
            let mut encoder = snap::raw::Encoder::new();
            for block in raw.chunks(XERIAL_BLOCK_BYTES) {
                let compressed = encoder
                    .compress_vec(block)
                    .map_err(|e| CompressionError::Compress { codec, reason: e.to_string() })?;
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
    }
}

/// The uncompressed records section of a complete, validated batch.
/// Borrowed when the batch is uncompressed (no copy), decoded otherwise.
pub fn records_section<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
    limit: usize,
) -> Result<Cow<'a, [u8]>, CompressionError> {
    let section = &batch[BATCH_HEADER_BYTES..header.total_bytes];
    match Codec::from_attributes(header.attributes)? {
        Codec::None if section.len() <= limit => Ok(Cow::Borrowed(section)),
        codec => decompress(codec, section, limit).map(Cow::Owned),
    }
}

/// Rebuilds a complete, validated batch with its records section re-encoded as `codec`.
/// Every header field but the length, the codec bits and the CRC is kept (base offset,
/// timestamps, producer id, epoch and sequence), so idempotence and offsets are unchanged.
pub fn recompress_batch(
    batch: &[u8],
    header: &BatchHeader,
    codec: Codec,
    level: Option<i32>,
    limit: usize,
) -> Result<BytesMut, CompressionError> {
    let raw = records_section(batch, header, limit)?;
    let section = compress(codec, &raw, level)?;
    Ok(recompress_batch_from_section(batch, header, codec, &section))
}

/// The batch's header (with new length, codec bits and CRC) in front of `section`, a
/// records section already encoded with `codec`.
pub fn recompress_batch_from_section(batch: &[u8], header: &BatchHeader, codec: Codec, section: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + section.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(section);
    let batch_length = (out.len() - BATCH_LOG_OVERHEAD_BYTES) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (header.attributes & !ATTRIBUTE_COMPRESSION_MASK) | codec as i16;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::{build, validate_batch};

    const ALL: [Codec; 5] = [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];

    #[test]
    fn every_codec_round_trips_at_every_level_boundary() {
        let raw: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for codec in ALL {
            for level in [None, Some(1), Some(9)] {
                let compressed = compress(codec, &raw, level).unwrap();
                assert_eq!(decompress(codec, &compressed, raw.len()).unwrap(), raw, "{codec:?} {level:?}");
            }
        }
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let zeros = vec![0u8; 1 << 20];
        for codec in ALL {
            let compressed = compress(codec, &zeros, None).unwrap();
            assert_eq!(
                decompress(codec, &compressed, 1000).unwrap_err(),
                CompressionError::TooLarge { codec, limit: 1000 },
                "{codec:?}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in ALL.into_iter().skip(1) {
            for garbage in [
                &b""[..],
                b"\x82SNAPPY\x00",
                b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01\xff\xff\xff\xff",
                b"hello world",
            ] {
                let _ = decompress(codec, garbage, 1 << 20);
            }
        }
    }

    #[test]
    fn raw_snappy_is_accepted_like_snappy_java_does() {
        let raw = b"raw snappy from a client that skips the xerial framing".repeat(10);
        let compressed = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        assert_eq!(decompress(Codec::Snappy, &compressed, 1 << 20).unwrap(), raw);
    }

    #[test]
    fn recompressed_batches_validate_and_keep_their_records() {
        let batch = build::batch(&[b"one", b"two", b"three"], 1_700_000_000_000);
        let header = validate_batch(&batch, 1 << 20).unwrap();
        for codec in ALL {
            let out = recompress_batch(&batch, &header, codec, None, 1 << 20).unwrap();
            let new_header = validate_batch(&out, 1 << 20).unwrap();
            assert_eq!(Codec::from_attributes(new_header.attributes).unwrap(), codec);
            assert_eq!(new_header.record_count, 3);
            assert_eq!(new_header.base_timestamp, header.base_timestamp);
            assert_eq!(records_section(&out, &new_header, 1 << 20).unwrap(), &batch[BATCH_HEADER_BYTES..]);
            let back = recompress_batch(&out, &new_header, Codec::None, None, 1 << 20).unwrap();
            assert_eq!(back, batch, "{codec:?} -> none gives the original bytes back");
        }
    }
}
