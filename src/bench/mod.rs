//! `tern bench produce | consume | e2e`: the bundled load tool. It speaks the Kafka
//! protocol through [`crate::client`], so the same command measures Tern, Apache Kafka or
//! Redpanda.
//!
//! Layout: one glommio executor per `--cores` CPU (pinned; one unpinned executor when
//! the flag is absent) runs its share of producer lanes and consumers; the main thread
//! is the reporter. Setup (topic creation, leader lookup) runs first on a short-lived
//! executor.
//!
//! - [`options`]: flags; [`payload`]: batch templates; [`producer`], [`consumer`]:
//!   workers; [`stats`]: probes and histograms; [`report`]: lines, summary, JSON;
//!   [`context`]: what workers share.

pub mod consumer;
pub mod context;
pub mod identity;
pub mod options;
pub mod payload;
pub mod producer;
pub mod report;
pub mod stats;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::client::{Client, PartitionLeader};
use consumer::{run_consumer, ConsumerPlan};
use context::{RunControl, WorkerContext};
use options::{BenchArgs, Mode};
use producer::{run_producer, ProducerPlan};
use report::{interval_line, interval_report, summary_text, Phase, Printer, Streams, Summary};
use stats::{drain, Probe, SharedProbe, Stream};

const CLIENT_ID: &str = "tern-bench";

/// How long workers get to finish in-flight requests after the time is up.
const DRAIN_GRACE: Duration = Duration::from_secs(60);

/// Runs a benchmark and returns its summary (already printed). Errors are setup failures;
/// broker errors during the run are in the summary.
pub fn run(mode: Mode, args: BenchArgs) -> Result<Summary, String> {
    args.validate(mode)?;
    let args = Arc::new(args);
    let leaders = setup(mode, &args)?;
    let (producers, consumers) = plan(mode, &args, &leaders)?;

    let executors: Vec<Option<usize>> = match &args.cores {
        Some(cpus) => cpus.0.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let control = Arc::new(RunControl::new(if mode == Mode::Consume { None } else { args.records }));
    let probes: Vec<SharedProbe> = executors.iter().map(|_| Arc::new(Mutex::new(Probe::default()))).collect();
    let mut handles = Vec::new();
    let finished = Arc::new(AtomicUsize::new(0));
    for (index, cpu) in executors.iter().enumerate() {
        let my_producers: Vec<ProducerPlan> =
            producers.iter().filter(|p| p.id % executors.len() == index).cloned().collect();
        let my_consumers: Vec<ConsumerPlan> =
            consumers.iter().filter(|c| c.id % executors.len() == index).cloned().collect();
        let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
        let (args, probe, control) = (args.clone(), probes[index].clone(), control.clone());
        let guard = FinishedGuard(finished.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("tern-bench-{index}"))
            .io_memory(args.memory as usize)
            .spawn(move || async move {
                let _guard = guard;
                let client = match Client::connect(&args.brokers, CLIENT_ID).await {
                    Ok(client) => client,
                    Err(error) => {
                        probe.lock().expect("probe lock").failures.push(format!("executor {index}: {error}"));
                        return;
                    }
                };
                if let Err(error) = client.metadata(Some(std::slice::from_ref(&args.topic))).await {
                    probe.lock().expect("probe lock").failures.push(format!("executor {index}: {error}"));
                    return;
                }
                let ctx = Rc::new(WorkerContext { args, client, probe, control });
                let mut tasks = Vec::new();
                for plan in my_producers {
                    tasks.push(glommio::spawn_local(run_producer(ctx.clone(), plan)));
                }
                for plan in my_consumers {
                    tasks.push(glommio::spawn_local(run_consumer(ctx.clone(), plan)));
                }
                for task in tasks {
                    task.await;
                }
            })
            .map_err(|e| format!("cannot start a load executor: {e} (is ulimit -l at least --memory?)"))?;
        handles.push(handle);
    }

    let summary = report_until_done(mode, &args, &control, &probes, &finished);
    for handle in handles {
        let _ = handle.join();
    }
    let mut summary = summary;
    // Whatever arrived after the last tick (in-flight requests finishing).
    let mut rest = Probe::default();
    for probe in &probes {
        rest.add(&drain(probe));
    }
    summary.failures.extend(rest.failures);
    for (name, count) in rest.errors {
        *summary.errors.entry(name).or_default() += count;
    }
    let text = summary_text(&summary);
    Printer::new().line(text.trim_end());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&summary).map_err(|e| format!("cannot encode results: {e}"))?;
        std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(summary)
}

