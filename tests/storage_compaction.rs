//! Log compaction (`cleanup.policy=compact`) on the simulated disk, checked against a
//! model of every record appended.
//!
//! - `compaction_matches_the_model`: random streams of keyed records and tombstones
//!   (some batches compressed) over many small segments, cleaned at random moments with
//!   large and small key maps, with restarts (some with index files removed). After
//!   every pass: every record read is the one appended at that offset, offsets only
//!   increase, every key's latest record is there (a tombstone may have expired), and
//!   every offset a consumer had committed is still a position a read succeeds from.
//!   At the end, with everything cleanable cleaned: below the active segment exactly
//!   the latest record of each key is left (tombstones only if they are the latest),
//!   and the active segment is untouched.
//! - `crashes_during_compaction_lose_nothing`: the disk crashes at a random moment of a
//!   pass (mid-write, mid-swap), many times; after each recovery the log reads back
//!   whole, matches the model, and the next pass finishes the job.
//! - tombstone expiry, min.compaction.lag.ms, gaps at segment ends, keyless records.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::BytesMut;
use common::run;
use tern::protocol::batch_filter::for_each_record;
use tern::protocol::compression::{recompress_batch, Codec};
use tern::protocol::record_batch::{build, iter_batches, BatchHeader};
use tern::storage::{
    AppendError, CleanerConfig, Clock, Disk, LogConfig, ManualClock, MemoryDisk, MemoryFaults, Offset, PartitionLog,
    SeededRng, StorageEnv,
};

const START_MS: i64 = 1_700_000_000_000;
const DELETE_RETENTION_MS: i64 = 60_000;

/// A record as appended: key, value (None: tombstone), timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    timestamp: i64,
}

/// Every record appended, by offset.
type Model = BTreeMap<i64, Record>;

fn compact_config(rng: &mut SeededRng) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: [1, 512, 4096][rng.below(3) as usize],
        compact: true,
        delete_by_retention: false,
        min_cleanable_dirty_ratio_ppm: 0,
        delete_retention_ms: DELETE_RETENTION_MS,
        ..LogConfig::default()
    }
}

fn memory_env(disk: &Rc<MemoryDisk>, clock: &Rc<ManualClock>) -> StorageEnv {
    StorageEnv {
        clock: clock.clone(),
        disk: Disk::Memory(disk.session()),
        batch_cache: tern::storage::batch_cache::BatchCache::shared(64 << 10),
        ..StorageEnv::default()
    }
}

fn cleaner(map_bytes: usize) -> CleanerConfig {
    CleanerConfig { map_bytes, io_bytes_per_second: 0, ..CleanerConfig::default() }
}

/// A batch of 1-6 records over `keys` keys (about one in seven a tombstone), compressed
/// one time in four.
fn random_batch(rng: &mut SeededRng, keys: u64, step: u64, now_ms: i64) -> (BytesMut, Vec<Record>) {
    let count = 1 + rng.below(6);
    let mut records = Vec::new();
    for i in 0..count {
        let key = format!("key-{:03}", rng.below(keys)).into_bytes();
        let value =
            (!rng.chance(140)).then(|| format!("value {step}.{i} {}", "x".repeat(rng.below(30) as usize)).into_bytes());
        records.push(Record { key, value, timestamp: now_ms + i as i64 });
    }
    let entries: Vec<build::KeyValue<'_>> =
        records.iter().map(|r| (Some(r.key.as_slice()), r.value.as_deref())).collect();
    let plain = build::keyed_batch(&entries, now_ms);
    let bytes = if rng.chance(250) {
        let header = BatchHeader::parse(&plain).unwrap();
        let codec = [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd][rng.below(4) as usize];
        recompress_batch(&plain, &header, codec, None, 1 << 20).unwrap()
    } else {
        BytesMut::from(&plain[..])
    };
    (bytes, records)
}

