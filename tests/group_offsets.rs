//! The committed-offsets store on the storage engine: commits survive reopening,
//! tombstones delete, the general log cleaner compacts the log (it is
//! cleanup.policy=compact) so replay reads far less, and empty groups' stale offsets are
//! found for retention.

mod common;

use common::run;
use tern::group::offsets::{append_entries, CommittedOffset, OffsetPartition};
use tern::storage::CleanerConfig;

fn committed(offset: i64, commit_ms: i64) -> Option<CommittedOffset> {
    Some(CommittedOffset { offset, leader_epoch: -1, metadata: None, commit_ms })
}

#[test]
fn commits_tombstones_compaction_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    run(move || async move {
        let mut partition = OffsetPartition::open(&data, 3).await.unwrap();
        let log = partition.log();
        // 200 rounds of commits for the same 10 keys: the log holds 2,000 entries, 10 live.
        for round in 0..200i64 {
            let entries: Vec<_> = (0..10)
                .map(|p| (("g".to_string(), "t".to_string(), p), committed(round * 10 + i64::from(p), round)))
                .collect();
            append_entries(&log, &entries).await.unwrap();
            partition.apply(entries);
        }
        let gone = vec![(("g".to_string(), "t".to_string(), 9), None)];
        append_entries(&log, &gone).await.unwrap();
        partition.apply(gone);
        let before = partition.group_offsets("g");
        assert_eq!(before.len(), 9);
        // Seal the segment holding the commits (the cleaner never touches the active one).
        log.request_roll();
        let marker = vec![(("other".to_string(), "t".to_string(), 0), committed(1, 5_000))];
        append_entries(&log, &marker).await.unwrap();
        partition.apply(marker);
        let size_before = log.size_bytes();
        let report = log.clean(&CleanerConfig::default()).await.unwrap();
        assert_eq!(report.records_removed, 2001 - 10, "the 9 live commits and the fresh tombstone are left");
        assert!(log.size_bytes() * 10 < size_before, "{} bytes of {size_before} left", log.size_bytes());
        log.close().await.unwrap();

        let reopened = OffsetPartition::open(&data, 3).await.unwrap();
        assert_eq!(reopened.group_offsets("g"), before, "replay after compaction gives the same offsets");
        assert_eq!(reopened.groups(), vec!["g".to_string(), "other".to_string()]);
        assert_eq!(reopened.stale_groups(1000), vec!["g".to_string()]);
        assert!(reopened.stale_groups(0).is_empty());
    });
}
