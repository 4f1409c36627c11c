//! AddOffsetsToTxn (key 25), versions 0-4 (v4 adds only an error code, KIP-890): the group's `__consumer_offsets` partition
//! joins the producer's transaction, so the offsets it commits with TxnOffsetCommit are
//! committed or dropped with the transaction.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiKey};

use super::transaction_errors::txn_error_code;
use super::ApiSupport;
use crate::group::offsets::{partition_for_group, OFFSETS_TOPIC};
use crate::protocol::topic_partition::TopicPartition;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::{transactions, ShardContext};

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::AddOffsetsToTxn, 0, 4);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: AddOffsetsToTxnRequest = decode_body(request)?;
    let id = body.transactional_id.0.to_string();
    let offsets_partition = TopicPartition::new(OFFSETS_TOPIC, partition_for_group(&body.group_id.0));
    let (producer_id, epoch) = (body.producer_id.0, body.producer_epoch);
    let key = id.clone();
    let outcome = transactions::on_coordinator(ctx, &key, move |ctx| async move {
        transactions::add_partitions(&ctx, &id, producer_id, epoch, vec![offsets_partition]).await
    })
    .await;
    let code = outcome.map_or_else(|error| txn_error_code(error, request.api_version, 2), |()| 0);
    let response = AddOffsetsToTxnResponse::default().with_error_code(code);
    encode_response(ApiKey::AddOffsetsToTxn, request.api_version, request.header.correlation_id, &response)
}
