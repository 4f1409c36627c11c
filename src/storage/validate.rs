//! What a topic's configs ask of a batch before it is appended (Kafka's LogValidator):
//! record timestamps within message.timestamp.before/after.max.ms, and the batch stored
//! with the topic's compression.type, re-encoded when the producer used another codec.
//!
//! A batch needs no work in the common case (compression.type=producer, no timestamp
//! bounds): it is then stored byte for byte as sent. Otherwise its records section is
//! decompressed once (bounded by `DECOMPRESSED_SECTION_BYTES_MAX`) and reused by both
//! steps. Runs on the partition's shard, inside the append, so every path that appends
//! (Produce, and later replication) applies the same rules.

use bytes::BytesMut;

use crate::protocol::compression::{self, Codec, CompressionError};
use crate::protocol::record_batch::{
    record_keys_present, record_timestamp_range, validate_batch, BatchError, BatchHeader, BATCH_HEADER_BYTES,
};

use super::config::{CompressionPolicy, LogConfig, TimestampType, DECOMPRESSED_SECTION_BYTES_MAX};
use super::error::AppendError;

/// Applies the topic's timestamp bounds and compression to a validated batch. Returns
/// the batch to store (the same bytes when nothing changes) and its header.
pub fn apply_topic_policy(
    batch: BytesMut,
    header: BatchHeader,
    config: &LogConfig,
    now_ms: i64,
) -> Result<(BytesMut, BatchHeader), AppendError> {
    let check_timestamps = config.timestamp_type == TimestampType::CreateTime
        && (config.timestamp_before_max_ms != i64::MAX || config.timestamp_after_max_ms != i64::MAX);
    let source = Codec::from_attributes(header.attributes).map_err(compression_error)?;
    let target = match config.compression {
        CompressionPolicy::Codec { codec, level } if codec != source => Some((codec, level)),
        _ => None,
    };
    let check_keys = config.compact && !header.is_control();
    if !check_timestamps && target.is_none() && !check_keys {
        return Ok((batch, header));
    }
    let section =
        compression::records_section(&batch, &header, DECOMPRESSED_SECTION_BYTES_MAX).map_err(compression_error)?;
    if check_keys && !record_keys_present(&section, header.record_count) {
        return Err(AppendError::InvalidRecord {
            reason: "Compacted topic cannot accept message without key (cleanup.policy=compact)".into(),
        });
    }
    if check_timestamps {
        check_record_timestamps(&section, &header, config, now_ms)?;
    }
    let Some((codec, level)) = target else {
        return Ok((batch, header));
    };
    let encoded = compression::compress(codec, &section, level).map_err(compression_error)?;
    let rebuilt = compression::recompress_batch_from_section(&batch, &header, codec, &encoded);
    let header = validate_batch(&rebuilt, config.max_message_bytes)?;
    Ok((rebuilt, header))
}

fn check_record_timestamps(
    section: &[u8],
    header: &BatchHeader,
    config: &LogConfig,
    now_ms: i64,
) -> Result<(), AppendError> {
    let (oldest, newest) = record_timestamp_range(section, header.base_timestamp, header.record_count).ok_or(
        AppendError::InvalidBatch(BatchError::LengthMismatch {
            declared: header.total_bytes as i64,
            available: BATCH_HEADER_BYTES + section.len(),
        }),
    )?;
    let earliest = now_ms.saturating_sub(config.timestamp_before_max_ms);
    let latest = now_ms.saturating_add(config.timestamp_after_max_ms);
    if oldest < earliest {
        return Err(AppendError::InvalidTimestamp {
            timestamp: oldest,
            reason: format!(
                "is more than message.timestamp.before.max.ms={} before the broker's time {now_ms}",
                config.timestamp_before_max_ms
            ),
        });
    }
    if newest > latest {
        return Err(AppendError::InvalidTimestamp {
            timestamp: newest,
            reason: format!(
                "is more than message.timestamp.after.max.ms={} after the broker's time {now_ms}",
                config.timestamp_after_max_ms
            ),
        });
    }
    Ok(())
}

