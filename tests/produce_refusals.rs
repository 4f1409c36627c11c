//! Produce refusals a client cannot get from the usual client libraries (they never send
//! such batches), checked against the real broker with hand-built requests:
//! - a control batch (attribute bit 5, the transaction-marker kind) is refused with
//!   INVALID_RECORD: only the broker writes control batches;
//! - the same records without the control bit are accepted.

mod common;

use bytes::Bytes;
use common::broker::TestBroker;
use common::run;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tern::client::Client;
use tern::protocol::record_batch::build;

/// Offset of the attributes field in a v2 batch; the CRC covers it and what follows.
const ATTRIBUTES_AT: usize = 21;
const CRC_AT: usize = 17;
const CONTROL_BIT: i16 = 0x20;

fn with_control_bit(mut batch: Vec<u8>) -> Vec<u8> {
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]) | CONTROL_BIT;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

#[test]
fn control_batches_from_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(&dir.path().join("data"), &[]);
    let address = broker.address();
    let codes = run(move || async move {
        let client = Client::connect(&[address], "refusals-test").await.expect("connect");
        client.create_topic("markers", 1, 1, &[]).await.expect("create topic");
        client.metadata(None).await.expect("metadata");
        let connection = client.any_connection().await.expect("connection");
        let version = client.version_for::<ProduceRequest>().unwrap();
        let mut codes = Vec::new();
        for batch in [
            with_control_bit(build::batch(&[b"forged marker"], 1_700_000_000_000)),
            build::batch(&[b"ok"], 1_700_000_000_000),
        ] {
            let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("markers")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch)))]),
            ]);
            let response = connection.call(version, &request).await.expect("produce");
            codes.push(response.responses[0].partition_responses[0].error_code);
        }
        codes
    });
    assert_eq!(codes, vec![87, 0], "INVALID_RECORD for the control batch, success without the bit");
    let (code, _) = broker.stop();
    assert_eq!(code, 0);
}
