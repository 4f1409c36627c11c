//! The transactional side of a partition log: transaction markers (written by the
//! transaction coordinator, never by clients), the last stable offset, and what a
//! read_committed Fetch needs besides the records (see `producer_state` for open
//! transactions and `txn_index` for aborted ones).

use bytes::BytesMut;

use crate::protocol::control_batch;
use crate::protocol::record_batch::{self, BatchHeader};

use super::config::FlushPolicy;
use super::error::{AppendError, StorageError};
use super::log::{check_open, enqueue_batch, last_stable_offset, AppendInfo, PartitionLog, PreparedEntry};
use super::offset::Offset;
use super::txn_index::{AbortedTxn, ABORTED_TXNS_FILE};

/// A transaction marker to write: the coordinator's decision for one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub committed: bool,
    pub coordinator_epoch: i32,
}

/// What a read_committed fetch reports besides its records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StableView {
    pub last_stable_offset: Offset,
    /// Aborted transactions whose records a read from the given offset may meet.
    pub aborted: Vec<AbortedTxn>,
}

impl PartitionLog {
    /// Appends a transaction marker and waits until it is durable. An abort's entry in
    /// the aborted-transaction index is persisted before the marker is queued, so a
    /// marker on disk always has its entry (see `txn_index`).
    pub async fn append_marker(&self, marker: TxnMarker) -> Result<AppendInfo, AppendError> {
        // After any transactional batch already admitted (it holds the gate from its
        // arrival through the coordinator's check to its queueing), so a batch that
        // passed the check while the transaction was open lands inside it.
        let gate = self.transactional_gate();
        let permit = gate.acquire_permit(1).await.expect("the gate is never closed");
        if !marker.committed {
            // The entry ends at the current log end: no batch of this producer can come
            // before the marker (its transaction takes no new batch, admitted ones are
            // queued), so the range it covers is the transaction's.
            let ahead = {
                let mut state = self.shared.state.borrow_mut();
                let first = state.producers.open_txn_first(marker.producer_id);
                let log_end = state.offsets.log_end();
                first.map(|first_offset| {
                    state.aborted.push(AbortedTxn {
                        producer_id: marker.producer_id,
                        first_offset,
                        last_offset: log_end,
                    })
                })
            };
            if ahead.is_some() {
                self.persist_aborted_index().await?;
            }
        }
        let now_ms = self.shared.env.clock.now_ms();
        let bytes = control_batch::transaction_marker(
            marker.producer_id,
            marker.producer_epoch,
            marker.committed,
            marker.coordinator_epoch,
            now_ms,
        );
        let pending = {
            let mut guard = self.shared.state.borrow_mut();
            let state = &mut *guard;
            check_open(state)?;
            if state.offsets.is_replicated() {
                return Err(AppendError::InvalidRecord {
                    reason: "a replicated partition's markers go through its Raft group".into(),
                });
            }
            check_marker(state, &marker)?;
            let base = state.offsets.log_end();
            let mut batch = BytesMut::from(&bytes[..]);
            record_batch::set_base_offset(&mut batch, base.value());
            let header = BatchHeader::parse(&batch)?;
            let enqueued = enqueue_batch(state, batch, &header, None, now_ms);
            let completed =
                state.producers.record_marker(&header, marker.committed, base, marker.coordinator_epoch, now_ms);
            let aborted = completed.filter(|c| !c.committed).map(|c| AbortedTxn {
                producer_id: c.producer_id,
                first_offset: c.first_offset,
                last_offset: c.last_offset,
            });
            if let Some(entry) = aborted {
                state.aborted.push(entry);
            }
            let start_writer = state.writer.claim_writer();
            drop(guard);
            self.hand_out(enqueued, start_writer)
        };
        drop(permit);
        let info = pending.durable().await?;
        if !matches!(self.config().flush, FlushPolicy::Durable) {
            // A topic that acknowledges before fdatasync (flush.ms / flush.messages)
            // still gets its markers synced: a marker lost in a power failure while its
            // transaction's records survive would leave the transaction open for good.
            self.sync_segment_holding(info.base_offset).await?;
        }
        Ok(info)
    }

