//! Raft entries as record batches.
//!
//! A data entry's payload is the record batch the leader prepared (offset and leader
//! epoch stamped, both outside the CRC). The empty entry raft-rs appends when a node
//! becomes leader is written as a control batch of one record (Kafka clients skip
//! control batches and move past their offset): producer id -1, no timestamps (replicas'
//! clocks differ, and each replica builds it itself from the empty entry), the Raft term
//! as leader epoch, and a control key of type [`LEADER_NOOP_CONTROL_TYPE`] with an empty
//! value. Built the same way on every replica, it is byte-identical everywhere.

use bytes::Bytes;

use crate::protocol::control_batch::{self, ControlBatch};
use crate::protocol::record_batch::NO_TIMESTAMP;
use crate::storage::Offset;

/// Control record type of a leader's first entry in its term. Kafka's own types are 0
/// (abort), 1 (commit), 2 (leader change, with a message clients of the metadata log
/// read), 3-6 (KRaft snapshot and voters records); clients treat a type they do not
/// know as one to skip.
pub const LEADER_NOOP_CONTROL_TYPE: i16 = 0x7401;

/// Control record type of a change of the group's replicas (a Raft configuration change,
/// `shard::reassignment`): its value is the raft-rs `ConfChangeV2`, protobuf-encoded.
pub const REPLICA_SET_CONTROL_TYPE: i16 = 0x7402;

/// The control batch for a configuration-change entry of `term`, at `base_offset`.
pub fn conf_change_batch(base_offset: Offset, term: u64, change: &[u8]) -> Bytes {
    raft_control_batch(base_offset, term, REPLICA_SET_CONTROL_TYPE, change)
}

/// A control batch of the group's own (no producer, no timestamp, the term as epoch):
/// built the same way on every replica, so byte-identical everywhere.
fn raft_control_batch(base_offset: Offset, term: u64, control_type: i16, value: &[u8]) -> Bytes {
    control_batch::encode(&ControlBatch {
        base_offset: base_offset.value(),
        leader_epoch: epoch_of(term),
        producer_id: -1,
        producer_epoch: -1,
        transactional: false,
        timestamp_ms: NO_TIMESTAMP,
        control_type,
        value,
    })
}

/// The `ConfChangeV2` a batch carries, if it is a configuration-change entry.
pub fn conf_change_in(batch: &[u8]) -> Option<Bytes> {
    let header = crate::protocol::record_batch::BatchHeader::parse(batch).ok()?;
    if control_batch::control_type(batch, &header)? != REPLICA_SET_CONTROL_TYPE {
        return None;
    }
    let record = crate::protocol::record_batch::records(batch, &header)?.into_iter().next()?;
    Some(Bytes::copy_from_slice(record.value.unwrap_or_default()))
}

/// The control batch for a new leader's empty entry of `term`, at `base_offset`.
pub fn leader_noop_batch(base_offset: Offset, term: u64) -> Bytes {
    raft_control_batch(base_offset, term, LEADER_NOOP_CONTROL_TYPE, &[])
}

/// The Kafka leader epoch of a Raft term (terms start at 1; epochs fit an i32).
pub fn epoch_of(term: u64) -> i32 {
    i32::try_from(term).unwrap_or(i32::MAX)
}

/// How many offsets an entry's payload takes: an empty entry one (its control batch),
/// a batch its record count.
pub fn offsets_of(data: &[u8]) -> Option<i64> {
    if data.is_empty() {
        return Some(1);
    }
    let header = crate::protocol::record_batch::BatchHeader::parse(data).ok()?;
    Some(i64::from(header.last_offset_delta) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::validate_batch;

    #[test]
    fn the_noop_batch_is_a_valid_control_batch_of_one_offset() {
        let batch = leader_noop_batch(Offset(42), 7);
        let header = validate_batch(&batch, usize::MAX).unwrap();
        assert!(header.is_control());
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.record_count, 1);
        assert_eq!(header.producer_id, -1);
        assert_eq!(offsets_of(&batch), Some(1));
        assert_eq!(offsets_of(&[]), Some(1));
        assert_eq!(leader_noop_batch(Offset(42), 7), batch, "every replica builds the same bytes");
        assert_eq!(conf_change_in(&batch), None);
    }

    #[test]
    fn a_conf_change_batch_carries_its_change() {
        let batch = conf_change_batch(Offset(9), 3, b"\x08\x01change");
        let header = validate_batch(&batch, usize::MAX).unwrap();
        assert!(header.is_control());
        assert_eq!((header.base_offset, header.partition_leader_epoch, header.record_count), (9, 3, 1));
        assert_eq!(offsets_of(&batch), Some(1));
        assert_eq!(conf_change_in(&batch).as_deref(), Some(&b"\x08\x01change"[..]));
    }
}
