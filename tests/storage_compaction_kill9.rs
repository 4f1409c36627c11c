//! Crash test for compaction on the real disk: SIGKILL while the cleaner runs.
//!
//! The test re-runs its own binary as a child (the ignored test `compaction_child`) that
//! opens a compacted log with small segments, appends keyed batches (50 keys, some
//! tombstones) from one task, printing `ACK <seq> <offset>` once each is durable, and runs
//! cleaning passes back to back in another task. The parent kills the child with SIGKILL
//! at a random moment, many rounds, reopens the log after each and checks that:
//! - the log opens and reads back from its start to its end (no half-swapped segment, no
//!   leftover `.cleaned` file, no index that does not match its segment);
//! - every record read is the one the child appended at that offset (its key and value
//!   follow from the sequence number in its value), in increasing offsets;
//! - for every key, the last acknowledged record (tombstones too: delete.retention.ms is
//!   a day) or a later one of the same key is there: compaction never loses the latest
//!   acknowledged state of a key.
//!
//! Rounds: `TERN_CRASH_ROUNDS` (default 20); seed: `TERN_CRASH_SEED` (printed).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use common::run;
use rand::{Rng, SeedableRng};
use tern::protocol::batch_filter::for_each_record;
use tern::protocol::record_batch::{build, iter_batches};
use tern::storage::{CleanerConfig, LogConfig, Offset, PartitionLog, StorageEnv};

const CHILD_DIR_ENV: &str = "TERN_COMPACTION_CHILD_DIR";
const CHILD_SEQ_ENV: &str = "TERN_COMPACTION_CHILD_SEQ";
const KEYS: u64 = 50;

fn config() -> LogConfig {
    LogConfig { segment_bytes: 16 << 10, compact: true, min_cleanable_dirty_ratio_ppm: 0, ..LogConfig::default() }
}

fn key_of(seq: u64) -> String {
    format!("key-{}", seq % KEYS)
}

/// Every 13th record is a tombstone; the others carry their sequence number.
fn value_of(seq: u64) -> Option<String> {
    (seq % 13 != 0).then(|| format!("{seq} {}", "v".repeat((seq % 200) as usize)))
}

/// The batch of records `first..first + count`.
fn batch_for(first: u64, count: u64) -> BytesMut {
    let records: Vec<(String, Option<String>)> = (first..first + count).map(|s| (key_of(s), value_of(s))).collect();
    let entries: Vec<build::KeyValue<'_>> =
        records.iter().map(|(k, v)| (Some(k.as_bytes()), v.as_deref().map(str::as_bytes))).collect();
    BytesMut::from(&build::keyed_batch(&entries, first as i64)[..])
}

