//! The topic configs the storage engine honours beyond size and age, through one
//! partition log's public API on real O_DIRECT files:
//! - compression.type: batches are stored in the topic's codec, their records intact,
//!   and a batch that recompresses past max.message.bytes is refused;
//! - message.timestamp.before/after.max.ms: a batch with a record outside the bounds is
//!   refused (INVALID_TIMESTAMP upstream) and consumes no offsets;
//! - index.interval.bytes and segment.index.bytes: denser index entries, and a roll once
//!   the active segment's index would outgrow its limit;
//! - segment.jitter.ms: segments roll up to the jitter before segment.ms;
//! - cleanup.policy=compact: retention by time and size deletes nothing.

mod common;

use std::rc::Rc;

use common::{batch, env_with_clock as env, run};
use tern::protocol::compression::{records_section, Codec};
use tern::protocol::record_batch::{iter_batches, validate_batch, BATCH_HEADER_BYTES};
use tern::storage::{AppendError, Clock, CompressionPolicy, LogConfig, ManualClock, Offset, PartitionLog, StorageEnv};

#[test]
fn batches_are_stored_in_the_topic_codec() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = LogConfig {
            compression: CompressionPolicy::Codec { codec: Codec::Zstd, level: Some(3) },
            use_batch_cache: false,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&path, config.clone(), StorageEnv::default()).await.unwrap();
        let sent: Vec<_> = (0..5).map(|n| batch(4, 500, n, 1_000)).collect();
        for b in &sent {
            log.append(b.clone()).await.unwrap();
        }
        let read = log.read(Offset(0), 1 << 20).await.unwrap();
        let bytes: Vec<u8> = read.records.iter().flat_map(|b| b.iter().copied()).collect();
        let stored: Vec<_> = iter_batches(&bytes).collect();
        assert_eq!(stored.len(), 5);
        for ((header, range), original) in stored.into_iter().zip(&sent) {
            let stored = &bytes[range];
            validate_batch(stored, usize::MAX).expect("a recompressed batch is valid");
            assert_eq!(Codec::from_attributes(header.attributes).unwrap(), Codec::Zstd);
            assert!(stored.len() < original.len(), "repetitive values compress");
            assert_eq!(records_section(stored, &header, 1 << 20).unwrap(), &original[BATCH_HEADER_BYTES..]);
        }

        // Stored uncompressed, a gzip batch that grows past max.message.bytes is refused.
        let small = LogConfig {
            compression: CompressionPolicy::Codec { codec: Codec::None, level: None },
            max_message_bytes: 1000,
            ..config
        };
        log.set_config(small).unwrap();
        let raw = batch(8, 400, 9, 1_000);
        let header = validate_batch(&raw, usize::MAX).unwrap();
        let gzip = tern::protocol::compression::recompress_batch(&raw, &header, Codec::Gzip, None, 1 << 20).unwrap();
        assert!(gzip.len() < 1000 && raw.len() > 1000);
        let refused = log.append(bytes::BytesMut::from(&gzip[..])).await;
        assert!(matches!(refused, Err(AppendError::InvalidBatch(_))), "{refused:?}");
        assert_eq!(log.offsets().log_end.value(), 20, "nothing consumed");
    });
}

#[test]
fn timestamps_outside_the_bounds_are_refused_without_consuming_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let now = 1_700_000_000_000;
        let clock = Rc::new(ManualClock::new(now));
        let config =
            LogConfig { timestamp_before_max_ms: 60_000, timestamp_after_max_ms: 1_000, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config, env(clock)).await.unwrap();
        log.append(batch(2, 50, 1, now - 59_000)).await.unwrap();
        for timestamp in [now - 61_000, now + 2_000] {
            let refused = log.append(batch(2, 50, 2, timestamp)).await;
            assert!(matches!(refused, Err(AppendError::InvalidTimestamp { .. })), "{refused:?}");
        }
        log.append(batch(2, 50, 3, now + 500)).await.unwrap();
        assert_eq!(log.offsets().high_watermark.value(), 4, "refused batches took no offsets");
    });
}

#[test]
fn index_settings_shape_the_index_and_roll_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        // ~600-byte batches with an entry every 1 byte: one entry per batch; an index of
        // at most 8 entries (96 bytes of time index) rolls the segment every ~8 batches.
        let config = LogConfig {
            index_interval_bytes: 1,
            segment_index_bytes: 96,
            use_batch_cache: false,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&path, config.clone(), StorageEnv::default()).await.unwrap();
        for n in 0..40 {
            log.append(batch(1, 600, n, 1_000 + n as i64)).await.unwrap();
        }
        let segments = log.segment_count();
        assert!((5..=8).contains(&segments), "40 batches, index full after ~7-8: {segments} segments");
        let bases = log.segment_bases();
        let index = std::fs::metadata(path.join(format!("{:020}.index", bases[0].value()))).unwrap().len();
        assert!(index >= 6 * 8, "an offset-index entry per batch in the first segment: {index} bytes");
        for n in 0..40 {
            let read = log.read(Offset(n), 1).await.unwrap();
            let bytes: Vec<u8> = read.records.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(iter_batches(&bytes).next().unwrap().0.base_offset, n, "dense index finds offset {n}");
        }
    });
}

#[test]
fn segment_jitter_rolls_before_segment_ms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let clock = Rc::new(ManualClock::new(1_000_000));
        let config = LogConfig { segment_ms: 10_000, segment_jitter_ms: 9_000, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config, env(clock.clone())).await.unwrap();
        // Each segment rolls somewhere in (1 s, 10 s] after it was started: stepping one
        // second at a time, some segment rolls before 10 s for most base offsets.
        let mut ages_at_roll = Vec::new();
        let mut started = clock.now_ms();
        for n in 0..60u64 {
            let before = log.segment_count();
            log.append(batch(1, 10, n, 1_000)).await.unwrap();
            if log.segment_count() > before {
                ages_at_roll.push(clock.now_ms() - started);
                started = clock.now_ms();
            }
            clock.advance_ms(1_000);
        }
        assert!(!ages_at_roll.is_empty());
        assert!(ages_at_roll.iter().all(|&age| (1_000..=10_000).contains(&age)), "{ages_at_roll:?}");
        assert!(ages_at_roll.iter().any(|&age| age < 10_000), "jitter shortens some segments: {ages_at_roll:?}");
    });
}

#[test]
fn compact_topics_are_not_deleted_by_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let clock = Rc::new(ManualClock::new(10_000_000));
        let config = LogConfig {
            segment_bytes: 4096,
            retention_ms: 1,
            retention_bytes: 1,
            delete_by_retention: false,
            use_batch_cache: false,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&path, config.clone(), env(clock.clone())).await.unwrap();
        for n in 0..10 {
            log.append(batch(1, 3000, n, 1_000)).await.unwrap();
        }
        clock.advance_ms(1_000_000);
        assert_eq!(log.enforce_retention().await.unwrap().segments_deleted, 0, "compact keeps every segment");
        log.set_config(LogConfig { delete_by_retention: true, ..config }).unwrap();
        assert_eq!(log.enforce_retention().await.unwrap().segments_deleted, 9, "compact,delete deletes");
    });
}
