//! Behaviour of one partition log through its public API: append/read round trips,
//! offsets, segment rolling by size and age, retention by size, age and log start,
//! timestamp lookup, LogAppendTime, index loading and rebuilding, corruption of a closed
//! segment taking only that partition offline, and group commit coalescing fsyncs.
//! Every test runs on a real glommio executor against real O_DIRECT files in a temp dir.

mod common;

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use common::{batch, env_with_clock, run};
use tern::protocol::record_batch::{iter_batches, validate_batch};
use tern::storage::{
    AppendError, FlushPolicy, LogConfig, ManualClock, Offset, PartitionLog, ReadError, SimulatedDisk, StorageEnv,
    StorageError, TimestampType,
};

fn concat(records: &[Bytes]) -> Vec<u8> {
    records.iter().flat_map(|b| b.iter().copied()).collect()
}

/// Reads the whole log from `from` to the high watermark, batch by batch.
async fn read_all(log: &PartitionLog, from: Offset) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let read = log.read(offset, 64 << 10).await.expect("read");
        if read.records.is_empty() {
            return out;
        }
        let bytes = concat(&read.records);
        for (header, range) in iter_batches(&bytes) {
            validate_batch(&bytes[range.clone()], usize::MAX).expect("stored batches stay valid");
            out.push((header.base_offset, bytes[range].to_vec()));
            offset = Offset(header.next_offset());
        }
    }
}

#[test]
fn append_read_and_reopen_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = PartitionLog::open(&path, LogConfig::default(), StorageEnv::default()).await.unwrap();
        let mut expected = Vec::new();
        for n in 0..50u64 {
            let records = 1 + (n as usize % 4);
            let info = log.append(batch(records, 100 + n as usize * 7, n, 1_000 + n as i64)).await.unwrap();
            let offsets = log.offsets();
            assert_eq!(offsets.high_watermark.offset(), Offset(info.last_offset.value() + 1));
            expected.push(info.base_offset.value());
        }
        let read = read_all(&log, Offset(0)).await;
        assert_eq!(read.iter().map(|r| r.0).collect::<Vec<_>>(), expected);
        // Reading from the middle of a batch starts at that batch.
        let mid = log.read(Offset(expected[10] + 1), 1).await.unwrap();
        assert_eq!(iter_batches(&concat(&mid.records)).next().unwrap().0.base_offset, expected[10]);
        log.close().await.unwrap();

        let reopened = PartitionLog::open(&path, LogConfig::default(), StorageEnv::default()).await.unwrap();
        assert_eq!(reopened.offsets(), log.offsets());
        assert_eq!(read_all(&reopened, Offset(0)).await, read);
        let info = reopened.append(batch(2, 10, 99, 5)).await.unwrap();
        assert_eq!(info.base_offset, log.offsets().log_end.offset(), "appends continue after reopen");
    });
}

#[test]
fn read_returns_at_least_one_batch_and_respects_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = LogConfig { use_batch_cache: false, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config, StorageEnv::default()).await.unwrap();
        log.append(batch(1, 200_000, 1, 1)).await.unwrap();
        log.append(batch(1, 10, 2, 2)).await.unwrap();
        let read = log.read(Offset(0), 10).await.unwrap();
        let bytes = concat(&read.records);
        assert_eq!(iter_batches(&bytes).count(), 1, "one oversized batch, never zero (KIP-74)");
        assert!(bytes.len() > 200_000);
        assert!(log.read(Offset(2), 1000).await.unwrap().records.is_empty(), "at the high watermark: empty");
        assert!(matches!(log.read(Offset(3), 1000).await, Err(ReadError::OffsetOutOfRange { .. })));
        assert!(matches!(log.read(Offset(-1), 1000).await, Err(ReadError::OffsetOutOfRange { .. })));
    });
}

#[test]
fn invalid_batches_are_refused_without_consuming_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = LogConfig { max_message_bytes: 1000, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config, StorageEnv::default()).await.unwrap();
        let mut corrupt = batch(1, 10, 1, 1);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(matches!(log.append(corrupt).await, Err(AppendError::InvalidBatch(_))));
        assert!(matches!(log.append(batch(1, 5000, 1, 1)).await, Err(AppendError::InvalidBatch(_))));
        assert!(matches!(log.append(bytes::BytesMut::from(&b"garbage"[..])).await, Err(AppendError::InvalidBatch(_))));
        assert_eq!(log.append(batch(1, 10, 1, 1)).await.unwrap().base_offset, Offset(0));
    });
}

