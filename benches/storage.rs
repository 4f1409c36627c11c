//! Storage microbenchmarks (criterion):
//! - `append_durable/<batch>/<in-flight>`: durable appends (O_DIRECT write + fdatasync per
//!   group-commit round) of 16 KiB and 1 MiB batches with 1 and 32 appends in flight.
//!   Compare with `dd if=/dev/zero of=FILE bs=1M count=2048 oflag=direct` on the same
//!   file system (perf/storage-append.sh prints both side by side).
//! - `validate_batch`: the produce path's header + CRC-32C check per batch.
//! - `index_lookup`: sparse offset index lookup in a full 1 GiB segment's index.
//!
//! Data goes to `TERN_BENCH_DIR` (default: a temp dir under the current directory, so it
//! lands on the project's disk rather than a tmpfs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use tern::protocol::record_batch::{build, validate_batch};
use tern::storage::index::SegmentIndex;
use tern::storage::{LogConfig, PartitionLog, StorageEnv};

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("TERN_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::Builder::new().prefix("tern-bench-").tempdir_in(base).expect("temp dir")
}

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound).io_memory(2 << 20).make().expect("glommio executor")
}

fn append_durable(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_durable");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    let executor = executor();
    for &(batch_bytes, label) in &[(16usize << 10, "16KiB"), (1usize << 20, "1MiB")] {
        let records = (batch_bytes / 1024).max(1);
        let template = build::batch_of_size(batch_bytes, records, 0x5a, 1_700_000_000_000);
        for &in_flight in &[1usize, 32, 128] {
            group.throughput(Throughput::Bytes(template.len() as u64));
            let dir = bench_dir();
            let path = dir.path().join("bench-0");
            // Keep about 2 GiB on disk however long criterion runs.
            let config = LogConfig { retention_bytes: 2 << 30, max_message_bytes: 2 << 20, ..LogConfig::default() };
            let log = executor.run(PartitionLog::open(&path, config, StorageEnv::default())).expect("open log");
            group.bench_with_input(BenchmarkId::new(label, in_flight), &in_flight, |b, &in_flight| {
                b.iter_custom(|iterations| {
                    executor.run(async {
                        let start = Instant::now();
                        let mut pending = std::collections::VecDeque::with_capacity(in_flight);
                        for _ in 0..iterations {
                            if pending.len() == in_flight {
                                let next: tern::storage::PendingAppend = pending.pop_front().expect("in flight");
                                next.durable().await.expect("durable append");
                            }
                            pending.push_back(log.append_nowait(BytesMut::from(&template[..])).expect("append"));
                        }
                        for append in pending {
                            append.durable().await.expect("durable append");
                        }
                        let elapsed = start.elapsed();
                        log.enforce_retention().await.expect("retention");
                        elapsed
                    })
                })
            });
            executor.run(log.close()).expect("close");
        }
    }
    group.finish();
}

fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_batch");
    for &(bytes, records) in &[(1024usize, 10usize), (16 << 10, 160), (1 << 20, 1024)] {
        let batch = build::batch_of_size(bytes, records, 7, 1);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(bytes), &batch, |b, batch| {
            b.iter(|| validate_batch(std::hint::black_box(batch), usize::MAX).expect("valid"))
        });
    }
    group.finish();
}

fn index_lookup(c: &mut Criterion) {
    // A 1 GiB segment of 16 KiB batches with 16 records each: 65,536 index entries.
    let mut index = SegmentIndex::new();
    for n in 0..65_536u32 {
        index.on_batch(n * 16, n * 16_384, 16_384, i64::from(n));
    }
    let mut probe = 0u32;
    c.bench_function("index_lookup/1GiB_segment", |b| {
        b.iter(|| {
            probe = probe.wrapping_mul(1_103_515_245).wrapping_add(12_345) % (65_536 * 16);
            std::hint::black_box(index.position_for(probe))
        })
    });
}

criterion_group!(benches, append_durable, validate, index_lookup);
criterion_main!(benches);
