//! Failure handling of the storage engine, proven with a simulated disk (the
//! `FaultInjector` trait) in front of real O_DIRECT files:
//! - a failed fsync or write poisons the log: that append and every later one fail with
//!   a storage error, even after the disk "recovers"; acknowledged data stays readable
//!   and survives a reopen;
//! - a full disk (ENOSPC on write or on segment allocation) fails the appends cleanly,
//!   loses nothing acknowledged, keeps offsets contiguous, and appends work again once
//!   space is freed.

mod common;

use std::rc::Rc;

use common::{batch, run};
use tern::protocol::record_batch::iter_batches;
use tern::storage::{AppendError, LogConfig, Offset, PartitionLog, SimulatedDisk, StorageEnv, StorageError};

fn faulty_env() -> (Rc<SimulatedDisk>, StorageEnv) {
    let disk = Rc::new(SimulatedDisk::default());
    (disk.clone(), StorageEnv { faults: Some(disk), ..StorageEnv::default() })
}

async fn base_offsets(log: &PartitionLog) -> Vec<i64> {
    let mut out = Vec::new();
    let mut offset = log.offsets().log_start.offset();
    loop {
        let read = log.read(offset, 1 << 20).await.expect("read");
        if read.records.is_empty() {
            return out;
        }
        let bytes: Vec<u8> = read.records.iter().flat_map(|b| b.iter().copied()).collect();
        for (header, _) in iter_batches(&bytes) {
            out.push(header.base_offset);
            offset = Offset(header.next_offset());
        }
    }
}

fn is_poisoned(result: Result<tern::storage::AppendInfo, AppendError>) -> bool {
    matches!(result, Err(AppendError::Storage(StorageError::Poisoned { .. })))
}

#[test]
fn failed_fsync_poisons_the_log_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (disk, env) = faulty_env();
        let log = PartitionLog::open(&path, LogConfig::default(), env).await.unwrap();
        for n in 0..5 {
            log.append(batch(2, 100, n, 1)).await.unwrap();
        }
        disk.fail_syncs.set(true);
        let error = log.append(batch(1, 100, 9, 1)).await;
        assert!(is_poisoned(error.clone()), "{error:?}");
        disk.fail_syncs.set(false);
        assert!(is_poisoned(log.append(batch(1, 100, 10, 1)).await), "no silent retry after fsyncgate");
        assert_eq!(log.offsets().high_watermark.offset(), Offset(10));
        assert_eq!(base_offsets(&log).await, vec![0, 2, 4, 6, 8], "acknowledged data stays readable");
        drop(log);

        let reopened = PartitionLog::open(&path, LogConfig::default(), StorageEnv::default()).await.unwrap();
        assert_eq!(&base_offsets(&reopened).await[..5], &[0, 2, 4, 6, 8]);
        let info = reopened.append(batch(1, 10, 11, 1)).await.unwrap();
        assert_eq!(info.base_offset, reopened.offsets().log_end.offset().value().checked_sub(1).map(Offset).unwrap());
    });
}

#[test]
fn failed_write_poisons_every_waiting_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (disk, env) = faulty_env();
        let log = PartitionLog::open(&path, LogConfig::default(), env).await.unwrap();
        log.append(batch(1, 100, 0, 1)).await.unwrap();
        disk.fail_writes.set(true);
        // glommio polls the writer as soon as it is spawned, so the first append may
        // poison the log before the next one is queued: each append fails either way.
        let pending: Vec<_> = (0..20).map(|n| log.append_nowait(batch(1, 100, n, 1))).collect();
        for append in pending {
            let outcome = match append {
                Ok(pending) => pending.durable().await,
                Err(AppendError::Storage(error)) => Err(error),
                Err(other) => panic!("unexpected {other:?}"),
            };
            assert!(matches!(outcome, Err(StorageError::Poisoned { .. })), "{outcome:?}");
        }
        disk.fail_writes.set(false);
        assert!(is_poisoned(log.append(batch(1, 100, 0, 1)).await));
        assert_eq!(base_offsets(&log).await, vec![0]);
    });
}

#[test]
fn disk_full_fails_cleanly_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (disk, env) = faulty_env();
        let config = LogConfig { segment_bytes: 16384, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config.clone(), env).await.unwrap();
        for n in 0..6 {
            log.append(batch(1, 1000, n, 1)).await.unwrap();
        }
        disk.full.set(true);
        let pending: Vec<_> = (0..30).map(|n| log.append_nowait(batch(1, 1000, 100 + n, 1)).unwrap()).collect();
        for append in pending {
            assert!(matches!(append.durable().await, Err(StorageError::DiskFull { .. })));
        }
        let offsets = log.offsets();
        assert_eq!(offsets.high_watermark.offset(), Offset(6));
        assert_eq!(offsets.log_end.offset(), Offset(6), "unacknowledged offsets are given back");

        disk.full.set(false);
        for n in 0..30 {
            let info = log.append(batch(1, 1000, 200 + n, 1)).await.unwrap();
            assert_eq!(info.base_offset, Offset(6 + n as i64));
        }
        let expected: Vec<i64> = (0..36).collect();
        assert_eq!(base_offsets(&log).await, expected);
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, config, StorageEnv::default()).await.unwrap();
        assert_eq!(base_offsets(&reopened).await, expected, "contiguous after reopen");
    });
}

#[test]
fn disk_full_while_rolling_to_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (disk, env) = faulty_env();
        let config = LogConfig { segment_bytes: 4096, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config.clone(), env).await.unwrap();
        log.append(batch(1, 3000, 0, 1)).await.unwrap();
        disk.full.set(true);
        // This append rolls: the new segment's allocation fails.
        let error = log.append(batch(1, 3000, 1, 1)).await;
        assert!(matches!(error, Err(AppendError::Storage(StorageError::DiskFull { .. }))), "{error:?}");
        disk.full.set(false);
        for n in 1..5 {
            assert_eq!(log.append(batch(1, 3000, n, 1)).await.unwrap().base_offset, Offset(n as i64));
        }
        assert_eq!(base_offsets(&log).await, vec![0, 1, 2, 3, 4]);
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, config, StorageEnv::default()).await.unwrap();
        assert_eq!(base_offsets(&reopened).await, vec![0, 1, 2, 3, 4]);
        assert_eq!(reopened.segment_count(), 5);
    });
}