fn compression_error(error: CompressionError) -> AppendError {
    AppendError::Compression(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::build;

    const NOW: i64 = 1_700_000_000_000;

    fn batch_at(timestamp: i64) -> (BytesMut, BatchHeader) {
        let bytes = build::batch(&[b"a", b"b"], timestamp);
        let header = validate_batch(&bytes, 1 << 20).unwrap();
        (BytesMut::from(&bytes[..]), header)
    }

    #[test]
    fn default_policy_keeps_the_bytes() {
        let (batch, header) = batch_at(NOW);
        let (out, _) = apply_topic_policy(batch.clone(), header, &LogConfig::default(), NOW).unwrap();
        assert_eq!(out, batch);
    }

    #[test]
    fn timestamps_outside_the_bounds_are_refused() {
        let config = LogConfig { timestamp_before_max_ms: 1_000, timestamp_after_max_ms: 500, ..LogConfig::default() };
        let (batch, header) = batch_at(NOW - 999);
        assert!(apply_topic_policy(batch, header, &config, NOW).is_ok());
        let (batch, header) = batch_at(NOW - 1_001);
        assert!(matches!(apply_topic_policy(batch, header, &config, NOW), Err(AppendError::InvalidTimestamp { .. })));
        let (batch, header) = batch_at(NOW + 501);
        assert!(matches!(apply_topic_policy(batch, header, &config, NOW), Err(AppendError::InvalidTimestamp { .. })));
        let untimed = build::batch(&[b"no timestamp"], -1);
        let header = validate_batch(&untimed, 1 << 20).unwrap();
        let result = apply_topic_policy(BytesMut::from(&untimed[..]), header, &config, NOW);
        assert!(result.is_ok(), "records without a timestamp are not checked");
        let append_time = LogConfig { timestamp_type: TimestampType::LogAppendTime, ..config };
        let (batch, header) = batch_at(NOW - 10_000);
        assert!(apply_topic_policy(batch, header, &append_time, NOW).is_ok(), "LogAppendTime replaces them");
    }

    #[test]
    fn batches_are_stored_with_the_topic_codec() {
        let config = LogConfig {
            compression: CompressionPolicy::Codec { codec: Codec::Zstd, level: Some(5) },
            ..LogConfig::default()
        };
        let (batch, header) = batch_at(NOW);
        let (out, new_header) = apply_topic_policy(batch.clone(), header, &config, NOW).unwrap();
        assert_eq!(Codec::from_attributes(new_header.attributes).unwrap(), Codec::Zstd);
        assert_eq!(compression::records_section(&out, &new_header, 1 << 20).unwrap(), &batch[BATCH_HEADER_BYTES..]);
        let uncompressed = LogConfig {
            compression: CompressionPolicy::Codec { codec: Codec::None, level: None },
            ..LogConfig::default()
        };
        let (back, _) = apply_topic_policy(out, new_header, &uncompressed, NOW).unwrap();
        assert_eq!(back, batch);
    }

    #[test]
    fn a_recompressed_batch_over_the_limit_is_too_large() {
        let bytes = build::batch_of_size(4096, 4, 0, NOW);
        let header = validate_batch(&bytes, 1 << 20).unwrap();
        let config = LogConfig {
            compression: CompressionPolicy::Codec { codec: Codec::None, level: None },
            max_message_bytes: bytes.len(),
            ..LogConfig::default()
        };
        let compressed = compression::recompress_batch(&bytes, &header, Codec::Gzip, None, 1 << 20).unwrap();
        let compressed_header = validate_batch(&compressed, 1 << 20).unwrap();
        let grown = LogConfig { max_message_bytes: compressed.len(), ..config };
        let result = apply_topic_policy(BytesMut::from(&compressed[..]), compressed_header, &grown, NOW);
        assert!(matches!(result, Err(AppendError::InvalidBatch(BatchError::TooLarge { .. }))), "{result:?}");
    }
}
