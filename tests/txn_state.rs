//! The transaction coordinator's state on a real disk: a state change is durable before
//! it applies and replays after a restart; one request per id at a time; ids idle past
//! the expiration are found and forgotten for good; a cluster node coordinates a
//! partition's ids only while it leads it (`lead` reloads them, `follow` drops them).

mod common;

use std::collections::BTreeSet;

use common::run;
use tern::protocol::topic_partition::TopicPartition;
use tern::txn::{partition_for_txn, TxnConfig, TxnCoordinator, TxnError, TxnMetadata, TxnState, TXN_STATE_PARTITIONS};

fn meta(state: TxnState, update_ms: i64) -> TxnMetadata {
    TxnMetadata {
        producer_id: 42,
        producer_epoch: 3,
        timeout_ms: 60_000,
        state,
        start_ms: if state == TxnState::Ongoing { update_ms } else { -1 },
        update_ms,
        partitions: if state == TxnState::Ongoing {
            [TopicPartition::new("orders", 1)].into_iter().collect()
        } else {
            BTreeSet::new()
        },
    }
}

#[test]
fn state_replays_after_a_restart_and_idle_ids_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    run(move || async move {
        let owns_all = |p: i32| (0..TXN_STATE_PARTITIONS).contains(&p);
        let coordinator = TxnCoordinator::new(TxnConfig::default());
        assert!(matches!(coordinator.lock("early"), Err(TxnError::CoordinatorLoadInProgress)));
        coordinator.load(&data, owns_all, owns_all).await.unwrap();
        {
            let lock = coordinator.lock("open-one").unwrap();
            assert!(
                matches!(coordinator.lock("open-one"), Err(TxnError::ConcurrentTransactions)),
                "one request per id at a time"
            );
            coordinator.persist(&lock, meta(TxnState::Ongoing, 5_000)).await.unwrap();
        }
        {
            let lock = coordinator.lock("idle-one").unwrap();
            coordinator.persist(&lock, meta(TxnState::CompleteCommit, 1_000)).await.unwrap();
        }
        assert_eq!(coordinator.idle_since(2_000), vec!["idle-one".to_string()], "open transactions never expire");
        assert_eq!(coordinator.expired(5_000 + 60_001), vec!["open-one".to_string()]);
        coordinator.close().await.unwrap();

        let restarted = TxnCoordinator::new(TxnConfig::default());
        restarted.load(&data, owns_all, owns_all).await.unwrap();
        assert_eq!(restarted.get("open-one"), Some(meta(TxnState::Ongoing, 5_000)));
        assert_eq!(restarted.get("idle-one"), Some(meta(TxnState::CompleteCommit, 1_000)));
        let lock = restarted.lock("idle-one").unwrap();
        restarted.forget(&lock).await.unwrap();
        drop(lock);
        assert_eq!(restarted.get("idle-one"), None);
        restarted.close().await.unwrap();

        let again = TxnCoordinator::new(TxnConfig::default());
        again.load(&data, owns_all, owns_all).await.unwrap();
        assert_eq!(again.get("idle-one"), None, "a forgotten id stays forgotten");
        assert!(again.get("open-one").is_some());
        again.close().await.unwrap();
    });
}

#[test]
fn a_partition_is_coordinated_only_between_lead_and_follow() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    run(move || async move {
        let owns_all = |p: i32| (0..TXN_STATE_PARTITIONS).contains(&p);
        let partition = partition_for_txn("led-one");
        // First as a standalone node would: write the id's state.
        let writer = TxnCoordinator::new(TxnConfig::default());
        writer.load(&data, owns_all, owns_all).await.unwrap();
        {
            let lock = writer.lock("led-one").unwrap();
            writer.persist(&lock, meta(TxnState::Ongoing, 7_000)).await.unwrap();
        }
        writer.close().await.unwrap();

        // A replica that does not lead the partition yet: it holds the log, not the ids.
        let replica = TxnCoordinator::new(TxnConfig::default());
        replica.load(&data, owns_all, |_| false).await.unwrap();
        assert!(matches!(replica.lock("led-one"), Err(TxnError::NotCoordinator)));
        assert_eq!(replica.get("led-one"), None);
        assert!(!replica.has_open(), "a follower does not time out transactions it does not coordinate");

        // Elected: the ids come back from the log.
        assert_eq!(replica.lead(partition, 3).await.unwrap(), 1);
        assert_eq!(replica.get("led-one"), Some(meta(TxnState::Ongoing, 7_000)));
        assert_eq!(replica.coordinator_epoch(partition), 3, "its markers carry the leader epoch");
        assert!(replica.has_open());
        drop(replica.lock("led-one").unwrap());

        // Deposed: they go at once, and requests are refused.
        replica.follow(partition);
        assert_eq!(replica.get("led-one"), None);
        assert!(matches!(replica.lock("led-one"), Err(TxnError::NotCoordinator)));
        replica.close().await.unwrap();
    });
}