#[test]
fn segments_roll_by_size_and_age_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let clock = Rc::new(ManualClock::new(1_000_000));
        let config = LogConfig { segment_bytes: 8192, use_batch_cache: false, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config.clone(), env_with_clock(clock.clone())).await.unwrap();
        for n in 0..20 {
            log.append(batch(3, 1000, n, 1_000_000)).await.unwrap();
        }
        let by_size = log.segment_count();
        assert!(by_size >= 7, "20 x ~3 KiB batches over 8 KiB segments, got {by_size} segments");
        clock.advance_ms(config.segment_ms);
        log.append(batch(1, 10, 100, 1_000_000)).await.unwrap();
        assert_eq!(log.segment_count(), by_size + 1, "segment.ms rolls the active segment");
        let all = read_all(&log, Offset(0)).await;
        assert_eq!(all.len(), 21);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        for suffix in ["index", "timeindex"] {
            assert!(path.join(format!("{:020}.{suffix}", 0)).exists(), "sealed segment has its {suffix}");
        }
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, config, env_with_clock(clock)).await.unwrap();
        assert_eq!(reopened.segment_count(), by_size + 1);
        assert_eq!(read_all(&reopened, Offset(0)).await, all, "closed segments load lazily after reopen");
    });
}

#[test]
fn retention_by_bytes_time_and_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let clock = Rc::new(ManualClock::new(10_000_000));
        let config =
            LogConfig { segment_bytes: 4096, retention_ms: -1, use_batch_cache: false, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config.clone(), env_with_clock(clock.clone())).await.unwrap();
        for n in 0..30 {
            log.append(batch(1, 3000, n, 10_000_000 + n as i64 * 1000)).await.unwrap();
        }
        let segments = log.segment_count();
        assert_eq!(segments, 30, "one 3 KiB batch per 4 KiB segment");
        assert_eq!(log.enforce_retention().await.unwrap().segments_deleted, 0, "unlimited retention keeps all");

        // retention.bytes: keep the newest ~10 segments' worth.
        let per_segment = log.size_bytes() / 30;
        log.set_config(LogConfig { retention_bytes: (per_segment * 10) as i64, ..config.clone() }).unwrap();
        let report = log.enforce_retention().await.unwrap();
        assert_eq!(report.segments_deleted, 20);
        assert_eq!(log.offsets().log_start.offset(), Offset(20));
        assert!(!path.join(format!("{:020}.log", 0)).exists(), "deleted segment files are gone");
        assert!(matches!(log.read(Offset(5), 100).await, Err(ReadError::OffsetOutOfRange { .. })));

        // retention.ms: records up to ts 10_024_000 are older than 5 s at 10_029_500.
        clock.set_ms(10_029_500);
        log.set_config(LogConfig { retention_ms: 5_000, ..config.clone() }).unwrap();
        let report = log.enforce_retention().await.unwrap();
        assert_eq!(report.segments_deleted, 5, "segments 20..=24 are older than 5 s");
        assert_eq!(log.offsets().log_start.offset(), Offset(25));

        // DeleteRecords moves the log start inside a segment and survives a reopen.
        log.set_config(LogConfig { retention_ms: -1, ..config.clone() }).unwrap();
        assert_eq!(log.delete_records(Offset(27)).await.unwrap().offset(), Offset(27));
        assert!(matches!(log.delete_records(Offset(31)).await, Err(ReadError::OffsetOutOfRange { .. })));
        assert_eq!(log.enforce_retention().await.unwrap().segments_deleted, 2);
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, config, env_with_clock(clock)).await.unwrap();
        assert_eq!(reopened.offsets().log_start.offset(), Offset(27));
        assert_eq!(read_all(&reopened, Offset(27)).await.len(), 3);
    });
}

