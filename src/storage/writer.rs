//! Group commit: the one writer task of a log.
//!
//! Appends queue [`PendingWrite`]s and a completion; whoever finds the writer idle spawns
//! it. The write task takes everything queued for the active segment (up to
//! [`WRITE_BYTES_MAX`]) as one *round*: one DMA write that starts with the partial last
//! block already on disk (O_DIRECT writes whole blocks). Appends arriving during a
//! round's write form the next round, so under load one round carries many produce
//! requests.
//!
//! How a round becomes durable depends on the file:
//! - under the durable policy (the default) the active segment is *write-through*
//!   (O_DSYNC, [`SegmentFile`]): the round is durable when its write completes, one
//!   io_uring operation for write and flush, acknowledged at once;
//! - otherwise (the interval policy, or a file written before the policy changed) a
//!   separate sync task runs fdatasync for whatever has been written; one fdatasync
//!   acknowledges every round written before it started, and while round N syncs,
//!   round N+1 is written.
//!
//! The writer switches the active file's mode on its next round when the topic's flush
//! policy changes. `tern serve --sync-mode fdatasync` keeps the second way for the
//! durable policy too.
//!
//! Rounds never span segments. The first round of a new segment seals the previous one
//! (sync, trim preallocated space, write its index files) and creates the new file.
//!
//! Failure policy:
//! - ENOSPC/EDQUOT (disk full): the round and everything queued behind it fail with
//!   `DiskFull`; the in-memory log rolls back to the end of the last completed write
//!   (those offsets never reached the disk and were never acknowledged), and later
//!   appends work again once space is freed;
//! - any other write or fsync error poisons the log: every waiter and every later append
//!   fails with `Poisoned`. Nothing is retried, because after a failed fsync the kernel
//!   may have dropped the dirty pages and a retry could report success for lost data.

use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use crate::warn_limit::WarningLimiter;

use super::config::{FlushPolicy, SyncMode, PREALLOCATE_STEP_BYTES, PREALLOCATE_STEP_MIN_BYTES, WRITE_BYTES_MAX};
use super::disk::{align_down, align_up, sync_dir, write_file_atomic, SegmentFile};
use super::error::{is_disk_full, StorageError};
use super::log::{wake_watchers, Health, LogShared, LogState};
use super::offset::Offset;
use super::recycle;
use super::segment::{segment_path, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX};
use super::write_buffer;

type Completion = oneshot::Sender<Result<(), StorageError>>;

/// When a log of any shard last started a write round, in nanoseconds after
/// [`write_clock_origin`] (0: never). Process-wide, not per shard: the disk is shared, and
/// a cold read is sent by the shard of the consumer's connection, which need not be the
/// shard that owns the partitions being written.
static LAST_WRITE_ROUND_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn write_clock_origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn note_write_round(at: Instant) {
    let nanos = at.saturating_duration_since(write_clock_origin()).as_nanos().max(1) as u64;
    LAST_WRITE_ROUND_NANOS.store(nanos, std::sync::atomic::Ordering::Relaxed);
}

/// A log of this broker (any shard) started a write round less than `window` ago: cold
/// reads are paced while this holds, so they do not queue in front of produce writes.
pub fn wrote_within(window: Duration) -> bool {
    let last = LAST_WRITE_ROUND_NANOS.load(std::sync::atomic::Ordering::Relaxed);
    last != 0 && write_clock_origin().elapsed().saturating_sub(Duration::from_nanos(last)) < window
}

/// Batches appended to one segment, waiting to be written.
#[derive(Debug)]
pub(crate) struct PendingWrite {
    segment_base: Offset,
    batches: Vec<Bytes>,
    bytes: usize,
    /// Offset after the last batch.
    end_offset: Offset,
    /// The segment's (max timestamp, relative offset of it) once these batches are in:
    /// restored if a later round fails with disk full.
    max_timestamp_after: (i64, u32),
    /// When the oldest of these batches was queued.
    enqueued_at: Instant,
}

