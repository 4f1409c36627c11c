//! The shard runtime's timers fire when the event loop has nothing else to wake it.
//!
//! Guards the glommio patch in `vendor/glommio` (TERN-PATCH in `src/sys/uring.rs`): the
//! latency ring's timer stays armed across loop iterations instead of being re-armed on
//! every one. A kept timer that expired during the loop's own submission (the throughput
//! timer's re-arm after every 128 completions) had its completion consumed without waking
//! any task, and the executor then slept with no timer armed until some I/O arrived:
//! `tern bench` at a fixed rate against a 3-node cluster sat for minutes with its pacing
//! and request timers overdue, until a signal woke it. A shard busy with clients always
//! has I/O to wake it; one with only timers left (an idle broker's ticks, a paced
//! producer) does not.
//!
//! Here one executor runs tasks that sleep for random short times, some racing a long
//! timer that is then dropped, and each writes a block to a file after every sleep
//! (completions in the main ring, nothing pending afterwards), while other threads keep
//! every CPU busy. The test thread counts
//! finished sleeps; if none finishes for a second, the executor is asleep with timers
//! overdue. It then wakes the executor with a datagram to a socket a task is reading,
//! so that the test ends, and fails.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::io::BufferedFile;
use glommio::net::UdpSocket;
use glommio::timer::sleep;
use glommio::{LocalExecutorBuilder, Placement};

mod common;

/// How long the executor runs.
const RUN_FOR: Duration = Duration::from_secs(4);
/// No sleep finishing for this long means the executor slept through its timers (the
/// sleeps are at most 0.3 ms, so a healthy loop finishes thousands a second).
const STALL: Duration = Duration::from_secs(1);

/// A small xorshift generator: random sleep lengths without a dev-dependency.
struct Random(Cell<u64>);

impl Random {
    fn below(&self, bound: u64) -> u64 {
        let mut x = self.0.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.set(x);
        x % bound
    }
}

#[test]
fn timers_fire_when_nothing_else_wakes_the_loop() {
    let finished_sleeps = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let worst_lateness_us = Arc::new(AtomicU64::new(0));
    // Datagrams to this socket wake the executor (a task waits on it).
    let (address_sender, address_receiver) = std::sync::mpsc::channel();

    let executor = {
        let finished_sleeps = finished_sleeps.clone();
        let stop = stop.clone();
        let worst_lateness_us = worst_lateness_us.clone();
        LocalExecutorBuilder::new(Placement::Unbound)
            .name("timer-stress")
            .io_memory(common::TEST_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let doorbell = UdpSocket::bind("127.0.0.1:0").expect("bind");
                address_sender.send(doorbell.local_addr().expect("address")).expect("address to the test");
                let scratch = tempfile::tempdir().expect("scratch directory");
                let file = Rc::new(BufferedFile::create(scratch.path().join("ticks")).await.expect("scratch file"));
                let random = Rc::new(Random(Cell::new(0x9E37_79B9_7F4A_7C15)));
                let mut tasks = Vec::new();
                for sleeper in 0..8u64 {
                    let (finished_sleeps, stop, worst, random, file) = (
                        finished_sleeps.clone(),
                        stop.clone(),
                        worst_lateness_us.clone(),
                        random.clone(),
                        file.clone(),
                    );
                    tasks.push(glommio::spawn_local(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let asked = Duration::from_micros(10 + random.below(300));
                            let started = Instant::now();
                            if sleeper % 2 == 0 {
                                sleep(asked).await;
                            } else {
                                // A long timer raced against the short one and dropped.
                                let long = sleep(Duration::from_millis(20 + random.below(30)));
                                futures_lite::future::or(sleep(asked), long).await;
                            }
                            let late = started.elapsed().saturating_sub(asked).as_micros() as u64;
                            worst.fetch_max(late, Ordering::Relaxed);
                            finished_sleeps.fetch_add(1, Ordering::Relaxed);
                            // Completions in the main ring (they cycle its throughput
                            // timer), nothing left pending afterwards.
                            file.write_at(vec![1u8; 512], 512 * sleeper).await.expect("write");
                        }
                    }));
                }
                let doorbell_task = glommio::spawn_local(async move {
                    let mut buffer = [0u8; 16];
                    while doorbell.recv_from(&mut buffer).await.is_ok() {}
                });
                for task in tasks {
                    task.await;
                }
                drop(doorbell_task);
                drop(scratch);
            })
            .expect("executor")
    };

    // Threads competing for every CPU: the executor gets descheduled inside its own
    // io_uring_enter calls, which widens the window in which a kept timer expires.
    let hogs: Vec<_> = (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let doorbell = address_receiver.recv_timeout(Duration::from_secs(10)).expect("the executor started");
    let ring = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let started = Instant::now();
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    let mut stalls = Vec::new();
    while started.elapsed() < RUN_FOR {
        std::thread::sleep(Duration::from_millis(50));
        let count = finished_sleeps.load(Ordering::Relaxed);
        if count != last_count {
            last_count = count;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= STALL {
            stalls.push(format!("no sleep finished for {:?} after {count} sleeps", last_progress.elapsed()));
            ring.send_to(b"wake", doorbell).expect("wake the executor");
            last_progress = Instant::now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    ring.send_to(b"wake", doorbell).expect("wake the executor");
    executor.join().expect("executor thread");
    for hog in hogs {
        hog.join().expect("hog thread");
    }

    let finished = finished_sleeps.load(Ordering::Relaxed);
    assert!(stalls.is_empty(), "the executor slept through its timers: {stalls:?}");
    assert!(finished > 1000, "only {finished} sleeps finished in {RUN_FOR:?}");
    let worst = Duration::from_micros(worst_lateness_us.load(Ordering::Relaxed));
    assert!(worst < STALL, "a timer fired {worst:?} late");
}