#[test]
fn timestamp_lookup_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = LogConfig { segment_bytes: 8192, use_batch_cache: false, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config.clone(), StorageEnv::default()).await.unwrap();
        // Batch n holds 4 records with timestamps 1000*n .. 1000*n+3.
        for n in 1..=40 {
            log.append(batch(4, 500, n, 1000 * n as i64)).await.unwrap();
        }
        let found = log.offset_for_timestamp(17_002).await.unwrap().unwrap();
        assert_eq!((found.offset, found.timestamp), (Offset(16 * 4 + 2), 17_002));
        let found = log.offset_for_timestamp(17_500).await.unwrap().unwrap();
        assert_eq!((found.offset, found.timestamp), (Offset(17 * 4), 18_000));
        assert_eq!(log.offset_for_timestamp(0).await.unwrap().unwrap().offset, Offset(0));
        assert_eq!(log.offset_for_timestamp(99_999).await.unwrap(), None);
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, config, StorageEnv::default()).await.unwrap();
        let found = reopened.offset_for_timestamp(30_001).await.unwrap().unwrap();
        assert_eq!(found.offset, Offset(29 * 4 + 1), "time index of closed segments loads from disk");
    });
}

#[test]
fn log_append_time_stamps_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let clock = Rc::new(ManualClock::new(1_700_000_000_000));
        let config = LogConfig { timestamp_type: TimestampType::LogAppendTime, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config, env_with_clock(clock)).await.unwrap();
        let info = log.append(batch(3, 10, 1, 5)).await.unwrap();
        assert_eq!(info.log_append_time_ms, Some(1_700_000_000_000));
        let bytes = concat(&log.read(Offset(0), 1000).await.unwrap().records);
        let header = validate_batch(&bytes, usize::MAX).expect("CRC recomputed");
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, 1_700_000_000_000);
    });
}

#[test]
fn damaged_index_is_rebuilt_and_corrupt_closed_segment_takes_only_that_log_offline() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig { segment_bytes: 16384, use_batch_cache: false, ..LogConfig::default() };
        let a = root.join("a-0");
        let b = root.join("b-0");
        for path in [&a, &b] {
            let log = PartitionLog::open(path, config.clone(), StorageEnv::default()).await.unwrap();
            for n in 0..40 {
                log.append(batch(2, 1000, n, n as i64)).await.unwrap();
            }
            log.close().await.unwrap();
        }
        // a: garbage index, missing time index -> rebuilt transparently.
        std::fs::write(a.join(format!("{:020}.index", 0)), b"\x00\x00\x00\x05bad").unwrap();
        std::fs::remove_file(a.join(format!("{:020}.timeindex", 0))).unwrap();
        let log_a = PartitionLog::open(&a, config.clone(), StorageEnv::default()).await.unwrap();
        assert_eq!(read_all(&log_a, Offset(0)).await.len(), 40);
        assert_eq!(std::fs::metadata(a.join(format!("{:020}.index", 0))).unwrap().len() % 8, 0, "index rewritten");

        // b: flip a byte in the middle of the first (closed) segment's records.
        let segment = b.join(format!("{:020}.log", 0));
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[5000] ^= 0x55;
        std::fs::write(&segment, &bytes).unwrap();
        let log_b = PartitionLog::open(&b, config.clone(), StorageEnv::default()).await.unwrap();
        let error = log_b.read(Offset(0), 1 << 20).await.expect_err("corruption is reported");
        assert!(error.to_string().contains("offline"), "{error}");
        assert!(matches!(
            log_b.append(batch(1, 1, 1, 1)).await,
            Err(AppendError::Storage(StorageError::Offline { .. }))
        ));
        // The other partition keeps working.
        log_a.append(batch(1, 10, 1, 1)).await.unwrap();
        assert_eq!(read_all(&log_a, Offset(0)).await.len(), 41);
    });
}

#[test]
fn group_commit_coalesces_concurrent_appends_into_few_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let disk = Rc::new(SimulatedDisk::default());
        let env = StorageEnv { faults: Some(disk.clone()), ..StorageEnv::default() };
        let log = PartitionLog::open(&path, LogConfig::default(), env).await.unwrap();
        let pending: Vec<_> = (0..500).map(|n| log.append_nowait(batch(1, 1000, n, 1)).unwrap()).collect();
        for (n, append) in pending.into_iter().enumerate() {
            assert_eq!(append.durable().await.unwrap().base_offset, Offset(n as i64));
        }
        let syncs = disk.syncs.get();
        assert!((1..50).contains(&syncs), "500 concurrent appends took {syncs} fsyncs");
        assert_eq!(read_all(&log, Offset(0)).await.len(), 500);
    });
}

