//! Hand framing of Fetch responses (versions 4-17), so record bytes are never copied
//! into a response buffer: the response is a list of chunks, small framing chunks
//! written here and the record batches exactly as the log returned them (`Bytes`
//! shared with the batch cache, or a segment file region the connection sends with
//! sendfile).
//!
//! Field layout per version follows Kafka's FetchResponse schema; v12 is the first
//! flexible version (compact arrays/strings/bytes and tagged fields); from v13 a topic is
//! named by its topic id (KIP-516); v14-17 add only tagged fields, none of which Tern
//! sends (no fetch from followers, no moved leaders). A unit test checks
//! the output byte for byte against the `kafka-protocol` encoder for every version.

use bytes::{BufMut, BytesMut};

use super::record_chunk::RecordChunk;

/// Record chunks smaller than this are copied into the framing buffer; one write of a
/// few KiB is cheaper than an extra chunk.
pub const RECORDS_INLINE_BYTES_MAX: usize = 16 << 10;

/// One partition of a Fetch response.
#[derive(Debug, Clone, Default)]
pub struct FetchPartition {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// read_committed: the aborted transactions the records may hold, as
    /// `(producer id, first offset)`.
    pub aborted: Vec<(i64, i64)>,
    /// Whole batches, back to back once concatenated.
    pub records: Vec<RecordChunk>,
    /// v12+ (KIP-320): the client's last fetched epoch ends before its fetch offset in
    /// this log, as `(epoch, end offset)`: it must truncate there (tagged field 0).
    pub diverging_epoch: Option<(i32, i64)>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchTopic {
    pub name: String,
    /// Topic id (KIP-516); responses of v13+ name the topic by it.
    pub topic_id: [u8; 16],
    pub partitions: Vec<FetchPartition>,
}

/// A response as chunks to write in order; the first chunk starts with the length.
#[derive(Debug, Default)]
pub struct Chunks {
    chunks: Vec<RecordChunk>,
    current: BytesMut,
}

impl Chunks {
    fn put_records(&mut self, records: &[RecordChunk]) {
        for chunk in records {
            match chunk {
                RecordChunk::Memory(batch) if batch.len() <= RECORDS_INLINE_BYTES_MAX => {
                    self.current.extend_from_slice(batch);
                }
                other => {
                    self.flush_current();
                    self.chunks.push(other.clone());
                }
            }
        }
    }

    fn flush_current(&mut self) {
        if !self.current.is_empty() {
            self.chunks.push(RecordChunk::Memory(self.current.split().freeze()));
        }
    }

