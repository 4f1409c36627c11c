//! rskafka (a pure-Rust Kafka client) against the real `tern` binary with 2 shards:
//! 100,000 keyed records with headers and timestamps over 8 partitions (spread over both
//! shards), each consumed exactly once and in order per partition; zstd batches too.
//! The broker is started on a free port with a temp data dir and stopped by PID with
//! SIGTERM, which must end it with exit code 0.

use std::collections::BTreeMap;
mod common;

use chrono::{TimeZone, Utc};
use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;

use common::broker::TestBroker;

const PARTITIONS: i32 = 8;
const RECORDS: usize = 100_000;
const BATCH: usize = 500;

fn record(seq: usize) -> Record {
    Record {
        key: Some(format!("key-{}", seq % 1000).into_bytes()),
        value: Some(format!("value-{seq}").into_bytes()),
        headers: BTreeMap::from([("seq".to_owned(), seq.to_string().into_bytes())]),
        timestamp: Utc.timestamp_millis_opt(1_700_000_000_000 + seq as i64).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rskafka_100k_keyed_records_over_8_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(&dir.path().join("data"), &[]);
    let client = ClientBuilder::new(vec![format!("127.0.0.1:{}", broker.port)]).build().await.expect("connect");
    client.controller_client().unwrap().create_topic("rs-keyed", PARTITIONS, 1, 10_000).await.expect("create topic");

    // Produce: records go to the partition their key hashes to, in batches per partition.
    let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for seq in 0..RECORDS {
        let partition = (rskafka_key_hash(seq % 1000) % PARTITIONS as u32) as i32;
        by_partition.entry(partition).or_default().push(seq);
    }
    assert_eq!(by_partition.len(), PARTITIONS as usize);
    let mut producers = Vec::new();
    for (&partition, seqs) in &by_partition {
        let partition_client =
            client.partition_client("rs-keyed", partition, UnknownTopicHandling::Retry).await.unwrap();
        let seqs = seqs.clone();
        producers.push(tokio::spawn(async move {
            let mut expected_offset = 0i64;
            for (n, chunk) in seqs.chunks(BATCH).enumerate() {
                let compression = if n % 2 == 0 { Compression::NoCompression } else { Compression::Zstd };
                let offsets = partition_client
                    .produce(chunk.iter().map(|&s| record(s)).collect(), compression)
                    .await
                    .expect("produce");
                assert_eq!(offsets.first().copied(), Some(expected_offset), "offsets are contiguous");
                expected_offset += offsets.len() as i64;
            }
        }));
    }
    for producer in producers {
        producer.await.unwrap();
    }

    // Consume every partition from 0 to its end and check order, keys, headers, timestamps.
    let mut seen = 0usize;
    for (&partition, seqs) in &by_partition {
        let partition_client =
            client.partition_client("rs-keyed", partition, UnknownTopicHandling::Retry).await.unwrap();
        let end = partition_client.get_offset(OffsetAt::Latest).await.unwrap();
        assert_eq!(end, seqs.len() as i64);
        let mut offset = 0i64;
        let mut got = Vec::new();
        while offset < end {
            let (records, high_watermark) = partition_client.fetch_records(offset, 1..1_000_000, 1_000).await.unwrap();
            assert_eq!(high_watermark, end);
            for r in records {
                assert_eq!(r.offset, offset, "records arrive in offset order, once");
                let seq: usize = String::from_utf8(r.record.headers["seq"].clone()).unwrap().parse().unwrap();
                assert_eq!(r.record.key, record(seq).key);
                assert_eq!(r.record.value, record(seq).value);
                assert_eq!(r.record.timestamp, record(seq).timestamp);
                got.push(seq);
                offset = r.offset + 1;
            }
        }
        assert_eq!(&got, seqs, "partition {partition} holds its records in produce order");
        seen += got.len();
    }
    assert_eq!(seen, RECORDS);
    assert_eq!(broker.stop().0, 0, "SIGTERM ends tern cleanly");
}

/// A stable key -> partition mapping for the test (rskafka leaves partitioning to us).
fn rskafka_key_hash(key: usize) -> u32 {
    tern::shard::router::fnv1a_32(format!("key-{key}").as_bytes())
}
