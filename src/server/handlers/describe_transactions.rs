//! DescribeTransactions (key 65), version 0 (KIP-664): each transactional id's state,
//! producer, timeout, start time and partitions, from its coordinating shard.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::transaction_errors::txn_error_code;
use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::{transactions, ShardContext};
use crate::txn::{TxnError, TxnMetadata};

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DescribeTransactions, 0, 0);

fn describe(id: &str, meta: &TxnMetadata) -> TransactionState {
    let mut topics: Vec<TopicData> = Vec::new();
    for tp in &meta.partitions {
        match topics.last_mut() {
            Some(last) if last.topic.0.as_str() == tp.topic => last.partitions.push(tp.partition),
            _ => topics.push(
                TopicData::default()
                    .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![tp.partition]),
            ),
        }
    }
    TransactionState::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
        .with_transaction_state(StrBytes::from_static_str(meta.state.name()))
        .with_transaction_timeout_ms(meta.timeout_ms)
        .with_transaction_start_time_ms(meta.start_ms)
        .with_producer_id(ProducerId(meta.producer_id))
        .with_producer_epoch(meta.producer_epoch)
        .with_topics(topics)
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: DescribeTransactionsRequest = decode_body(request)?;
    let mut states = Vec::with_capacity(body.transactional_ids.len());
    for id in &body.transactional_ids {
        let id = id.0.to_string();
        let key = id.clone();
        let found = transactions::on_coordinator(ctx, &key, move |ctx| async move {
            ctx.txns.get(&id).ok_or(TxnError::TransactionalIdNotFound)
        })
        .await;
        states.push(match found {
            Ok(meta) => describe(&key, &meta),
            Err(error) => TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(key)))
                .with_error_code(txn_error_code(error, request.api_version, 0))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        });
    }
    let response = DescribeTransactionsResponse::default().with_transaction_states(states);
    encode_response(ApiKey::DescribeTransactions, request.api_version, request.header.correlation_id, &response)
}
