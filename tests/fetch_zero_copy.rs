//! The fetch fast path against the real broker, through the project's Kafka client:
//! - catch-up after a restart (nothing cached) across many closed segments returns the
//!   produced batches byte for byte, within max_bytes (KIP-74), and the broker's
//!   counters show the record bytes went out with sendfile, none read into memory;
//! - a tailing consumer gets each new batch from the batch cache, byte for byte;
//! - pipelined fetches on one connection, some answered from files and some from the
//!   cache, come back in request order with the right data.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::broker::{sum_logged, TestBroker};
use common::run;
use futures_util::future::join_all;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tern::client::{Client, Connection};
use tern::protocol::record_batch::{build, iter_batches};

const TOPIC: &str = "zc";
const PARTITIONS: i32 = 2;
const BATCHES_PER_PARTITION: usize = 120;

/// (partition, base offset) -> the batch as produced (base offset 0).
type Produced = BTreeMap<(i32, i64), Bytes>;

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

async fn connect(address: &str) -> (Client, std::rc::Rc<Connection>) {
    let client = Client::connect(&[address.to_string()], "zero-copy-test").await.expect("connect");
    client.metadata(None).await.expect("metadata");
    let connection = client.dedicated_connection(0).await.expect("connection");
    (client, connection)
}

/// Produces one batch; returns its base offset.
async fn produce(client: &Client, connection: &Connection, partition: i32, batch: Bytes) -> i64 {
    let version = client.version_for::<ProduceRequest>().unwrap();
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(topic_name())
            .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(batch))]),
    ]);
    let response = connection.call(version, &request).await.expect("produce");
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, 0, "produce failed");
    answer.base_offset
}

/// One partition's fetch: (records, high watermark).
async fn fetch(
    client: &Client,
    connection: &Connection,
    partition: i32,
    offset: i64,
    partition_max_bytes: i32,
    max_wait_ms: i32,
) -> (Bytes, i64) {
    let version = client.version_for::<FetchRequest>().unwrap();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(64 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name()).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_current_leader_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(partition_max_bytes),
        ])]);
    let response: FetchResponse = connection.call(version, &request).await.expect("fetch");
    let data = &response.responses[0].partitions[0];
    assert_eq!(data.error_code, 0, "fetch of {partition}@{offset} failed");
    (data.records.clone().unwrap_or_default(), data.high_watermark)
}

/// Checks every batch in `records` against what was produced; returns (first base
/// offset, offset after the last batch, batches).
fn check_batches(records: &[u8], partition: i32, produced: &Produced) -> (i64, i64, usize) {
    let mut first = None;
    let mut next = -1;
    let mut count = 0;
    for (header, range) in iter_batches(records) {
        let got = &records[range];
        let expected = produced
            .get(&(partition, header.base_offset))
            .unwrap_or_else(|| panic!("no batch was produced at {partition}@{}", header.base_offset));
        assert_eq!(got.len(), expected.len(), "batch {partition}@{} length", header.base_offset);
        // The broker patches only the base offset (bytes 0..8) and the partition leader
        // epoch (12..16); everything else, CRC included, is as produced.
        assert_eq!(&got[8..12], &expected[8..12]);
        assert_eq!(&got[16..], &expected[16..], "batch {partition}@{} content", header.base_offset);
        assert!(next == -1 || header.base_offset == next, "batches are contiguous");
        first.get_or_insert(header.base_offset);
        next = header.next_offset();
        count += 1;
    }
    (first.unwrap_or(-1), next, count)
}

fn batch_for(partition: i32, n: usize) -> Bytes {
    // 1 KiB .. ~40 KiB, 1..50 records, content unique per batch.
    let size = 1024 + (n * 7919 + partition as usize * 104_729) % (39 << 10);
    let records = 1 + (n * 31) % 50;
    let fill = (n as u8).wrapping_mul(37).wrapping_add(partition as u8);
    Bytes::from(build::batch_of_size(size, records, fill, 1_700_000_000_000 + n as i64))
}

/// Produces the test data with a small segment size (many closed segments).
async fn produce_history(address: &str) -> (Produced, usize) {
    let client = Client::connect(&[address.to_string()], "zero-copy-test").await.expect("connect");
    let created = client
        .create_topic(TOPIC, PARTITIONS, -1, &[("segment.bytes".into(), (256 << 10).to_string())])
        .await
        .expect("create topic");
    assert!(created);
    client.metadata(None).await.unwrap();
    let connection = client.dedicated_connection(0).await.unwrap();
    let mut produced = Produced::new();
    let mut bytes = 0;
    for n in 0..BATCHES_PER_PARTITION {
        for partition in 0..PARTITIONS {
            let batch = batch_for(partition, n);
            bytes += batch.len();
            let base = produce(&client, &connection, partition, batch.clone()).await;
            produced.insert((partition, base), batch);
        }
    }
    (produced, bytes)
}

