//! Torn-tail recovery: a log is written and closed, then its last segment is cut at a
//! random byte and/or has random garbage appended (what a crash mid-write leaves).
//! Reopening must keep exactly the batches that are wholly intact before the damage,
//! byte for byte, and new appends must continue from the next offset. Cases come from
//! proptest (the failing seed is printed on failure).

mod common;

use common::{batch, run};
use proptest::prelude::*;
use tern::protocol::record_batch::iter_batches;
use tern::storage::{LogConfig, Offset, PartitionLog, StorageEnv};

fn read_everything(path: std::path::PathBuf) -> Vec<Vec<u8>> {
    run(move || async move {
        let log = PartitionLog::open(&path, LogConfig::default(), StorageEnv::default()).await.unwrap();
        let mut out = Vec::new();
        let mut offset = log.offsets().log_start.offset();
        loop {
            let read = log.read(offset, 1 << 20).await.unwrap();
            if read.records.is_empty() {
                break;
            }
            let bytes: Vec<u8> = read.records.iter().flat_map(|b| b.iter().copied()).collect();
            for (header, range) in iter_batches(&bytes) {
                out.push(bytes[range].to_vec());
                offset = Offset(header.next_offset());
            }
        }
        let end = log.offsets().log_end.offset();
        let info = log.append(batch(1, 10, 7, 7)).await.unwrap();
        assert_eq!(info.base_offset, end, "appends continue right after the recovered tail");
        log.close().await.unwrap();
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn reopen_keeps_exactly_the_intact_prefix(
        sizes in proptest::collection::vec(1usize..6000, 1..25),
        cut_fraction in 0.0f64..1.0,
        cut in any::<bool>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let writer_path = path.clone();
        let written = sizes.clone();
        run(move || async move {
            let log = PartitionLog::open(&writer_path, LogConfig::default(), StorageEnv::default()).await.unwrap();
            for (n, size) in written.iter().enumerate() {
                log.append(batch(1 + n % 3, *size, n as u64, n as i64)).await.unwrap();
            }
            log.close().await.unwrap();
        });
        let segment = path.join(format!("{:020}.log", 0));
        let original = std::fs::read(&segment).unwrap();
        let batches: Vec<Vec<u8>> = iter_batches(&original).map(|(_, r)| original[r].to_vec()).collect();
        prop_assert_eq!(batches.len(), sizes.len());

        let keep = if cut { (original.len() as f64 * cut_fraction) as usize } else { original.len() };
        let mut damaged = original[..keep].to_vec();
        damaged.extend_from_slice(&garbage);
        std::fs::write(&segment, &damaged).unwrap();

        // The intact prefix: batches that end at or before the cut. Garbage after a
        // clean cut can only extend it if it happens to be a valid batch (CRC-32C makes
        // that practically impossible).
        let mut intact = Vec::new();
        let mut end = 0;
        for b in &batches {
            if end + b.len() > keep { break; }
            end += b.len();
            intact.push(b.clone());
        }
        let recovered = read_everything(path.clone());
        prop_assert_eq!(recovered.len(), intact.len());
        prop_assert!(recovered == intact, "recovered batches differ from the intact prefix");
        let trimmed = std::fs::metadata(&segment).unwrap().len() as usize;
        prop_assert!(trimmed >= end, "file keeps the intact prefix");
    }
}