/// Creates the topic if needed and looks up its partition leaders.
fn setup(mode: Mode, args: &Arc<BenchArgs>) -> Result<Vec<PartitionLeader>, String> {
    let args = args.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(args.memory as usize)
        .name("tern-bench-setup")
        .spawn(move || async move {
            let client = Client::connect(&args.brokers, CLIENT_ID).await.map_err(|e| e.to_string())?;
            let mut partitions = client.partitions(&args.topic).await.map_err(|e| e.to_string())?;
            if partitions.is_none() && mode != Mode::Consume {
                client
                    .create_topic(&args.topic, args.partitions, args.replication_factor, &[])
                    .await
                    .map_err(|e| e.to_string())?;
                // Leaders may take a moment to appear on a real cluster.
                for _ in 0..50 {
                    partitions = client.partitions(&args.topic).await.map_err(|e| e.to_string())?;
                    if partitions.as_ref().is_some_and(|p| p.iter().all(|p| p.leader >= 0)) {
                        break;
                    }
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
            }
            let partitions = partitions.ok_or_else(|| format!("topic {} does not exist", args.topic))?;
            if partitions.iter().any(|p| p.leader < 0) {
                return Err(format!("topic {} has partitions without a leader", args.topic));
            }
            if partitions.len() as i32 != args.partitions && mode != Mode::Consume {
                eprintln!(
                    "tern bench: topic {} already exists with {} partitions; using those (not --partitions {})",
                    args.topic,
                    partitions.len(),
                    args.partitions
                );
            }
            Ok(partitions)
        })
        .map_err(|e| format!("cannot start the setup executor: {e} (is ulimit -l at least --memory?)"))?
        .join()
        .map_err(|e| format!("setup failed: {e:?}"))?
}

/// Splits partitions among producers (lanes by leader) and consumers.
fn plan(
    mode: Mode,
    args: &BenchArgs,
    leaders: &[PartitionLeader],
) -> Result<(Vec<ProducerPlan>, Vec<ConsumerPlan>), String> {
    let mut producers = Vec::new();
    if mode != Mode::Consume {
        for producer in 0..args.producers {
            let mine: Vec<&PartitionLeader> = if args.producers <= leaders.len() {
                leaders.iter().enumerate().filter(|(i, _)| i % args.producers == producer).map(|(_, p)| p).collect()
            } else {
                vec![&leaders[producer % leaders.len()]]
            };
            let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
            for p in mine {
                by_leader.entry(p.leader).or_default().push(p.partition);
            }
            for (leader, partitions) in by_leader {
                producers.push(ProducerPlan { id: producers.len(), leader, partitions, rate: None });
            }
        }
        if args.rate > 0 {
            let lanes = producers.len() as u64;
            for (i, lane) in producers.iter_mut().enumerate() {
                // Spread the remainder so the shares add up to --rate exactly.
                let share = args.rate / lanes + u64::from((i as u64) < args.rate % lanes);
                lane.rate = Some(share.max(1));
            }
        }
    }
    let mut consumers = Vec::new();
    if mode != Mode::Produce {
        if args.consumers > leaders.len() {
            return Err(format!(
                "--consumers {} exceeds the topic's {} partitions; extra consumers would have nothing to read",
                args.consumers,
                leaders.len()
            ));
        }
        for consumer in 0..args.consumers {
            let partitions =
                leaders.iter().enumerate().filter(|(i, _)| i % args.consumers == consumer).map(|(_, p)| *p).collect();
            consumers.push(ConsumerPlan { id: consumer, partitions, e2e: mode == Mode::E2e });
        }
    }
    Ok((producers, consumers))
}

/// The reporter loop on the main thread: prints a line per interval, stops the run when
/// the time is up, and returns the summary of the measured part.
fn report_until_done(
    mode: Mode,
    args: &BenchArgs,
    control: &RunControl,
    probes: &[SharedProbe],
    finished: &AtomicUsize,
) -> Summary {
    let executors = probes.len();
    let streams = Streams { produce: mode != Mode::Consume, consume: mode != Mode::Produce, e2e: mode == Mode::E2e };
    let mut printer = Printer::new();
    let start = Instant::now();
    let warmup_end = args.warmup;
    let stop_at = args.measured_duration().map(|d| warmup_end + d);
    let mut totals = Probe::default();
    let mut timeline = Vec::new();
    let mut last_tick = Duration::ZERO;
    let mut next_tick = if warmup_end.is_zero() { args.report_interval } else { warmup_end.min(args.report_interval) };
    let mut measured_end = None;
    let mut stop_sent_at = None;
    loop {
        let all_done = finished.load(std::sync::atomic::Ordering::Acquire) == executors;
        let elapsed = start.elapsed();
        if let (Some(stop_at), None) = (stop_at, stop_sent_at) {
            if elapsed >= stop_at {
                control.stop.store(true, std::sync::atomic::Ordering::Relaxed);
                stop_sent_at = Some(elapsed);
                measured_end = Some(elapsed);
            }
        }
        let tick_due = elapsed >= next_tick || all_done || stop_sent_at == Some(elapsed);
        if tick_due {
            let mut interval = Probe::default();
            for probe in probes {
                interval.add(&drain(probe));
            }
            let phase = if last_tick < warmup_end {
                Phase::Warmup
            } else if stop_sent_at.is_some_and(|stop| last_tick >= stop) {
                Phase::Drain
            } else {
                Phase::Measured
            };
            let report = interval_report(elapsed, elapsed - last_tick, phase, &interval, &streams);
            printer.line(&interval_line(&report));
            timeline.push(report);
            if phase == Phase::Measured {
                totals.add(&interval);
            } else {
                // Errors outside the measured window still count; throughput and latency
                // do not.
                for (name, count) in &interval.errors {
                    *totals.errors.entry(name.clone()).or_default() += count;
                }
                totals.failures.extend(interval.failures);
            }
            last_tick = elapsed;
            while next_tick <= elapsed {
                next_tick += args.report_interval;
            }
            if !warmup_end.is_zero() && last_tick < warmup_end && next_tick > warmup_end {
                next_tick = warmup_end;
            }
        }
        if all_done {
            // A run bounded by --records (or --to-end) is measured until its last answer.
            if stop_sent_at.is_none() {
                measured_end = Some(elapsed);
            }
            break;
        }
        if let Some(sent) = stop_sent_at {
            if elapsed > sent + DRAIN_GRACE {
                eprintln!("tern bench: workers did not finish within {DRAIN_GRACE:?} of the stop; giving up on them");
                break;
            }
        }
        printer.live(&progress(elapsed, stop_at, &totals, &streams));
        std::thread::sleep(Duration::from_millis(50).min(next_tick.saturating_sub(start.elapsed())));
    }
    let measured_end = measured_end.unwrap_or_else(|| start.elapsed());
    let measured_sec = measured_end.saturating_sub(warmup_end).as_secs_f64();
    Summary {
        mode: format!("{mode:?}").to_lowercase(),
        settings: settings(args),
        measured_sec,
        produce: streams.produce.then(|| report::StreamSummary::of(&totals.produce, measured_sec)),
        consume: streams.consume.then(|| report::StreamSummary::of(&totals.consume, measured_sec)),
        e2e: if streams.e2e { report::Percentiles::of(&totals.e2e.latency_us) } else { None },
        produce_requests: if streams.produce { report::ProduceRequestSummary::of(&totals.produce_split) } else { None },
        errors: totals.errors,
        failures: totals.failures,
        transactions: totals.transactions,
        timeline,
    }
}

/// Counts an executor as finished when dropped (also when a worker panics).
struct FinishedGuard(Arc<AtomicUsize>);

impl Drop for FinishedGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

fn progress(elapsed: Duration, stop_at: Option<Duration>, totals: &Probe, streams: &Streams) -> String {
    let mut text = match stop_at {
        Some(stop) => format!("[{:>5.1}s / {:.0}s]", elapsed.as_secs_f64(), stop.as_secs_f64()),
        None => format!("[{:>5.1}s]", elapsed.as_secs_f64()),
    };
    let count = |s: &Stream| s.records;
    if streams.produce {
        text.push_str(&format!(" produced {}", count(&totals.produce)));
    }
    if streams.consume {
        text.push_str(&format!(" consumed {}", count(&totals.consume)));
    }
    text
}

/// The flags that shape the load, for the JSON record.
fn settings(args: &BenchArgs) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        s.insert(k.to_string(), v);
    };
    put("brokers", args.brokers.join(","));
    put("topic", args.topic.clone());
    put("producers", args.producers.to_string());
    put("consumers", args.consumers.to_string());
    put("record_size", args.record_size.to_string());
    put("key_size", args.key_size.to_string());
    put("batch_bytes", args.batch_bytes.to_string());
    put("linger_ms", args.linger_ms.to_string());
    put("acks", args.acks.to_string());
    put("compression", format!("{:?}", args.compression).to_lowercase());
    put("rate", args.rate.to_string());
    put("max_in_flight", args.max_in_flight.to_string());
    put("idempotent", (args.idempotent || args.transactional.is_some()).to_string());
    put("batches_per_transaction", args.transactional.map_or("-".into(), |n| n.to_string()));
    put("warmup_sec", args.warmup.as_secs_f64().to_string());
    put("cores", args.cores.as_ref().map_or("unpinned".into(), |c| format!("{:?}", c.0)));
    s
}
