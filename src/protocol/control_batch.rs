//! Control batches: one-record batches the broker writes itself, which clients skip
//! (attribute bit 5). Their record key is `[i16 version = 0][i16 type]`. Kafka's types
//! are 0 (abort marker), 1 (commit marker), 2 (leader change), 3-6 (KRaft snapshot and
//! voters records); Tern adds one for Raft's empty leader entry (`replication::entry`).
//!
//! A transaction marker (KIP-98) is a control batch that is also transactional (bit 4),
//! carries the producer's id and epoch, and has the value `[i16 version = 0][i32
//! coordinator epoch]`. A read_committed consumer drops the producer's batches up to an
//! abort marker, using the aborted-transaction list the Fetch response carries.

use bytes::{BufMut, Bytes, BytesMut};

use super::record_batch::{
    put_varint, records, BatchHeader, ATTRIBUTE_CONTROL, ATTRIBUTE_TRANSACTIONAL, BATCH_HEADER_BYTES,
    BATCH_LOG_OVERHEAD_BYTES, MAGIC_V2, NO_TIMESTAMP,
};

/// Control type of an abort marker.
pub const ABORT_MARKER: i16 = 0;
/// Control type of a commit marker.
pub const COMMIT_MARKER: i16 = 1;

/// What a control batch carries besides its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlBatch<'a> {
    pub base_offset: i64,
    pub leader_epoch: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Also a transaction marker (the transactional attribute).
    pub transactional: bool,
    /// The record timestamp; `NO_TIMESTAMP` when replicas must build identical bytes.
    pub timestamp_ms: i64,
    pub control_type: i16,
    pub value: &'a [u8],
}

/// Encodes a one-record control batch with a valid CRC.
pub fn encode(batch: &ControlBatch<'_>) -> Bytes {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes()); // control record version
    key.extend_from_slice(&batch.control_type.to_be_bytes());
    let mut record = Vec::with_capacity(16 + batch.value.len());
    record.push(0); // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, key.len() as i64);
    record.extend_from_slice(&key);
    put_varint(&mut record, batch.value.len() as i64);
    record.extend_from_slice(batch.value);
    put_varint(&mut record, 0); // no headers
    let mut section = Vec::with_capacity(record.len() + 2);
    put_varint(&mut section, record.len() as i64);
    section.extend_from_slice(&record);

    let attributes = ATTRIBUTE_CONTROL | if batch.transactional { ATTRIBUTE_TRANSACTIONAL } else { 0 };
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + section.len());
    out.put_i64(batch.base_offset);
    out.put_i32((BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES + section.len()) as i32);
    out.put_i32(batch.leader_epoch);
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // crc, below
    out.put_i16(attributes);
    out.put_i32(0); // last offset delta
    out.put_i64(batch.timestamp_ms);
    out.put_i64(batch.timestamp_ms);
    out.put_i64(batch.producer_id);
    out.put_i16(batch.producer_epoch);
    out.put_i32(-1); // base sequence
    out.put_i32(1); // record count
    out.put_slice(&section);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// A transaction marker for `producer_id`/`producer_epoch`: commit or abort.
pub fn transaction_marker(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    now_ms: i64,
) -> Bytes {
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    encode(&ControlBatch {
        base_offset: 0,
        leader_epoch: -1,
        producer_id,
        producer_epoch,
        transactional: true,
        timestamp_ms: if now_ms < 0 { NO_TIMESTAMP } else { now_ms },
        control_type: if commit { COMMIT_MARKER } else { ABORT_MARKER },
        value: &value,
    })
}

/// The control type of a control batch's first record, `None` when it is not a control
/// batch or its record is malformed.
pub fn control_type(bytes: &[u8], header: &BatchHeader) -> Option<i16> {
    if !header.is_control() {
        return None;
    }
    let first = records(bytes, header)?.into_iter().next()?;
    let key = first.key?;
    (key.len() >= 4).then(|| i16::from_be_bytes([key[2], key[3]]))
}

/// The outcome a transaction marker records: `Some(true)` commit, `Some(false)` abort,
/// `None` when the batch is not a transaction marker.
pub fn marker_outcome(bytes: &[u8], header: &BatchHeader) -> Option<bool> {
    if !header.is_control() || header.attributes & ATTRIBUTE_TRANSACTIONAL == 0 {
        return None;
    }
    match control_type(bytes, header)? {
        COMMIT_MARKER => Some(true),
        ABORT_MARKER => Some(false),
        _ => None,
    }
}

/// The coordinator epoch a transaction marker carries (its value is `[version
/// i16][coordinator epoch i32]`); `None` when the batch is not a transaction marker or
/// its value is malformed.
pub fn marker_coordinator_epoch(bytes: &[u8], header: &BatchHeader) -> Option<i32> {
    marker_outcome(bytes, header)?;
    let first = records(bytes, header)?.into_iter().next()?;
    let value = first.value?;
    (value.len() >= 6).then(|| i32::from_be_bytes([value[2], value[3], value[4], value[5]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::validate_batch;

    #[test]
    fn markers_are_valid_control_batches_that_say_their_outcome() {
        for commit in [true, false] {
            let batch = transaction_marker(42, 3, commit, 7, 1_000);
            let header = validate_batch(&batch, usize::MAX).unwrap();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch, header.record_count), (42, 3, 1));
            assert_eq!(marker_outcome(&batch, &header), Some(commit));
        }
        let noop = encode(&ControlBatch {
            base_offset: 5,
            leader_epoch: 2,
            producer_id: -1,
            producer_epoch: -1,
            transactional: false,
            timestamp_ms: NO_TIMESTAMP,
            control_type: 0x7401,
            value: &[],
        });
        let header = validate_batch(&noop, usize::MAX).unwrap();
        assert_eq!(control_type(&noop, &header), Some(0x7401));
        assert_eq!(marker_outcome(&noop, &header), None, "not transactional: not a marker");
    }
}