#[test]
fn interval_policy_acknowledges_before_fsync_and_syncs_on_bytes_or_timer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let disk = Rc::new(SimulatedDisk::default());
        let env = StorageEnv { faults: Some(disk.clone()), ..StorageEnv::default() };
        // Generous interval: the ten appends below take a few ms even on a loaded machine.
        let flush = FlushPolicy::Interval { interval: Duration::from_millis(400), bytes: 1 << 20 };
        let log = PartitionLog::open(&path, LogConfig { flush, ..LogConfig::default() }, env).await.unwrap();
        // The first append creates the segment file (and syncs the directory); let the
        // interval timer settle that one before counting.
        log.append(batch(1, 100, 0, 1)).await.unwrap();
        glommio::timer::sleep(Duration::from_millis(900)).await;
        let syncs_before = disk.syncs.get();
        for n in 0..10 {
            log.append(batch(1, 100, n, 1)).await.unwrap();
        }
        assert_eq!(disk.syncs.get(), syncs_before, "acknowledged without fdatasync");
        glommio::timer::sleep(Duration::from_millis(900)).await;
        assert_eq!(disk.syncs.get(), syncs_before + 1, "the interval timer synced once");
        for n in 0..3 {
            log.append(batch(1, 400_000, n, 1)).await.unwrap();
        }
        assert!(disk.syncs.get() >= syncs_before + 2, "passing flush bytes forces a sync");
    });
}

#[test]
fn long_poll_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = PartitionLog::open(&path, LogConfig::default(), StorageEnv::default()).await.unwrap();
        let waiter = glommio::spawn_local({
            let log = log.clone();
            async move {
                log.wait_for_high_watermark_beyond(Offset(0)).await;
                log.offsets().high_watermark.offset()
            }
        });
        glommio::timer::sleep(Duration::from_millis(5)).await;
        log.append(batch(2, 10, 1, 1)).await.unwrap();
        assert_eq!(waiter.await, Offset(2));
    });
}

#[test]
fn opening_thousands_of_segments_reads_none_of_the_closed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    std::fs::create_dir_all(&path).unwrap();
    // 3,000 one-batch segments written directly, without index files; every closed one
    // except #1500 has its bytes scrambled, so any read of them at open would fail.
    let segments = 3_000i64;
    for base in 0..segments {
        let mut bytes = batch(1, 64, base as u64, base).to_vec();
        tern::protocol::record_batch::set_base_offset(&mut bytes, base);
        if base != 1_500 && base != segments - 1 {
            bytes.iter_mut().skip(12).for_each(|b| *b ^= 0xa5);
        }
        std::fs::write(path.join(format!("{base:020}.log")), &bytes).unwrap();
    }
    run(move || async move {
        let started = std::time::Instant::now();
        let log = PartitionLog::open(&path, LogConfig::default(), StorageEnv::default()).await.unwrap();
        let elapsed = started.elapsed();
        println!("opened {} segments in {elapsed:?}", log.segment_count());
        assert_eq!(log.segment_count(), segments as usize);
        assert_eq!(log.offsets().log_end.offset(), Offset(segments));
        // The intact closed segment is readable (its index is rebuilt on first use).
        let read = log.read(Offset(1_500), 1 << 20).await.unwrap();
        assert_eq!(iter_batches(&concat(&read.records)).next().unwrap().0.base_offset, 1_500);
        assert!(path.join(format!("{:020}.index", 1_500)).exists(), "rebuilt index saved");
        // A scrambled one is found only when read, and takes the partition offline.
        assert!(log.read(Offset(10), 1 << 20).await.is_err());
    });
}

#[test]
fn background_retention_task_deletes_expired_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = LogConfig { segment_bytes: 4096, retention_bytes: 8192, retention_ms: -1, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config, StorageEnv::default()).await.unwrap();
        for n in 0..10 {
            log.append(batch(1, 3000, n, 1)).await.unwrap();
        }
        assert_eq!(log.segment_count(), 10);
        let logs: Rc<dyn Fn() -> Vec<PartitionLog>> = Rc::new({
            let log = log.clone();
            move || vec![log.clone()]
        });
        let task = tern::storage::spawn_retention_task(Duration::from_millis(10), logs);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.segment_count() > 3 && std::time::Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        drop(task);
        assert_eq!(log.segment_count(), 3, "retention.bytes 8 KiB keeps two closed segments and the active one");
        assert_eq!(log.offsets().log_start.offset(), Offset(7));
    });
}

