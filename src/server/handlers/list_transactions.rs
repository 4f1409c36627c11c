//! ListTransactions (key 66), versions 0-1 (KIP-664; v1 adds the duration filter of
//! KIP-994): every transactional id this broker coordinates, from every shard, filtered
//! by state, producer id and (v1) how long its transaction has been open.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ApiKey, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;
use crate::storage::clock::{Clock, SystemClock};
use crate::txn::{TxnMetadata, TxnState};

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::ListTransactions, 0, 1);

/// Every transactional id of every shard, sorted by id.
pub async fn all_transactions(ctx: &Rc<ShardContext>) -> Vec<(String, TxnMetadata)> {
    let per_shard = (0..ctx.shard_count).map(|shard| ctx.run_on(shard, |ctx| async move { ctx.txns.all() }));
    let mut all: Vec<(String, TxnMetadata)> = join_all(per_shard).await.into_iter().flatten().flatten().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: ListTransactionsRequest = decode_body(request)?;
    let mut wanted_states = Vec::new();
    let mut unknown_states = Vec::new();
    for name in &body.state_filters {
        match TxnState::from_name(name) {
            Some(state) => wanted_states.push(state),
            None => unknown_states.push(name.clone()),
        }
    }
    let now = SystemClock.now_ms();
    let min_duration = if request.api_version >= 1 { body.duration_filter } else { -1 };
    let states = all_transactions(ctx)
        .await
        .into_iter()
        .filter(|(_, m)| wanted_states.is_empty() || wanted_states.contains(&m.state))
        .filter(|(_, m)| body.producer_id_filters.is_empty() || body.producer_id_filters.contains(&ProducerId(m.producer_id)))
        .filter(|(_, m)| min_duration < 0 || (m.start_ms >= 0 && now - m.start_ms >= min_duration))
        .map(|(id, m)| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.state.name()))
        })
        .collect();
    let response =
        ListTransactionsResponse::default().with_unknown_state_filters(unknown_states).with_transaction_states(states);
    encode_response(ApiKey::ListTransactions, request.api_version, request.header.correlation_id, &response)
}
