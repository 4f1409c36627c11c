//! WriteTxnMarkers (key 27), version 1: writes commit or abort markers for a producer to
//! the listed partitions. Kafka's coordinators send it to partition leaders; operators
//! send it (`kafka-transactions.sh abort`, `tern transaction abort`) to end a
//! transaction left hanging on a partition. A `__consumer_offsets` partition's "marker"
//! commits or drops the offsets the producer staged there. Each partition must be led
//! (offsets: coordinated) by this broker (`shard::txn_markers`).

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ApiKey, WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::ApiSupport;
use crate::protocol::topic_partition::TopicPartition;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::txn_markers::write_marker_here;
use crate::shard::ShardContext;
use crate::storage::TxnMarker;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::WriteTxnMarkers, 1, 1);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: WriteTxnMarkersRequest = decode_body(request)?;
    let mut results = Vec::with_capacity(body.markers.len());
    for marker in body.markers {
        let txn_marker = TxnMarker {
            producer_id: marker.producer_id.0,
            producer_epoch: marker.producer_epoch,
            committed: marker.transaction_result,
            coordinator_epoch: marker.coordinator_epoch,
        };
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let name = topic.name.0.to_string();
            let writes = topic.partition_indexes.iter().map(|&partition| {
                let name = name.clone();
                async move {
                    let code = write_marker_here(ctx, TopicPartition::new(name, partition), txn_marker).await;
                    WritableTxnMarkerPartitionResult::default().with_partition_index(partition).with_error_code(code)
                }
            });
            let partitions = join_all(writes).await;
            topics.push(WritableTxnMarkerTopicResult::default().with_name(topic.name).with_partitions(partitions));
        }
        results.push(WritableTxnMarkerResult::default().with_producer_id(marker.producer_id).with_topics(topics));
    }
    let response = WriteTxnMarkersResponse::default().with_markers(results);
    encode_response(ApiKey::WriteTxnMarkers, request.api_version, request.header.correlation_id, &response)
}
