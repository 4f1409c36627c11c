//! Retention: deleting whole closed segments by age (retention.ms), by total size
//! (retention.bytes) or because they lie wholly below the log start offset
//! (DeleteRecords). The active segment is never deleted.
//!
//! Runs in a background glommio task queue ([`spawn_retention_task`]) so it never
//! competes with request handling for latency. Order of a deletion: the segment leaves
//! the in-memory log, the new log start is checkpointed, then its files are unlinked, so
//! a crash in between cannot resurrect deleted data. A deleted segment's file may be
//! kept for the log's next segment (`recycle`).

use std::rc::Rc;
use std::time::Duration;

use glommio::{Latency, Shares};

use super::disk::sync_dir;
use super::error::StorageError;
use super::log::PartitionLog;
use super::offset::Offset;
use super::recycle::retire_segment;

/// What one retention pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

enum Verdict {
    Delete,
    Keep,
    NeedIndex(Offset),
}

impl PartitionLog {
    /// Deletes the closed segments that retention no longer keeps.
    pub async fn enforce_retention(&self) -> Result<RetentionReport, StorageError> {
        let mut report = RetentionReport::default();
        self.check_not_closed()?;
        // Not while the cleaner is replacing segments (and never both deleting).
        let gate = self.shared.state.borrow().maintenance_gate.clone();
        let _permit = gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        self.expire_producers();
        loop {
            self.check_not_closed()?;
            let verdict = self.retention_verdict();
            match verdict {
                Verdict::Keep => return Ok(report),
                Verdict::NeedIndex(base) => self.ensure_index(base).await?,
                Verdict::Delete => {
                    let (doomed, base, size, new_start) = {
                        let mut state = self.shared.state.borrow_mut();
                        let doomed = state.segments.pop_front().expect("verdict checked there are two segments");
                        let new_start = state.segments.front().expect("active segment remains").base_offset;
                        if state.offsets.advance_start(new_start) {
                            state.cache.drop_before(new_start);
                        }
                        let (base, size) = (doomed.base_offset, doomed.size);
                        (doomed, base, size, state.offsets.log_start())
                    };
                    let dir = self.shared.dir.clone();
                    let env = &self.shared.env;
                    self.persist_log_start().await?;
                    let kept = retire_segment(&self.shared, doomed).await.map_err(|e| StorageError::io(&dir, e))?;
                    sync_dir(&dir, env).await.map_err(|e| StorageError::io(&dir, e))?;
                    tracing::info!(dir = %dir.display(), segment = %base, bytes = size, log_start = %new_start, kept_for_reuse = kept, "retention deleted segment");
                    report.segments_deleted += 1;
                    report.bytes_deleted += size;
                }
            }
        }
    }

    fn retention_verdict(&self) -> Verdict {
        let state = self.shared.state.borrow();
        if state.segments.len() < 2 {
            return Verdict::Keep;
        }
        let oldest = &state.segments[0];
        // A segment the writer has not sealed yet (the log just rolled past it) may still
        // have unwritten, unacknowledged batches: never delete it.
        if !oldest.closed || oldest.next_offset > state.offsets.high_watermark() {
            return Verdict::Keep;
        }
        if oldest.next_offset <= state.offsets.log_start() {
            return Verdict::Delete;
        }
        let config = &state.config;
        if !config.delete_by_retention {
            // cleanup.policy=compact without delete: time and size never delete segments.
            return Verdict::Keep;
        }
        if config.retention_bytes >= 0 {
            let total: u64 = state.segments.iter().map(|s| s.size).sum();
            if total.saturating_sub(oldest.size) >= config.retention_bytes as u64 {
                return Verdict::Delete;
            }
        }
        if config.retention_ms >= 0 {
            let Some(max_timestamp) = oldest.max_timestamp() else {
                return Verdict::NeedIndex(oldest.base_offset);
            };
            let newest = if max_timestamp >= 0 { max_timestamp } else { oldest.modified_ms };
            if self.shared.env.clock.now_ms().saturating_sub(newest) > config.retention_ms {
                return Verdict::Delete;
            }
        }
        Verdict::Keep
    }
}

/// Runs retention over `logs()` every `interval` in a background task queue of the
/// current shard. `logs` returns the shard's live logs at each pass.
pub fn spawn_retention_task(interval: Duration, logs: Rc<dyn Fn() -> Vec<PartitionLog>>) -> glommio::Task<()> {
    let queue = glommio::executor().create_task_queue(Shares::Static(50), Latency::NotImportant, "retention");
    glommio::spawn_local_into(
        async move {
            loop {
                glommio::timer::sleep(interval).await;
                for log in logs() {
                    if let Err(error) = log.enforce_retention().await {
                        tracing::warn!(dir = %log.dir().display(), %error, "retention pass failed");
                    }
                    glommio::yield_if_needed().await;
                }
            }
        },
        queue,
    )
    .expect("the retention task queue was just created")
}
