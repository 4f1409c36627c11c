//! Crash test: acknowledged appends survive SIGKILL.
//!
//! The test re-runs its own binary as a child process (the ignored test
//! `crash_child_appender`) that appends batches to one log with the durable flush policy
//! from several concurrent tasks and prints `ACK <seq> <offset>` after each append is
//! acknowledged. The parent kills the child with SIGKILL at a random moment, reopens the
//! log and checks that every acknowledged batch reads back byte-identical at its offset,
//! that offsets are contiguous from 0, and that a new append continues at the log end.
//! Rounds: `TERN_CRASH_ROUNDS` (default 20); seed: `TERN_CRASH_SEED` (printed).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{batch, run};
use rand::{Rng, SeedableRng};
use tern::protocol::record_batch::{iter_batches, set_base_offset};
use tern::storage::{LogConfig, Offset, PartitionLog, StorageEnv};

const CHILD_DIR_ENV: &str = "TERN_CRASH_CHILD_DIR";
const CHILD_SEQ_ENV: &str = "TERN_CRASH_CHILD_SEQ";
const APPENDERS: u64 = 8;

/// The batch appended for sequence number `seq`; sizes vary from 80 B to ~40 KiB.
fn batch_for(seq: u64) -> BytesMut {
    let records = 1 + (seq % 7) as usize;
    let value_bytes = 10 + ((seq.wrapping_mul(2_654_435_761)) % 6000) as usize;
    batch(records, value_bytes, seq, seq as i64)
}

fn config() -> LogConfig {
    // Small segments so crashes also land around rolls.
    LogConfig { segment_bytes: 256 << 10, ..LogConfig::default() }
}

#[test]
#[ignore = "child process of kill9_never_loses_an_acknowledged_append"]
fn crash_child_appender() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else { return };
    let first_seq: u64 = std::env::var(CHILD_SEQ_ENV).expect("seq env").parse().expect("seq number");
    run(move || async move {
        let log = PartitionLog::open(Path::new(&dir), config(), StorageEnv::default()).await.expect("open");
        let tasks: Vec<_> = (0..APPENDERS)
            .map(|lane| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let mut seq = first_seq + lane;
                    loop {
                        let info = log.append(batch_for(seq)).await.expect("append");
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {seq} {}", info.base_offset).expect("stdout");
                        out.flush().expect("flush");
                        seq += APPENDERS;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
    });
}

/// Reads every batch of the log, checks contiguity, and returns base offset -> bytes.
fn verify_and_read(dir: PathBuf) -> (BTreeMap<i64, Vec<u8>>, i64) {
    run(move || async move {
        let log = PartitionLog::open(&dir, config(), StorageEnv::default()).await.expect("reopen after crash");
        let mut batches = BTreeMap::new();
        let mut offset = Offset(0);
        assert_eq!(log.offsets().log_start.offset(), Offset(0));
        loop {
            let read = log.read(offset, 1 << 20).await.expect("read after crash");
            if read.records.is_empty() {
                break;
            }
            let bytes: Vec<u8> = read.records.iter().flat_map(|b| b.iter().copied()).collect();
            for (header, range) in iter_batches(&bytes) {
                assert_eq!(header.base_offset, offset.value(), "offsets are contiguous");
                batches.insert(header.base_offset, bytes[range].to_vec());
                offset = Offset(header.next_offset());
            }
        }
        let end = log.offsets().log_end.offset();
        assert_eq!(offset, end, "every batch up to the log end is readable");
        let info = log.append(batch(1, 16, u64::MAX, 0)).await.expect("append after crash");
        assert_eq!(info.base_offset, end, "appends continue at the recovered log end");
        log.close().await.expect("close");
        (batches, info.last_offset.value() + 1)
    })
}

#[test]
fn kill9_never_loses_an_acknowledged_append() {
    let (rounds, seed) = common::crash_settings("crash test");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("crash-0");
    let mut acknowledged: BTreeMap<u64, i64> = BTreeMap::new();
    let mut total_acks = 0usize;

    for round in 0..rounds {
        let envs = [
            (CHILD_DIR_ENV, log_dir.display().to_string()),
            (CHILD_SEQ_ENV, ((round + 1) * 1_000_000_000).to_string()),
        ];
        let mut child = common::AckChild::spawn("crash_child_appender", &envs);
        // Wait for the first acknowledgement (the child is up), then kill at a random moment.
        let started = Instant::now();
        let first = child.first_ack();
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..250)));
        let parse =
            |words: Vec<String>| -> (u64, i64) { (words[0].parse().expect("seq"), words[1].parse().expect("offset")) };
        let mut round_acks = vec![parse(first)];
        round_acks.extend(child.kill().into_iter().map(parse));
        total_acks += round_acks.len();
        for (seq, offset) in round_acks {
            assert!(acknowledged.insert(seq, offset).is_none(), "sequence numbers are unique");
        }

        let (batches, _) = verify_and_read(log_dir.clone());
        for (&seq, &offset) in &acknowledged {
            let stored = batches
                .get(&offset)
                .unwrap_or_else(|| panic!("round {round}: acknowledged seq {seq} at offset {offset} is missing"));
            let mut expected = batch_for(seq);
            set_base_offset(&mut expected, offset);
            assert!(stored[..] == expected[..], "round {round}: batch at offset {offset} (seq {seq}) differs");
        }
        println!(
            "round {round}: killed and verified in {:?}, {} acknowledged so far, log holds {} batches",
            started.elapsed(),
            total_acks,
            batches.len()
        );
    }
    assert!(total_acks >= rounds as usize, "every round acknowledged something");
}