fn idempotent(producer_id: i64, epoch: i16, sequence: i32, records: usize) -> bytes::BytesMut {
    let mut bytes = batch(records, 20, sequence as u64, 1);
    bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
    bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
    bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn idempotent_producer_duplicates_gaps_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = PartitionLog::open(&path, LogConfig::default(), StorageEnv::default()).await.unwrap();
        assert_eq!(log.append(idempotent(9, 0, 0, 3)).await.unwrap().base_offset, Offset(0));
        assert_eq!(log.append(idempotent(9, 0, 3, 2)).await.unwrap().base_offset, Offset(3));
        let retry = log.append(idempotent(9, 0, 0, 3)).await;
        assert!(matches!(retry, Err(AppendError::Duplicate { base_offset: Offset(0), .. })), "{retry:?}");
        let gap = log.append(idempotent(9, 0, 9, 1)).await;
        assert!(matches!(gap, Err(AppendError::OutOfOrderSequence { expected: 5, received: 9 })), "{gap:?}");
        assert_eq!(log.offsets().log_end.offset(), Offset(5), "neither was written");
        log.close().await.unwrap();

        // Clean restart: the snapshot carries the state.
        let log = PartitionLog::open(&path, LogConfig::default(), StorageEnv::default()).await.unwrap();
        assert!(matches!(
            log.append(idempotent(9, 0, 3, 2)).await,
            Err(AppendError::Duplicate { base_offset: Offset(3), .. })
        ));
        assert_eq!(log.append(idempotent(9, 0, 5, 1)).await.unwrap().base_offset, Offset(5));
        let fenced = log.append(idempotent(9, 0, 6, 1)).await;
        assert!(fenced.is_ok());
        log.append(idempotent(9, 1, 0, 1)).await.unwrap();
        assert!(matches!(
            log.append(idempotent(9, 0, 7, 1)).await,
            Err(AppendError::ProducerFenced { current_epoch: 1 })
        ));
        drop(log); // no close: like a crash, the state is rebuilt from the active segment

        let log = PartitionLog::open(&path, LogConfig::default(), StorageEnv::default()).await.unwrap();
        assert!(matches!(
            log.append(idempotent(9, 1, 0, 1)).await,
            Err(AppendError::Duplicate { base_offset: Offset(7), .. })
        ));
        assert_eq!(log.append(idempotent(9, 1, 1, 1)).await.unwrap().base_offset, Offset(8));
    });
}

#[test]
fn a_wrong_middle_index_entry_is_rebuilt_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let config = LogConfig { segment_bytes: 64 << 10, use_batch_cache: false, ..LogConfig::default() };
    let writer_path = path.clone();
    let writer_config = config.clone();
    let expected = run(move || async move {
        let log = PartitionLog::open(&writer_path, writer_config, StorageEnv::default()).await.unwrap();
        for n in 0..100 {
            log.append(batch(2, 1000, n, 1)).await.unwrap();
        }
        let all = read_all(&log, Offset(0)).await;
        log.close().await.unwrap();
        all
    });
    // Shift the fourth entry of the first segment's offset index one batch forward: still
    // ordered and in bounds (so it loads), but it now skips a batch.
    let index_path = path.join(format!("{:020}.index", 0));
    let mut index = std::fs::read(&index_path).unwrap();
    assert!(index.len() >= 5 * 8, "enough entries to damage one in the middle");
    let entry = 3 * 8;
    let relative = u32::from_be_bytes(index[entry..entry + 4].try_into().unwrap());
    let position = u32::from_be_bytes(index[entry + 4..entry + 8].try_into().unwrap());
    let batch_bytes = expected[1].1.len() as u32;
    index[entry + 4..entry + 8].copy_from_slice(&(position + batch_bytes).to_be_bytes());
    std::fs::write(&index_path, &index).unwrap();
    run(move || async move {
        let log = PartitionLog::open(&path, config, StorageEnv::default()).await.unwrap();
        let read = log.read(Offset(i64::from(relative)), 1).await.expect("rebuilt index serves the read");
        let bytes = concat(&read.records);
        assert_eq!(iter_batches(&bytes).next().unwrap().0.base_offset, i64::from(relative));
        assert_eq!(read_all(&log, Offset(0)).await, expected, "every batch still readable");
    });
}

