//! The storage side of a Raft replica: a replicated log's high watermark follows the
//! group's commit, entries go in only at the log end, and a divergent uncommitted tail
//! is cut (in the active segment, at a segment boundary, inside a closed segment), with
//! the log reading, appending and reopening correctly afterwards. Real glommio executor,
//! real O_DIRECT files in a temp dir.

mod common;

use bytes::Bytes;
use common::{batch, run};
use tern::protocol::record_batch::iter_batches;
use tern::storage::truncate::truncate;
use tern::storage::{LogConfig, Offset, PartitionLog, StorageEnv};

/// Every batch from offset 0 to the high watermark: (base offset, bytes).
async fn read_all(log: &PartitionLog) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    let mut offset = Offset(0);
    loop {
        let read = log.read(offset, 64 << 10).await.expect("read");
        if read.records.is_empty() {
            return out;
        }
        for chunk in read.records {
            for (header, range) in iter_batches(&chunk) {
                out.push((header.base_offset, chunk.slice(range)));
                offset = Offset(header.next_offset());
            }
        }
    }
}

/// A log of 30 batches of 3 records over 8 KiB segments (several closed ones).
async fn filled(path: &std::path::Path) -> (PartitionLog, Vec<(i64, Bytes)>) {
    let config = LogConfig { segment_bytes: 8192, use_batch_cache: false, ..LogConfig::default() };
    let log = PartitionLog::open(path, config, StorageEnv::default()).await.unwrap();
    for n in 0..30 {
        log.append(batch(3, 900, n, 1_000 + n as i64)).await.unwrap();
    }
    let all = read_all(&log).await;
    assert_eq!(all.len(), 30);
    assert!(log.segment_count() >= 4, "closed segments to cut into");
    (log, all)
}

#[test]
fn a_divergent_tail_is_cut_wherever_it_starts() {
    for cut_batch in [28usize, 20, 11, 1] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        run(move || async move {
            let (log, all) = filled(&path).await;
            let cut = Offset(all[cut_batch].0);
            log.replicate(cut);
            assert_eq!(log.offsets().high_watermark.offset(), cut, "only the committed part is visible");
            let bases = log.segment_bases();
            let log = truncate(log, cut).await.unwrap();
            assert_eq!(log.offsets().log_end.offset(), cut, "cut at batch {cut_batch} (segments {bases:?})");
            assert_eq!(read_all(&log).await, all[..cut_batch].to_vec(), "everything below the cut is intact");
            assert!(log.segment_bases().iter().all(|&b| b <= cut), "no segment starts past the cut");

            // The log goes on from the cut, and a reopen finds exactly that.
            let next = log.append(batch(2, 500, 99, 5_000)).await.unwrap();
            assert_eq!(next.base_offset, cut);
            let expected = read_all(&log).await;
            assert_eq!(expected.len(), cut_batch + 1);
            log.close().await.unwrap();
            let reopened = PartitionLog::open(
                &path,
                LogConfig { segment_bytes: 8192, ..LogConfig::default() },
                StorageEnv::default(),
            )
            .await
            .unwrap();
            assert_eq!(reopened.offsets().log_end.offset(), Offset(cut.value() + 2));
            assert_eq!(read_all(&reopened).await, expected);
        });
    }
}

/// `batch` from an idempotent producer: id, epoch 0, first sequence `sequence`.
fn idempotent(records: usize, producer_id: i64, sequence: i32) -> bytes::BytesMut {
    let mut bytes = batch(records, 100, sequence as u64, 1_000);
    bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
    bytes[51..53].copy_from_slice(&0i16.to_be_bytes());
    bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn producer_sequences_survive_a_cut_without_the_cut_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = LogConfig { segment_bytes: 8192, use_batch_cache: false, ..LogConfig::default() };
        let log = PartitionLog::open(&path, config, StorageEnv::default()).await.unwrap();
        // Producer 7's first batches end up in closed segments, its last one is cut.
        let mut sequence = 0;
        for _ in 0..20 {
            log.append(idempotent(2, 7, sequence)).await.unwrap();
            log.append(batch(3, 900, 1, 1_000)).await.unwrap();
            sequence += 2;
        }
        let cut = log.offsets().log_end.offset();
        log.append(idempotent(2, 7, sequence)).await.unwrap();
        log.replicate(cut);
        let log = truncate(log, cut).await.unwrap();
        // The batch before the cut is still known (a retry is a duplicate); the cut one
        // is not, so its retry goes in again at the cut.
        let retry = log.append(idempotent(2, 7, sequence - 2)).await;
        assert!(matches!(retry, Err(tern::storage::AppendError::Duplicate { .. })), "{retry:?}");
        let again = log.append(idempotent(2, 7, sequence)).await.unwrap();
        assert_eq!(again.base_offset, cut);
    });
}

#[test]
fn committed_records_are_never_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (log, all) = filled(&path).await;
        log.replicate(Offset(all[20].0));
        assert!(truncate(log.clone(), Offset(all[19].0)).await.is_err(), "below the commit: refused");
        assert_eq!(read_all(&log).await.len(), 20, "and the log is untouched");
        let end = log.offsets().log_end.offset();
        let same = truncate(log, end).await.unwrap();
        assert_eq!(same.offsets().log_end.offset(), end, "a cut at the end is nothing to do");
    });
}

#[test]
fn entries_go_in_at_the_log_end_and_become_visible_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = PartitionLog::open(&path, LogConfig::default(), StorageEnv::default()).await.unwrap();
        log.replicate(Offset(0));
        // The leader prepares (validates, stamps offset and epoch); every replica writes.
        let first = log.prepare_entry(batch(2, 100, 1, 1_000), Offset(0), 3).unwrap();
        assert_eq!(first.next_offset, Offset(2));
        let second = log.prepare_entry(batch(1, 100, 2, 1_000), first.next_offset, 3).unwrap();
        let gap = log.append_entry(second.bytes.clone(), false);
        assert!(gap.is_err(), "an entry that does not continue the log is refused");
        log.append_entry(first.bytes.clone(), false).unwrap().durable().await.unwrap();
        log.append_entry(second.bytes.clone(), false).unwrap().durable().await.unwrap();
        let offsets = log.offsets();
        assert_eq!((offsets.log_end.offset(), offsets.high_watermark.offset()), (Offset(3), Offset(0)));
        assert!(read_all(&log).await.is_empty(), "durable but not committed: not visible");
        log.set_commit(Offset(2));
        let visible = read_all(&log).await;
        assert_eq!(visible, vec![(0, first.bytes.clone())]);
        let header = tern::protocol::record_batch::BatchHeader::parse(&visible[0].1).unwrap();
        assert_eq!(header.partition_leader_epoch, 3, "the leader epoch is the Raft term");
        log.set_commit(Offset(3));
        assert_eq!(read_all(&log).await.len(), 2);
    });
}
