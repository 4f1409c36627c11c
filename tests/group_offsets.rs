//! The committed-offsets store on the storage engine: commits survive reopening,
//! tombstones delete, compaction rewrites only live entries and moves the log start so
//! replay reads far less, and empty groups' stale offsets are found for retention.

mod common;

use common::run;
use tern::group::offsets::{append_entries, compact, CommittedOffset, OffsetPartition};

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
        let log_end_before = log.offsets().log_end.value();

        compact(&log, partition.live()).await.unwrap();
        assert!(log.offsets().log_start.value() >= log_end_before, "stale entries are below the new log start");
        log.close().await.unwrap();

        let reopened = OffsetPartition::open(&data, 3).await.unwrap();
        assert_eq!(reopened.group_offsets("g"), before, "replay after compaction gives the same offsets");
        assert_eq!(reopened.stale_groups(1000), vec!["g".to_string()]);
        assert!(reopened.stale_groups(0).is_empty());
    });
}
