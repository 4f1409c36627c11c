//! `PartitionLog`: the public face of one partition's log on the shard that owns it.
//!
//! Appends are validated, given offsets and queued synchronously, then acknowledged by
//! the group-commit writer ([`super::writer`]) once durable under the flush policy.
//! Reads serve whole batches below the high watermark, from the tail cache when it holds
//! them and from the segment files otherwise.
//!
//! Concurrency: the log is shard-local (`Rc` + `RefCell`). No `RefCell` borrow is held
//! across an `.await`; every async step re-borrows and re-checks what it needs.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;

use crate::protocol::record_batch::{self, validate_batch, BatchHeader};

use super::batch_cache::LogCache;
use super::clean_state::CleanState;
use super::config::{LogConfig, TimestampType, INDEX_ENTRY_BYTES_MAX};
use super::disk::{SegmentFile, StorageEnv};
use super::error::{AppendError, ReadError, StorageError};
use super::offset::{LogOffsets, LogStartOffset, Offset, OffsetTracker};
use super::producer_state::{ProducerStates, SequenceCheck};
use super::segment::{self, read_batches, OffsetRule, Segment, SegmentReadError, LOG_SUFFIX};
use super::txn_index::TxnIndex;
use super::validate;
use super::writer::{self, PendingWrite, WriterQueue};

/// Whether the log accepts work.
#[derive(Debug, Clone)]
pub(crate) enum Health {
    Healthy,
    /// A write or fsync failed; reads of acknowledged data still work, appends do not.
    Poisoned(StorageError),
    /// Corruption outside the recoverable tail; nothing works.
    Offline(StorageError),
    Closed,
}

#[derive(Debug)]
pub(crate) struct LogState {
    pub config: LogConfig,
    /// Ordered by base offset; the last one is active.
    pub segments: VecDeque<Segment>,
    /// log start, high watermark and log end, changed only through their methods.
    pub offsets: OffsetTracker,
    pub cache: LogCache,
    pub health: Health,
    pub writer: WriterQueue,
    /// Roll the active segment at the next append, whatever its size.
    pub roll_requested: bool,
    /// Tasks waiting for the high watermark to move (long-polling fetches), by waiter id.
    pub watchers: Vec<(u64, Waker)>,
    pub next_watcher_id: u64,
    /// `close` has begun: no new appends, queued ones are still written.
    pub closing: bool,
    /// Idempotent producers' recent batches (see `producer_state`).
    pub producers: ProducerStates,
    /// Serializes writes of the log-start checkpoint (DeleteRecords, retention).
    pub checkpoint_gate: Rc<glommio::sync::Semaphore>,
    /// Held by whatever replaces or deletes closed segments (retention, the cleaner), so
    /// one never works on segments the other is removing.
    pub maintenance_gate: Rc<glommio::sync::Semaphore>,
    /// Compaction: dirty offset, gapped segments, cleaner counters.
    pub clean: CleanState,
    /// Replicated logs: the cleaner leaves everything from here on alone (the replica's
    /// persisted Raft anchor: the batches after it are counted to find Raft indexes).
    pub clean_limit: Option<Offset>,
    /// Transactions abort markers closed (see `txn_index`).
    pub aborted: TxnIndex,
    /// Serializes writes of the aborted-transaction file.
    pub txn_index_gate: Rc<glommio::sync::Semaphore>,
    /// An abort reached `aborted` through a replicated append (`append_entry`) and the
    /// file does not have it yet (see `PartitionLog::take_unsaved_aborts`).
    pub aborted_unsaved: bool,
    /// A producer-state snapshot as of the segment a roll just started, to be written
    /// (see `producer_state`).
    pub roll_snapshot: Option<(Offset, Vec<u8>)>,
    /// Keeps transactional appends in arrival order while one waits for its
    /// coordinator's word (see `PartitionLog::transactional_gate`).
    pub transactional_gate: Rc<glommio::sync::Semaphore>,
    /// A retention-deleted segment's file kept for the next segment (see `recycle`).
    pub kept_file: Option<super::recycle::KeptFile>,
}

#[derive(Debug)]
pub(crate) struct LogShared {
    pub dir: PathBuf,
    pub env: StorageEnv,
    pub state: RefCell<LogState>,
}

/// One partition's log. Cheap to clone; all clones are the same log.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    pub(crate) shared: Rc<LogShared>,
}

/// What an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// Set when the topic uses LogAppendTime: the timestamp the broker stamped.
    pub log_append_time_ms: Option<i64>,
    pub log_start: LogStartOffset,
}

/// An append that has its offset but may not be durable yet. Await [`durable`] to
/// acknowledge it; dropping it does not cancel the write.
///
/// [`durable`]: PendingAppend::durable
#[derive(Debug)]
pub struct PendingAppend {
    pub info: AppendInfo,
    done: oneshot::Receiver<Result<(), StorageError>>,
    dir: PathBuf,
}

impl PendingAppend {
    /// Resolves once the batch is durable under the log's flush policy.
    pub async fn durable(self) -> Result<AppendInfo, StorageError> {
        match self.done.await {
            Ok(Ok(())) => Ok(self.info),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(StorageError::Offline { dir: self.dir, reason: "the log writer stopped".into() }),
        }
    }
}

/// Batches read from a log, with the offsets at the time of the read.
#[derive(Debug, Clone)]
pub struct LogRead {
    /// Whole batches, back to back; concatenated they form a Fetch response's records.
    pub records: Vec<Bytes>,
    pub offsets: LogOffsets,
}

