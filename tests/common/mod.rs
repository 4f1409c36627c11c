//! Helpers shared by the integration tests: running a future on a glommio executor sized
//! for this machine's locked-memory limit, building batches, and the real broker as a
//! child process (`broker`).
#![allow(dead_code)]

pub mod broker;

use std::future::Future;

use bytes::BytesMut;
use glommio::{LocalExecutorBuilder, Placement};
use tern::protocol::record_batch::build;

/// io_uring registered-buffer memory per test executor. The CI machine allows 8 MiB of
/// locked memory per user and tests run in parallel, so keep this small.
pub const TEST_IO_MEMORY_BYTES: usize = 512 << 10;

/// Runs `make()` to completion on a fresh, unpinned glommio executor thread.
pub fn run<F, Fut, T>(make: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(TEST_IO_MEMORY_BYTES)
        .spawn(make)
        .expect("spawn glommio executor")
        .join()
        .expect("executor thread")
}

/// A storage environment with a manual clock (and the defaults for the rest).
pub fn env_with_clock(clock: std::rc::Rc<tern::storage::ManualClock>) -> tern::storage::StorageEnv {
    tern::storage::StorageEnv { clock, ..tern::storage::StorageEnv::default() }
}

/// A valid batch of `records` records with `value_bytes`-byte values tagged by `tag`.
pub fn batch(records: usize, value_bytes: usize, tag: u64, timestamp_ms: i64) -> BytesMut {
    let mut value = vec![0u8; value_bytes.max(8)];
    value[..8].copy_from_slice(&tag.to_be_bytes());
    let values: Vec<&[u8]> = (0..records.max(1)).map(|_| value.as_slice()).collect();
    BytesMut::from(&build::batch(&values, timestamp_ms)[..])
}