    fn finish(mut self) -> Vec<RecordChunk> {
        let length = (self.chunks.iter().map(RecordChunk::len).sum::<usize>() + self.current.len() - 4) as i32;
        // The length prefix is the first bytes ever written, so it is in the first chunk
        // (or still in `current`), which is always in memory.
        match self.chunks.first_mut() {
            Some(RecordChunk::Memory(first)) => {
                let mut patched = BytesMut::from(&first[..]);
                patched[..4].copy_from_slice(&length.to_be_bytes());
                *first = patched.freeze();
            }
            Some(RecordChunk::File(_)) => unreachable!("a response starts with its framing"),
            None => self.current[..4].copy_from_slice(&length.to_be_bytes()),
        }
        self.flush_current();
        self.chunks
    }
}

fn put_unsigned_varint(out: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn put_array_len(out: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_unsigned_varint(out, len as u32 + 1);
    } else {
        out.put_i32(len as i32);
    }
}

fn put_string(out: &mut BytesMut, flexible: bool, value: &str) {
    if flexible {
        put_unsigned_varint(out, value.len() as u32 + 1);
    } else {
        out.put_i16(value.len() as i16);
    }
    out.extend_from_slice(value.as_bytes());
}

/// Encodes `[length][header][FetchResponse body]` for `version` (4..=17), with
/// throttle 0, top-level error 0, session id 0 and no preferred read replica.
pub fn encode(version: i16, correlation_id: i32, topics: &[FetchTopic]) -> Vec<RecordChunk> {
    assert!((4..=17).contains(&version), "fetch framing covers versions 4-17");
    let flexible = version >= 12;
    let mut out = Chunks { chunks: Vec::new(), current: BytesMut::with_capacity(512) };
    let buf = &mut out.current;
    buf.put_i32(0); // length, patched in finish()
    buf.put_i32(correlation_id);
    if flexible {
        put_unsigned_varint(buf, 0); // response header tagged fields
    }
    buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buf.put_i16(0); // error_code
        buf.put_i32(0); // session_id
    }
    put_array_len(buf, flexible, topics.len());
    for topic in topics {
        if version >= 13 {
            out.current.extend_from_slice(&topic.topic_id);
        } else {
            put_string(&mut out.current, flexible, &topic.name);
        }
        put_array_len(&mut out.current, flexible, topic.partitions.len());
        for partition in &topic.partitions {
            let buf = &mut out.current;
            buf.put_i32(partition.partition_index);
            buf.put_i16(partition.error_code);
            buf.put_i64(partition.high_watermark);
            buf.put_i64(partition.last_stable_offset);
            if version >= 5 {
                buf.put_i64(partition.log_start_offset);
            }
            put_array_len(buf, flexible, partition.aborted.len());
            for &(producer_id, first_offset) in &partition.aborted {
                buf.put_i64(producer_id);
                buf.put_i64(first_offset);
                if flexible {
                    put_unsigned_varint(buf, 0); // aborted transaction tagged fields
                }
            }
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            let records_len: usize = partition.records.iter().map(RecordChunk::len).sum();
            if flexible {
                put_unsigned_varint(buf, records_len as u32 + 1);
            } else {
                buf.put_i32(records_len as i32);
            }
            out.put_records(&partition.records);
            if flexible {
                let buf = &mut out.current;
                match partition.diverging_epoch {
                    Some((epoch, end_offset)) => {
                        put_unsigned_varint(buf, 1); // partition tagged fields: one
                        put_unsigned_varint(buf, 0); // tag 0: DivergingEpoch
                        put_unsigned_varint(buf, 4 + 8 + 1); // its size
                        buf.put_i32(epoch);
                        buf.put_i64(end_offset);
                        put_unsigned_varint(buf, 0); // its own tagged fields
                    }
                    None => put_unsigned_varint(buf, 0), // partition tagged fields
                }
            }
        }
        if flexible {
            put_unsigned_varint(&mut out.current, 0); // topic tagged fields
        }
    }
    if flexible {
        put_unsigned_varint(&mut out.current, 0); // top-level tagged fields
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{ApiKey, FetchResponse, ProducerId, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use proptest::prelude::*;

    fn reference(version: i16, correlation_id: i32, topics: &[FetchTopic]) -> Vec<u8> {
        let response = FetchResponse::default().with_session_id(0).with_responses(
            topics
                .iter()
                .map(|t| {
                    FetchableTopicResponse::default()
                        .with_topic(TopicName(StrBytes::from_string(t.name.clone())))
                        .with_topic_id(uuid::Uuid::from_bytes(t.topic_id))
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    let joined: Vec<u8> =
                                        p.records.iter().flat_map(|c| c.to_bytes().unwrap().to_vec()).collect();
                                    let mut data = PartitionData::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(p.error_code)
                                        .with_high_watermark(p.high_watermark)
                                        .with_last_stable_offset(p.last_stable_offset)
                                        .with_aborted_transactions(Some(
                                            p.aborted
                                                .iter()
                                                .map(|&(id, first)| {
                                                    AbortedTransaction::default()
                                                        .with_producer_id(ProducerId(id))
                                                        .with_first_offset(first)
                                                })
                                                .collect(),
                                        ))
                                        .with_records(Some(Bytes::from(joined)));
                                    if version >= 5 {
                                        data.log_start_offset = p.log_start_offset;
                                    }
                                    if let (Some((epoch, end)), true) = (p.diverging_epoch, version >= 12) {
                                        data.diverging_epoch =
                                            EpochEndOffset::default().with_epoch(epoch).with_end_offset(end);
                                    }
                                    data
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
        let mut out = BytesMut::new();
        out.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut out, ApiKey::Fetch.response_header_version(version))
            .unwrap();
        response.encode(&mut out, version).unwrap();
        let length = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&length.to_be_bytes());
        out.to_vec()
    }

    fn topics_strategy() -> impl Strategy<Value = Vec<FetchTopic>> {
        let partition = (
            any::<i32>(),
            any::<i16>(),
            any::<i64>(),
            any::<i64>(),
            proptest::collection::vec(any::<(i64, i64)>(), 0..3),
            proptest::collection::vec(0usize..40_000, 0..3),
            proptest::option::of(any::<(i32, i64)>()),
        )
            .prop_map(|(index, error, hw, start, aborted, sizes, diverging_epoch)| FetchPartition {
                partition_index: index,
                error_code: error,
                high_watermark: hw,
                last_stable_offset: hw,
                log_start_offset: start,
                aborted,
                records: sizes
                    .into_iter()
                    .map(|n| RecordChunk::Memory(Bytes::from(vec![(n % 251) as u8; n])))
                    .collect(),
                diverging_epoch,
            });
        let topic = ("[a-z]{1,20}", any::<[u8; 16]>(), proptest::collection::vec(partition, 0..4))
            .prop_map(|(name, topic_id, partitions)| FetchTopic { name, topic_id, partitions });
        proptest::collection::vec(topic, 0..3)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
        #[test]
        fn matches_the_reference_encoder(version in 4i16..=17, correlation_id in any::<i32>(), topics in topics_strategy()) {
            let chunks = encode(version, correlation_id, &topics);
            let ours: Vec<u8> = chunks.iter().flat_map(|c| c.to_bytes().unwrap().to_vec()).collect();
            prop_assert_eq!(ours, reference(version, correlation_id, &topics));
        }
    }

    #[test]
    fn large_batches_stay_separate_chunks() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let topics = vec![FetchTopic {
            name: "t".into(),
            topic_id: [7; 16],
            partitions: vec![FetchPartition { records: vec![RecordChunk::Memory(big.clone())], ..Default::default() }],
        }];
        let chunks = encode(11, 1, &topics);
        let own_buffer = chunks.iter().any(|c| matches!(c, RecordChunk::Memory(b) if b.as_ptr() == big.as_ptr()));
        assert!(own_buffer, "the batch is sent from its own buffer, not copied");
    }

    #[test]
    fn file_regions_stay_separate_chunks_between_memory_framing() {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[9u8; 300]).unwrap();
        let region =
            super::super::record_chunk::FileRegion { file: std::sync::Arc::new(file), position: 100, len: 150 };
        let topics = vec![FetchTopic {
            name: "t".into(),
            topic_id: [7; 16],
            partitions: vec![
                FetchPartition { records: vec![RecordChunk::File(region)], ..Default::default() },
                FetchPartition { records: vec![RecordChunk::Memory(Bytes::from_static(b"abc"))], ..Default::default() },
            ],
        }];
        let chunks = encode(12, 7, &topics);
        assert!(matches!(chunks[0], RecordChunk::Memory(_)));
        assert!(matches!(chunks[1], RecordChunk::File(ref r) if r.position == 100 && r.len == 150));
        assert!(matches!(chunks[2], RecordChunk::Memory(_)));
        let ours: Vec<u8> = chunks.iter().flat_map(|c| c.to_bytes().unwrap().to_vec()).collect();
        let expected_topics = vec![FetchTopic {
            name: "t".into(),
            topic_id: [7; 16],
            partitions: vec![
                FetchPartition {
                    records: vec![RecordChunk::Memory(Bytes::from(vec![9u8; 150]))],
                    ..Default::default()
                },
                FetchPartition { records: vec![RecordChunk::Memory(Bytes::from_static(b"abc"))], ..Default::default() },
            ],
        }];
        assert_eq!(ours, reference(12, 7, &expected_topics));
    }
}
