//! Produce (key 0), versions 3-11 (v10-11 add only tagged fields for a moved leader,
//! KIP-951, which a single node never sends; v0-2 carry message formats 0/1, removed by
//! Kafka 4.0). Each partition's batch goes to the shard that owns the
//! partition (`ShardContext::owner`, the call crosses the mesh when that is another
//! shard); all partitions are appended concurrently and answered in one response.
//! acks=0 gets no response (the append still completes before the next request slot
//! frees up); acks=1 and acks=-1 (all) are both answered once the batch is durable under
//! the topic's flush policy (a single node is its own ISR).

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::protocol::record_batch::BatchHeader;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::mesh::{ProduceOutcome, ShardRequest};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::Produce, 3, 11);

fn failed(error: ResponseError, message: &str) -> ProduceOutcome {
    ProduceOutcome {
        error_code: error.code(),
        error_message: Some(message.to_string()),
        base_offset: -1,
        log_append_time_ms: -1,
        log_start_offset: -1,
    }
}

/// Checks what can be checked before routing: one batch per partition (v3+).
fn precheck(records: &Option<Bytes>) -> Result<Bytes, ProduceOutcome> {
    let Some(records) = records else {
        return Err(failed(ResponseError::InvalidRecord, "produce request carries no records"));
    };
    if let Ok(header) = BatchHeader::parse(records) {
        if header.total_bytes < records.len() {
            return Err(failed(
                ResponseError::InvalidRecord,
                "produce requests of version 3 and above must carry exactly one record batch per partition",
            ));
        }
    }
    Ok(records.clone())
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Option<Bytes>, FrameError> {
    let body: ProduceRequest = decode_body(request)?;
    let acks = body.acks;
    let bad_acks = !(-1..=1).contains(&acks);
    let transactional = body.transactional_id.is_some();
    let mut calls = Vec::new();
    for topic in &body.topic_data {
        let name = topic.name.0.to_string();
        for partition in &topic.partition_data {
            let index = partition.index;
            let precheck = if bad_acks {
                Err(failed(ResponseError::InvalidRequiredAcks, "acks must be 0, 1 or -1"))
            } else if transactional {
                Err(failed(ResponseError::TransactionalIdAuthorizationFailed, "transactions are not supported"))
            } else {
                precheck(&partition.records)
            };
            let ctx = ctx.clone();
            let name = name.clone();
            calls.push(async move {
                let outcome = match precheck {
                    Err(outcome) => outcome,
                    Ok(records) => {
                        let owner = ctx.owner(&name, index);
                        let topic = name.clone();
                        ctx.call(owner, move |reply| ShardRequest::Produce {
                            topic,
                            partition: index,
                            acks,
                            records,
                            reply,
                        })
                        .await
                        .unwrap_or_else(|| failed(ResponseError::NotLeaderOrFollower, "broker is shutting down"))
                    }
                };
                (name, index, outcome)
            });
        }
    }
    let outcomes = join_all(calls).await;
    if acks == 0 {
        // No response. The appends ran inside this request, so acks=0 producers are held
        // to the connection's in-flight limit like everyone else.
        return Ok(None);
    }
    let mut topics: Vec<TopicProduceResponse> = Vec::new();
    let version = request.api_version;
    for (name, index, outcome) in outcomes {
        let mut partition = PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(outcome.error_code)
            .with_base_offset(outcome.base_offset)
            .with_log_append_time_ms(outcome.log_append_time_ms);
        if version >= 5 {
            partition.log_start_offset = outcome.log_start_offset;
        }
        if version >= 8 {
            partition.error_message = outcome.error_message.map(StrBytes::from_string);
        }
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == name => last.partition_responses.push(partition),
            _ => topics.push(
                TopicProduceResponse::default()
                    .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(name)))
                    .with_partition_responses(vec![partition]),
            ),
        }
    }
    let response = ProduceResponse::default().with_responses(topics);
    encode_response(ApiKey::Produce, request.api_version, request.header.correlation_id, &response).map(Some)
}