/// Every record readable from the log start, in order.
async fn read_all(log: &PartitionLog) -> Result<Vec<(i64, Record)>, String> {
    let mut out = Vec::new();
    let mut offset = log.offsets().log_start.offset();
    let end = log.offsets().high_watermark.offset();
    while offset < end {
        let read = log.read(offset, 64 << 10).await.map_err(|e| format!("read at {offset}: {e}"))?;
        if read.records.is_empty() {
            return Err(format!("read at {offset} returned nothing below the high watermark {end}"));
        }
        let before = offset;
        for chunk in &read.records {
            for (header, range) in iter_batches(chunk) {
                for_each_record(&chunk[range], &header, 64 << 20, |r| {
                    if r.offset >= before.value() {
                        out.push((
                            r.offset,
                            Record {
                                key: r.key.unwrap_or_default().to_vec(),
                                value: r.value.map(<[u8]>::to_vec),
                                timestamp: r.timestamp,
                            },
                        ));
                    }
                })
                .map_err(|e| format!("records of the batch at {}: {e}", header.base_offset))?;
                offset = offset.max(Offset(header.next_offset()));
            }
        }
        if offset <= before {
            return Err(format!("read at {before} made no progress"));
        }
    }
    Ok(out)
}

/// What must hold after any pass (see the module docs).
async fn check_invariants(log: &PartitionLog, model: &Model, committed: &[i64]) -> Result<(), String> {
    let read = read_all(log).await?;
    let mut last = -1;
    for (offset, record) in &read {
        if *offset <= last {
            return Err(format!("offset {offset} after {last}: not increasing"));
        }
        last = *offset;
        match model.get(offset) {
            Some(expected) if expected == record => {}
            other => {
                let short = |r: &Record| {
                    format!("{}={:?}@{}", String::from_utf8_lossy(&r.key), r.value.as_ref().map(Vec::len), r.timestamp)
                };
                return Err(format!("offset {offset} holds {}, appended was {:?}", short(record), other.map(short)));
            }
        }
    }
    let present: HashMap<i64, &Record> = read.iter().map(|(o, r)| (*o, r)).collect();
    let mut latest: HashMap<&[u8], (i64, &Record)> = HashMap::new();
    for (offset, record) in model {
        latest.insert(&record.key, (*offset, record));
    }
    for (key, (offset, record)) in latest {
        if record.value.is_some() && !present.contains_key(&offset) {
            return Err(format!("latest record of {} at {offset} is gone", String::from_utf8_lossy(key)));
        }
    }
    let start = log.offsets().log_start.offset();
    for &position in committed.iter().filter(|&&p| p >= start.value()) {
        log.read(Offset(position), 4096).await.map_err(|e| format!("committed position {position}: {e}"))?;
    }
    Ok(())
}

/// Below the active segment exactly the latest record of each key (a tombstone only if
/// it is the latest); the active segment as appended.
async fn check_fully_compacted(log: &PartitionLog, model: &Model) -> Result<(), String> {
    let active_base = *log.segment_bases().last().expect("active segment");
    let read = read_all(log).await?;
    let mut latest_below: HashMap<&[u8], i64> = HashMap::new();
    for (offset, record) in model.range(..active_base.value()) {
        latest_below.insert(&record.key, *offset);
    }
    let mut expected: Vec<i64> = latest_below.values().copied().collect();
    expected.extend(model.range(active_base.value()..).map(|(o, _)| *o));
    expected.sort_unstable();
    let tombstone = |o: &i64| model[o].value.is_none() && *o < active_base.value();
    let got: Vec<i64> = read.iter().map(|(o, _)| *o).collect();
    let expected_values: Vec<i64> = expected.iter().copied().filter(|o| !tombstone(o)).collect();
    let got_values: Vec<i64> = got.iter().copied().filter(|o| !tombstone(o)).collect();
    if got_values != expected_values {
        return Err(format!("after full compaction: records {got_values:?}, expected {expected_values:?}"));
    }
    if let Some(extra) = got.iter().find(|o| !expected.contains(o)) {
        return Err(format!("superseded tombstone at {extra} survived full compaction"));
    }
    Ok(())
}

