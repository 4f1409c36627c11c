//! The per-shard side of the metrics: a task that publishes the shard's partition
//! offsets and sizes, batch cache statistics, committed offsets of the groups it
//! coordinates and executor statistics every second, and a watchdog that measures how
//! late its timer fires (time other tasks kept the event loop) and logs a warning when a
//! task blocks the shard longer than [`STALL_THRESHOLD`].
//!
//! The watchdog ticks every 10 ms while the shard is busy and every second once a tick
//! finds no request and no new connection since the previous one: an idle shard wakes
//! about twice a second (this publisher and the watchdog), not a hundred times.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::ShardContext;
use crate::metrics::{probes, CommittedGauge, PartitionGauge, ShardSnapshot};

pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
const WATCHDOG_TICK: Duration = Duration::from_millis(10);
/// The watchdog's tick while the shard is idle.
const WATCHDOG_IDLE_TICK: Duration = Duration::from_secs(1);
/// A task that keeps the shard's core longer than this is logged.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(50);

/// Starts both tasks on the current shard; they end with the shard's executor.
pub fn spawn(ctx: Rc<ShardContext>) {
    publish(&ctx);
    let publisher = ctx.clone();
    glommio::spawn_local(async move {
        let mut closed_at_last_trim = probes().connections_closed.get();
        loop {
            glommio::timer::sleep(PUBLISH_INTERVAL).await;
            publish(&publisher);
            closed_at_last_trim = return_memory_after_closes(closed_at_last_trim);
        }
    })
    .detach();
    let shard = ctx.id;
    glommio::spawn_local(async move {
        let probes = probes();
        let mut tick = WATCHDOG_TICK;
        let mut activity_before = activity(&probes);
        loop {
            let started = Instant::now();
            glommio::timer::sleep(tick).await;
            let late = started.elapsed().saturating_sub(tick);
            // Idle: no request arrived and no connection opened since the last tick.
            let now_activity = activity(&probes);
            tick = if now_activity == activity_before { WATCHDOG_IDLE_TICK } else { WATCHDOG_TICK };
            activity_before = now_activity;
            probes.event_loop_lag.observe(late);
            if late >= STALL_THRESHOLD {
                probes.event_loop_stalls.add(1);
                tracing::warn!(shard, blocked_ms = late.as_millis() as u64, "a task kept the shard's event loop busy");
            }
        }
    })
    .detach();
}

/// Connections closed on this shard since the last trim that make it worth giving freed
/// memory back to the system.
const CLOSES_PER_TRIM: u64 = 256;

/// Once many connections have closed, gives the heap memory they freed back to the
/// system ([`crate::allocator::return_freed_memory`]): the allocator keeps freed pages
/// for reuse otherwise (with glibc, 5,000 connections gone left 130-170 MB of RSS
/// behind). It runs at most once a second per shard and only after a wave of closes.
/// Returns the close count to compare against next time.
fn return_memory_after_closes(closed_at_last_trim: u64) -> u64 {
    let closed = probes().connections_closed.get();
    if closed.saturating_sub(closed_at_last_trim) < CLOSES_PER_TRIM {
        return closed_at_last_trim;
    }
    crate::allocator::return_freed_memory();
    closed
}

/// Requests received and connections opened by this shard so far: the watchdog's measure
/// of whether the shard is doing anything. (Not glommio's executor statistics: reading
/// those resets them.)
fn activity(probes: &crate::metrics::ShardProbes) -> u64 {
    probes.requests.iter().map(crate::metrics::Counter::get).sum::<u64>() + probes.connections_opened.get()
}

thread_local! {
    /// glommio hands out its executor statistics as deltas (reading them resets them):
    /// the totals since the shard started, for the `_total` metrics.
    static EXECUTOR_TOTALS: std::cell::Cell<(u64, f64)> = const { std::cell::Cell::new((0, 0.0)) };
}

fn cleaner_gauge(log: &crate::storage::PartitionLog) -> crate::metrics::CleanerGauge {
    let view = log.dirty_view();
    let state = log.clean_state();
    crate::metrics::CleanerGauge {
        dirty_ratio: f64::from(view.ratio_ppm()) / 1e6,
        dirty_bytes: view.dirty_bytes,
        first_dirty_offset: view.first_dirty.value(),
        passes: state.stats.passes,
        bytes_read: state.stats.bytes_read,
        bytes_written: state.stats.bytes_written,
        records_removed: state.stats.records_removed,
        last_run_ms: state.stats.last_run_ms.unwrap_or(0),
        last_duration_ms: state.stats.last_duration_ms,
    }
}

/// Publishes the shard's snapshot now.
pub fn publish(ctx: &ShardContext) {
    let partitions = ctx
        .named_logs()
        .into_iter()
        .map(|(crate::protocol::topic_partition::TopicPartition { topic, partition }, log)| {
            let offsets = log.offsets();
            PartitionGauge {
                topic,
                partition,
                log_start: offsets.log_start.value(),
                high_watermark: offsets.high_watermark.value(),
                log_end: offsets.log_end.value(),
                size_bytes: log.size_bytes(),
                cleaner: log.config().compact.then(|| cleaner_gauge(&log)),
            }
        })
        .collect();
    let committed = ctx
        .groups
        .committed_offsets()
        .into_iter()
        .map(|((group, topic, partition), offset)| CommittedGauge { group, topic, partition, offset })
        .collect();
    let stats = glommio::executor().executor_stats();
    let (tasks_executed, task_runtime_seconds) = EXECUTOR_TOTALS.with(|totals| {
        let (tasks, runtime) = totals.get();
        let updated = (tasks + stats.tasks_executed(), runtime + stats.total_runtime().as_secs_f64());
        totals.set(updated);
        updated
    });
    let snapshot = ShardSnapshot {
        shard: Some(ctx.id),
        partitions,
        committed,
        cache: ctx.storage_env.batch_cache.borrow().stats(),
        tasks_executed,
        task_runtime_seconds,
    };
    *probes().snapshot.lock().expect("snapshot") = snapshot;
}
