//! AddPartitionsToTxn (key 24), versions 0-3 (the client's form; v4+ is the batched
//! form brokers send each other, KIP-890): adds partitions to the producer's open
//! transaction, opening it with the first one. Every partition gets the same answer;
//! when some are unknown those are UNKNOWN_TOPIC_OR_PARTITION and the others
//! OPERATION_NOT_ATTEMPTED, as in Kafka.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey};

use super::transaction_errors::txn_error_code;
use super::ApiSupport;
use crate::protocol::topic_partition::TopicPartition;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::{transactions, ShardContext};

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::AddPartitionsToTxn, 0, 3);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: AddPartitionsToTxnRequest = decode_body(request)?;
    let metadata = ctx.metadata();
    let requested: Vec<(TopicPartition, bool)> = body
        .v3_and_below_topics
        .iter()
        .flat_map(|topic| {
            let name = topic.name.0.to_string();
            let count = metadata.topics.get(&name).map_or(0, |t| t.partitions);
            topic.partitions.iter().map(move |&p| (TopicPartition::new(name.clone(), p), (0..count).contains(&p)))
        })
        .collect();
    let codes: Vec<i16> = if requested.iter().any(|(_, known)| !known) {
        requested
            .iter()
            .map(|(_, known)| {
                if *known {
                    ResponseError::OperationNotAttempted.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                }
            })
            .collect()
    } else {
        let id = body.v3_and_below_transactional_id.0.to_string();
        let (producer_id, epoch) = (body.v3_and_below_producer_id.0, body.v3_and_below_producer_epoch);
        let partitions: Vec<TopicPartition> = requested.iter().map(|(tp, _)| tp.clone()).collect();
        let key = id.clone();
        let outcome = transactions::on_coordinator(ctx, &key, move |ctx| async move {
            transactions::add_partitions(&ctx, &id, producer_id, epoch, partitions).await
        })
        .await;
        let code = outcome.map_or_else(|error| txn_error_code(error, request.api_version, 2), |()| 0);
        vec![code; requested.len()]
    };
    let mut topics: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((tp, _), code) in requested.into_iter().zip(codes) {
        let result =
            AddPartitionsToTxnPartitionResult::default().with_partition_index(tp.partition).with_partition_error_code(code);
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == tp.topic => last.results_by_partition.push(result),
            _ => topics.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
                        tp.topic,
                    )))
                    .with_results_by_partition(vec![result]),
            ),
        }
    }
    let response = AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics);
    encode_response(ApiKey::AddPartitionsToTxn, request.api_version, request.header.correlation_id, &response)
}