async fn model_seed(seed: u64) -> Result<(), String> {
    let disk = MemoryDisk::new(seed);
    let mut rng = SeededRng::new(seed ^ 0xC0FF_EE00);
    let clock = Rc::new(ManualClock::new(START_MS));
    let dir = PathBuf::from("/sim/compacted-0");
    let config = compact_config(&mut rng);
    let mut log =
        PartitionLog::open(&dir, config.clone(), memory_env(&disk, &clock)).await.map_err(|e| e.to_string())?;
    let mut model = Model::new();
    let mut committed = Vec::new();
    let keys = [8, 40, 150][rng.below(3) as usize];
    let steps = 150 + rng.below(250);
    for step in 0..steps {
        let (batch, records) = random_batch(&mut rng, keys, step, clock.now_ms());
        let info = log.append(batch).await.map_err(|e| format!("append {step}: {e}"))?;
        for (i, record) in records.into_iter().enumerate() {
            model.insert(info.base_offset.value() + i as i64, record);
        }
        clock.advance_ms(rng.below(3_000) as i64);
        if rng.chance(100) {
            let offsets = log.offsets();
            let span = (offsets.high_watermark.value() - offsets.log_start.value()).max(1) as u64;
            committed.push(offsets.log_start.value() + rng.below(span + 1) as i64);
        }
        if rng.chance(80) {
            let map_bytes = if rng.chance(500) { 6 << 10 } else { 64 << 20 };
            log.clean(&cleaner(map_bytes)).await.map_err(|e| format!("clean at step {step}: {e}"))?;
            check_invariants(&log, &model, &committed).await.map_err(|e| format!("step {step}: {e}"))?;
        }
        if rng.chance(25) {
            log.close().await.map_err(|e| e.to_string())?;
            if rng.chance(500) {
                // Lose the index files of the closed segments: they are rebuilt by
                // scanning, with the rules of a cleaned segment where it may have gaps.
                for (name, _, _) in disk.session().list_dir(&dir).map_err(|e| e.to_string())? {
                    if name.ends_with(".index") || name.ends_with(".timeindex") {
                        disk.session().remove(&dir.join(name)).map_err(|e| e.to_string())?;
                    }
                }
            }
            log = PartitionLog::open(&dir, config.clone(), memory_env(&disk, &clock))
                .await
                .map_err(|e| format!("reopen at step {step}: {e}"))?;
            check_invariants(&log, &model, &committed)
                .await
                .map_err(|e| format!("after reopen at step {step}: {e}"))?;
        }
    }
    // Clean until nothing is dirty: every tombstone has been seen once, then expires.
    clock.advance_ms(2 * DELETE_RETENTION_MS);
    for _ in 0..3 {
        log.clean(&cleaner(64 << 20)).await.map_err(|e| format!("final clean: {e}"))?;
    }
    check_invariants(&log, &model, &committed).await?;
    check_fully_compacted(&log, &model).await
}