impl LogRead {
    pub fn bytes(&self) -> usize {
        self.records.iter().map(Bytes::len).sum()
    }
}

/// A timestamp lookup's answer: the first record with a timestamp `>=` the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampMatch {
    pub offset: Offset,
    pub timestamp: i64,
}

impl PartitionLog {
    /// Opens (recovering) or creates the log in `dir`. See [`super::recovery`].
    pub async fn open(dir: &Path, config: LogConfig, env: StorageEnv) -> Result<PartitionLog, StorageError> {
        super::recovery::open(dir, config, env).await
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn offsets(&self) -> LogOffsets {
        let state = self.shared.state.borrow();
        state.offsets.snapshot()
    }

    /// Everything below this is on this node's disk (on a replicated log it may be
    /// above the high watermark).
    pub fn durable_end(&self) -> Offset {
        self.shared.state.borrow().offsets.durable_end()
    }

    /// What this log shares with the shard's other logs (clock, disk, cache).
    pub fn storage_env(&self) -> StorageEnv {
        self.shared.env.clone()
    }

    pub fn config(&self) -> LogConfig {
        self.shared.state.borrow().config.clone()
    }

    /// Changes the configuration; it applies from the next append or retention pass.
    pub fn set_config(&self, config: LogConfig) -> Result<(), StorageError> {
        config.validate().map_err(|reason| StorageError::InvalidConfig { reason })?;
        let mut state = self.shared.state.borrow_mut();
        state.cache.set_enabled(config.use_batch_cache);
        state.config = config;
        Ok(())
    }

    /// Total bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.shared.state.borrow().segments.iter().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.shared.state.borrow().segments.len()
    }

