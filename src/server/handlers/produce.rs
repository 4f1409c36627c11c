//! Produce (key 0), versions 3-11 (v10-11 add only tagged fields for a moved leader,
//! KIP-951, which a single node never sends; v0-2 carry message formats 0/1, removed by
//! Kafka 4.0).
//!
//! The whole path of one produce request: decoded here once, each partition's batch is
//! sent to the shard that owns the partition (`ShardContext::on_partition`, crossing the
//! mesh when that is another shard), where [`append`] runs: acks and
//! `min.insync.replicas`, then one storage call (`PartitionLog::append`, which validates
//! the batch, applies the topic's policy and waits for durability), then the storage
//! outcome as Kafka error codes. All partitions are appended concurrently and answered in
//! one response. acks=0 gets no response (the append still completes before the next
//! request slot frees up); acks=1 and acks=-1 (all) are both answered once the batch is
//! durable under the topic's flush policy (a single node is its own ISR).

use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::{join_all, select};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::partition_errors::{batch_error_code, storage_error_code};
use super::ApiSupport;
use crate::protocol::record_batch::BatchError;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::protocol::topic_partition::TopicPartition;
use crate::shard::replica_group::ProposeOutcome;
use crate::shard::ShardContext;
use crate::storage::{AppendError, PartitionLog};

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::Produce, 3, 11);

/// Replicas in sync with the leader. A single node is its own and only in-sync replica.
const IN_SYNC_REPLICAS: i32 = 1;
/// How long a retried duplicate waits for its original to become durable.
const DUPLICATE_WAIT: Duration = Duration::from_secs(30);