#[test]
fn clean_close_skips_the_tail_scan_and_a_stale_marker_is_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = LogConfig { use_batch_cache: false, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config.clone(), StorageEnv::default()).await.unwrap();
        for n in 0..200u64 {
            log.append(batch(4, 300, n, 10_000 + 10 * n as i64)).await.unwrap();
        }
        let before = read_all(&log, Offset(0)).await;
        log.close().await.unwrap();
        let marker = path.join("clean-shutdown");
        let saved_marker = std::fs::read(&marker).expect("a clean close leaves the marker");
        let segment = path.join(format!("{:020}.log", 0));

        // Damage a batch in the middle of the tail segment: a scan would cut the log
        // there, so an intact log end proves the scan was skipped.
        let mut bytes = std::fs::read(&segment).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&segment, &bytes).unwrap();
        let reopened = PartitionLog::open(&path, config.clone(), StorageEnv::default()).await.unwrap();
        assert_eq!(reopened.offsets(), log.offsets(), "the marker restores the log end without a scan");
        assert!(!marker.exists(), "the marker is consumed at open");
        let found = reopened.offset_for_timestamp(10_000 + 10 * 150 + 2).await.unwrap().unwrap();
        assert_eq!(found.offset, Offset(150 * 4 + 2), "the tail's time index came from the marker");
        bytes[middle] ^= 0xff;
        std::fs::write(&segment, &bytes).unwrap();
        assert_eq!(read_all(&reopened, Offset(0)).await, before);

        // Append more, "crash" (no close), and put the old marker back as if its removal
        // had been lost: the size no longer matches, so the tail is scanned and nothing
        // acknowledged is lost.
        for n in 0..50u64 {
            reopened.append(batch(2, 100, 1_000 + n, 50_000)).await.unwrap();
        }
        let expected = read_all(&reopened, Offset(0)).await;
        let end = reopened.offsets();
        drop(reopened);
        std::fs::write(&marker, &saved_marker).unwrap();
        let recovered = PartitionLog::open(&path, config, StorageEnv::default()).await.unwrap();
        assert_eq!(recovered.offsets().log_end, end.log_end);
        assert_eq!(read_all(&recovered, Offset(0)).await, expected);
    });
}

/// Switching a topic from the interval policy to the durable one mid-segment: the writer
/// reopens the active segment write-through, and the first durable acknowledgement also
/// covers the earlier, still unsynced, interval-policy writes. Checked by crashing the
/// simulated disk (which keeps only synced data, whole or torn) after each append.
#[test]
fn policy_change_to_durable_covers_earlier_unsynced_writes() {
    use tern::storage::{Disk, MemoryDisk, SyncMode};
    for sync_mode in [SyncMode::WriteThrough, SyncMode::Fdatasync] {
        run(move || async move {
            let disk = MemoryDisk::new(7);
            let dir = std::path::PathBuf::from("/sim/t-0");
            let env = || StorageEnv { disk: Disk::Memory(disk.session()), sync_mode, ..StorageEnv::default() };
            let interval = FlushPolicy::Interval { interval: Duration::from_secs(3600), bytes: 1 << 30 };
            let log =
                PartitionLog::open(&dir, LogConfig { flush: interval, ..LogConfig::default() }, env()).await.unwrap();
            for n in 0..5 {
                log.append(batch(1, 100, n, 1)).await.unwrap();
            }
            log.set_config(LogConfig::default()).unwrap();
            log.append(batch(1, 100, 5, 1)).await.unwrap();
            drop(log);
            disk.crash();
            let reopened = PartitionLog::open(&dir, LogConfig::default(), env()).await.unwrap();
            let offsets: Vec<i64> = read_all(&reopened, Offset(0)).await.into_iter().map(|(base, _)| base).collect();
            assert_eq!(offsets, vec![0, 1, 2, 3, 4, 5], "{sync_mode:?}: the durable append covers the earlier ones");
            // After recovery the tail is reopened in the policy's mode; acknowledged
            // appends survive the next crash too.
            for n in 6..9 {
                reopened.append(batch(1, 100, n, 1)).await.unwrap();
            }
            drop(reopened);
            disk.crash();
            let again = PartitionLog::open(&dir, LogConfig::default(), env()).await.unwrap();
            assert_eq!(read_all(&again, Offset(0)).await.len(), 9, "{sync_mode:?}");
        });
    }
}