    /// Base offsets of all segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        self.shared.state.borrow().segments.iter().map(|s| s.base_offset).collect()
    }

    /// Closes the active segment at the next append.
    pub fn request_roll(&self) {
        self.shared.state.borrow_mut().roll_requested = true;
    }

    /// Appends one batch and waits until it is durable under the flush policy.
    pub async fn append(&self, batch: BytesMut) -> Result<AppendInfo, AppendError> {
        Ok(self.append_nowait(batch)?.durable().await?)
    }

    /// Validates the batch, assigns its offsets, stamps it and queues it for the writer.
    /// Returns at once; the returned [`PendingAppend`] resolves when it is durable.
    /// Appends are written in the order this is called.
    pub fn append_nowait(&self, batch: BytesMut) -> Result<PendingAppend, AppendError> {
        let now_ms = self.shared.env.clock.now_ms();
        let mut guard = self.shared.state.borrow_mut();
        let state = &mut *guard;
        check_open(state)?;
        let base_offset = state.offsets.log_end();
        let accepted = accept_batch(state, batch, base_offset, now_ms)?;
        let enqueued = enqueue_batch(state, accepted.bytes, &accepted.header, accepted.log_append_time_ms, now_ms);
        let start_writer = state.writer.claim_writer();
        drop(guard);
        Ok(self.hand_out(enqueued, start_writer))
    }

    /// The leader's half of a replicated append: validates the batch, applies the topic's
    /// policy, checks and records the producer's sequence, and stamps it with
    /// `base_offset` and the leader `epoch`. The batch is not written here: it becomes a
    /// Raft entry, and every replica (this one included) writes it with
    /// [`PartitionLog::append_entry`] once Raft hands it out.
    pub fn prepare_entry(
        &self,
        batch: BytesMut,
        base_offset: Offset,
        epoch: i32,
    ) -> Result<PreparedEntry, AppendError> {
        let now_ms = self.shared.env.clock.now_ms();
        let mut guard = self.shared.state.borrow_mut();
        let state = &mut *guard;
        check_open(state)?;
        let mut accepted = accept_batch(state, batch, base_offset, now_ms)?;
        record_batch::set_partition_leader_epoch(&mut accepted.bytes, epoch);
        let next_offset = Offset(base_offset.value() + i64::from(accepted.header.last_offset_delta) + 1);
        Ok(PreparedEntry {
            bytes: accepted.bytes.freeze(),
            base_offset,
            next_offset,
            log_append_time_ms: accepted.log_append_time_ms,
        })
    }

    /// Writes a batch Raft has ordered (a replicated log's only way in): it goes at the
    /// log end exactly as given, which must be its stamped base offset (replicas hold
    /// identical logs). `record_producer` is false on the leader, which recorded the
    /// producer's sequence when it prepared the entry.
    pub fn append_entry(&self, batch: Bytes, record_producer: bool) -> Result<PendingAppend, AppendError> {
        let now_ms = self.shared.env.clock.now_ms();
        let mut guard = self.shared.state.borrow_mut();
        let state = &mut *guard;
        check_open(state)?;
        // The leader's own entries were validated when it prepared them; a follower
        // checks what arrives from the leader (as Kafka's followers check the CRC).
        let header = if record_producer {
            validate_batch(&batch, usize::MAX)?
        } else {
            crate::protocol::record_batch::BatchHeader::parse(&batch)?
        };
        let log_end = state.offsets.log_end();
        if header.base_offset != log_end.value() {
            return Err(StorageError::Offline {
                dir: self.shared.dir.clone(),
                reason: format!(
                    "replicated batch at offset {} does not continue the log at {log_end}",
                    header.base_offset
                ),
            }
            .into());
        }
        match crate::protocol::control_batch::marker_outcome(&batch, &header) {
            // A transaction marker, on every replica alike (the leader records nothing
            // for it when proposing): it closes the producer's transaction here.
            Some(committed) => {
                let coordinator_epoch =
                    crate::protocol::control_batch::marker_coordinator_epoch(&batch, &header).unwrap_or(-1);
                let completed = state.producers.record_marker(&header, committed, log_end, coordinator_epoch, now_ms);
                if let Some(txn) = &completed {
                    state.producers.remember_completion(log_end, txn);
                }
                if let Some(txn) = completed.filter(|t| !t.committed) {
                    state.aborted.push(super::txn_index::AbortedTxn {
                        producer_id: txn.producer_id,
                        first_offset: txn.first_offset,
                        last_offset: txn.last_offset,
                    });
                    state.aborted_unsaved = true;
                }
            }
            None if record_producer => state.producers.record(&header, log_end, now_ms),
            None => {}
        }
        let log_append_time_ms = header.is_log_append_time().then_some(header.max_timestamp);
        let enqueued = enqueue_batch(state, batch, &header, log_append_time_ms, now_ms);
        let start_writer = state.writer.claim_writer();
        drop(guard);
        Ok(self.hand_out(enqueued, start_writer))
    }

    /// Starts the writer when it was idle (with no state borrow held: glommio may poll
    /// a new task at once) and hands the append its completion.
    pub(crate) fn hand_out(&self, enqueued: EnqueuedBatch, start_writer: bool) -> PendingAppend {
        if start_writer {
            writer::spawn(self.shared.clone());
        }
        let roll_snapshot = self.shared.state.borrow_mut().roll_snapshot.take();
        if let Some((base, bytes)) = roll_snapshot {
            let dir = self.shared.dir.clone();
            let env = self.shared.env.clone();
            let log = self.clone();
            glommio::spawn_local(async move {
                // A recovery from this snapshot scans only the segments after it for
                // aborts: the index file must hold every abort before it first (a
                // replicated log's aborts reach it after their markers are written, and
                // the replica round that saves them may not have yet).
                let replicated_aborts = {
                    let state = log.shared.state.borrow();
                    state.offsets.is_replicated() && !state.aborted.is_empty()
                };
                if replicated_aborts {
                    if let Err(error) = log.persist_aborted_index().await {
                        tracing::warn!(dir = %dir.display(), %error, "could not save the aborted-transaction index at a roll");
                        return;
                    }
                }
                // Synced: a crash recovery starts from it for producers (and open
                // transactions) last seen before this segment. One file per base, so
                // two quick rolls never overwrite each other; the newest two are kept
                // (recovery falls back to the older one and scans a segment more).
                let path = dir.join(super::recovery::roll_snapshot_name(base));
                match super::disk::write_file_atomic(&path, &bytes, &env).await {
                    Ok(()) => super::recovery::remove_old_roll_snapshots(&dir, base, &env).await,
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %base, %error, "could not write the producer state at a roll")
                    }
                }
            })
            .detach();
        }
        PendingAppend { info: enqueued.info, done: enqueued.done, dir: self.shared.dir.clone() }
    }

    /// Turns this log into a replica of a Raft group that has committed everything
    /// below `commit`: the high watermark follows the commit from now on.
    pub fn replicate(&self, commit: Offset) {
        let mut state = self.shared.state.borrow_mut();
        state.offsets.replicate(commit);
        wake_watchers(&mut state);
    }

    /// The group committed everything below `commit`.
    pub fn set_commit(&self, commit: Offset) {
        let mut state = self.shared.state.borrow_mut();
        if state.offsets.set_commit(commit) {
            state.producers.forget_completions_below(commit);
            wake_watchers(&mut state);
        }
    }

    /// Keeps the cleaner below `offset` (see `LogState::clean_limit`).
    pub fn set_clean_limit(&self, offset: Offset) {
        self.shared.state.borrow_mut().clean_limit = Some(offset);
    }

    /// Forgets producer sequences recorded for offsets at or after `offset` (entries a
    /// deposed leader prepared that will never be written).
    pub fn forget_producers_from(&self, offset: Offset) {
        self.shared.state.borrow_mut().producers.forget_from(offset);
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one batch,
    /// KIP-74), all below the high watermark. An offset equal to the high watermark reads
    /// nothing; one outside `log_start..=high_watermark` is out of range.
    pub async fn read(&self, offset: Offset, max_bytes: usize) -> Result<LogRead, ReadError> {
        self.read_isolated(offset, max_bytes, Isolation::ReadUncommitted).await
    }

    /// [`PartitionLog::read`] below the limit `isolation` sets.
    pub async fn read_isolated(
        &self,
        offset: Offset,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<LogRead, ReadError> {
        let mut restarts = 0;
        'restart: loop {
            let (mut segment_base, high_watermark, offsets) = match self.start_read(offset, max_bytes, isolation)? {
                ReadStart::Done(records, offsets) => return Ok(LogRead { records, offsets }),
                ReadStart::Segment { base, high_watermark, offsets } => (base, high_watermark, offsets),
            };
            let mut from = offset;
            let mut rebuilt = false;
            loop {
                let plan = match self.prepare_segment_read(segment_base, from).await {
                    Err(error) if is_segment_gone(&error) && restarts < SEGMENT_GONE_RESTARTS => {
                        restarts += 1;
                        continue 'restart;
                    }
                    other => other?,
                };
                let read =
                    read_batches(&plan.file, plan.position, plan.end, from, high_watermark, max_bytes, plan.rule);
                let problem = match read.await {
                    Ok(bytes) if bytes.is_empty() => match self.after_gap(segment_base, plan.rule, high_watermark) {
                        GapStep::Next(next) => {
                            (segment_base, from, rebuilt) = (next, from.max(next), false);
                            continue;
                        }
                        GapStep::Nothing => return Ok(LogRead { records: Vec::new(), offsets }),
                        GapStep::Missing => {
                            format!("segment {segment_base} has no batch for offset {from} below its end")
                        }
                    },
                    Ok(bytes) => return Ok(LogRead { records: vec![bytes], offsets }),
                    Err(SegmentReadError::Io(error)) => return Err(StorageError::io(plan.file.path(), error).into()),
                    Err(SegmentReadError::Corrupt { position, reason }) => {
                        format!("segment {segment_base} is corrupt at position {position}: {reason}")
                    }
                };
                self.recover_from_bad_read(segment_base, problem, rebuilt).await?;
                rebuilt = true;
            }
        }
    }

    /// Where a read goes after a segment held nothing at or after its offset. In a
    /// cleaned segment that is a gap left by compaction: go on with the next segment
    /// (or stop at the high watermark). In any other segment it is an error.
    pub(crate) fn after_gap(&self, segment_base: Offset, rule: OffsetRule, high_watermark: Offset) -> GapStep {
        if rule != OffsetRule::Increasing {
            return GapStep::Missing;
        }
        let state = self.shared.state.borrow();
        match state.segments.iter().find(|s| s.base_offset > segment_base) {
            Some(next) if next.base_offset < high_watermark => GapStep::Next(next.base_offset),
            Some(_) => GapStep::Nothing,
            None => GapStep::Missing,
        }
    }

    /// After a segment read found no batch or a corrupt one: a damaged index can point
    /// into the middle of the data, so a closed segment's index is rebuilt from the
    /// segment once (the caller retries); if the data itself is bad, the rebuild's scan
    /// says so, and a second failure or an active segment takes the partition offline.
    pub(crate) async fn recover_from_bad_read(
        &self,
        segment_base: Offset,
        problem: String,
        already_rebuilt: bool,
    ) -> Result<(), ReadError> {
        let closed = self.with_segment(segment_base, |s| s.closed)?;
        if already_rebuilt || !closed {
            return Err(self.take_offline(problem).into());
        }
        tracing::warn!(dir = %self.shared.dir.display(), %problem, "rebuilding the segment's index and retrying");
        self.with_segment_mut(segment_base, |s| s.index = None)?;
        self.ensure_index_from(segment_base, false).await?;
        Ok(())
    }

    /// The checks and the cache lookup every read starts with: an offset out of range is
    /// an error; at the readable limit (the high watermark, or for read_committed the
    /// last stable offset) the answer is empty; a cache hit is the answer; otherwise the
    /// read goes to the segment holding `offset`.
    pub(crate) fn start_read(
        &self,
        offset: Offset,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<ReadStart, ReadError> {
        let state = self.shared.state.borrow();
        check_readable(&state.health)?;
        let offsets = state.offsets.snapshot();
        if offset < state.offsets.log_start() || offset > state.offsets.high_watermark() {
            return Err(ReadError::OffsetOutOfRange {
                requested: offset,
                log_start: state.offsets.log_start(),
                high_watermark: state.offsets.high_watermark(),
            });
        }
        let limit = match isolation {
            Isolation::ReadUncommitted => state.offsets.high_watermark(),
            Isolation::ReadCommitted => last_stable_offset(&state),
        };
        if offset >= limit {
            return Ok(ReadStart::Done(Vec::new(), offsets));
        }
        if let Some(records) = state.cache.read(offset, limit, max_bytes) {
            let bytes: usize = records.iter().map(Bytes::len).sum();
            crate::metrics::probes().batch_cache_bytes_served.add(bytes as u64);
            return Ok(ReadStart::Done(records, offsets));
        }
        let base = segment_for(&state.segments, offset).base_offset;
        Ok(ReadStart::Segment { base, high_watermark: limit, offsets })
    }

    /// The file, start position and readable end for reading `offset` in a segment,
    /// opening the file and loading its index if this is the first use.
    pub(crate) async fn prepare_segment_read(
        &self,
        segment_base: Offset,
        offset: Offset,
    ) -> Result<SegmentReadPlan, StorageError> {
        let opened = self.segment_file(segment_base).await?;
        self.ensure_index(segment_base).await?;
        // Look the segment up again by base: retention may have removed it meanwhile, or
        // the cleaner replaced it (then its file, index and size are all the new ones).
        let state = self.shared.state.borrow();
        let Some(segment) = state.segments.iter().find(|s| s.base_offset == segment_base) else {
            return Err(self.gone(segment_base));
        };
        assert!(offset >= segment.base_offset, "reads start inside or after the segment");
        let Some(index) = segment.index.as_ref() else { return Err(self.gone(segment_base)) };
        let relative = (offset.value() - segment.base_offset.value()).min(i64::from(u32::MAX)) as u32;
        Ok(SegmentReadPlan {
            file: segment.file.clone().unwrap_or(opened),
            position: u64::from(index.position_for(relative)),
            end: segment.written_size,
            rule: state.clean.rule_for(segment),
        })
    }

    /// The open file of a segment, opened now if it is a closed segment not yet used.
    pub(crate) async fn segment_file(&self, segment_base: Offset) -> Result<Rc<SegmentFile>, StorageError> {
        self.check_not_closed()?;
        if let Some(file) = self.with_segment(segment_base, |s| s.file.clone())? {
            return Ok(file);
        }
        let path = segment::segment_path(&self.shared.dir, segment_base, LOG_SUFFIX);
        let file =
            Rc::new(SegmentFile::open(&path, &self.shared.env, false).await.map_err(|e| StorageError::io(&path, e))?);
        // Another task may have opened it meanwhile; keep whichever is stored.
        self.with_segment_mut(segment_base, |s| s.file.get_or_insert(file).clone())
    }

    /// Loads (or rebuilds) a closed segment's index if it is not in memory.
    pub(crate) async fn ensure_index(&self, segment_base: Offset) -> Result<(), StorageError> {
        self.ensure_index_from(segment_base, true).await
    }

    /// Like `ensure_index`; with `trust_files == false` the index files are ignored and
    /// the index is rebuilt by scanning the segment.
    pub(crate) async fn ensure_index_from(&self, segment_base: Offset, trust_files: bool) -> Result<(), StorageError> {
        if self.with_segment(segment_base, |s| s.index.is_some())? {
            return Ok(());
        }
        let file = self.segment_file(segment_base).await?;
        let (size, next_offset, rule, closed) = {
            let state = self.shared.state.borrow();
            match state.segments.iter().find(|s| s.base_offset == segment_base) {
                Some(s) => (s.size, s.next_offset, state.clean.rule_for(s), s.closed),
                None => return Err(self.gone(segment_base)),
            }
        };
        match super::recovery::load_index(
            &self.shared.dir,
            &file,
            super::recovery::SegmentExtent { base: segment_base, next_offset, size, rule },
            &self.shared.env,
            trust_files,
        )
        .await
        {
            Ok(index) => {
                self.with_segment_mut(segment_base, |s| {
                    s.index.get_or_insert(index);
                })?;
                Ok(())
            }
            Err(super::recovery::IndexLoadError::Io(error)) => Err(StorageError::io(file.path(), error)),
            Err(super::recovery::IndexLoadError::Corrupt(reason)) if rule == OffsetRule::Contiguous && closed => {
                self.load_index_of_unrecorded_cleaned_segment(&file, segment_base, next_offset, size, reason).await
            }
            Err(super::recovery::IndexLoadError::Corrupt(reason)) => Err(self.take_offline(reason)),
        }
    }

    /// Background work (the cleaner) stops once `close` has begun.
    pub(crate) fn check_not_closing(&self) -> Result<(), StorageError> {
        let state = self.shared.state.borrow();
        match state.health {
            Health::Closed => Err(StorageError::Closed),
            _ if state.closing => Err(StorageError::Closed),
            _ => Ok(()),
        }
    }

    /// A closed segment failed the strict (contiguous) scan. If it reads as a cleaned
    /// segment (every batch intact, offsets increasing with gaps) and the cleaner
    /// checkpoint that should have said so was lost, it is one: the checkpoint's
    /// `gaps_below` is raised past it (and saved, best effort) so reads use the gap-aware
    /// rules. Anything else is corruption and takes the partition offline.
    async fn load_index_of_unrecorded_cleaned_segment(
        &self,
        file: &Rc<SegmentFile>,
        segment_base: Offset,
        next_offset: Offset,
        size: u64,
        strict_failure: String,
    ) -> Result<(), StorageError> {
        let extent =
            super::recovery::SegmentExtent { base: segment_base, next_offset, size, rule: OffsetRule::Increasing };
        match super::recovery::load_index(&self.shared.dir, file, extent, &self.shared.env, false).await {
            Ok(index) => {
                tracing::warn!(dir = %self.shared.dir.display(), segment = %segment_base, "segment has compaction gaps the cleaner checkpoint does not record; reading it as a cleaned segment");
                let checkpoint = {
                    let mut state = self.shared.state.borrow_mut();
                    state.clean.checkpoint.gaps_below = state.clean.checkpoint.gaps_below.max(next_offset);
                    state.clean.checkpoint
                };
                self.with_segment_mut(segment_base, |s| {
                    s.index.get_or_insert(index);
                })?;
                if let Err(error) =
                    super::clean_state::write_checkpoint(&self.shared.dir, checkpoint, &self.shared.env).await
                {
                    tracing::warn!(dir = %self.shared.dir.display(), %error, "could not save the cleaner checkpoint");
                }
                Ok(())
            }
            Err(super::recovery::IndexLoadError::Io(error)) => Err(StorageError::io(file.path(), error)),
            Err(super::recovery::IndexLoadError::Corrupt(_)) => Err(self.take_offline(strict_failure)),
        }
    }

    /// A closed log does no more file work: its directory may already be gone, or reused
    /// by a topic of the same name.
    pub(crate) fn check_not_closed(&self) -> Result<(), StorageError> {
        match self.shared.state.borrow().health {
            Health::Closed => Err(StorageError::Closed),
            _ => Ok(()),
        }
    }

    pub(crate) fn with_segment<T>(&self, base: Offset, f: impl FnOnce(&Segment) -> T) -> Result<T, StorageError> {
        let state = self.shared.state.borrow();
        match state.segments.iter().find(|s| s.base_offset == base) {
            Some(segment) => Ok(f(segment)),
            None => Err(self.gone(base)),
        }
    }

    pub(crate) fn with_segment_mut<T>(
        &self,
        base: Offset,
        f: impl FnOnce(&mut Segment) -> T,
    ) -> Result<T, StorageError> {
        let mut state = self.shared.state.borrow_mut();
        match state.segments.iter_mut().find(|s| s.base_offset == base) {
            Some(segment) => Ok(f(segment)),
            None => Err(self.gone(base)),
        }
    }

    pub(crate) fn gone(&self, base: Offset) -> StorageError {
        StorageError::Io {
            path: segment::segment_path(&self.shared.dir, base, LOG_SUFFIX),
            cause: std::sync::Arc::new(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "segment was deleted by retention while in use: retry from the log start",
            )),
        }
    }

    /// Marks the log offline (corruption found outside the recoverable tail) and fails
    /// everything waiting on it. Other logs are unaffected.
    pub(crate) fn take_offline(&self, reason: String) -> StorageError {
        let error = StorageError::Offline { dir: self.shared.dir.clone(), reason };
        tracing::error!(dir = %self.shared.dir.display(), %error, "partition taken offline");
        let mut state = self.shared.state.borrow_mut();
        state.health = Health::Offline(error.clone());
        state.writer.fail_all(&error);
        wake_watchers(&mut state);
        error
    }

    /// Moves the log start offset forward to `offset` (DeleteRecords). Segments wholly
    /// below it are removed by the next retention pass. Returns the new log start.
    pub async fn delete_records(&self, offset: Offset) -> Result<LogStartOffset, ReadError> {
        {
            let state = self.shared.state.borrow();
            check_writable(&state.health).map_err(ReadError::Storage)?;
            if offset > state.offsets.high_watermark() || offset < Offset(0) {
                return Err(ReadError::OffsetOutOfRange {
                    requested: offset,
                    log_start: state.offsets.log_start(),
                    high_watermark: state.offsets.high_watermark(),
                });
            }
            if offset <= state.offsets.log_start() {
                return Ok(LogStartOffset(state.offsets.log_start()));
            }
        }
        {
            let mut state = self.shared.state.borrow_mut();
            if offset > state.offsets.log_start() {
                state.offsets.advance_start(offset);
                state.cache.drop_before(offset);
            }
        }
        self.persist_log_start().await?;
        Ok(LogStartOffset(self.shared.state.borrow().offsets.log_start()))
    }

    /// Forgets idempotent producers idle longer than `PRODUCER_ID_EXPIRATION_MS`.
    pub(crate) fn expire_producers(&self) {
        let now_ms = self.shared.env.clock.now_ms();
        self.shared.state.borrow_mut().producers.expire(now_ms, super::producer_state::PRODUCER_ID_EXPIRATION_MS);
    }

    /// Writes the current log start to its checkpoint. Writers are serialized and each
    /// writes the value current when it holds the gate, so the file never goes backwards.
    pub(crate) async fn persist_log_start(&self) -> Result<(), StorageError> {
        self.check_not_closed()?;
        let gate = self.shared.state.borrow().checkpoint_gate.clone();
        let _permit = gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        let start = self.shared.state.borrow().offsets.log_start();
        super::recovery::write_log_start_checkpoint(&self.shared.dir, start, &self.shared.env)
            .await
            .map_err(|e| StorageError::io(&self.shared.dir, e))
    }

    /// Resolves when the high watermark is past `offset`, or the log fails or closes.
    /// Long-polling fetches race this against their max wait.
    pub fn wait_for_high_watermark_beyond(&self, offset: Offset) -> HighWatermarkWait {
        let id = {
            let mut state = self.shared.state.borrow_mut();
            state.next_watcher_id += 1;
            state.next_watcher_id
        };
        HighWatermarkWait { log: self.clone(), offset, id }
    }

    /// Writes everything queued, syncs it, trims the active segment's preallocated space
    /// and closes the log. Later calls fail with a storage error.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.shared.state.borrow_mut().closing = true;
        writer::drain(&self.shared).await?;
        // A cleaner pass or retention in progress stops at its next batch (it checks
        // `closing`) or finishes its swap: no file work on this log after close returns.
        let gate = self.shared.state.borrow().maintenance_gate.clone();
        let _permit = gate.acquire_permit(1).await;
        let (active_file, was_healthy) = {
            let mut state = self.shared.state.borrow_mut();
            if matches!(state.health, Health::Closed) {
                return Ok(());
            }
            let was_healthy = matches!(state.health, Health::Healthy);
            let active = state.segments.back().expect("active segment");
            let file = active.file.clone().map(|f| (f, active.size, state.writer.all_written_is_synced()));
            state.health = Health::Closed;
            wake_watchers(&mut state);
            (file, was_healthy)
        };
        let (producers, log_end) = {
            let state = self.shared.state.borrow();
            (state.producers.encode(state.offsets.log_end()), state.offsets.log_end())
        };
        let snapshot = self.shared.dir.join(super::recovery::PRODUCER_SNAPSHOT);
        // The snapshot and the marker are hints: lost in a power failure right after the
        // close, they only make the next open scan the tail (so no directory sync).
        let snapshot_saved = match super::disk::write_hint_file(&snapshot, &producers, &self.shared.env).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(path = %snapshot.display(), %log_end, %error, "could not save producer state; it will be rebuilt");
                false
            }
        };
        if let Some((file, size, synced)) = active_file {
            // The data is synced; the truncation of the preallocated tail is not: if a power
            // failure loses it, the tail's zeros are cut by the next open's scan (the
            // marker, which names the exact size, then does not match and is ignored).
            let result = async {
                if !synced {
                    file.sync_data().await?;
                }
                file.truncate(size).await
            }
            .await;
            result.map_err(|e| StorageError::io(file.path(), e))?;
        }
        if was_healthy && snapshot_saved {
            self.write_clean_shutdown_marker().await;
        }
        Ok(())
    }

    /// Lets the next open skip the tail scan (see `clean_shutdown`). Best effort: without
    /// the marker the next open scans.
    async fn write_clean_shutdown_marker(&self) {
        let summary = {
            let state = self.shared.state.borrow();
            let active = state.segments.back().expect("active segment");
            let Some(index) = active.index.as_ref() else { return };
            super::clean_shutdown::TailSummary::of(
                active.base_offset,
                active.size,
                active.next_offset,
                active.created_ms,
                index,
            )
        };
        let path = self.shared.dir.join(super::clean_shutdown::CLEAN_SHUTDOWN_MARKER);
        if let Err(error) = super::disk::write_hint_file(&path, &summary.encode(), &self.shared.env).await {
            tracing::warn!(path = %path.display(), %error, "could not write the clean-shutdown marker; the next open scans the tail");
        }
    }
}