#[test]
fn catch_up_after_restart_is_byte_identical_zero_copy_and_in_order_with_cached_reads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = TestBroker::start(&data, &[]);
    let address = broker.address();
    let (produced, produced_bytes) = run(move || async move { produce_history(&address).await });
    let (code, _) = broker.stop();
    assert_eq!(code, 0);
    let segments = std::fs::read_dir(data.join(format!("{TOPIC}-0")))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".log"))
        .count();
    assert!(segments >= 5, "the history spans several closed segments ({segments})");

    // A fresh broker: nothing is cached, every byte comes from the segments.
    let broker = TestBroker::start(&data, &[]);
    let address = broker.address();
    let expected = produced.clone();
    let fetched_bytes = run(move || async move {
        let (client, connection) = connect(&address).await;
        let mut fetched = 0usize;
        for (partition_max_bytes, label) in [(1 << 20, "1 MiB"), (20 << 10, "20 KiB"), (100, "100 bytes")] {
            for partition in 0..PARTITIONS {
                let mut offset = 0;
                let mut batches = 0;
                loop {
                    let (records, high_watermark) =
                        fetch(&client, &connection, partition, offset, partition_max_bytes, 0).await;
                    if offset >= high_watermark {
                        break;
                    }
                    let (first, next, count) = check_batches(&records, partition, &expected);
                    assert!(first <= offset && next > offset, "{label}: the first batch holds the fetch offset");
                    // KIP-74: within the limit, except that one batch always comes whole.
                    assert!(
                        records.len() <= partition_max_bytes as usize || count == 1,
                        "{label}: {} bytes in {count} batches exceed the limit",
                        records.len()
                    );
                    fetched += records.len();
                    batches += count;
                    offset = next;
                }
                assert_eq!(batches, BATCHES_PER_PARTITION, "{label}: partition {partition} read completely");
            }
        }
        fetched
    });
    assert_eq!(fetched_bytes, 3 * produced_bytes);

    // Tail: new batches are cached; pipelined fetches on one connection mix cached and
    // file-backed answers and must come back in order, each with its own data.
    let address = broker.address();
    let expected = produced.clone();
    run(move || async move {
        let (client, connection) = connect(&address).await;
        let mut expected = expected;
        let mut tail = Vec::new();
        for partition in 0..PARTITIONS {
            let batch = batch_for(partition, 10_000);
            let base = produce(&client, &connection, partition, batch.clone()).await;
            expected.insert((partition, base), batch);
            tail.push((partition, base));
        }
        let mut wanted = Vec::new();
        for round in 0..6i64 {
            for &(partition, tail_base) in &tail {
                wanted.push((partition, tail_base)); // cached
                wanted.push((partition, round * 17)); // cold, from a segment
            }
        }
        let answers = join_all(
            wanted.iter().map(|&(partition, offset)| fetch(&client, &connection, partition, offset, 64 << 10, 0)),
        )
        .await;
        for ((partition, offset), (records, _)) in wanted.iter().zip(answers) {
            let (first, next, _) = check_batches(&records, *partition, &expected);
            assert!(first <= *offset && next > *offset, "answer for {partition}@{offset} starts at {first}");
        }
    });
    let (code, log) = broker.stop();
    assert_eq!(code, 0);
    let sendfile = sum_logged(&log, "shard read statistics", "sendfile_bytes");
    let copied = sum_logged(&log, "shard read statistics", "segment_bytes_read");
    let headers = sum_logged(&log, "shard read statistics", "segment_header_bytes_read");
    let hits = sum_logged(&log, "shard read statistics", "batch_cache_hits");
    assert!(
        sendfile >= fetched_bytes as u64,
        "cold reads went out with sendfile ({sendfile} of {fetched_bytes} bytes)"
    );
    assert_eq!(copied, 0, "no record bytes were read into memory to answer fetches");
    assert!(hits >= 12, "the tail was served from the batch cache ({hits} hits)");
    eprintln!("sendfile {sendfile} bytes, header reads {headers} bytes, cache hits {hits}");
}

#[test]
fn a_tailing_consumer_is_served_from_the_cache_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = TestBroker::start(&data, &[]);
    let address = broker.address();
    let sent = run(move || async move {
        let (client, producer) = connect(&address).await;
        client.create_topic(TOPIC, PARTITIONS, -1, &[]).await.unwrap();
        let consumer = client.dedicated_connection(0).await.unwrap();
        let mut produced = Produced::new();
        let mut offset = 0;
        let mut sent = 0;
        for n in 0..50 {
            // The consumer waits at the end of the log while the batch is produced.
            let batch = batch_for(1, n);
            let wait = fetch(&client, &consumer, 1, offset, 1 << 20, 5_000);
            let write = async {
                glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                produce(&client, &producer, 1, batch.clone()).await
            };
            let ((records, _), base) = futures_util::join!(wait, write);
            produced.insert((1, base), batch.clone());
            let (first, next, count) = check_batches(&records, 1, &produced);
            assert_eq!((first, count), (base, 1), "the long poll returns the new batch");
            offset = next;
            sent += batch.len();
        }
        sent
    });
    let (code, log) = broker.stop();
    assert_eq!(code, 0);
    let served = sum_logged(&log, "shard read statistics", "batch_cache_bytes_served");
    let sendfile = sum_logged(&log, "shard read statistics", "sendfile_bytes");
    assert!(served >= sent as u64, "tail reads came from the cache ({served} of {sent} bytes)");
    assert_eq!(sendfile, 0, "no tail read needed the segment files");
}
