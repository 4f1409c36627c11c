//! InitProducerId (key 22), versions 0-5, for idempotent producers (no transactions).
//! Every call gets a fresh producer id from the controller (persisted, never reused) with
//! epoch 0, also when a producer passes its current id and epoch to reset its sequences
//! (KIP-360): without tracking which epochs were issued, bumping a client-supplied epoch
//! could hand a stale instance the live one's epoch, so a new id is the safe answer, as
//! Kafka gives non-transactional producers. Transactional ids are refused: Tern does not
//! implement transactions.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ControllerRequest, ShardRequest};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::InitProducerId, 0, 5);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: InitProducerIdRequest = decode_body(request)?;
    let (error_code, producer_id, producer_epoch) = if body.transactional_id.is_some() {
        (ResponseError::TransactionalIdAuthorizationFailed.code(), -1, -1)
    } else {
        match ctx.call(0, |reply| ShardRequest::Controller(ControllerRequest::AllocateProducerId { reply })).await {
            Some(Ok(id)) => (0, id, 0),
            Some(Err(code)) => (code, -1, -1),
            None => (ResponseError::CoordinatorNotAvailable.code(), -1, -1),
        }
    };
    let response = InitProducerIdResponse::default()
        .with_error_code(error_code)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch);
    encode_response(ApiKey::InitProducerId, request.api_version, request.header.correlation_id, &response)
}