/// The log takes appends: healthy and not closing.
pub(crate) fn check_open(state: &LogState) -> Result<(), AppendError> {
    check_writable(&state.health)?;
    if state.closing {
        return Err(StorageError::Closed.into());
    }
    Ok(())
}

/// A batch that passed validation, the topic's policy and the producer check.
struct AcceptedBatch {
    bytes: BytesMut,
    header: BatchHeader,
    log_append_time_ms: Option<i64>,
}

/// A leader's batch ready to become a Raft entry (see [`PartitionLog::prepare_entry`]).
#[derive(Debug, Clone)]
pub struct PreparedEntry {
    pub bytes: Bytes,
    pub base_offset: Offset,
    /// Offset after the batch's last record.
    pub next_offset: Offset,
    pub log_append_time_ms: Option<i64>,
}

/// Validates a client's batch, applies the topic's policy, checks and records the
/// producer's sequence as of `base_offset`, and stamps the offset (and LogAppendTime).
fn accept_batch(
    state: &mut LogState,
    batch: BytesMut,
    base_offset: Offset,
    now_ms: i64,
) -> Result<AcceptedBatch, AppendError> {
    let header = validate_batch(&batch, state.config.max_message_bytes)?;
    if header.is_control() {
        return Err(AppendError::InvalidRecord { reason: "control batches are written by the broker only".into() });
    }
    if header.is_transactional() && !ProducerStates::is_idempotent(&header) {
        return Err(AppendError::InvalidRecord {
            reason: "a transactional batch needs a producer id and sequence".into(),
        });
    }
    let (mut batch, header) = validate::apply_topic_policy(batch, header, &state.config, now_ms)?;
    match state.producers.check(&header) {
        SequenceCheck::Append => {}
        SequenceCheck::Duplicate(original) => {
            return Err(AppendError::Duplicate { base_offset: original.base_offset, last_offset: original.last_offset })
        }
        SequenceCheck::OutOfOrder { expected, received } => {
            return Err(AppendError::OutOfOrderSequence { expected, received })
        }
        SequenceCheck::Fenced { current_epoch } => return Err(AppendError::ProducerFenced { current_epoch }),
    }
    state.producers.record(&header, base_offset, now_ms);
    record_batch::set_base_offset(&mut batch, base_offset.value());
    let log_append_time_ms = match state.config.timestamp_type {
        TimestampType::LogAppendTime => {
            record_batch::set_log_append_time(&mut batch, now_ms);
            Some(now_ms)
        }
        TimestampType::CreateTime => None,
    };
    Ok(AcceptedBatch { bytes: batch, header, log_append_time_ms })
}

