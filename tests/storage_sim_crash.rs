//! The partition log on the simulated disk (`MemoryDisk`), crashed and recovered thousands
//! of times, checked against a model of what was assigned and acknowledged.
//!
//! Each seed drives one disk and one workload: cycles of open (recover, with the durable
//! policy's sync mode drawn at random: write-through or fdatasync), concurrent
//! appends of random batches while faults fire (EIO on writes and syncs, syncs that take
//! several scheduler turns, a disk that fills up), then a crash at a random moment (or,
//! sometimes, a clean close). The crash keeps, drops or tears every write since the last
//! sync independently and forgets unsynced directory entries. After every recovery:
//! - every acknowledged batch is in the log at its offset, byte for byte;
//! - the log is exactly a prefix of the assigned sequence: an unacknowledged batch
//!   survives whole at its offset or is gone with everything after it, never half,
//!   never out of order, never replaced by other bytes.
//!
//! CI runs `TERN_SIM_SEEDS` seeds (default 40) of `TERN_SIM_CYCLES` cycles (default 75),
//! about 3,000 crashes, from a base seed that changes every run and is printed. A failure
//! names its seed; `TERN_SIM_SEED=<seed>` replays exactly that seed.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::BytesMut;
use common::run;
use tern::protocol::record_batch::{build, iter_batches, set_base_offset};
use tern::storage::{
    Disk, LogConfig, ManualClock, MemoryDisk, MemoryFaults, Offset, PartitionLog, SeededRng, StorageEnv, SyncMode,
};

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Batches in offset order: base offset -> bytes as stored (base offset patched).
type Batches = BTreeMap<i64, Vec<u8>>;

/// (base offset, bytes) of acknowledged appends.
type Acknowledged = Vec<(i64, Vec<u8>)>;

/// What the test knows about the log.
#[derive(Debug, Default)]
struct Model {
    /// Verified present after the last recovery: must survive every later crash.
    durable: Batches,
    /// Every batch assigned since the last recovery, by base offset. A tail rolled back
    /// after a failed write is assigned again: either version may survive a crash (the
    /// disk may have kept the older write and lost the newer one), so both are candidates.
    candidates: BTreeMap<i64, Vec<Vec<u8>>>,
    /// (base offset, bytes) of the batches whose append was acknowledged.
    acknowledged: Vec<(i64, Vec<u8>)>,
    /// The log start offset must be at least this after recovery (DeleteRecords
    /// acknowledged).
    log_start_min: i64,
}

impl Model {
    fn assign(&mut self, base: i64, bytes: Vec<u8>) -> Result<(), String> {
        if let Some(&(acked, _)) = self.acknowledged.iter().find(|(a, _)| *a >= base) {
            return Err(format!("offset {base} assigned again below acknowledged batch {acked}"));
        }
        if self.durable.range(base..).next().is_some() {
            return Err(format!("offset {base} assigned again inside the recovered log"));
        }
        self.candidates.entry(base).or_default().push(bytes);
        Ok(())
    }

    /// Checks a recovered log against the model; on success it becomes the durable part.
    fn check_recovered(&mut self, log_start: i64, recovered: Batches) -> Result<(), String> {
        if log_start < self.log_start_min {
            return Err(format!(
                "log start {log_start} is below the acknowledged DeleteRecords {}",
                self.log_start_min
            ));
        }
        if let Some(&first) = recovered.keys().next() {
            if first != log_start {
                return Err(format!("the log starts at {log_start} but its first batch is at {first}"));
            }
        }
        self.durable = self.durable.split_off(&log_start);
        for (base, bytes) in &self.durable {
            match recovered.get(base) {
                Some(got) if got == bytes => {}
                Some(_) => return Err(format!("batch at offset {base}, present after an earlier recovery, changed")),
                None => return Err(format!("batch at offset {base}, present after an earlier recovery, is gone")),
            }
        }
        for (base, bytes) in recovered.range(self.durable.keys().next_back().map_or(0, |b| b + 1)..) {
            let known = self.candidates.get(base).is_some_and(|c| c.contains(bytes));
            if !known {
                return Err(format!(
                    "batch at offset {base} recovered with bytes that were never appended there ({} candidates)",
                    self.candidates.get(base).map_or(0, Vec::len)
                ));
            }
        }
        for (base, bytes) in &self.acknowledged {
            if recovered.get(base) != Some(bytes) {
                return Err(format!(
                    "acknowledged batch at offset {base} is missing after recovery (recovered {:?}..={:?}, \
                     acknowledged {:?})",
                    recovered.keys().next(),
                    recovered.keys().next_back(),
                    self.acknowledged.iter().map(|(b, _)| *b).collect::<Vec<_>>()
                ));
            }
        }
        self.durable = recovered;
        self.candidates.clear();
        self.acknowledged.clear();
        Ok(())
    }
}

