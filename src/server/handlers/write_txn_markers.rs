//! WriteTxnMarkers (key 27), version 1: writes commit or abort markers for a producer to
//! the listed partitions. Kafka's coordinators send it to partition leaders; operators
//! send it (`kafka-transactions.sh abort`, `tern transaction abort`) to end a
//! transaction left hanging on a partition. A `__consumer_offsets` partition's "marker"
//! commits or drops the offsets the producer staged there.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ApiKey, WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::partition_errors::storage_error_code;
use super::ApiSupport;
use crate::group::coordinator::GroupRequest;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::ShardRequest;
use crate::shard::ShardContext;
use crate::storage::{AppendError, TxnMarker};

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::WriteTxnMarkers, 1, 1);

/// Writes one partition's marker; the Kafka error code (0 when written).
async fn write(ctx: &Rc<ShardContext>, topic: String, partition: i32, marker: TxnMarker) -> i16 {
    if topic == OFFSETS_TOPIC {
        let (producer_id, commit) = (marker.producer_id, marker.committed);
        let shard = ctx.owner(OFFSETS_TOPIC, partition);
        return match ctx
            .call(shard, move |reply| {
                ShardRequest::Group(GroupRequest::EndTxn { partition, producer_id, commit, reply })
            })
            .await
        {
            Some(Ok(())) => 0,
            Some(Err(code)) => code,
            None => ResponseError::CoordinatorNotAvailable.code(),
        };
    }
    let known = ctx.metadata().topics.get(&topic).is_some_and(|t| (0..t.partitions).contains(&partition));
    if !known {
        return ResponseError::UnknownTopicOrPartition.code();
    }
    let outcome = ctx
        .on_partition(&topic, partition, move |_, log| async move {
            match log {
                Ok(log) => match log.append_marker(marker).await {
                    Ok(_) => 0,
                    Err(AppendError::Storage(error)) => storage_error_code(&error),
                    Err(_) => ResponseError::InvalidRecord.code(),
                },
                Err(code) => code,
            }
        })
        .await;
    outcome.unwrap_or(ResponseError::NotLeaderOrFollower.code())
}

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
                    let code = write(ctx, name, partition, txn_marker).await;
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
