//! DescribeProducers (key 61), version 0 (KIP-664): the producers each partition
//! remembers, with the first offset of the transaction each has open there (-1 when
//! none), so an operator can find a transaction left hanging on a partition.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{ApiKey, DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;
use crate::storage::producer_state::ProducerSummary;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DescribeProducers, 0, 0);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: DescribeProducersRequest = decode_body(request)?;
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in body.topics {
        let name = topic.name.0.to_string();
        let lookups = topic.partition_indexes.iter().map(|&partition| {
            let ctx = ctx.clone();
            let name = name.clone();
            async move {
                let known = ctx.metadata().topics.get(&name).is_some_and(|t| (0..t.partitions).contains(&partition));
                let found: Result<Vec<ProducerSummary>, i16> = if known {
                    ctx.on_partition(&name, partition, |_, log| async move { log.map(|log| log.producers()) })
                        .await
                        .unwrap_or(Err(ResponseError::NotLeaderOrFollower.code()))
                } else {
                    Err(ResponseError::UnknownTopicOrPartition.code())
                };
                let response = PartitionResponse::default().with_partition_index(partition);
                match found {
                    Ok(producers) => response.with_active_producers(
                        producers
                            .into_iter()
                            .map(|p| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(p.producer_id))
                                    .with_producer_epoch(i32::from(p.producer_epoch))
                                    .with_last_sequence(p.last_sequence)
                                    .with_last_timestamp(p.last_append_ms)
                                    .with_coordinator_epoch(p.coordinator_epoch)
                                    .with_current_txn_start_offset(p.txn_first_offset.map_or(-1, |o| o.value()))
                            })
                            .collect(),
                    ),
                    Err(code) => response.with_error_code(code),
                }
            }
        });
        let partitions = join_all(lookups).await;
        topics.push(TopicResponse::default().with_name(topic.name).with_partitions(partitions));
    }
    let response = DescribeProducersResponse::default().with_topics(topics);
    encode_response(ApiKey::DescribeProducers, request.api_version, request.header.correlation_id, &response)
}