    /// A replicated partition's marker, as the leader proposes it: the control batch
    /// stamped with `base_offset` and the leader `epoch`. Nothing is recorded here:
    /// every replica applies it when Raft hands it out (`append_entry`).
    pub fn marker_entry(
        &self,
        marker: TxnMarker,
        base_offset: Offset,
        epoch: i32,
    ) -> Result<PreparedEntry, AppendError> {
        let now_ms = self.shared.env.clock.now_ms();
        {
            let state = self.shared.state.borrow();
            check_open(&state)?;
            check_marker(&state, &marker)?;
        }
        let bytes = control_batch::transaction_marker(
            marker.producer_id,
            marker.producer_epoch,
            marker.committed,
            marker.coordinator_epoch,
            now_ms,
        );
        let mut batch = BytesMut::from(&bytes[..]);
        record_batch::set_base_offset(&mut batch, base_offset.value());
        record_batch::set_partition_leader_epoch(&mut batch, epoch);
        let header = BatchHeader::parse(&batch)?;
        Ok(PreparedEntry {
            bytes: batch.freeze(),
            base_offset,
            next_offset: Offset(base_offset.value() + i64::from(header.last_offset_delta) + 1),
            log_append_time_ms: None,
        })
    }

    /// Whether aborts were added (by replicated appends) that the index file lacks;
    /// the caller saves it (`persist_aborted_index`) before it reports the entries
    /// durable, so a committed abort marker always has its index entry on disk.
    pub fn take_unsaved_aborts(&self) -> bool {
        std::mem::take(&mut self.shared.state.borrow_mut().aborted_unsaved)
    }

    /// fdatasync of the segment holding `offset`.
    async fn sync_segment_holding(&self, offset: Offset) -> Result<(), StorageError> {
        let file = {
            let state = self.shared.state.borrow();
            super::log::segment_for(&state.segments, offset).file.clone()
        };
        match file {
            Some(file) => file.sync_data().await.map_err(|e| StorageError::io(file.path(), e)),
            None => Ok(()),
        }
    }

    /// The last stable offset: no record at or after it belongs to an open transaction
    /// (it is the high watermark when none is open).
    pub fn last_stable_offset(&self) -> Offset {
        last_stable_offset(&self.shared.state.borrow())
    }

    /// The last stable offset and the aborted transactions a read_committed read from
    /// `from` may meet.
    pub fn stable_view(&self, from: Offset) -> StableView {
        let state = self.shared.state.borrow();
        let last_stable_offset = last_stable_offset(&state);
        StableView { last_stable_offset, aborted: state.aborted.overlapping(from, last_stable_offset) }
    }

    /// Whether `producer_id` has a transaction open on this partition (its next
    /// transactional batch continues it; a first one needs the coordinator's word).
    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.shared.state.borrow().producers.has_open_txn(producer_id)
    }

    /// Held from a transactional batch's arrival until it is queued: a producer's first
    /// batch of a transaction waits for the coordinator's check, and its next batches
    /// (pipelined behind it) must not overtake it. Waiters are served in arrival order.
    pub fn transactional_gate(&self) -> std::rc::Rc<glommio::sync::Semaphore> {
        self.shared.state.borrow().transactional_gate.clone()
    }

    /// The producers this partition remembers (DescribeProducers).
    pub fn producers(&self) -> Vec<super::producer_state::ProducerSummary> {
        self.shared.state.borrow().producers.summaries()
    }

    /// Rewrites the aborted-transaction file with the current index (entries below the
    /// log start dropped). Writers queue, and each writes the index as it is when its
    /// turn comes, so the last write holds every entry added before it.
    pub async fn persist_aborted_index(&self) -> Result<(), StorageError> {
        let gate = self.shared.state.borrow().txn_index_gate.clone();
        let _permit = gate.acquire_permit(1).await;
        let bytes = {
            let mut state = self.shared.state.borrow_mut();
            let log_start = state.offsets.log_start();
            state.aborted.forget_below(log_start);
            state.aborted.encode()
        };
        let path = self.shared.dir.join(ABORTED_TXNS_FILE);
        super::disk::write_file_atomic(&path, &bytes, &self.shared.env).await.map_err(|e| StorageError::io(&path, e))
    }
}

