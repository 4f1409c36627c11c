//! EndTxn (key 26), versions 0-4: commits or aborts the producer's open transaction.
//! Answered once the decision is durable and every partition's marker is written (see
//! `shard::transactions` for a marker that must be retried). v5 (KIP-890 part 2, an
//! epoch bump per transaction) is not offered, so clients keep one epoch.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, EndTxnRequest, EndTxnResponse};

use super::transaction_errors::txn_error_code;
use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::{transactions, ShardContext};

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::EndTxn, 0, 4);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: EndTxnRequest = decode_body(request)?;
    let id = body.transactional_id.0.to_string();
    let (producer_id, epoch, commit) = (body.producer_id.0, body.producer_epoch, body.committed);
    let key = id.clone();
    let outcome = transactions::on_coordinator(ctx, &key, move |ctx| async move {
        transactions::end_txn(&ctx, &id, producer_id, epoch, commit).await
    })
    .await;
    let code = outcome.map_or_else(|error| txn_error_code(error, request.api_version, 2), |()| 0);
    let response = EndTxnResponse::default().with_error_code(code);
    encode_response(ApiKey::EndTxn, request.api_version, request.header.correlation_id, &response)
}
