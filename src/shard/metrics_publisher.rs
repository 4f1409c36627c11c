//! The per-shard side of the metrics: a task that publishes the shard's partition
//! offsets and sizes, batch cache statistics, committed offsets of the groups it
//! coordinates and executor statistics every second, and a watchdog that measures how
//! late its timer fires (time other tasks kept the event loop) and logs a warning when a
//! task blocks the shard longer than [`STALL_THRESHOLD`].
//!
//! The watchdog ticks every 10 ms while the shard runs tasks and every second once a
//! tick finds that nothing but the shard's own timers ran: an idle shard wakes about
//! twice a second (this publisher and the watchdog), not a hundred times.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::ShardContext;
use crate::metrics::{probes, CommittedGauge, PartitionGauge, ShardSnapshot};

pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
const WATCHDOG_TICK: Duration = Duration::from_millis(10);
/// The watchdog's tick while the shard is idle.
const WATCHDOG_IDLE_TICK: Duration = Duration::from_secs(1);
/// Tasks a tick may see executed and still call the shard idle (the watchdog itself and
/// the publisher).
const IDLE_TASKS_MAX: u64 = 2;
/// A task that keeps the shard's core longer than this is logged.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(50);

/// Starts both tasks on the current shard; they end with the shard's executor.
pub fn spawn(ctx: Rc<ShardContext>) {
    publish(&ctx);
    let publisher = ctx.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(PUBLISH_INTERVAL).await;
            publish(&publisher);
        }
    })
    .detach();
    let shard = ctx.id;
    glommio::spawn_local(async move {
        let probes = probes();
        let mut tick = WATCHDOG_TICK;
        let mut tasks_before = glommio::executor().executor_stats().tasks_executed();
        loop {
            let started = Instant::now();
            glommio::timer::sleep(tick).await;
            let late = started.elapsed().saturating_sub(tick);
            let tasks = glommio::executor().executor_stats().tasks_executed();
            tick = if tasks - tasks_before <= IDLE_TASKS_MAX { WATCHDOG_IDLE_TICK } else { WATCHDOG_TICK };
            tasks_before = tasks;
            probes.event_loop_lag.observe(late);
            if late >= STALL_THRESHOLD {
                probes.event_loop_stalls.add(1);
                tracing::warn!(shard, blocked_ms = late.as_millis() as u64, "a task kept the shard's event loop busy");
            }
        }
    })
    .detach();
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
    let snapshot = ShardSnapshot {
        shard: Some(ctx.id),
        partitions,
        committed,
        cache: ctx.storage_env.batch_cache.borrow().stats(),
        tasks_executed: stats.tasks_executed(),
        task_runtime_seconds: stats.total_runtime().as_secs_f64(),
    };
    *probes().snapshot.lock().expect("snapshot") = snapshot;
}