/// A marker from a fenced producer epoch or a deposed coordinator is refused.
fn check_marker(state: &super::log::LogState, marker: &TxnMarker) -> Result<(), AppendError> {
    use super::producer_state::MarkerRefusal;
    match state.producers.check_marker(marker.producer_id, marker.producer_epoch, marker.coordinator_epoch) {
        Ok(()) => Ok(()),
        Err(MarkerRefusal::ProducerFenced { current_epoch }) => Err(AppendError::ProducerFenced { current_epoch }),
        Err(MarkerRefusal::CoordinatorFenced { current_epoch }) => {
            Err(AppendError::CoordinatorFenced { current_epoch })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::{build, ATTRIBUTE_TRANSACTIONAL};
    use crate::storage::log::Isolation;
    use crate::storage::{Disk, LogConfig, MemoryDisk, StorageEnv};

    fn transactional_batch(producer_id: i64, sequence: i32) -> BytesMut {
        let mut bytes = build::batch(&[b"v"], 1);
        bytes[21..23].copy_from_slice(&ATTRIBUTE_TRANSACTIONAL.to_be_bytes());
        bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
        bytes[51..53].copy_from_slice(&0i16.to_be_bytes());
        bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        BytesMut::from(&bytes[..])
    }

    fn marker(producer_id: i64, committed: bool) -> TxnMarker {
        TxnMarker { producer_id, producer_epoch: 0, committed, coordinator_epoch: 0 }
    }

    #[test]
    fn read_committed_stops_at_the_oldest_open_transaction_and_reports_aborts() {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let disk = MemoryDisk::new(1);
                let env = StorageEnv { disk: Disk::Memory(disk.session()), ..StorageEnv::default() };
                let dir = std::path::Path::new("/txn-log");
                let log = PartitionLog::open(dir, LogConfig::default(), env.clone()).await.unwrap();
                log.append(BytesMut::from(&build::batch(&[b"plain"], 1)[..])).await.unwrap(); // 0
                log.append(transactional_batch(7, 0)).await.unwrap(); // 1
                log.append(transactional_batch(8, 0)).await.unwrap(); // 2
                log.append(transactional_batch(7, 1)).await.unwrap(); // 3
                assert_eq!(log.last_stable_offset(), Offset(1));
                let read = log.read_isolated(Offset(0), 1 << 20, Isolation::ReadCommitted).await.unwrap();
                assert_eq!(read.records.len(), 1, "only the plain batch is stable");
                log.append_marker(marker(7, false)).await.unwrap(); // 4
                assert_eq!(log.last_stable_offset(), Offset(2), "producer 8's transaction is still open");
                log.append_marker(marker(8, true)).await.unwrap(); // 5
                assert_eq!(log.last_stable_offset(), Offset(6));
                let view = log.stable_view(Offset(0));
                assert_eq!(
                    view.aborted,
                    vec![AbortedTxn { producer_id: 7, first_offset: Offset(1), last_offset: Offset(4) }]
                );
                assert!(log.stable_view(Offset(5)).aborted.is_empty(), "past the abort marker");
                let client_marker = BytesMut::from(&control_batch::transaction_marker(9, 0, true, 0, 1)[..]);
                assert!(matches!(log.append(client_marker).await, Err(AppendError::InvalidRecord { .. })));
                log.append(transactional_batch(9, 0)).await.unwrap(); // 6, left open
                log.close().await.unwrap();

                // A clean reopen keeps the open transaction and the aborted index.
                let log = PartitionLog::open(dir, LogConfig::default(), env.clone()).await.unwrap();
                assert_eq!(log.last_stable_offset(), Offset(6));
                assert_eq!(log.stable_view(Offset(0)).aborted.len(), 1);
                log.append_marker(marker(9, false)).await.unwrap(); // 7
                drop(log);

                // A crash (no close): the tail scan rebuilds both.
                disk.crash();
                let env = StorageEnv { disk: Disk::Memory(disk.session()), ..StorageEnv::default() };
                let log = PartitionLog::open(dir, LogConfig::default(), env).await.unwrap();
                assert_eq!(log.last_stable_offset(), Offset(8));
                assert_eq!(log.stable_view(Offset(0)).aborted.len(), 2);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn an_open_transaction_from_before_a_roll_survives_a_crash() {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let disk = MemoryDisk::new(2);
                let env = || StorageEnv { disk: Disk::Memory(disk.session()), ..StorageEnv::default() };
                let dir = std::path::Path::new("/txn-roll");
                let config = LogConfig { segment_bytes: 4096, ..LogConfig::default() };
                let log = PartitionLog::open(dir, config.clone(), env()).await.unwrap();
                log.append(transactional_batch(7, 0)).await.unwrap(); // 0: opens producer 7's transaction
                log.request_roll();
                for n in 0..5 {
                    log.append(BytesMut::from(&build::batch(&[b"later"], 1)[..])).await.unwrap(); // 1..=5
                    if n == 0 {
                        // Let the roll snapshot of the new segment reach the disk.
                        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
                assert!(log.segment_count() >= 2);
                assert_eq!(log.last_stable_offset(), Offset(0));
                // Another roll, and the crash before its snapshot can be synced: recovery
                // starts from the previous snapshot and scans the segment in between.
                log.request_roll();
                log.append(BytesMut::from(&build::batch(&[b"last"], 1)[..])).await.unwrap();
                drop(log);
                disk.crash();
                // Lose the newest roll snapshot, as a crash before its sync would.
                let snapshots: Vec<String> = crate::storage::disk::list_dir(dir, &env())
                    .unwrap()
                    .into_iter()
                    .map(|entry| entry.name)
                    .filter(|name| name.starts_with(crate::storage::recovery::ROLL_PRODUCER_SNAPSHOT_PREFIX))
                    .collect();
                assert_eq!(snapshots.len(), 2, "{snapshots:?}");
                let newest = snapshots.iter().max().unwrap();
                crate::storage::disk::remove_file(&dir.join(newest), &env()).await.unwrap();
                let log = PartitionLog::open(dir, config, env()).await.unwrap();
                assert_eq!(log.last_stable_offset(), Offset(0), "the open transaction is known after the crash");
                log.append_marker(marker(7, false)).await.unwrap();
                assert_eq!(log.stable_view(Offset(0)).aborted.len(), 1, "and its abort covers offset 0");
                assert_eq!(log.last_stable_offset(), log.offsets().high_watermark.offset());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn markers_are_synced_on_topics_that_acknowledge_before_fdatasync() {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                for seed in 0..12 {
                    let disk = MemoryDisk::new(seed);
                    let env = || StorageEnv { disk: Disk::Memory(disk.session()), ..StorageEnv::default() };
                    let dir = std::path::Path::new("/txn-interval");
                    let interval = crate::storage::FlushPolicy::Interval {
                        interval: std::time::Duration::from_secs(3600),
                        bytes: u64::MAX,
                    };
                    let config = LogConfig { flush: interval, ..LogConfig::default() };
                    let log = PartitionLog::open(dir, config.clone(), env()).await.unwrap();
                    log.append(transactional_batch(7, 0)).await.unwrap();
                    log.append_marker(marker(7, true)).await.unwrap();
                    drop(log);
                    disk.crash();
                    let log = PartitionLog::open(dir, config, env()).await.unwrap();
                    assert_eq!(log.offsets().log_end.offset(), Offset(2), "seed {seed}: the marker survived");
                    assert_eq!(log.last_stable_offset(), Offset(2), "seed {seed}: nothing is left open");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn replicated_markers_apply_on_every_replica_and_their_aborts_reach_the_index() {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let disk = MemoryDisk::new(3);
                let env = || StorageEnv { disk: Disk::Memory(disk.session()), ..StorageEnv::default() };
                let dir = std::path::Path::new("/txn-replicated");
                let log = PartitionLog::open(dir, LogConfig::default(), env()).await.unwrap();
                log.replicate(Offset(0));
                // The leader's batch (recorded when prepared) and a follower's (recorded
                // when appended): both open their producer's transaction.
                let prepared = log.prepare_entry(transactional_batch(7, 0), Offset(0), 1).unwrap();
                log.append_entry(prepared.bytes, false).unwrap().durable().await.unwrap();
                let mut follower_batch = transactional_batch(8, 0);
                record_batch::set_base_offset(&mut follower_batch, 1);
                log.append_entry(follower_batch.freeze(), true).unwrap().durable().await.unwrap();
                assert!(log.has_open_transaction(7) && log.has_open_transaction(8));

                // The leader records nothing when it stamps a marker; appending applies it.
                let abort = log.marker_entry(marker(7, false), Offset(2), 1).unwrap();
                assert_eq!(abort.next_offset, Offset(3));
                assert!(log.has_open_transaction(7), "a proposed marker changes nothing yet");
                assert!(!log.take_unsaved_aborts());
                log.append_entry(abort.bytes, false).unwrap().durable().await.unwrap();
                assert!(!log.has_open_transaction(7));
                assert!(log.take_unsaved_aborts(), "the abort is to be saved before it is acknowledged");
                assert!(!log.take_unsaved_aborts());
                log.persist_aborted_index().await.unwrap();

                // Producer 8's marker from coordinator epoch 5, then a late one from a
                // deposed coordinator (epoch 4), and one for an older producer epoch.
                let from_5 = TxnMarker { coordinator_epoch: 5, ..marker(8, true) };
                let newer = log.marker_entry(from_5, Offset(3), 1).unwrap();
                log.append_entry(newer.bytes, false).unwrap().durable().await.unwrap();
                let late = TxnMarker { coordinator_epoch: 4, ..marker(8, true) };
                assert!(matches!(
                    log.marker_entry(late, Offset(4), 1),
                    Err(AppendError::CoordinatorFenced { current_epoch: 5 })
                ));
                let old_epoch = TxnMarker { producer_epoch: -1, coordinator_epoch: 5, ..marker(8, false) };
                assert!(matches!(log.marker_entry(old_epoch, Offset(4), 1), Err(AppendError::ProducerFenced { .. })));

                log.set_commit(Offset(4));
                assert_eq!(log.last_stable_offset(), Offset(4));
                // Reopen producer 8's transaction for the crash check below.
                let mut again = transactional_batch(8, 1);
                record_batch::set_base_offset(&mut again, 4);
                log.append_entry(again.freeze(), true).unwrap().durable().await.unwrap();
                let aborted = log.stable_view(Offset(0)).aborted;
                assert_eq!(
                    aborted,
                    vec![AbortedTxn { producer_id: 7, first_offset: Offset(0), last_offset: Offset(2) }]
                );
                drop(log);

                disk.crash();
                let log = PartitionLog::open(dir, LogConfig::default(), env()).await.unwrap();
                assert_eq!(log.stable_view(Offset(0)).aborted.len(), 1, "the abort survived the crash");
                assert!(log.has_open_transaction(8));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