/// An enqueued batch: what it was given and the completion of its write.
pub(crate) struct EnqueuedBatch {
    info: AppendInfo,
    done: oneshot::Receiver<Result<(), StorageError>>,
}

/// Puts a stamped batch at the log end: rolls the segment if due, indexes it, caches it
/// and queues it for the writer (the caller starts the writer if it was idle).
pub(crate) fn enqueue_batch(
    state: &mut LogState,
    batch: impl Into<Bytes>,
    header: &BatchHeader,
    log_append_time_ms: Option<i64>,
    now_ms: i64,
) -> EnqueuedBatch {
    if should_roll(state, header, now_ms) {
        let base = state.offsets.log_end();
        state.segments.push_back(Segment::new_active(base, now_ms));
        state.roll_requested = false;
        // The producers as of the new segment's base (this batch was already recorded),
        // so a crash recovery that scans only this segment still knows older producers
        // and their open transactions.
        let mut producers = state.producers.clone();
        producers.forget_from(base);
        state.roll_snapshot = Some((base, producers.encode(base)));
    }
    let base_offset = state.offsets.log_end();
    let max_timestamp = log_append_time_ms.unwrap_or(header.max_timestamp);
    let next_offset = Offset(base_offset.value() + i64::from(header.last_offset_delta) + 1);
    let bytes: Bytes = batch.into();

    let active = state.segments.back_mut().expect("a log always has an active segment");
    let relative = active.relative(base_offset);
    let position = u32::try_from(active.size).expect("segment positions fit in u32");
    if active.size == 0 {
        active.created_ms = now_ms;
    }
    let index = active.index.as_mut().expect("the active segment's index is in memory");
    index.set_interval_bytes(state.config.index_interval_bytes);
    index.on_batch(relative, position, bytes.len() as u32, max_timestamp);
    let max_timestamp_after = (index.max_timestamp(), index.relative_offset_of_max_timestamp());
    active.size += bytes.len() as u64;
    active.next_offset = next_offset;
    let segment_base = active.base_offset;
    state.offsets.assign_through(next_offset);

    state.cache.push(base_offset, next_offset, bytes.clone());
    let done = state.writer.enqueue(PendingWrite::new(segment_base, bytes, next_offset, max_timestamp_after));
    let info = AppendInfo {
        base_offset,
        last_offset: Offset(next_offset.value() - 1),
        log_append_time_ms,
        log_start: LogStartOffset(state.offsets.log_start()),
    };
    EnqueuedBatch { info, done }
}

