//! InitProducerId (key 22), versions 0-5.
//!
//! Without a transactional id (idempotent producers): a fresh producer id from the
//! controller (persisted, never reused) with epoch 0, also when a producer passes its
//! current id and epoch to reset its sequences (KIP-360): without tracking which epochs
//! were issued, bumping a client-supplied epoch could hand a stale instance the live
//! one's epoch, so a new id is the safe answer, as Kafka gives non-transactional
//! producers.
//!
//! With a transactional id: the transaction coordinator (`shard::transactions`) keeps
//! the id's producer id and bumps its epoch, fencing older instances and aborting a
//! transaction they left open.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::transaction_errors::txn_error_code;
use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ControllerRequest, ShardRequest};
use crate::shard::{transactions, ShardContext};

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::InitProducerId, 0, 5);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: InitProducerIdRequest = decode_body(request)?;
    let (error_code, producer_id, producer_epoch) = match body.transactional_id.as_ref().map(|id| id.0.to_string()) {
        // An empty transactional id is a malformed request (Kafka refuses it the same way).
        Some(id) if id.is_empty() => (ResponseError::InvalidRequest.code(), -1, -1),
        Some(id) => {
            let timeout_ms = body.transaction_timeout_ms;
            let current = (body.producer_id.0 >= 0).then_some((body.producer_id.0, body.producer_epoch));
            let key = id.clone();
            let outcome = transactions::on_coordinator(ctx, &key, move |ctx| async move {
                transactions::init_producer_id(&ctx, &id, timeout_ms, current).await
            })
            .await;
            match outcome {
                Ok((producer_id, epoch)) => (0, producer_id, epoch),
                // KIP-588: before v4 a fenced producer is told INVALID_PRODUCER_EPOCH.
                Err(error) => (txn_error_code(error, request.api_version, 4), -1, -1),
            }
        }
        None => match ctx.call(0, |reply| ShardRequest::Controller(ControllerRequest::AllocateProducerId { reply })).await {
            Some(Ok(id)) => (0, id, 0),
            Some(Err(code)) => (code, -1, -1),
            None => (ResponseError::CoordinatorNotAvailable.code(), -1, -1),
        },
    };
    let response = InitProducerIdResponse::default()
        .with_error_code(error_code)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch);
    encode_response(ApiKey::InitProducerId, request.api_version, request.header.correlation_id, &response)
}
