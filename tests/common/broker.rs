//! The real `tern` binary as a child process for integration tests: a free 127.0.0.1
//! port, a data dir that can outlive a broker (for restarts), output captured to a log
//! file, and a stop by PID with SIGTERM that reports the exit code and the log.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TestBroker {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl TestBroker {
    /// Starts `tern serve` with 2 unpinned shards on `data_dir` plus `extra` flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> TestBroker {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = data_dir.with_extension(format!("{port}.log"));
        let output = std::fs::File::create(&log).expect("broker log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--cores", "0-1", "--no-pin", "--memory", "1M"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(output)
            .spawn()
            .expect("start tern");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tern did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        TestBroker { child, port, log }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGTERM, wait; returns the exit code and everything the broker logged.
    pub fn stop(mut self) -> (i32, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("tern did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (code, std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sums `key=<number>` over the broker's log lines that contain `marker`.
pub fn sum_logged(log: &str, marker: &str, key: &str) -> u64 {
    let needle = format!("{key}=");
    log.lines()
        .filter(|line| line.contains(marker))
        .filter_map(|line| {
            let plain = strip_ansi(line);
            let at = plain.find(&needle)? + needle.len();
            plain[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
        })
        .sum()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