/// 16 KiB segments, no time retention, no batch cache (reads go to the files).
fn small_segments() -> LogConfig {
    LogConfig { segment_bytes: 16384, retention_ms: -1, use_batch_cache: false, ..LogConfig::default() }
}

/// Appends 3000-byte batches, tagged from `*n` on, until the log has `segments` segments.
async fn append_until_segments(log: &PartitionLog, segments: usize, n: &mut u64) {
    while log.segment_count() < segments {
        log.append(batch(1, 3000, *n, 1)).await.unwrap();
        *n += 1;
    }
}

/// The `.recycle` files in a log directory.
fn kept_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut kept: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "recycle"))
        .collect();
    kept.sort();
    kept
}

/// Segment recycling (`storage::recycle`): the file of a segment retention deleted becomes
/// the next segment's, and its old batches never reappear, after a crash either.
#[test]
fn a_deleted_segments_file_becomes_the_next_segment_and_its_old_batches_never_return() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let clock = Rc::new(ManualClock::new(10_000_000));
        let config = small_segments();
        let env = || env_with_clock(clock.clone());
        let log = PartitionLog::open(&path, config.clone(), env()).await.unwrap();
        // Batches of exactly one block: the new segment's batches sit where the old
        // one's did, so the block after the last new batch starts with a whole, valid old
        // batch, which only the offset check tells from a new one.
        let value_bytes = 3000 + 4096 - batch(1, 3000, 0, 0).len();
        let block_batch = |n: u64| batch(1, value_bytes, n, 10_000_000 + n as i64);
        assert_eq!(block_batch(0).len(), 4096);
        let mut n = 0u64;
        while log.segment_count() < 4 {
            log.append(block_batch(n)).await.unwrap();
            n += 1;
        }
        let bases = log.segment_bases();
        log.delete_records(bases[2]).await.unwrap();
        assert_eq!(log.enforce_retention().await.unwrap().segments_deleted, 2);
        // The first deleted segment's file is kept, named by the offset its batches end
        // before; the second is removed (one kept file per log).
        let kept = kept_files(&path);
        assert_eq!(kept, vec![path.join(format!("{:020}.recycle", bases[1].value()))]);
        assert!(!path.join(format!("{:020}.log", bases[0].value())).exists());
        assert!(!path.join(format!("{:020}.log", bases[1].value())).exists());
        assert!(!path.join(format!("{:020}.index", bases[0].value())).exists());
        let kept_inode = std::fs::metadata(&kept[0]).unwrap().ino();
        let kept_size = std::fs::metadata(&kept[0]).unwrap().len();

        // The next roll writes into it.
        let before = log.segment_count();
        while log.segment_count() == before {
            log.append(block_batch(n)).await.unwrap();
            n += 1;
        }
        let new_base = *log.segment_bases().last().unwrap();
        let new_file = path.join(format!("{:020}.log", new_base.value()));
        assert_eq!(std::fs::metadata(&new_file).unwrap().ino(), kept_inode, "the kept file was reused");
        assert!(std::fs::metadata(&new_file).unwrap().len() >= kept_size, "its old blocks are still there");
        assert!(kept_files(&path).is_empty());
        log.append(block_batch(n)).await.unwrap();
        n += 1;
        let expected = read_all(&log, bases[2]).await;
        assert_eq!(expected.len() as i64, n as i64 - bases[2].value());

        // A crash (no clean close): recovery stops at the first old batch.
        drop(log);
        let reopened = PartitionLog::open(&path, config.clone(), env()).await.unwrap();
        assert_eq!(reopened.offsets().log_end.offset(), Offset(n as i64));
        assert_eq!(read_all(&reopened, bases[2]).await, expected, "exactly the appended batches, no old ones");
        reopened.append(block_batch(n)).await.unwrap();
        let after = read_all(&reopened, bases[2]).await;
        assert_eq!(after.len(), expected.len() + 1);
        assert_eq!(after[..expected.len()], expected[..]);
        reopened.close().await.unwrap();
    });
}