async fn read_everything(log: &PartitionLog) -> Result<Batches, String> {
    let mut out = Batches::new();
    let mut offset = log.offsets().log_start.offset();
    let end = log.offsets().high_watermark.offset();
    while offset < end {
        let read = log.read(offset, 1 << 20).await.map_err(|e| format!("read at {offset}: {e}"))?;
        if read.records.is_empty() {
            return Err(format!("read at {offset} returned nothing below the high watermark {end}"));
        }
        for chunk in &read.records {
            for (header, range) in iter_batches(chunk) {
                out.insert(header.base_offset, chunk[range].to_vec());
                offset = Offset(header.next_offset());
            }
        }
    }
    Ok(out)
}

fn random_faults(rng: &mut SeededRng) -> MemoryFaults {
    MemoryFaults {
        write_error_per_mille: if rng.chance(300) { rng.below(30) as u32 } else { 0 },
        sync_error_per_mille: if rng.chance(300) { rng.below(60) as u32 } else { 0 },
        sync_delay_turns_max: rng.below(12) as u32,
        capacity_bytes: None,
    }
}

async fn check_seed(seed: u64, cycles: u64) -> Result<(), String> {
    let disk = MemoryDisk::new(seed);
    let mut rng = SeededRng::new(seed ^ 0x5EED_CAFE);
    let clock = Rc::new(ManualClock::new(1_700_000_000_000));
    let dir = PathBuf::from("/sim/topic-0");
    let mut model = Model::default();
    let mut tag = 0u64;
    for cycle in 0..cycles {
        let fail = |what: String| format!("cycle {cycle}: {what}");
        let config = LogConfig {
            segment_bytes: [4096, 8192, 16384, 1 << 20][rng.below(4) as usize],
            index_interval_bytes: [1, 512, 4096][rng.below(3) as usize],
            use_batch_cache: rng.chance(500),
            ..LogConfig::default()
        };
        let env = StorageEnv {
            clock: clock.clone(),
            disk: Disk::Memory(disk.session()),
            batch_cache: tern::storage::batch_cache::BatchCache::shared(1 << 20),
            // Both ways of making a durable write durable: O_DSYNC writes (the default)
            // and writes followed by fdatasync.
            sync_mode: if rng.chance(500) { SyncMode::WriteThrough } else { SyncMode::Fdatasync },
            ..StorageEnv::default()
        };
        // Recovery runs on a healthy disk: a fault while opening is a different test.
        disk.set_faults(MemoryFaults::default());
        if std::env::var_os("TERN_SIM_DEBUG").is_some() {
            println!("cycle {cycle}: files {:?}", disk.session().list_dir(&dir));
        }
        let log = PartitionLog::open(&dir, config, env).await.map_err(|e| fail(format!("open: {e}")))?;
        let recovered = read_everything(&log).await.map_err(&fail)?;
        model.check_recovered(log.offsets().log_start.value(), recovered).map_err(&fail)?;
        let expected_end = model.durable.iter().next_back().map_or(0, |(base, bytes)| {
            let header = tern::protocol::record_batch::BatchHeader::parse(bytes).expect("stored batches parse");
            base + i64::from(header.last_offset_delta) + 1
        });
        if log.offsets().log_end.value() != expected_end {
            return Err(fail(format!(
                "log end {} after recovery, but the batches end at {expected_end}",
                log.offsets().log_end
            )));
        }

        // Keep the log short (so a cycle stays cheap) the way an operator would: move the
        // log start with DeleteRecords and let retention delete whole segments. Both
        // must survive later crashes too.
        if model.durable.len() > 150 {
            let target = *model.durable.keys().nth(model.durable.len() - 60).expect("long enough");
            let start = log.delete_records(Offset(target)).await.map_err(|e| fail(format!("delete records: {e}")))?;
            model.log_start_min = start.value();
            log.enforce_retention().await.map_err(|e| fail(format!("retention: {e}")))?;
        }

        let mut faults = random_faults(&mut rng);
        if rng.chance(100) {
            // The disk fills up a little way ahead.
            let stored: u64 = model.durable.values().map(|b| b.len() as u64).sum();
            faults.capacity_bytes = Some(stored + 64 * 1024 + rng.below(256 * 1024));
        }
        disk.set_faults(faults);
        let acknowledged: Rc<RefCell<Acknowledged>> = Rc::default();
        let appends = 1 + rng.below(60);
        for _ in 0..appends {
            tag += 1;
            let records = 1 + rng.below(5) as usize;
            let value_bytes = 8 + rng.below(2500) as usize;
            let value: Vec<u8> = (0..value_bytes).map(|i| (tag as usize * 31 + i) as u8).collect();
            let values: Vec<&[u8]> = (0..records).map(|_| value.as_slice()).collect();
            let batch = BytesMut::from(&build::batch(&values, 1_700_000_000_000 + tag as i64)[..]);
            // An append refused at once (poisoned, closed, disk full) assigns nothing.
            if let Ok(pending) = log.append_nowait(batch.clone()) {
                let base = pending.info.base_offset.value();
                let mut stored = batch.to_vec();
                set_base_offset(&mut stored, base);
                model.assign(base, stored.clone()).map_err(&fail)?;
                let acknowledged = acknowledged.clone();
                glommio::spawn_local(async move {
                    if pending.durable().await.is_ok() {
                        acknowledged.borrow_mut().push((base, stored));
                    }
                })
                .detach();
            }
            for _ in 0..rng.below(4) {
                futures_lite::future::yield_now().await;
            }
        }
        // Let some of the writes and syncs finish, then stop the world.
        for _ in 0..rng.below(200) {
            futures_lite::future::yield_now().await;
        }
        if rng.chance(150) {
            disk.set_faults(MemoryFaults::default());
            let closed = log.close().await;
            if std::env::var_os("TERN_SIM_DEBUG").is_some() {
                println!("cycle {cycle}: clean close: {closed:?}");
            }
            for _ in 0..10 {
                futures_lite::future::yield_now().await;
            }
        }
        model.acknowledged = acknowledged.borrow().clone();
        if std::env::var_os("TERN_SIM_DEBUG").is_some() {
            println!(
                "cycle {cycle}: assigned {:?}, acknowledged {:?}, disk {:?}",
                model.candidates.keys().collect::<Vec<_>>(),
                model.acknowledged.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
                disk.stats()
            );
        }
        disk.crash();
        drop(log);
        // Tasks of the dead incarnation fail on their dead handles; let them finish.
        for _ in 0..50 {
            futures_lite::future::yield_now().await;
        }
        clock.advance_ms(1 + rng.below(10_000) as i64);
    }
    Ok(())
}

#[test]
fn acknowledged_records_survive_every_simulated_crash() {
    let cycles = env_number("TERN_SIM_CYCLES").unwrap_or(75);
    let seeds: Vec<u64> = match env_number("TERN_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let base = env_number("TERN_SIM_SEED_BASE").unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
                    % 1_000_000_000
            });
            let count = env_number("TERN_SIM_SEEDS").unwrap_or(40);
            println!("simulated-disk crash test: seeds {base}..{} x {cycles} cycles", base + count);
            (base..base + count).collect()
        }
    };
    let failures = run(move || async move {
        let mut failures = Vec::new();
        for seed in seeds {
            if let Err(problem) = check_seed(seed, cycles).await {
                failures.push(format!(
                    "seed {seed}: {problem} (replay: TERN_SIM_SEED={seed} cargo test --test storage_sim_crash)"
                ));
            }
        }
        failures
    });
    assert!(failures.is_empty(), "{} seed(s) failed:\n{}", failures.len(), failures.join("\n"));
}