/// One partition's answer, as the Produce response needs it.
#[derive(Debug, Clone)]
pub struct ProduceOutcome {
    pub error_code: i16,
    pub error_message: Option<String>,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

impl ProduceOutcome {
    fn failed(error_code: i16, message: impl Into<String>) -> ProduceOutcome {
        ProduceOutcome {
            error_code,
            error_message: Some(message.into()),
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }
}

/// Where a partition's batch goes on its owner shard.
#[derive(Debug)]
pub struct AppendTarget {
    pub ctx: Rc<ShardContext>,
    pub partition: TopicPartition,
    /// The request's `timeout_ms`: how long a replicated append may wait for its commit.
    pub timeout: Duration,
    /// The request's transactional id (transactional producers).
    pub transactional_id: Option<String>,
}

/// Appends one partition's batch; runs on the shard that owns the partition. A
/// replicated partition's batch is proposed to its Raft group (acks=all answers once a
/// majority has it durable); any other goes straight to the log.
pub async fn append(target: AppendTarget, log: Result<PartitionLog, i16>, acks: i16, records: Bytes) -> ProduceOutcome {
    let log = match log {
        Ok(log) => log,
        Err(code) => return ProduceOutcome::failed(code, "this broker does not lead the partition"),
    };
    // Control batches (transaction markers) are written by the broker, never by clients
    // (Kafka refuses them the same way).
    let header = crate::protocol::record_batch::BatchHeader::parse(&records).ok();
    if header.is_some_and(|header| header.is_control()) {
        return ProduceOutcome::failed(
            ResponseError::InvalidRecord.code(),
            "control batches may not be produced by clients",
        );
    }
    let metadata = target.ctx.metadata();
    let replicated = metadata
        .topics
        .get(&target.partition.topic)
        .is_some_and(|info| target.ctx.is_replicated(info, target.partition.partition));
    // A transactional batch holds the partition's gate until it is queued, so batches
    // pipelined behind one waiting for the coordinator keep their order.
    let gate = header.filter(|h| h.is_transactional()).map(|_| log.transactional_gate());
    let permit = match &gate {
        Some(gate) => Some(gate.acquire_permit(1).await.expect("the gate is never closed")),
        None => None,
    };
    if let Some(header) = header.filter(|h| h.is_transactional()) {
        if let Err(refused) = check_transactional(&target, &log, &header).await {
            return refused;
        }
    }
    if replicated {
        // Proposals reach the group in the order they are made: the gate can go now.
        let proposal = crate::shard::replica_group::Proposal::Records(records);
        let proposed = target.ctx.propose_now(target.partition.clone(), proposal, acks, target.timeout);
        drop(permit);
        return match proposed.await {
            ProposeOutcome::Appended { base_offset, log_append_time_ms, log_start } => ProduceOutcome {
                error_code: 0,
                error_message: None,
                base_offset: base_offset.value(),
                log_append_time_ms: log_append_time_ms.unwrap_or(-1),
                log_start_offset: log_start.value(),
            },
            ProposeOutcome::Refused(error) => {
                // The current log: a replica that cut its log back reopened it.
                let log = target.ctx.log(&target.partition.topic, target.partition.partition).unwrap_or(log);
                refusal(&log, error).await
            }
            ProposeOutcome::NotLeader => ProduceOutcome::failed(
                ResponseError::NotLeaderOrFollower.code(),
                "this broker does not lead the partition (any more)",
            ),
            ProposeOutcome::NotEnoughReplicas { in_sync, min_insync } => ProduceOutcome::failed(
                ResponseError::NotEnoughReplicas.code(),
                format!("{in_sync} replica(s) in sync, fewer than min.insync.replicas={min_insync}"),
            ),
            ProposeOutcome::TimedOut => ProduceOutcome::failed(
                ResponseError::RequestTimedOut.code(),
                "not committed by a majority of replicas within the request timeout",
            ),
            ProposeOutcome::Failed(reason) => ProduceOutcome::failed(ResponseError::KafkaStorageError.code(), reason),
        };
    }
    let min_insync_replicas = log.config().min_insync_replicas;
    if acks == -1 && IN_SYNC_REPLICAS < min_insync_replicas {
        // Kafka refuses acks=all before appending when the ISR is below min.insync.replicas.
        return ProduceOutcome::failed(
            ResponseError::NotEnoughReplicas.code(),
            format!("{IN_SYNC_REPLICAS} replica(s) in sync, fewer than min.insync.replicas={min_insync_replicas}"),
        );
    }
    // The storage engine patches the base offset in place, so it needs its own copy of
    // the batch (the request buffer is shared by all partitions of the request).
    let batch = BytesMut::from(&records[..]);
    let queued = log.append_nowait(batch);
    drop(permit);
    let appended = match queued {
        Ok(pending) => pending.durable().await.map_err(AppendError::from),
        Err(error) => Err(error),
    };
    match appended {
        Ok(info) => ProduceOutcome {
            error_code: 0,
            error_message: None,
            base_offset: info.base_offset.value(),
            log_append_time_ms: info.log_append_time_ms.unwrap_or(-1),
            log_start_offset: info.log_start.value(),
        },
        Err(error) => refusal(&log, error).await,
    }
}

/// A transactional batch may be written when the producer's transaction already has
/// records here, or when its coordinator says the transaction is open and includes this
/// partition (KIP-890's check: a producer cannot leave a transaction hanging on a
/// partition its coordinator does not know of).
async fn check_transactional(
    target: &AppendTarget,
    log: &PartitionLog,
    header: &crate::protocol::record_batch::BatchHeader,
) -> Result<(), ProduceOutcome> {
    let Some(id) = target.transactional_id.clone() else {
        return Err(ProduceOutcome::failed(
            ResponseError::InvalidRecord.code(),
            "a transactional batch needs the request's transactional id",
        ));
    };
    if log.has_open_transaction(header.producer_id) {
        return Ok(());
    }
    let (producer_id, epoch, partition) = (header.producer_id, header.producer_epoch, target.partition.clone());
    let verified = crate::shard::transactions::verify_anywhere(&target.ctx, id, producer_id, epoch, partition).await;
    verified.map_err(|code| {
        // The coordinator's own troubles are not the producer's: a code every producer
        // retries (Kafka maps them the same way for produce).
        let retriable = [
            ResponseError::NotCoordinator,
            ResponseError::CoordinatorNotAvailable,
            ResponseError::CoordinatorLoadInProgress,
            ResponseError::ConcurrentTransactions,
        ];
        let code = if retriable.iter().any(|e| e.code() == code) { ResponseError::NotEnoughReplicas.code() } else { code };
        ProduceOutcome::failed(code, format!("transaction check failed with error {code}"))
    })
}

/// The answer to an append the storage refused.
async fn refusal(log: &PartitionLog, error: AppendError) -> ProduceOutcome {
    match error {
        AppendError::InvalidBatch(BatchError::LengthMismatch { declared, available })
            if (declared as usize) < available =>
        {
            ProduceOutcome::failed(
                ResponseError::InvalidRecord.code(),
                "produce requests of version 3 and above must carry exactly one record batch per partition",
            )
        }
        AppendError::InvalidBatch(error) => ProduceOutcome::failed(batch_error_code(&error), error.to_string()),
        AppendError::Storage(error) => ProduceOutcome::failed(storage_error_code(&error), error.to_string()),
        AppendError::Duplicate { base_offset, last_offset } => {
            // A retry of a batch already in the log: answer with its original offsets
            // once it is durable (the original may still be in flight).
            let durable = log.wait_for_high_watermark_beyond(last_offset);
            let timeout = glommio::timer::sleep(DUPLICATE_WAIT);
            let _ = select(Box::pin(durable), Box::pin(timeout)).await;
            if log.offsets().high_watermark.offset() > last_offset {
                ProduceOutcome {
                    error_code: 0,
                    error_message: None,
                    base_offset: base_offset.value(),
                    log_append_time_ms: -1,
                    log_start_offset: log.offsets().log_start.value(),
                }
            } else {
                ProduceOutcome::failed(
                    ResponseError::RequestTimedOut.code(),
                    "the original of this retried batch is not durable yet",
                )
            }
        }
        error @ AppendError::OutOfOrderSequence { .. } => {
            ProduceOutcome::failed(ResponseError::OutOfOrderSequenceNumber.code(), error.to_string())
        }
        error @ AppendError::ProducerFenced { .. } => {
            ProduceOutcome::failed(ResponseError::InvalidProducerEpoch.code(), error.to_string())
        }
        // Markers only; a client's batch never gets it.
        error @ AppendError::CoordinatorFenced { .. } => {
            ProduceOutcome::failed(ResponseError::TransactionCoordinatorFenced.code(), error.to_string())
        }
        error @ AppendError::InvalidRecord { .. } => {
            ProduceOutcome::failed(ResponseError::InvalidRecord.code(), error.to_string())
        }
        error @ AppendError::InvalidTimestamp { .. } => {
            ProduceOutcome::failed(ResponseError::InvalidTimestamp.code(), error.to_string())
        }
        error @ AppendError::Compression(_) => {
            ProduceOutcome::failed(ResponseError::CorruptMessage.code(), error.to_string())
        }
    }
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Option<Bytes>, FrameError> {
    let body: ProduceRequest = decode_body(request)?;
    let acks = body.acks;
    let timeout = Duration::from_millis(body.timeout_ms.clamp(1, 300_000) as u64);
    let refusal = if !(-1..=1).contains(&acks) {
        Some((ResponseError::InvalidRequiredAcks, "acks must be 0, 1 or -1"))
    } else {
        None
    };
    let transactional_id = body.transactional_id.as_ref().map(|id| id.0.to_string()).filter(|id| !id.is_empty());
    let mut calls = Vec::new();
    for topic in &body.topic_data {
        let name = topic.name.0.to_string();
        for partition in &topic.partition_data {
            let index = partition.index;
            let records = partition.records.clone();
            let ctx = ctx.clone();
            let name = name.clone();
            let name_for_target = name.clone();
            let transactional_id = transactional_id.clone();
            calls.push(async move {
                let outcome = match (refusal, records) {
                    (Some((error, message)), _) => ProduceOutcome::failed(error.code(), message),
                    (None, None) => {
                        ProduceOutcome::failed(ResponseError::InvalidRecord.code(), "produce request carries no records")
                    }
                    (None, Some(records)) => ctx
                        .on_partition(&name, index, move |ctx, log| {
                            let partition = TopicPartition::new(name_for_target, index);
                            append(AppendTarget { ctx, partition, timeout, transactional_id }, log, acks, records)
                        })
                        .await
                        .unwrap_or_else(|| {
                            ProduceOutcome::failed(ResponseError::NotLeaderOrFollower.code(), "broker is shutting down")
                        }),
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