/// Restarts of a read whose segment was replaced (by the cleaner) or deleted (by
/// retention) while it was being read.
pub(crate) const SEGMENT_GONE_RESTARTS: u32 = 3;

/// The segment a read was planned on is no longer in the log.
pub(crate) fn is_segment_gone(error: &StorageError) -> bool {
    matches!(error, StorageError::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound)
}

/// A consistent view of one segment for a read: file, start position, readable end and
/// offset rule, all taken from the segment at the same moment.
#[derive(Debug)]
pub(crate) struct SegmentReadPlan {
    pub file: Rc<SegmentFile>,
    pub position: u64,
    pub end: u64,
    pub rule: OffsetRule,
}

/// What follows a segment that held nothing for a read (`PartitionLog::after_gap`).
pub(crate) enum GapStep {
    /// Go on at this segment.
    Next(Offset),
    /// Nothing below the high watermark: an empty answer.
    Nothing,
    /// Not a gap: the batch should have been there.
    Missing,
}

/// Which records a read may return (Fetch's isolation level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Everything below the high watermark.
    #[default]
    ReadUncommitted,
    /// Everything below the last stable offset: no record of an open transaction.
    ReadCommitted,
}

/// The last stable offset: the high watermark, or the first offset of the oldest open
/// transaction when that is lower.
pub(crate) fn last_stable_offset(state: &LogState) -> Offset {
    let high_watermark = state.offsets.high_watermark();
    // Never below the log start (retention or DeleteRecords may pass an open
    // transaction's first batch).
    let first_open = state.producers.first_unstable_offset().map(|first| first.max(state.offsets.log_start()));
    first_open.map_or(high_watermark, |first| first.min(high_watermark))
}