#[test]
#[ignore = "child process of kill9_during_compaction_keeps_every_key"]
fn compaction_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else { return };
    let mut seq: u64 = std::env::var(CHILD_SEQ_ENV).expect("seq env").parse().expect("seq number");
    run(move || async move {
        let log = PartitionLog::open(Path::new(&dir), config(), StorageEnv::default()).await.expect("open");
        let _cleaner = {
            let log = log.clone();
            glommio::spawn_local(async move {
                let config = CleanerConfig { map_bytes: 1 << 20, io_bytes_per_second: 0, ..CleanerConfig::default() };
                loop {
                    log.clean(&config).await.expect("clean");
                    glommio::timer::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        loop {
            let count = 1 + seq % 4;
            // A record's tombstone-ness and key follow from its seq; a batch's records
            // have consecutive seqs, and `ACK seq offset` names its first record.
            let info = log.append(batch_for(seq, count)).await.expect("append");
            let mut out = std::io::stdout().lock();
            writeln!(out, "ACK {seq} {count} {}", info.base_offset).expect("stdout");
            out.flush().expect("flush");
            seq += count;
        }
    });
}

/// Every record of the log: offset -> (key, value).
fn read_log(dir: PathBuf) -> BTreeMap<i64, (String, Option<String>)> {
    run(move || async move {
        let log = PartitionLog::open(&dir, config(), StorageEnv::default()).await.expect("reopen after SIGKILL");
        let mut records = BTreeMap::new();
        let mut offset = log.offsets().log_start.offset();
        let end = log.offsets().high_watermark.offset();
        while offset < end {
            let read = log.read(offset, 1 << 20).await.expect("read after SIGKILL");
            assert!(!read.records.is_empty(), "read at {offset} below {end} returned nothing");
            for chunk in &read.records {
                for (header, range) in iter_batches(chunk) {
                    for_each_record(&chunk[range], &header, 1 << 20, |r| {
                        if r.offset >= offset.value() {
                            let key = String::from_utf8(r.key.expect("keyed").to_vec()).expect("utf-8 key");
                            let value = r.value.map(|v| String::from_utf8(v.to_vec()).expect("utf-8 value"));
                            assert!(records.insert(r.offset, (key, value)).is_none(), "offset {} read twice", r.offset);
                        }
                    })
                    .expect("records decode");
                    offset = offset.max(Offset(header.next_offset()));
                }
            }
        }
        for entry in std::fs::read_dir(&dir).expect("list log dir") {
            let name = entry.expect("entry").file_name().to_string_lossy().to_string();
            assert!(!name.ends_with(".cleaned") && name != "cleaner-swap", "{name} left after recovery");
        }
        log.close().await.expect("close");
        records
    })
}

#[test]
fn kill9_during_compaction_keeps_every_key() {
    let (rounds, seed) = common::crash_settings("compaction crash test");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("compacted-0");
    // offset -> seq of every acknowledged record, and the latest acknowledged offset per key.
    let mut acked: BTreeMap<i64, u64> = BTreeMap::new();
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    let mut removed_total = 0usize;

    for round in 0..rounds {
        let envs = [
            (CHILD_DIR_ENV, log_dir.display().to_string()),
            (CHILD_SEQ_ENV, ((round + 1) * 1_000_000_000).to_string()),
        ];
        let mut child = common::AckChild::spawn("compaction_child", &envs);
        let first = child.first_ack();
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..600)));
        let parse = |words: Vec<String>| -> (u64, u64, i64) {
            let number = |w: &String| w.parse::<i64>().expect("number");
            (number(&words[0]) as u64, number(&words[1]) as u64, number(&words[2]))
        };
        let later = child.kill();
        for (seq, count, base) in std::iter::once(first).chain(later).map(parse) {
            for i in 0..count {
                acked.insert(base + i as i64, seq + i);
                latest.insert(key_of(seq + i), base + i as i64);
            }
        }

        let records = read_log(log_dir.clone());
        let mut previous = -1;
        for (&offset, (key, value)) in &records {
            assert!(offset > previous);
            previous = offset;
            if let Some(&seq) = acked.get(&offset) {
                assert_eq!(
                    (key.as_str(), value.as_deref()),
                    (key_of(seq).as_str(), value_of(seq).as_deref()),
                    "round {round}: offset {offset} holds another record than seq {seq}"
                );
            } else {
                // Appended but not acknowledged before the kill: still the child's record.
                let seq: Option<u64> = value.as_ref().and_then(|v| v.split(' ').next()?.parse().ok());
                if let Some(seq) = seq {
                    assert_eq!(key, &key_of(seq), "round {round}: offset {offset} key does not match its seq");
                }
            }
        }
        for (key, &offset) in &latest {
            let kept = records.range(offset..).any(|(_, (k, _))| k == key);
            assert!(kept, "round {round}: the latest acknowledged record of {key} (offset {offset}) is gone");
        }
        removed_total = acked.len().saturating_sub(records.len());
        println!("round {round}: {} acknowledged records, {} in the log after compaction", acked.len(), records.len());
    }
    assert!(removed_total > 0, "the cleaner never removed anything: the test did not exercise compaction");
}