/// A deleted segment that a zero-copy read still holds is removed, not recycled (the
/// reader keeps reading the old file), and `recycle_segments: false` never keeps one.
#[test]
fn a_segment_in_use_or_recycling_off_is_removed_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = small_segments();
        let log = PartitionLog::open(&path, config.clone(), StorageEnv::default()).await.unwrap();
        let mut n = 0u64;
        append_until_segments(&log, 3, &mut n).await;
        let bases = log.segment_bases();
        let held = log.read_for_send(Offset(0), 1 << 20, tern::storage::Isolation::ReadUncommitted).await.unwrap();
        let region = match &held.chunks[0] {
            tern::storage::RecordChunk::File(region) => region.clone(),
            other => panic!("a cold read is a file region, got {other:?}"),
        };
        let old_bytes = region.read_to_bytes().unwrap();
        log.delete_records(bases[1]).await.unwrap();
        assert_eq!(log.enforce_retention().await.unwrap().segments_deleted, 1);
        assert!(kept_files(&path).is_empty(), "a file a reader holds is not kept");
        assert_eq!(region.read_to_bytes().unwrap(), old_bytes, "the reader still reads the old segment");
        drop(held);
        log.close().await.unwrap();

        let off = StorageEnv { recycle_segments: false, ..StorageEnv::default() };
        let log = PartitionLog::open(&path, config, off).await.unwrap();
        append_until_segments(&log, 3, &mut n).await;
        let bases = log.segment_bases();
        log.delete_records(bases[1]).await.unwrap();
        assert_eq!(log.enforce_retention().await.unwrap().segments_deleted, 1);
        assert!(kept_files(&path).is_empty(), "recycling is off");
        log.close().await.unwrap();
    });
}

/// A sealed segment's index files are written by a task of their own, off the write path;
/// `close` waits for it, so after a close every closed segment has both files, and they
/// load (a reopened log reads through them without rebuilding).
#[test]
fn sealed_segments_have_their_index_files_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = small_segments();
        let log = PartitionLog::open(&path, config.clone(), StorageEnv::default()).await.unwrap();
        append_until_segments(&log, 5, &mut 0).await;
        let bases = log.segment_bases();
        let all = read_all(&log, Offset(0)).await;
        log.close().await.unwrap();
        for base in &bases[..bases.len() - 1] {
            for suffix in ["index", "timeindex"] {
                let file = path.join(format!("{:020}.{suffix}", base.value()));
                assert!(file.exists(), "{} is missing", file.display());
            }
        }
        let reopened = PartitionLog::open(&path, config, StorageEnv::default()).await.unwrap();
        assert_eq!(read_all(&reopened, Offset(0)).await, all);
        reopened.close().await.unwrap();
    });
}

/// At open a log keeps only its newest kept file, and only one its next segment may use
/// (every batch in it below the log end) with recycling on.
#[test]
fn open_keeps_one_usable_kept_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = PartitionLog::open(&path, small_segments(), StorageEnv::default()).await.unwrap();
        append_until_segments(&log, 2, &mut 0).await;
        let log_end = log.offsets().log_end.offset().value();
        log.close().await.unwrap();
        let kept = |offset: i64| path.join(format!("{offset:020}.recycle"));
        let names = |paths: Vec<std::path::PathBuf>| {
            paths.into_iter().map(|p| p.file_name().unwrap().to_owned()).collect::<Vec<_>>()
        };
        for (present, env, survivor) in [
            (vec![1, log_end], StorageEnv::default(), Some(log_end)),
            (vec![1, log_end + 1], StorageEnv::default(), None),
            (vec![1], StorageEnv { recycle_segments: false, ..StorageEnv::default() }, None),
        ] {
            for &offset in &present {
                std::fs::write(kept(offset), vec![7u8; 8192]).unwrap();
            }
            let log = PartitionLog::open(&path, small_segments(), env).await.unwrap();
            let expected: Vec<_> = survivor.into_iter().map(kept).collect();
            assert_eq!(names(kept_files(&path)), names(expected), "kept files {present:?}");
            log.close().await.unwrap();
            for file in kept_files(&path) {
                std::fs::remove_file(file).unwrap();
            }
        }
    });
}
