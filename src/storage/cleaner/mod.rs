//! The log cleaner: compaction of `cleanup.policy=compact` logs, keeping the latest
//! record per key in closed segments (Kafka's LogCleaner, one per shard).
//!
//! ```text
//! pass.rs       one pass over one log: measure, map keys, rewrite, swap, checkpoint
//! key_map.rs    key -> latest offset, bounded by a memory budget
//! segment_io.rs reading a segment's batches, writing a cleaned segment and its index
//! swap.rs       replacing segments by their cleaned copy, crash-safely; recovery
//! throttle.rs   the I/O budget in bytes per second
//! ```
//!
//! Each shard runs one cleaner task ([`spawn_cleaner_task`]) in a low-priority task
//! queue: every `backoff` it cleans each of its compacted logs whose dirty ratio reached
//! min.cleanable.dirty.ratio, or whose oldest uncleaned record passed
//! max.compaction.lag.ms, dirtiest first. Offsets and batch boundaries never move, the
//! active segment is never touched, and what a consumer had committed stays a valid
//! position (a gap just moves it to the next record).

pub mod key_map;
pub mod pass;
pub mod segment_io;
pub mod swap;
pub mod throttle;

use std::rc::Rc;
use std::time::Duration;

use glommio::{Latency, Shares};

pub use pass::{CleanReport, DirtyView};

use super::log::PartitionLog;

/// The cleaner's settings for one shard (`tern serve --log-cleaner-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerConfig {
    /// log.cleaner.enable
    pub enabled: bool,
    /// log.cleaner.backoff.ms: the pause between rounds over the shard's logs.
    pub backoff: Duration,
    /// The key map's memory budget for one pass (this shard's share of
    /// log.cleaner.dedupe.buffer.size).
    pub map_bytes: usize,
    /// log.cleaner.io.max.bytes.per.second for this shard (0: unlimited).
    pub io_bytes_per_second: u64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig { enabled: true, backoff: Duration::from_secs(15), map_bytes: 64 << 20, io_bytes_per_second: 0 }
    }
}

impl PartitionLog {
    /// Whether a compacted log should be cleaned now: its dirty ratio reached
    /// min.cleanable.dirty.ratio, or its oldest uncleaned segment is older than
    /// max.compaction.lag.ms.
    pub fn wants_cleaning(&self, view: &DirtyView) -> bool {
        let config = self.config();
        if !config.compact || view.dirty_bytes == 0 {
            return false;
        }
        if view.ratio_ppm() >= config.min_cleanable_dirty_ratio_ppm {
            return true;
        }
        let now_ms = self.shared.env.clock.now_ms();
        config.max_compaction_lag_ms != i64::MAX
            && view
                .first_dirty_max_timestamp
                .is_some_and(|newest| now_ms.saturating_sub(newest) > config.max_compaction_lag_ms)
    }

    /// Rolls the active segment of a compacted log once it is older than
    /// max.compaction.lag.ms (KIP-354), so its records become cleanable in time.
    pub fn roll_for_compaction_lag(&self) {
        let now_ms = self.shared.env.clock.now_ms();
        let mut state = self.shared.state.borrow_mut();
        let max_lag = state.config.max_compaction_lag_ms;
        if !state.config.compact || max_lag == i64::MAX {
            return;
        }
        let active = state.segments.back().expect("a log always has an active segment");
        if active.size > 0 && now_ms.saturating_sub(active.created_ms) > max_lag {
            state.roll_requested = true;
        }
    }

    /// The cleaner's counters and checkpoint for this log.
    pub fn clean_state(&self) -> super::clean_state::CleanState {
        self.shared.state.borrow().clean.clone()
    }
}

/// Runs one round: cleans every log of `logs` that wants it, dirtiest first. Returns
/// the reports of the passes that ran.
pub async fn clean_round(config: &CleanerConfig, logs: Vec<PartitionLog>) -> Vec<(PartitionLog, CleanReport)> {
    let mut candidates = Vec::new();
    for log in logs {
        let log_config = log.config();
        if !log_config.compact {
            continue;
        }
        log.roll_for_compaction_lag();
        if log_config.max_compaction_lag_ms != i64::MAX || log_config.min_compaction_lag_ms > 0 {
            if let Err(error) = log.load_dirty_indexes().await {
                tracing::warn!(dir = %log.dir().display(), %error, "cleaner could not load segment indexes");
                continue;
            }
        }
        let view = log.dirty_view();
        if log.wants_cleaning(&view) {
            candidates.push((view.ratio_ppm(), log));
        }
    }
    candidates.sort_by_key(|(ratio, _)| std::cmp::Reverse(*ratio));
    let mut done = Vec::new();
    for (_, log) in candidates {
        match log.clean(config).await {
            Ok(report) => {
                let probes = crate::metrics::probes();
                probes.cleaner_passes.add(1);
                probes.cleaner_bytes_read.add(report.bytes_read);
                probes.cleaner_bytes_written.add(report.bytes_written);
                probes.cleaner_records_removed.add(report.records_removed);
                tracing::info!(
                    dir = %log.dir().display(),
                    segments = report.segments_replaced,
                    bytes_before = report.bytes_before,
                    bytes_after = report.bytes_after,
                    records_removed = report.records_removed,
                    keys = report.keys_mapped,
                    first_dirty = %report.first_dirty,
                    "cleaned log"
                );
                done.push((log, report));
            }
            Err(super::StorageError::Closed) => {}
            Err(error) => tracing::warn!(dir = %log.dir().display(), %error, "cleaner pass failed"),
        }
        glommio::yield_if_needed().await;
    }
    done
}

/// Runs the cleaner over `logs()` every `config.backoff`, in a low-priority task queue
/// of the current shard. `logs` returns the shard's live logs at each round.
pub fn spawn_cleaner_task(config: CleanerConfig, logs: Rc<dyn Fn() -> Vec<PartitionLog>>) -> glommio::Task<()> {
    let queue = glommio::executor().create_task_queue(Shares::Static(25), Latency::NotImportant, "cleaner");
    glommio::spawn_local_into(
        async move {
            loop {
                glommio::timer::sleep(config.backoff).await;
                clean_round(&config, logs()).await;
            }
        },
        queue,
    )
    .expect("the cleaner task queue was just created")
}
