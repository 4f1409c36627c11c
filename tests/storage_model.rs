//! Model-based test: the partition log against a `Vec` of batches.
//!
//! proptest generates random sequences of append (random sizes and record counts),
//! read (random offset and max bytes), roll, retention by size, DeleteRecords and
//! reopen ("reboot"), with small segments and a small tail cache so reads exercise both
//! the memory and the file paths. After every step the log must agree with the model:
//! offsets, which batches a read returns (whole, in order, byte-identical, at least one,
//! within max bytes), and what survives a reopen.

mod common;

use bytes::Bytes;
use common::{batch, run};
use proptest::prelude::*;
use tern::protocol::record_batch::{iter_batches, set_base_offset};
use tern::storage::{LogConfig, Offset, PartitionLog, ReadError, StorageEnv};

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, value_bytes: usize },
    Read { at: f64, max_bytes: usize },
    Roll,
    RetainBytes { keep: u64 },
    DeleteRecords { at: f64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..5, 1usize..5000).prop_map(|(records, value_bytes)| Op::Append { records, value_bytes }),
        4 => (0.0f64..1.0, 1usize..20_000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Roll),
        1 => (0u64..60_000).prop_map(|keep| Op::RetainBytes { keep }),
        1 => (0.0f64..1.0).prop_map(|at| Op::DeleteRecords { at }),
        1 => Just(Op::Reopen),
    ]
}

/// The model: every batch ever appended with its base offset, and the log start.
#[derive(Default)]
struct Model {
    batches: Vec<(i64, i64, Vec<u8>)>, // base, next, bytes
    log_start: i64,
}

impl Model {
    fn end(&self) -> i64 {
        self.batches.last().map_or(0, |b| b.1)
    }
    fn pick(&self, at: f64) -> i64 {
        let span = (self.end() - self.log_start + 1) as f64;
        self.log_start + (at * span) as i64
    }
}

fn concat(records: &[Bytes]) -> Vec<u8> {
    records.iter().flat_map(|b| b.iter().copied()).collect()
}

/// The shard-wide batch cache with a small budget, so eviction happens.
fn env(cache_bytes: usize) -> StorageEnv {
    StorageEnv { batch_cache: tern::storage::batch_cache::BatchCache::shared(cache_bytes), ..StorageEnv::default() }
}

fn config(segment_bytes: u64, cache_bytes: usize, retention_bytes: i64) -> LogConfig {
    LogConfig {
        segment_bytes,
        use_batch_cache: cache_bytes > 0,
        retention_bytes,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    #[test]
    fn log_matches_a_vec_model(
        ops in proptest::collection::vec(op(), 1..60),
        segment_bytes in 4096u64..32_768,
        cache_bytes in 0usize..40_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model-0");
        let result: Result<(), String> = run(move || async move {
            let mut model = Model::default();
            let mut log = PartitionLog::open(&path, config(segment_bytes, cache_bytes, -1), env(cache_bytes)).await.unwrap();
            let mut seq = 0u64;
            for (step, op) in ops.into_iter().enumerate() {
                let context = format!("step {step} {op:?}");
                match op {
                    Op::Append { records, value_bytes } => {
                        seq += 1;
                        let bytes = batch(records, value_bytes, seq, seq as i64);
                        let info = log.append(bytes.clone()).await.unwrap();
                        if info.base_offset.value() != model.end() {
                            return Err(format!("{context}: base {} != model end {}", info.base_offset, model.end()));
                        }
                        let mut stored = bytes.to_vec();
                        set_base_offset(&mut stored, info.base_offset.value());
                        model.batches.push((info.base_offset.value(), info.last_offset.value() + 1, stored));
                    }
                    Op::Read { at, max_bytes } => {
                        let offset = model.pick(at);
                        let read = log.read(Offset(offset), max_bytes).await;
                        let read = match read {
                            Ok(read) => read,
                            Err(error) => return Err(format!("{context}: read {offset} failed: {error}")),
                        };
                        let bytes = concat(&read.records);
                        let got: Vec<_> = iter_batches(&bytes).map(|(h, r)| (h.base_offset, bytes[r].to_vec())).collect();
                        if offset == model.end() {
                            if !got.is_empty() { return Err(format!("{context}: read at the end returned data")); }
                            continue;
                        }
                        let first = model.batches.iter().position(|b| b.1 > offset).unwrap();
                        if got.is_empty() {
                            return Err(format!("{context}: empty read below the high watermark"));
                        }
                        if got.len() > 1 && bytes.len() > max_bytes {
                            return Err(format!("{context}: {} bytes over max {max_bytes}", bytes.len()));
                        }
                        for (n, (base, data)) in got.iter().enumerate() {
                            let expected = &model.batches[first + n];
                            if *base != expected.0 || *data != expected.2 {
                                return Err(format!("{context}: batch {n} differs (base {base} vs {})", expected.0));
                            }
                        }
                    }
                    Op::Roll => log.request_roll(),
                    Op::RetainBytes { keep } => {
                        log.set_config(config(segment_bytes, cache_bytes, keep as i64)).unwrap();
                        log.enforce_retention().await.unwrap();
                        log.set_config(config(segment_bytes, cache_bytes, -1)).unwrap();
                        let start = log.offsets().log_start.value();
                        if start < model.log_start || start > model.end() {
                            return Err(format!("{context}: log start {start} outside {}..={}", model.log_start, model.end()));
                        }
                        if start > model.log_start && !model.batches.iter().any(|b| b.0 == start) && start != model.end() {
                            return Err(format!("{context}: retention moved log start to {start}, not a segment boundary"));
                        }
                        model.log_start = start;
                    }
                    Op::DeleteRecords { at } => {
                        let target = model.pick(at);
                        let start = log.delete_records(Offset(target)).await.unwrap().value();
                        if start != target.max(model.log_start) {
                            return Err(format!("{context}: log start {start} after DeleteRecords({target})"));
                        }
                        model.log_start = start;
                    }
                    Op::Reopen => {
                        let before = log.offsets();
                        log.close().await.unwrap();
                        log = PartitionLog::open(&path, config(segment_bytes, cache_bytes, -1), env(cache_bytes)).await.unwrap();
                        if log.offsets() != before {
                            return Err(format!("{context}: offsets {:?} after reopen, {:?} before", log.offsets(), before));
                        }
                    }
                }
                let offsets = log.offsets();
                if offsets.log_end.value() != model.end() || offsets.high_watermark.value() != model.end() || offsets.log_start.value() != model.log_start {
                    return Err(format!("{context}: offsets {offsets:?}, model start {} end {}", model.log_start, model.end()));
                }
                if model.log_start > 0 {
                    let below = log.read(Offset(model.log_start - 1), 100).await;
                    if !matches!(below, Err(ReadError::OffsetOutOfRange { .. })) {
                        return Err(format!("{context}: read below log start did not fail"));
                    }
                }
            }
            Ok(())
        });
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
