//! What one node's transaction coordinator asks of another, over the cluster transport:
//! writing markers to the partitions that node leads, and checking a transactional
//! batch or offset commit with the node coordinating its id (KIP-890). A call is JSON
//! in a `ForwardRequest` frame whose first byte is [`TXN_CALL_TAG`] (controller calls
//! are untagged JSON, which never starts with it); the answering side is
//! `shard::transactions::serve_forwarded`.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};

use crate::protocol::topic_partition::TopicPartition;
use crate::storage::TxnMarker;

use super::ShardContext;

/// First byte of a forwarded transaction call.
pub const TXN_CALL_TAG: u8 = 0x01;

/// How long a partition leader waits for the coordinator's word on a batch: the batch
/// holds its partition's transactional gate meanwhile, so an unreachable coordinator must
/// not stall the partition's other transactional producers for long (the producer
/// retries; the transport's own limit is 15 s).
const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Debug, Serialize, Deserialize)]
pub enum TxnCall {
    /// Write `marker` to each partition (led by the node asked).
    WriteMarkers { marker: MarkerSpec, partitions: Vec<(String, i32)> },
    /// May this producer write transactional records to the partition (or stage offsets
    /// in it) now? Asked of the node coordinating the id.
    Verify { transactional_id: String, producer_id: i64, producer_epoch: i16, topic: String, partition: i32 },
}

/// A marker as it travels.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MarkerSpec {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub committed: bool,
    pub coordinator_epoch: i32,
}

impl From<TxnMarker> for MarkerSpec {
    fn from(m: TxnMarker) -> MarkerSpec {
        MarkerSpec {
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            committed: m.committed,
            coordinator_epoch: m.coordinator_epoch,
        }
    }
}

impl From<MarkerSpec> for TxnMarker {
    fn from(m: MarkerSpec) -> TxnMarker {
        TxnMarker {
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            committed: m.committed,
            coordinator_epoch: m.coordinator_epoch,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum TxnAnswer {
    /// One Kafka error code per partition, in the call's order.
    Codes(Vec<i16>),
    Verified(Result<(), i16>),
    /// The node could not read the call (a different version).
    Unreadable(String),
}

/// Whether a forwarded body is a transaction call; its JSON if so.
pub fn txn_call_body(body: &[u8]) -> Option<&[u8]> {
    body.strip_prefix(&[TXN_CALL_TAG])
}

pub fn decode_call(body: &[u8]) -> Result<TxnCall, String> {
    serde_json::from_slice(body).map_err(|e| format!("the transaction call does not decode: {e}"))
}

pub fn encode_answer(answer: &TxnAnswer) -> Vec<u8> {
    serde_json::to_vec(answer).expect("transaction answers encode")
}

/// Sends `call` to `node` (through shard 0, which holds the links) and waits for the
/// answer; `Err` says why there is none.
async fn call(ctx: &Rc<ShardContext>, node: i32, call: TxnCall) -> Result<TxnAnswer, String> {
    let mut body = vec![TXN_CALL_TAG];
    serde_json::to_writer(&mut body, &call).expect("transaction calls encode");
    let answer = ctx
        .run_on(0, move |ctx| async move {
            let quorum = ctx.quorum().ok_or_else(|| "the cluster transport is not running".to_string())?;
            quorum.forward(node, body).await.map_err(|e| format!("node {node}: {e}"))
        })
        .await
        .unwrap_or_else(|| Err("shutting down".into()))?;
    serde_json::from_slice(&answer).map_err(|e| format!("node {node}'s answer does not decode: {e}"))
}

/// Asks `node` to write `marker` to `partitions`; one Kafka error code each.
pub async fn write_markers_on(
    ctx: &Rc<ShardContext>,
    node: i32,
    marker: TxnMarker,
    partitions: &[TopicPartition],
) -> Result<Vec<i16>, String> {
    let list = partitions.iter().map(|p| (p.topic.clone(), p.partition)).collect();
    match call(ctx, node, TxnCall::WriteMarkers { marker: marker.into(), partitions: list }).await? {
        TxnAnswer::Codes(codes) if codes.len() == partitions.len() => Ok(codes),
        TxnAnswer::Unreadable(reason) => Err(reason),
        other => Err(format!("node {node} answered {other:?}")),
    }
}

/// Asks `node`, the coordinator of `transactional_id`, to check a producer's write to
/// `partition`; `Err` is the Kafka error code.
pub async fn verify_on(
    ctx: &Rc<ShardContext>,
    node: i32,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    partition: TopicPartition,
) -> Result<(), i16> {
    let TopicPartition { topic, partition } = partition;
    let request = TxnCall::Verify { transactional_id, producer_id, producer_epoch, topic, partition };
    let answer = futures_util::future::select(
        Box::pin(call(ctx, node, request)),
        Box::pin(glommio::timer::sleep(VERIFY_TIMEOUT)),
    )
    .await;
    let answer = match answer {
        futures_util::future::Either::Left((answer, _)) => answer,
        futures_util::future::Either::Right(_) => Err(format!("no answer in {VERIFY_TIMEOUT:?}")),
    };
    match answer {
        Ok(TxnAnswer::Verified(result)) => result,
        Ok(other) => {
            tracing::warn!(node, answer = ?other, "unexpected answer to a transaction check");
            Err(ResponseError::CoordinatorNotAvailable.code())
        }
        Err(reason) => {
            tracing::debug!(node, %reason, "transaction check failed");
            Err(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}
