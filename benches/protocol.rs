//! Protocol hot-path microbenchmarks (criterion):
//! - `produce_decode_validate/<record size>`: a whole Produce request frame (8
//!   partitions x 256 KiB batches) through header parsing, `kafka-protocol` body decoding
//!   (record batches stay zero-copy `Bytes`) and per-batch validation (header + CRC-32C),
//!   as the broker does before appending. Throughput is request bytes.
//! - `fetch_framing/<partitions>`: hand framing of a Fetch v12 response whose record
//!   chunks are 1 MiB cached batches and file regions (the framing only; the bytes are
//!   never touched).
//! - `batch_cache/read_tail`: a tailing read from the per-shard batch cache holding
//!   8 logs' recent batches.
//! - `bench_payload/build_256KiB`: the load tool building one 256 KiB batch of 100-byte
//!   records from its template (the client-side cost per batch).
//! - `recompress_16KiB/none_to_<codec>`: the broker re-encoding a 16 KiB batch for a
//!   topic's `compression.type` (the cost a codec other than the producer's adds).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;
use tern::bench::payload::{records_per_batch, BatchTemplate};
use tern::protocol::compression::{recompress_batch, Codec};
use tern::protocol::fetch_response::{encode, FetchPartition, FetchTopic};
use tern::protocol::record_batch::validate_batch;
use tern::server::frame::{decode_body, parse_header, peek_api};
use tern::storage::batch_cache::{BatchCache, LogCache};
use tern::storage::{FileRegion, Offset, RecordChunk};

fn produce_frame(record_size: usize) -> Bytes {
    let per_batch = records_per_batch(256 << 10, 0, record_size);
    let template = BatchTemplate::new(per_batch, 0, record_size, Compression::None, 1);
    let partitions = (0..8)
        .map(|p| {
            PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(template.build(per_batch, 0, |_| 0).unwrap()))
        })
        .collect();
    let body = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(partitions),
    ]);
    let version = 9;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut frame = BytesMut::new();
    header.encode(&mut frame, ApiKey::Produce.request_header_version(version)).unwrap();
    body.encode(&mut frame, version).unwrap();
    frame.freeze()
}

fn produce_decode_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce_decode_validate");
    for record_size in [100usize, 1024] {
        let frame = produce_frame(record_size);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(record_size), &frame, |b, frame| {
            b.iter(|| {
                let (key, version) = peek_api(frame).unwrap();
                let api = ApiKey::try_from(key).unwrap();
                let request = parse_header(frame.clone(), api, version).unwrap();
                let body: ProduceRequest = decode_body(&request).unwrap();
                let mut records = 0;
                for topic in &body.topic_data {
                    for partition in &topic.partition_data {
                        let batch = partition.records.as_ref().unwrap();
                        records += validate_batch(batch, 1 << 20).unwrap().record_count;
                    }
                }
                records
            })
        });
    }
    group.finish();
}

fn fetch_framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_framing");
    let file = Arc::new(tempfile::tempfile().unwrap());
    let cached = Bytes::from(vec![7u8; 1 << 20]);
    for partitions in [1i32, 8, 64] {
        let topics = vec![FetchTopic {
            name: "bench".into(),
            topic_id: [1; 16],
            partitions: (0..partitions)
                .map(|p| FetchPartition {
                    partition_index: p,
                    high_watermark: 1_000_000,
                    last_stable_offset: 1_000_000,
                    log_start_offset: 0,
                    records: vec![if p % 2 == 0 {
                        RecordChunk::Memory(cached.clone())
                    } else {
                        RecordChunk::File(FileRegion { file: file.clone(), position: 0, len: 1 << 20 })
                    }],
                    ..Default::default()
                })
                .collect(),
        }];
        group.bench_with_input(BenchmarkId::from_parameter(partitions), &topics, |b, topics| {
            b.iter(|| encode(12, 1, topics).len())
        });
    }
    group.finish();
}

fn batch_cache(c: &mut Criterion) {
    let shared = BatchCache::shared(64 << 20);
    let mut logs: Vec<LogCache> = (0..8).map(|_| LogCache::new(shared.clone(), true)).collect();
    let batch = Bytes::from(vec![1u8; 16 << 10]);
    for log in &mut logs {
        for i in 0..500i64 {
            log.push(Offset(i * 100), Offset(i * 100 + 100), batch.clone());
        }
    }
    c.bench_function("batch_cache/read_tail", |b| {
        b.iter(|| logs[3].read(Offset(49_000), Offset(50_000), 1 << 20).map(|v| v.len()))
    });
}

fn bench_payload(c: &mut Criterion) {
    let per_batch = records_per_batch(256 << 10, 0, 100);
    let template = BatchTemplate::new(per_batch, 0, 100, Compression::None, 1);
    let mut group = c.benchmark_group("bench_payload");
    group.throughput(Throughput::Bytes(256 << 10));
    group.bench_function("build_256KiB", |b| b.iter(|| template.build(per_batch, 0, |i| i as u64).unwrap().len()));
    group.finish();
}

/// What `compression.type` costs the broker: one 16 KiB batch of 100-byte records (the
/// Java client's default batch size) stored in another codec than the producer's.
fn recompression(c: &mut Criterion) {
    let per_batch = records_per_batch(16 << 10, 0, 100);
    let template = BatchTemplate::new(per_batch, 0, 100, Compression::None, 1);
    let batch = template.build(per_batch, 0, |i| i as u64).unwrap();
    let header = validate_batch(&batch, usize::MAX).unwrap();
    let mut group = c.benchmark_group("recompress_16KiB");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    for codec in [Codec::Lz4, Codec::Zstd, Codec::Snappy, Codec::Gzip] {
        group.bench_function(format!("none_to_{}", codec.config_name()), |b| {
            b.iter(|| recompress_batch(&batch, &header, codec, None, 1 << 20).unwrap().len())
        });
    }
    group.finish();
}

criterion_group!(benches, produce_decode_validate, fetch_framing, batch_cache, bench_payload, recompression);
criterion_main!(benches);