/// How a read begins (`PartitionLog::start_read`).
pub(crate) enum ReadStart {
    /// Answered without the segments: nothing to read, or a batch cache hit.
    Done(Vec<Bytes>, LogOffsets),
    /// Read from the segment with this base offset, below `high_watermark`.
    Segment { base: Offset, high_watermark: Offset, offsets: LogOffsets },
}

/// Future returned by [`PartitionLog::wait_for_high_watermark_beyond`].
#[derive(Debug)]
pub struct HighWatermarkWait {
    log: PartitionLog,
    offset: Offset,
    id: u64,
}

impl Drop for HighWatermarkWait {
    fn drop(&mut self) {
        let mut state = self.log.shared.state.borrow_mut();
        state.watchers.retain(|(id, _)| *id != self.id);
    }
}

impl Future for HighWatermarkWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.log.shared.state.borrow_mut();
        // A poisoned log's high watermark never moves again, but it stays readable: the
        // waiter simply runs into its own timeout.
        if state.offsets.high_watermark() > self.offset || matches!(state.health, Health::Offline(_) | Health::Closed) {
            return Poll::Ready(());
        }
        let id = self.id;
        match state.watchers.iter_mut().find(|(watcher, _)| *watcher == id) {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => state.watchers.push((id, cx.waker().clone())),
        }
        Poll::Pending
    }
}

