//! Where a leader epoch ends in a partition log (OffsetForLeaderEpoch, KIP-101/KIP-320).
//!
//! Every batch carries the leader epoch it was written in (`partitionLeaderEpoch`), and
//! in a replicated log epochs never decrease along the offsets (each term's leader
//! stamps its own, and a term starts with its leader's batch). So the end of epoch E, the
//! first offset written in a later epoch, is found by a binary search over the offsets,
//! reading one batch per step: no epoch cache to keep, persist and cut back. Queries are
//! rare (a consumer asks once per leader change it sees), so a few reads are cheap.

use crate::protocol::record_batch::iter_batches;

use super::error::ReadError;
use super::log::PartitionLog;
use super::offset::Offset;

/// The answer for one requested epoch: the largest epoch at or below it that the log
/// holds (the requested one when it holds none), and where it ends (the start of the
/// next epoch, or the log end for the current one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: i32,
    pub end_offset: Offset,
}

/// The first batch holding `offset` or after it, below the high watermark:
/// (base offset, next offset, epoch).
async fn batch_at(log: &PartitionLog, offset: Offset) -> Result<Option<(Offset, Offset, i32)>, ReadError> {
    let read = match log.read(offset, 1).await {
        Ok(read) => read,
        Err(ReadError::OffsetOutOfRange { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    for chunk in &read.records {
        for (header, _) in iter_batches(chunk) {
            if header.next_offset() > offset.value() {
                return Ok(Some((
                    Offset(header.base_offset),
                    Offset(header.next_offset()),
                    header.partition_leader_epoch,
                )));
            }
        }
    }
    Ok(None)
}

impl PartitionLog {
    /// Where `requested` ends in this log, whose leader is now in `current` (see
    /// [`EpochEnd`]). The current epoch ends at the log end; an earlier one where the
    /// first batch of a later epoch begins (searched below the high watermark: a batch
    /// not committed yet may still be cut). `None` for a future or negative epoch.
    pub async fn epoch_end(&self, requested: i32, current: i32) -> Result<Option<EpochEnd>, ReadError> {
        let offsets = self.offsets();
        if requested == current {
            return Ok(Some(EpochEnd { epoch: current, end_offset: offsets.log_end.offset() }));
        }
        if requested > current || requested < 0 {
            return Ok(None);
        }
        // The smallest offset from which every batch is of a later epoch than
        // `requested` (the high watermark if none is), and the epoch of the last batch
        // seen before it.
        let (mut low, mut high) = (offsets.log_start.offset(), offsets.high_watermark.offset());
        let mut floor = None;
        while low < high {
            let middle = Offset(low.value() + (high.value() - low.value()) / 2);
            match batch_at(self, middle).await? {
                None => high = middle,
                // `base` is at least `low` (batches never straddle `low`); past `middle`
                // the offsets between are a gap (compaction) with nothing in them.
                Some((base, _, epoch)) if epoch > requested => high = base.min(middle),
                Some((_, next, epoch)) => {
                    floor = Some(epoch);
                    low = next;
                }
            }
        }
        let mut end = low;
        if let Some((base, _, epoch)) = batch_at(self, end).await? {
            if epoch > requested {
                end = base;
            }
        }
        // The exact epoch of the batch ending at `end`, unless `end` follows a gap.
        if end > offsets.log_start.offset() {
            if let Some((base, next, epoch)) = batch_at(self, Offset(end.value() - 1)).await? {
                if base < end && next <= end {
                    floor = Some(epoch);
                }
            }
        }
        // Nothing of `requested` or earlier in the log (older than its first batch, or
        // removed by retention): Kafka answers the requested epoch, ending where the
        // log's later epochs begin.
        let epoch = floor.filter(|&epoch| epoch >= 0).unwrap_or(requested);
        Ok(Some(EpochEnd { epoch, end_offset: end }))
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::protocol::record_batch::{build, set_partition_leader_epoch};
    use crate::storage::{Disk, LogConfig, MemoryDisk, StorageEnv};

    #[test]
    fn each_epoch_ends_where_the_next_begins() {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let disk = MemoryDisk::new(4);
                let env = StorageEnv { disk: Disk::Memory(disk.session()), ..StorageEnv::default() };
                let log = PartitionLog::open(std::path::Path::new("/epochs"), LogConfig::default(), env).await.unwrap();
                // Epochs 1 (offsets 0-2), 3 (3-9, two records a batch: 3-4, 5-6, 7-8, 9),
                // 4 (10-11): epoch 2 never had a batch.
                let epochs = [1, 1, 1, 3, 3, 3, 3, 3, 4, 4];
                let sizes = [1, 1, 1, 2, 2, 2, 1, 0, 1, 1];
                for (i, (&epoch, &size)) in epochs.iter().zip(sizes.iter()).enumerate() {
                    if size == 0 {
                        continue;
                    }
                    let values: Vec<&[u8]> = (0..size).map(|_| &b"v"[..]).collect();
                    let mut batch = BytesMut::from(&build::batch(&values, i as i64)[..]);
                    set_partition_leader_epoch(&mut batch, epoch);
                    log.append(batch).await.unwrap();
                }
                assert_eq!(log.offsets().log_end.offset(), Offset(12));
                let end = |epoch, end_offset| Some(EpochEnd { epoch, end_offset: Offset(end_offset) });
                assert_eq!(log.epoch_end(4, 4).await.unwrap(), end(4, 12), "the current epoch ends at the log end");
                assert_eq!(log.epoch_end(3, 4).await.unwrap(), end(3, 10));
                assert_eq!(log.epoch_end(2, 4).await.unwrap(), end(1, 3), "an epoch without batches: the one before");
                assert_eq!(log.epoch_end(1, 4).await.unwrap(), end(1, 3));
                assert_eq!(log.epoch_end(0, 4).await.unwrap(), end(0, 0), "before the first epoch: as Kafka answers");
                assert_eq!(log.epoch_end(5, 4).await.unwrap(), None, "a future epoch");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