#[test]
fn compaction_matches_the_model() {
    let base = std::env::var("TERN_COMPACTION_SEED").ok().and_then(|s| s.parse().ok());
    let seeds: Vec<u64> = match base {
        Some(seed) => vec![seed],
        None => (0..24).map(|n| 0xC1EA_0000 + n).collect(),
    };
    for seed in seeds {
        run(move || async move { model_seed(seed).await }).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

/// Appends `steps` random batches and waits for each to be durable.
async fn fill(log: &PartitionLog, model: &mut Model, rng: &mut SeededRng, clock: &ManualClock, steps: u64, keys: u64) {
    for step in 0..steps {
        let (batch, records) = random_batch(rng, keys, step, clock.now_ms());
        let info = log.append(batch).await.expect("append on a healthy disk");
        for (i, record) in records.into_iter().enumerate() {
            model.insert(info.base_offset.value() + i as i64, record);
        }
        clock.advance_ms(rng.below(2_000) as i64);
    }
}

async fn crash_seed(seed: u64, cycles: u64) -> Result<(), String> {
    let disk = MemoryDisk::new(seed);
    let mut rng = SeededRng::new(seed ^ 0xDEAD_C1EA);
    let clock = Rc::new(ManualClock::new(START_MS));
    let dir = PathBuf::from("/sim/compacted-crash");
    let config = compact_config(&mut rng);
    let mut model = Model::new();
    for cycle in 0..cycles {
        let fail = |what: String| format!("cycle {cycle}: {what}");
        disk.set_faults(MemoryFaults::default());
        let log = PartitionLog::open(&dir, config.clone(), memory_env(&disk, &clock))
            .await
            .map_err(|e| fail(format!("open: {e}")))?;
        check_invariants(&log, &model, &[]).await.map_err(&fail)?;
        let steps = 20 + rng.below(60);
        fill(&log, &mut model, &mut rng, &clock, steps, 30).await;
        if rng.chance(200) {
            clock.advance_ms(2 * DELETE_RETENTION_MS);
        }
        // Syncs that take several scheduler turns, so the crash lands anywhere in the
        // pass: while the cleaned segment is written, between the swap's steps, after.
        disk.set_faults(MemoryFaults { sync_delay_turns_max: 1 + rng.below(6) as u32, ..MemoryFaults::default() });
        let pass = {
            let log = log.clone();
            let map_bytes = if rng.chance(300) { 6 << 10 } else { 64 << 20 };
            glommio::spawn_local(async move { log.clean(&cleaner(map_bytes)).await })
        };
        for _ in 0..rng.below(120) {
            futures_lite::future::yield_now().await;
        }
        disk.crash();
        drop(log);
        let _ = pass.await;
        for _ in 0..20 {
            futures_lite::future::yield_now().await;
        }
    }
    disk.set_faults(MemoryFaults::default());
    let log = PartitionLog::open(&dir, config, memory_env(&disk, &clock)).await.map_err(|e| e.to_string())?;
    check_invariants(&log, &model, &[]).await?;
    clock.advance_ms(2 * DELETE_RETENTION_MS);
    for _ in 0..3 {
        log.clean(&cleaner(64 << 20)).await.map_err(|e| format!("final clean: {e}"))?;
    }
    check_fully_compacted(&log, &model).await
}

#[test]
fn crashes_during_compaction_lose_nothing() {
    let seeds: Vec<u64> = match std::env::var("TERN_COMPACTION_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (0..12).map(|n| 0xC4A5_0000 + n).collect(),
    };
    for seed in seeds {
        run(move || async move { crash_seed(seed, 25).await }).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

fn keyed(entries: &[(&str, Option<&str>)], timestamp: i64) -> BytesMut {
    let kv: Vec<build::KeyValue<'_>> =
        entries.iter().map(|(k, v)| (Some(k.as_bytes()), v.map(str::as_bytes))).collect();
    BytesMut::from(&build::keyed_batch(&kv, timestamp)[..])
}

async fn open_compacted(dir: &Path, disk: &Rc<MemoryDisk>, clock: &Rc<ManualClock>, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, memory_env(disk, clock)).await.expect("open")
}

#[test]
fn tombstones_stay_for_delete_retention_then_go() {
    run(|| async {
        let disk = MemoryDisk::new(1);
        let clock = Rc::new(ManualClock::new(START_MS));
        let config = LogConfig {
            segment_bytes: 4096,
            compact: true,
            min_cleanable_dirty_ratio_ppm: 0,
            delete_retention_ms: DELETE_RETENTION_MS,
            ..LogConfig::default()
        };
        let log = open_compacted(Path::new("/sim/tomb"), &disk, &clock, config).await;
        log.append(keyed(&[("a", Some("1")), ("b", Some("1"))], clock.now_ms())).await.unwrap();
        log.append(keyed(&[("a", None)], clock.now_ms())).await.unwrap();
        log.request_roll();
        log.append(keyed(&[("c", Some("1"))], clock.now_ms())).await.unwrap();
        log.request_roll();
        log.append(keyed(&[("d", Some("1"))], clock.now_ms())).await.unwrap(); // seals the previous segment
        let keys = |log: PartitionLog| async move {
            let mut out = Vec::new();
            let read = log.read(log.offsets().log_start.offset(), 1 << 20).await.unwrap();
            for chunk in &read.records {
                for (header, range) in iter_batches(chunk) {
                    for_each_record(&chunk[range], &header, 64 << 20, |r| {
                        out.push((r.offset, String::from_utf8_lossy(r.key.unwrap()).to_string(), r.tombstone))
                    })
                    .unwrap();
                }
            }
            out
        };
        let report = log.clean(&cleaner(1 << 20)).await.unwrap();
        assert_eq!(report.records_removed, 1, "a=1 is superseded; the fresh tombstone stays");
        assert_eq!(report.groups_rewritten, 1);
        assert_eq!(report.bytes_written, report.bytes_after, "the cleaned segment is all that was written");
        assert!(report.bytes_written > 0 && report.bytes_read >= report.bytes_before, "{report:?}");
        assert_eq!(log.clean_state().stats.bytes_written, report.bytes_written);
        assert_eq!(
            keys(log.clone()).await[..3],
            [(1, "b".into(), false), (2, "a".into(), true), (3, "c".into(), false)]
        );
        // Dirty data again (so the log is cleaned again) before the tombstone expires:
        // it stays.
        log.append(keyed(&[("c", Some("2"))], clock.now_ms())).await.unwrap();
        log.request_roll();
        log.append(keyed(&[("e", Some("1"))], clock.now_ms())).await.unwrap();
        log.append(keyed(&[("f", Some("1"))], clock.now_ms())).await.unwrap();
        clock.advance_ms(DELETE_RETENTION_MS / 2);
        log.clean(&cleaner(1 << 20)).await.unwrap();
        assert!(keys(log.clone()).await.contains(&(2, "a".into(), true)), "tombstone kept within delete.retention.ms");
        clock.advance_ms(DELETE_RETENTION_MS);
        log.append(keyed(&[("f", Some("2"))], clock.now_ms())).await.unwrap();
        log.request_roll();
        log.append(keyed(&[("g", Some("1"))], clock.now_ms())).await.unwrap();
        log.append(keyed(&[("g", Some("2"))], clock.now_ms())).await.unwrap();
        log.clean(&cleaner(1 << 20)).await.unwrap();
        let left = keys(log.clone()).await;
        assert!(!left.iter().any(|(_, k, _)| k == "a"), "expired tombstone removed: {left:?}");
        // Offset 0 (compacted away) is still a position: the read starts at the next record.
        let read = log.read(Offset(0), 1 << 20).await.unwrap();
        assert!(!read.records.is_empty());
    });
}

#[test]
fn min_compaction_lag_keeps_recent_segments_dirty() {
    run(|| async {
        let disk = MemoryDisk::new(2);
        let clock = Rc::new(ManualClock::new(START_MS));
        let config = LogConfig {
            segment_bytes: 4096,
            compact: true,
            min_cleanable_dirty_ratio_ppm: 0,
            min_compaction_lag_ms: 10_000,
            ..LogConfig::default()
        };
        let log = open_compacted(Path::new("/sim/lag"), &disk, &clock, config).await;
        for round in 0..3 {
            log.append(keyed(&[("k", Some(&format!("{round}")))], clock.now_ms())).await.unwrap();
            log.request_roll();
        }
        log.append(keyed(&[("other", Some("x"))], clock.now_ms())).await.unwrap();
        let report = log.clean(&cleaner(1 << 20)).await.unwrap();
        assert_eq!((report.records_removed, log.dirty_view().dirty_bytes), (0, 0), "nothing is old enough yet");
        clock.advance_ms(10_001);
        let report = log.clean(&cleaner(1 << 20)).await.unwrap();
        assert_eq!(report.records_removed, 2, "k=0 and k=1 are superseded by k=2");
    });
}

#[test]
fn compacted_logs_refuse_keyless_records() {
    run(|| async {
        let disk = MemoryDisk::new(3);
        let clock = Rc::new(ManualClock::new(START_MS));
        let config = LogConfig { compact: true, ..LogConfig::default() };
        let log = open_compacted(Path::new("/sim/keyless"), &disk, &clock, config).await;
        let keyless =
            BytesMut::from(&build::keyed_batch(&[(Some(b"k"), Some(b"v")), (None, Some(b"v"))], START_MS)[..]);
        match log.append(keyless).await {
            Err(AppendError::InvalidRecord { reason }) => assert!(reason.contains("without key"), "{reason}"),
            other => panic!("a keyless record in a compacted topic must be refused: {other:?}"),
        }
        log.append(keyed(&[("k", Some("v"))], START_MS)).await.expect("keyed records are accepted");
    });
}

#[test]
fn closing_a_log_stops_a_pass_in_progress() {
    run(|| async {
        let disk = MemoryDisk::new(4);
        let clock = Rc::new(ManualClock::new(START_MS));
        let mut rng = SeededRng::new(4);
        let config =
            LogConfig { segment_bytes: 4096, compact: true, min_cleanable_dirty_ratio_ppm: 0, ..LogConfig::default() };
        let log = open_compacted(Path::new("/sim/close"), &disk, &clock, config).await;
        let mut model = Model::new();
        fill(&log, &mut model, &mut rng, &clock, 300, 20).await;
        let slow = CleanerConfig { io_bytes_per_second: 64 << 10, ..cleaner(64 << 20) };
        let pass = {
            let log = log.clone();
            glommio::spawn_local(async move { log.clean(&slow).await })
        };
        glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        log.close().await.expect("close");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "close waited {:?} for the pass",
            started.elapsed()
        );
        assert!(matches!(pass.await, Err(tern::storage::StorageError::Closed)), "the pass stops with Closed");
        let reopened = open_compacted(Path::new("/sim/close"), &disk, &clock, log.config()).await;
        check_invariants(&reopened, &model, &[]).await.unwrap();
    });
}

#[test]
fn large_batches_across_read_chunks_are_cleaned_whole() {
    run(|| async {
        let disk = MemoryDisk::new(5);
        let clock = Rc::new(ManualClock::new(START_MS));
        let config = LogConfig {
            segment_bytes: 8 << 20,
            max_message_bytes: 2 << 20,
            compact: true,
            min_cleanable_dirty_ratio_ppm: 0,
            ..LogConfig::default()
        };
        let log = open_compacted(Path::new("/sim/large"), &disk, &clock, config).await;
        let mut model = Model::new();
        // Batches of 300 KiB to 1.3 MiB: most straddle the cleaner's 1 MiB reads.
        for step in 0..24u64 {
            let value = vec![b'a' + (step % 26) as u8; 30_000 + (step as usize * 7_919) % 100_000];
            let keys: Vec<String> = (0..10).map(|i| format!("key-{}", (step * 3 + i) % 12)).collect();
            let entries: Vec<build::KeyValue<'_>> =
                keys.iter().map(|k| (Some(k.as_bytes()), Some(value.as_slice()))).collect();
            let info = log.append(BytesMut::from(&build::keyed_batch(&entries, clock.now_ms())[..])).await.unwrap();
            for (i, key) in keys.iter().enumerate() {
                let timestamp = clock.now_ms() + i as i64;
                let record = Record { key: key.clone().into_bytes(), value: Some(value.clone()), timestamp };
                model.insert(info.base_offset.value() + i as i64, record);
            }
            if step % 8 == 7 {
                log.request_roll();
            }
        }
        log.append(keyed(&[("last", Some("x"))], clock.now_ms())).await.unwrap();
        model.insert(
            log.offsets().log_end.value() - 1,
            Record { key: b"last".to_vec(), value: Some(b"x".to_vec()), timestamp: clock.now_ms() },
        );
        let report = log.clean(&cleaner(64 << 20)).await.unwrap();
        assert!(report.records_removed > 0 && report.bytes_read >= 2 * report.bytes_before, "{report:?}");
        assert!(
            report.bytes_read < 2 * report.bytes_before + (4 << 20),
            "batches are read about twice, not more: {report:?}"
        );
        check_invariants(&log, &model, &[]).await.unwrap();
        check_fully_compacted(&log, &model).await.unwrap();
    });
}

/// `keyed` records as a transactional batch of producer `producer_id` (epoch 0).
fn transactional(entries: &[(&str, Option<&str>)], producer_id: i64, sequence: i32, now_ms: i64) -> BytesMut {
    let mut batch = keyed(entries, now_ms);
    let attributes = i16::from_be_bytes([batch[21], batch[22]]) | tern::protocol::record_batch::ATTRIBUTE_TRANSACTIONAL;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&0i16.to_be_bytes());
    batch[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

#[test]
fn aborted_values_never_replace_committed_ones_and_open_transactions_are_not_cleaned() {
    use tern::storage::TxnMarker;
    run(|| async {
        let disk = MemoryDisk::new(3);
        let clock = Rc::new(ManualClock::new(START_MS));
        let config = LogConfig {
            segment_bytes: 4096,
            compact: true,
            min_cleanable_dirty_ratio_ppm: 0,
            delete_retention_ms: DELETE_RETENTION_MS,
            ..LogConfig::default()
        };
        let log = open_compacted(Path::new("/sim/txn"), &disk, &clock, config).await;
        let marker =
            |producer_id, committed| TxnMarker { producer_id, producer_epoch: 0, committed, coordinator_epoch: 0 };
        log.append(keyed(&[("a", Some("committed")), ("b", Some("committed"))], clock.now_ms())).await.unwrap(); // 0-1
        log.append(transactional(&[("a", Some("aborted"))], 7, 0, clock.now_ms())).await.unwrap(); // 2
        log.append_marker(marker(7, false)).await.unwrap(); // 3
        log.request_roll();
        log.append(keyed(&[("c", Some("1"))], clock.now_ms())).await.unwrap(); // 4
        log.request_roll();
        log.append(transactional(&[("b", Some("open"))], 8, 0, clock.now_ms())).await.unwrap(); // 5, left open
        log.request_roll();
        log.append(keyed(&[("d", Some("1"))], clock.now_ms())).await.unwrap(); // 6
        log.clean(&cleaner(1 << 20)).await.unwrap();
        let values = |log: PartitionLog| async move {
            let mut out = Vec::new();
            let read = log.read(log.offsets().log_start.offset(), 1 << 20).await.unwrap();
            for chunk in &read.records {
                for (header, range) in iter_batches(chunk) {
                    if header.is_control() {
                        continue;
                    }
                    for_each_record(&chunk[range], &header, 64 << 20, |r| {
                        let key = String::from_utf8_lossy(r.key.unwrap()).to_string();
                        out.push((r.offset, key))
                    })
                    .unwrap();
                }
            }
            out
        };
        let kept = values(log.clone()).await;
        assert!(kept.contains(&(0, "a".into())), "the aborted a does not replace the committed one: {kept:?}");
        assert!(!kept.contains(&(2, "a".into())), "the aborted record is removed: {kept:?}");
        assert!(kept.contains(&(1, "b".into())), "past the last stable offset nothing is cleaned: {kept:?}");

        log.append_marker(marker(8, true)).await.unwrap();
        log.request_roll();
        log.append(keyed(&[("e", Some("1"))], clock.now_ms())).await.unwrap();
        log.clean(&cleaner(1 << 20)).await.unwrap();
        let kept = values(log.clone()).await;
        assert!(!kept.contains(&(1, "b".into())), "once committed, the new b replaces the old: {kept:?}");
        assert!(kept.contains(&(5, "b".into())), "{kept:?}");
    });
}