pub(crate) fn wake_watchers(state: &mut LogState) {
    for (_, waker) in state.watchers.drain(..) {
        waker.wake();
    }
}

/// The segment holding `offset`: the last one whose base is `<= offset`.
pub(crate) fn segment_for(segments: &VecDeque<Segment>, offset: Offset) -> &Segment {
    let n = segments.partition_point(|s| s.base_offset <= offset);
    &segments[n.saturating_sub(1)]
}

fn should_roll(state: &LogState, header: &BatchHeader, now_ms: i64) -> bool {
    let active = state.segments.back().expect("active segment");
    if active.size == 0 {
        return false;
    }
    let relative_end =
        state.offsets.log_end().value() + i64::from(header.last_offset_delta) - active.base_offset.value();
    let index_full = active
        .index
        .as_ref()
        .is_some_and(|index| index.file_bytes_max() + INDEX_ENTRY_BYTES_MAX > state.config.segment_index_bytes);
    state.roll_requested
        || active.size + header.total_bytes as u64 > state.config.segment_bytes
        || now_ms.saturating_sub(active.created_ms) >= roll_after_ms(&state.config, active.base_offset)
        || relative_end > i64::from(i32::MAX)
        || index_full
}

/// segment.ms less this segment's share of segment.jitter.ms. Kafka draws the jitter at
/// random when a segment is created; here it is a hash of the segment's base offset, so
/// it is the same after a restart and needs no storing.
fn roll_after_ms(config: &LogConfig, base_offset: Offset) -> i64 {
    if config.segment_jitter_ms <= 0 {
        return config.segment_ms;
    }
    let spread = (base_offset.value() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1;
    let jitter = (spread % config.segment_jitter_ms.min(config.segment_ms) as u64) as i64;
    config.segment_ms - jitter
}

fn check_writable(health: &Health) -> Result<(), StorageError> {
    match health {
        Health::Healthy => Ok(()),
        Health::Poisoned(error) | Health::Offline(error) => Err(error.clone()),
        Health::Closed => Err(StorageError::Closed),
    }
}

pub(crate) fn check_readable(health: &Health) -> Result<(), ReadError> {
    match health {
        Health::Healthy | Health::Poisoned(_) => Ok(()),
        Health::Offline(error) => Err(error.clone().into()),
        Health::Closed => Err(StorageError::Closed.into()),
    }
}