impl PendingWrite {
    pub fn new(
        segment_base: Offset,
        batch: Bytes,
        end_offset: Offset,
        max_timestamp_after: (i64, u32),
    ) -> PendingWrite {
        PendingWrite {
            segment_base,
            bytes: batch.len(),
            batches: vec![batch],
            end_offset,
            max_timestamp_after,
            enqueued_at: Instant::now(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct WriterQueue {
    pending: VecDeque<PendingWrite>,
    /// Appends waiting to be acknowledged, in offset order, keyed by their end offset.
    waiters: VecDeque<(Offset, Completion)>,
    /// The write task is running.
    writing: bool,
    /// The sync task is running.
    syncing: bool,
    /// Every batch below this has been written (the write completed).
    written_offset: Offset,
    /// The file that holds `written_offset`'s last batch; earlier segments are sealed
    /// (synced) before a later one is written.
    written_file: Option<Rc<SegmentFile>>,
    /// Every batch below this has been written and fdatasync'ed.
    synced_offset: Offset,
    /// Bytes written since the last fdatasync (interval policy triggers).
    unsynced_bytes: u64,
    /// When the oldest write not yet covered by a started fdatasync completed.
    unsynced_since: Option<Instant>,
    sync_timer_armed: bool,
    /// A full disk fails every append: warn once per interval, not once per append.
    disk_full_warnings: WarningLimiter,
    /// Tasks waiting for both tasks to go idle (close).
    idle_waiters: Vec<oneshot::Sender<()>>,
    /// Counters for the log's probe.
    pub rounds: u64,
    pub syncs: u64,
    pub bytes_written: u64,
}

impl WriterQueue {
    /// Everything written so far is also durable (nothing for a final sync to do).
    pub(crate) fn all_written_is_synced(&self) -> bool {
        self.synced_offset >= self.written_offset
    }

    /// A queue for a log whose data up to `durable_end` is on disk.
    pub fn new(durable_end: Offset) -> WriterQueue {
        WriterQueue {
            pending: VecDeque::new(),
            waiters: VecDeque::new(),
            writing: false,
            syncing: false,
            written_offset: durable_end,
            written_file: None,
            synced_offset: durable_end,
            unsynced_bytes: 0,
            unsynced_since: None,
            sync_timer_armed: false,
            disk_full_warnings: WarningLimiter::new(DISK_FULL_WARNING_INTERVAL),
            idle_waiters: Vec::new(),
            rounds: 0,
            syncs: 0,
            bytes_written: 0,
        }
    }

    /// Queues a batch and returns the completion its append waits on.
    pub fn enqueue(&mut self, write: PendingWrite) -> oneshot::Receiver<Result<(), StorageError>> {
        let (sender, receiver) = oneshot::channel();
        self.waiters.push_back((write.end_offset, sender));
        match self.pending.back_mut() {
            Some(last) if last.segment_base == write.segment_base && last.bytes + write.bytes <= WRITE_BYTES_MAX => {
                last.bytes += write.bytes;
                last.batches.extend(write.batches);
                last.end_offset = write.end_offset;
                last.max_timestamp_after = write.max_timestamp_after;
            }
            _ => self.pending.push_back(write),
        }
        receiver
    }

    /// True when the caller must spawn the write task (it was idle).
    pub fn claim_writer(&mut self) -> bool {
        !std::mem::replace(&mut self.writing, true)
    }

    /// Fails every waiting append and drops everything queued.
    pub fn fail_all(&mut self, error: &StorageError) {
        self.pending.clear();
        for (_, waiter) in self.waiters.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    /// Fails the appends that end after `offset` and drops everything queued; the ones
    /// at or below it are written and still wait for their sync.
    fn fail_beyond(&mut self, offset: Offset, error: &StorageError) {
        self.pending.clear();
        while self.waiters.back().is_some_and(|(end, _)| *end > offset) {
            if let Some((_, waiter)) = self.waiters.pop_back() {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }

    fn acknowledge_through(&mut self, offset: Offset) {
        while self.waiters.front().is_some_and(|(end, _)| *end <= offset) {
            if let Some((_, waiter)) = self.waiters.pop_front() {
                let _ = waiter.send(Ok(()));
            }
        }
    }

    /// Takes the next round: queued writes for one segment, up to the write size limit.
    fn take_round(&mut self) -> Option<PendingWrite> {
        let mut round = self.pending.pop_front()?;
        while let Some(next) = self.pending.front() {
            if next.segment_base != round.segment_base || round.bytes + next.bytes > WRITE_BYTES_MAX {
                break;
            }
            let next = self.pending.pop_front().expect("peeked");
            round.bytes += next.bytes;
            round.batches.extend(next.batches);
            round.end_offset = next.end_offset;
            round.max_timestamp_after = next.max_timestamp_after;
        }
        Some(round)
    }

    fn notify_if_idle(&mut self) {
        if !self.writing && !self.syncing {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// How often a log warns that its disk is full while appends keep failing.
const DISK_FULL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Starts the write task for a log whose writer was idle.
pub(crate) fn spawn(shared: Rc<LogShared>) {
    glommio::spawn_local(run_writes(shared)).detach();
}

/// Waits until everything queued so far has been written and synced (or failed).
pub(crate) async fn drain(shared: &Rc<LogShared>) -> Result<(), StorageError> {
    let idle = {
        let mut state = shared.state.borrow_mut();
        if !state.writer.writing && !state.writer.syncing {
            None
        } else {
            let (sender, receiver) = oneshot::channel();
            state.writer.idle_waiters.push(sender);
            Some(receiver)
        }
    };
    if let Some(idle) = idle {
        let _ = idle.await;
    }
    Ok(())
}

/// The write task: writes rounds back to back. Under the durable policy it hands each
/// written round to the sync task and goes on writing, so the next round's write overlaps
/// the previous round's fdatasync.
async fn run_writes(shared: Rc<LogShared>) {
    // glommio polls a new task at once, inside the append that spawned it. Step back one
    // scheduler pass first so the other appends of this tick join the first round.
    YieldOnce(false).await;
    loop {
        let round = {
            let mut state = shared.state.borrow_mut();
            let round = if matches!(state.health, Health::Healthy) {
                state.writer.take_round()
            } else {
                let error = health_error(&state.health);
                state.writer.fail_all(&error);
                None
            };
            match round {
                Some(round) => round,
                None => {
                    state.writer.writing = false;
                    state.writer.notify_if_idle();
                    return;
                }
            }
        };
        if let Err(error) = write_round(&shared, &round).await {
            fail(&shared, error);
            let mut state = shared.state.borrow_mut();
            state.writer.writing = false;
            state.writer.notify_if_idle();
            return;
        }
    }
}

/// An fdatasync slower than this is logged: it is produce latency the disk added.
const SLOW_SYNC_WARNING: std::time::Duration = std::time::Duration::from_millis(50);

/// The sync task: fdatasyncs the file holding the newest written data until everything
/// written is synced. One fdatasync covers every write completed before it started.
async fn run_syncs(shared: Rc<LogShared>) {
    loop {
        let (file, target, unsynced) = {
            let mut state = shared.state.borrow_mut();
            let healthy = matches!(state.health, Health::Healthy);
            let writer = &state.writer;
            let work = match &writer.written_file {
                Some(file) if writer.written_offset > writer.synced_offset && healthy => {
                    if let Some(since) = writer.unsynced_since {
                        crate::metrics::probes().log_sync_wait.observe(since.elapsed());
                    }
                    Some((file.clone(), writer.written_offset, writer.unsynced_bytes))
                }
                _ => None,
            };
            if work.is_some() {
                state.writer.unsynced_since = None;
            }
            match work {
                Some(work) => work,
                None => {
                    state.writer.syncing = false;
                    state.writer.notify_if_idle();
                    return;
                }
            }
        };
        let started = std::time::Instant::now();
        let synced = file.sync_data().await;
        let took = started.elapsed();
        crate::metrics::probes().fsync_latency.observe(took);
        if took >= SLOW_SYNC_WARNING {
            tracing::warn!(path = %file.path().display(), took_ms = took.as_millis() as u64, unsynced_bytes = unsynced, "slow fdatasync: produce acknowledgements waited on the disk");
        }
        if let Err(cause) = synced {
            // Any failed fdatasync poisons, ENOSPC included: the kernel may already have
            // dropped the dirty pages, so the written data cannot be trusted.
            poison(&shared, RoundError { path: file.path().to_path_buf(), cause, sync: true });
            let mut state = shared.state.borrow_mut();
            state.writer.syncing = false;
            state.writer.notify_if_idle();
            return;
        }
        let mut state = shared.state.borrow_mut();
        state.writer.syncs += 1;
        state.writer.synced_offset = state.writer.synced_offset.max(target);
        state.writer.unsynced_bytes = state.writer.unsynced_bytes.saturating_sub(unsynced);
        // Under the interval policy the write already acknowledged; this never lowers it.
        acknowledge(&mut state, target);
    }
}

/// True when the caller must start the sync task (it was idle).
fn claim_sync(state: &mut LogState) -> bool {
    !std::mem::replace(&mut state.writer.syncing, true)
}

/// Returns `Pending` once (after asking to be polled again), then `Ready`.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

fn health_error(health: &Health) -> StorageError {
    match health {
        Health::Poisoned(error) | Health::Offline(error) => error.clone(),
        Health::Closed | Health::Healthy => StorageError::Closed,
    }
}

/// A failure inside a round, before it is classified.
struct RoundError {
    path: std::path::PathBuf,
    cause: io::Error,
    /// The failed operation was an fsync: always poisons, whatever the errno.
    sync: bool,
}

fn at(path: &std::path::Path) -> impl FnOnce(io::Error) -> RoundError + '_ {
    move |cause| RoundError { path: path.to_path_buf(), cause, sync: false }
}

fn at_sync(path: &std::path::Path) -> impl FnOnce(io::Error) -> RoundError + '_ {
    move |cause| RoundError { path: path.to_path_buf(), cause, sync: true }
}

async fn write_round(shared: &Rc<LogShared>, round: &PendingWrite) -> Result<(), RoundError> {
    let probes = crate::metrics::probes();
    probes.log_queue_wait.observe(round.enqueued_at.elapsed());
    let write_started = Instant::now();
    note_write_round(write_started);
    let file = prepare_segment_file(shared, round.segment_base).await?;
    let (chunks, new_written, new_tail, need_allocation, policy) = {
        let state = shared.state.borrow();
        let segment =
            state.segments.iter().find(|s| s.base_offset == round.segment_base).expect("round's segment exists");
        let writer = segment.writer.as_ref().expect("the active segment has a writer");
        let written = segment.written_size;
        let start = align_down(written);
        debug_assert_eq!(written - start, writer.tail_block.len() as u64);
        let end = written + round.bytes as u64;
        let write = write_buffer::build(&file, start, &writer.tail_block, &round.batches);
        let need = align_up(end);
        let allocation = (need > writer.allocated_bytes).then(|| {
            let step = writer
                .allocated_bytes
                .clamp(PREALLOCATE_STEP_MIN_BYTES, PREALLOCATE_STEP_BYTES)
                .min(align_up(state.config.segment_bytes));
            need.max(writer.allocated_bytes + step)
        });
        (write.chunks, end, write.new_tail, allocation, state.config.flush)
    };
    if let Some(len) = need_allocation {
        file.allocate(len).await.map_err(at(file.path()))?;
        with_writer(shared, round.segment_base, |segment| {
            if let Some(writer) = segment.writer.as_mut() {
                writer.allocated_bytes = len;
            }
        });
    }
    // The chunks cover disjoint blocks, so they go to the device together.
    // Wait for every chunk even when one fails, so no write can land after a rollback.
    let writes = chunks.into_iter().map(|(position, buffer)| file.write_chunk_at(buffer, position));
    let mut failure = None;
    for result in futures_util::future::join_all(writes).await {
        match result {
            Ok(buffer) => write_buffer::recycle(buffer),
            Err(error) => failure = failure.or(Some(error)),
        }
    }
    if let Some(error) = failure {
        return Err(at(file.path())(error));
    }
    probes.log_write.observe(write_started.elapsed());
    let mut guard = shared.state.borrow_mut();
    let state = &mut *guard;
    if let Some(segment) = state.segments.iter_mut().find(|s| s.base_offset == round.segment_base) {
        segment.written_size = new_written;
        segment.acknowledged_max_timestamp = round.max_timestamp_after;
        if let Some(writer) = segment.writer.as_mut() {
            writer.tail_block = new_tail;
        }
    }
    assert!(round.end_offset <= state.offsets.log_end(), "wrote past the log end");
    let writer = &mut state.writer;
    writer.rounds += 1;
    writer.bytes_written += round.bytes as u64;
    // A write-through round is durable now, provided everything before it already was
    // (otherwise a file just switched to write-through still owes a sync).
    let durable_now = file.is_write_through() && writer.synced_offset >= writer.written_offset;
    writer.written_offset = round.end_offset;
    writer.written_file = Some(file.clone());
    if durable_now {
        writer.synced_offset = round.end_offset;
        if matches!(state.health, Health::Healthy) {
            acknowledge(state, round.end_offset);
        }
        return Ok(());
    }
    writer.unsynced_bytes += round.bytes as u64;
    writer.unsynced_since.get_or_insert_with(Instant::now);
    let (sync, timer) = match policy {
        FlushPolicy::Durable => (claim_sync(state), None),
        FlushPolicy::Interval { interval, bytes } => {
            if matches!(state.health, Health::Healthy) {
                acknowledge(state, round.end_offset);
            }
            if state.writer.unsynced_bytes >= bytes {
                (claim_sync(state), None)
            } else {
                (false, (!std::mem::replace(&mut state.writer.sync_timer_armed, true)).then_some(interval))
            }
        }
    };
    drop(guard);
    // glommio may poll a spawned task at once, so spawn only with no borrow held.
    if sync {
        glommio::spawn_local(run_syncs(shared.clone())).detach();
    }
    if let Some(interval) = timer {
        spawn_sync_timer(shared, interval);
    }
    Ok(())
}

/// Publishes `offset` as the high watermark and resolves the appends below it.
fn acknowledge(state: &mut LogState, offset: Offset) {
    if !state.offsets.mark_durable(offset) {
        return;
    }
    state.writer.acknowledge_through(offset);
    wake_watchers(state);
}

/// Interval policy: start a sync `interval` after the first unsynced write, unless a
/// size-triggered sync got there first.
fn spawn_sync_timer(shared: &Rc<LogShared>, interval: Duration) {
    let shared = shared.clone();
    glommio::spawn_local(async move {
        glommio::timer::sleep(interval).await;
        let sync = {
            let mut state = shared.state.borrow_mut();
            state.writer.sync_timer_armed = false;
            matches!(state.health, Health::Healthy) && claim_sync(&mut state)
        };
        if sync {
            run_syncs(shared).await;
        }
    })
    .detach();
}

fn with_writer(shared: &Rc<LogShared>, base: Offset, f: impl FnOnce(&mut super::segment::Segment)) {
    let mut state = shared.state.borrow_mut();
    if let Some(segment) = state.segments.iter_mut().find(|s| s.base_offset == base) {
        f(segment);
    }
}

/// The file for a round's segment: for a segment's first round, seals the previous
/// segment and creates this one's file.
async fn prepare_segment_file(shared: &Rc<LogShared>, base: Offset) -> Result<Rc<SegmentFile>, RoundError> {
    let (existing, previous_open, write_through) = {
        let state = shared.state.borrow();
        let position = state.segments.iter().position(|s| s.base_offset == base).expect("round's segment exists");
        let previous = position.checked_sub(1).map(|p| &state.segments[p]).filter(|p| !p.closed).map(|p| p.base_offset);
        let write_through =
            matches!(state.config.flush, FlushPolicy::Durable) && shared.env.sync_mode == SyncMode::WriteThrough;
        (state.segments[position].file.clone(), previous, write_through)
    };
    if let Some(file) = existing {
        if file.is_write_through() == write_through {
            return Ok(file);
        }
        // The flush policy changed (or recovery opened the file for reading): reopen in
        // the mode the policy wants. Readers holding the old handle keep it.
        let path = file.path().to_path_buf();
        let reopened = Rc::new(SegmentFile::open(&path, &shared.env, write_through).await.map_err(at(&path))?);
        with_writer(shared, base, |segment| segment.file = Some(reopened.clone()));
        return Ok(reopened);
    }
    if let Some(previous) = previous_open {
        seal(shared, previous).await?;
    }
    let path = segment_path(&shared.dir, base, LOG_SUFFIX);
    if let Some(file) = reuse_kept_file(shared, base, write_through).await {
        sync_dir(&shared.dir, &shared.env).await.map_err(at_sync(&shared.dir))?;
        return Ok(file);
    }
    let file = match SegmentFile::create(&path, &shared.env, write_through).await {
        Ok(file) => file,
        // Left by an earlier attempt whose first write failed: start it over.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let file = SegmentFile::open(&path, &shared.env, write_through).await.map_err(at(&path))?;
            file.truncate(0).await.map_err(at(&path))?;
            file
        }
        Err(error) => return Err(at(&path)(error)),
    };
    sync_dir(&shared.dir, &shared.env).await.map_err(at_sync(&shared.dir))?;
    let file = Rc::new(file);
    with_writer(shared, base, |segment| {
        segment.file = Some(file.clone());
        if let Some(writer) = segment.writer.as_mut() {
            writer.allocated_bytes = 0;
        }
    });
    Ok(file)
}

/// Opens the log's kept file (`recycle`) as segment `base`'s, its blocks already written
/// up to its last whole block; `None` (and a fresh file is created) when there is none or
/// anything fails.
async fn reuse_kept_file(shared: &Rc<LogShared>, base: Offset, write_through: bool) -> Option<Rc<SegmentFile>> {
    let reused = async {
        let Some(path) = recycle::reuse_for(shared, base).await? else { return Ok(None) };
        let file = SegmentFile::open(&path, &shared.env, write_through).await?;
        let written_blocks = align_down(file.size().await?);
        Ok::<_, io::Error>(Some((file, written_blocks)))
    }
    .await;
    let (file, written_blocks) = match reused {
        Ok(Some(reused)) => reused,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(dir = %shared.dir.display(), %base, %error, "could not reuse the kept segment file; creating a new one");
            return None;
        }
    };
    let file = Rc::new(file);
    with_writer(shared, base, |segment| {
        segment.file = Some(file.clone());
        if let Some(writer) = segment.writer.as_mut() {
            writer.allocated_bytes = written_blocks;
        }
    });
    Some(file)
}

/// Closes a full segment: makes its data durable and trims the preallocated space, on
/// the write path (a later segment may exist on disk only once this one is exact: a
/// closed segment is scanned to its end when its index is rebuilt). Its index files,
/// derived data that a missing file only makes the next load rebuild, are written by a
/// task of their own (`write_index_files`), so the round that starts the next segment
/// does not wait for their four syncs. After this it is never written again.
async fn seal(shared: &Rc<LogShared>, base: Offset) -> Result<(), RoundError> {
    let (file, size, offsets, times, synced) = {
        let mut state = shared.state.borrow_mut();
        let synced = state.writer.all_written_is_synced();
        let segment = state.segments.iter_mut().find(|s| s.base_offset == base).expect("sealed segment exists");
        let index = segment.index.as_mut().expect("active index in memory");
        index.seal();
        let encoded = (index.encode_offsets(), index.encode_times());
        (segment.file.clone(), segment.size, encoded.0, encoded.1, synced)
    };
    if let Some(file) = &file {
        assert_eq!(
            shared.state.borrow().segments.iter().find(|s| s.base_offset == base).map(|s| s.written_size),
            Some(size),
            "a segment is sealed only after all its data is written"
        );
        if !synced {
            file.sync_data().await.map_err(at_sync(file.path()))?;
        }
        file.truncate(size).await.map_err(at(file.path()))?;
        file.sync_data().await.map_err(at_sync(file.path()))?;
    }
    {
        let mut state = shared.state.borrow_mut();
        let now_ms = shared.env.clock.now_ms();
        if let Some(segment) = state.segments.iter_mut().find(|s| s.base_offset == base) {
            segment.closed = true;
            segment.writer = None;
            segment.modified_ms = now_ms;
        }
    }
    if let Some(file) = &file {
        let sealed = SealedIndex { base, file: Rc::downgrade(file), offsets, times };
        glommio::spawn_local(write_index_files(shared.clone(), sealed)).detach();
    }
    Ok(())
}

/// The encoded indexes of a segment just sealed, and which file they describe.
struct SealedIndex {
    base: Offset,
    /// The segment's file when sealed: if the segment's file is another one by the time
    /// the index files are written (the cleaner replaced it), they are not written.
    file: std::rc::Weak<SegmentFile>,
    offsets: Vec<u8>,
    times: Vec<u8>,
}

/// Writes a sealed segment's index files (each atomically: synced, then renamed). Holds
/// the log's maintenance gate meanwhile, so retention and the cleaner cannot delete or
/// replace the segment under it, and `close` (which takes the gate) returns only after
/// the files are written. If the segment is gone or replaced by then (the log closed or
/// was cut, retention deleted it, the cleaner rewrote it), nothing is written. A failure
/// only warns: the index is in memory, and a missing file is rebuilt when next needed.
async fn write_index_files(shared: Rc<LogShared>, sealed: SealedIndex) {
    let gate = shared.state.borrow().maintenance_gate.clone();
    let Ok(_permit) = gate.acquire_permit(1).await else { return };
    let still_there = {
        let state = shared.state.borrow();
        !matches!(state.health, Health::Closed)
            && state.segments.iter().any(|s| {
                s.base_offset == sealed.base
                    && s.closed
                    && s.file.as_ref().is_some_and(|file| std::ptr::eq(Rc::as_ptr(file), sealed.file.as_ptr()))
            })
    };
    if !still_there {
        return;
    }
    for (suffix, bytes) in [(OFFSET_INDEX_SUFFIX, sealed.offsets), (TIME_INDEX_SUFFIX, sealed.times)] {
        let path = segment_path(&shared.dir, sealed.base, suffix);
        if let Err(error) = write_file_atomic(&path, &bytes, &shared.env).await {
            tracing::warn!(path = %path.display(), %error, "could not write a sealed segment's index file; it is rebuilt when needed");
            return;
        }
    }
}

/// Classifies a failure of the write task: disk full gives back the offsets that were
/// never written, any other error poisons the log.
fn fail(shared: &Rc<LogShared>, error: RoundError) {
    let mut state = shared.state.borrow_mut();
    if is_disk_full(&error.cause) && !error.sync {
        let storage_error = StorageError::DiskFull { dir: shared.dir.clone(), cause: std::sync::Arc::new(error.cause) };
        if let Some(suppressed) = state.writer.disk_full_warnings.admit(Instant::now()) {
            tracing::warn!(dir = %shared.dir.display(), path = %error.path.display(), error = %storage_error, suppressed, "append failed: disk full (one warning per log every 10 s; `suppressed` counts the failures since the last one)");
        }
        let written = state.writer.written_offset;
        state.writer.fail_beyond(written, &storage_error);
        roll_back_to(&mut state, written);
        wake_watchers(&mut state);
    } else {
        drop(state);
        poison(shared, error);
    }
}

/// Poisons the log: every waiting and every later append fails.
fn poison(shared: &Rc<LogShared>, error: RoundError) {
    let mut state = shared.state.borrow_mut();
    let storage_error = StorageError::Poisoned { dir: shared.dir.clone(), cause: std::sync::Arc::new(error.cause) };
    tracing::error!(dir = %shared.dir.display(), path = %error.path.display(), error = %storage_error, "log poisoned");
    state.writer.fail_all(&storage_error);
    if matches!(state.health, Health::Healthy) {
        state.health = Health::Poisoned(storage_error);
    }
    wake_watchers(&mut state);
}

/// Forgets every batch at or after `written` (none of them reached the disk): the log
/// end returns there, so the next append reuses those offsets and the log stays
/// contiguous. Batches below `written` are on disk and keep waiting for their sync.
fn roll_back_to(state: &mut LogState, written: Offset) {
    while state.segments.len() > 1 && state.segments.back().is_some_and(|s| s.base_offset > written) {
        state.segments.pop_back();
    }
    let active = state.segments.back_mut().expect("active segment");
    assert!(!active.closed, "the segment holding the written end is never sealed while it is active");
    let relative_end = active.relative(written);
    active.next_offset = written;
    active.size = active.written_size;
    let (max_timestamp, relative_of_max) = active.acknowledged_max_timestamp;
    if let Some(index) = active.index.as_mut() {
        index.truncate_to(active.written_size as u32, relative_end, max_timestamp, relative_of_max);
    }
    state.offsets.roll_back(written);
    state.cache.truncate_from(written);
    state.producers.forget_from(written);
}
