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

/// Crash-test settings from the environment: rounds (`TERN_CRASH_ROUNDS`, default 20)
/// and a seed (`TERN_CRASH_SEED`, default from the clock), printed so that a failure can
/// be replayed.
pub fn crash_settings(what: &str) -> (u64, u64) {
    let rounds: u64 = std::env::var("TERN_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("TERN_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("{what} seed {seed} (rerun with TERN_CRASH_SEED={seed}), {rounds} rounds");
    (rounds, seed)
}

/// A child process running one ignored test of the current test binary, and the words
/// after `ACK` of each `ACK ...` line it prints (read on a thread).
pub struct AckChild {
    pub child: std::process::Child,
    pub acks: std::sync::mpsc::Receiver<Vec<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl AckChild {
    pub fn spawn(child_test: &str, envs: &[(&str, String)]) -> AckChild {
        use std::io::BufRead;
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.args(["--ignored", "--exact", child_test, "--nocapture", "--test-threads=1"]);
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let (sender, acks) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut words = line.split_whitespace();
                if words.next() != Some("ACK") {
                    continue;
                }
                if sender.send(words.map(str::to_string).collect()).is_err() {
                    break;
                }
            }
        });
        AckChild { child, acks, reader }
    }

    /// Waits for the first acknowledgement (the child is up); panics after 30 s.
    pub fn first_ack(&mut self) -> Vec<String> {
        match self.acks.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(ack) => ack,
            Err(_) => {
                let _ = self.child.kill();
                panic!("child made no progress in 30 s");
            }
        }
    }

    /// SIGKILLs the child and returns every acknowledgement it printed after the first.
    pub fn kill(mut self) -> Vec<Vec<String>> {
        self.child.kill().expect("SIGKILL child");
        self.child.wait().expect("reap child");
        self.reader.join().expect("reader");
        self.acks.try_iter().collect()
    }
}
