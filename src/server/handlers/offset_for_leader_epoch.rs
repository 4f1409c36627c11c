//! OffsetForLeaderEpoch (key 23), versions 2-4 (KIP-101, KIP-320; Kafka 4.0 removed v0-1):
//! where a leader epoch ends in a partition's log, so a consumer that saw a leader change
//! can tell whether the log it read was cut back (its position past the end of its epoch). Answered by
//! the partition's leader: the largest epoch at or below the requested one and the
//! offset where it ends (the log end for the current epoch; `storage::leader_epoch`),
//! or -1/-1 when the log holds nothing of it. `current_leader_epoch` (v2+) is checked
//! as in Fetch: FENCED_LEADER_EPOCH when the client's is older than this leader's,
//! UNKNOWN_LEADER_EPOCH when newer (it knows a leader this broker has not heard of).

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::ApiSupport;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::OffsetForLeaderEpoch, 2, 4);

/// Whether a client's `current_leader_epoch` (-1: not given) matches this leader's
/// `current` one; `Err` is the Kafka error code.
pub fn check_current_epoch(client: i32, current: i32) -> Result<(), i16> {
    match client {
        epoch if epoch < 0 || epoch == current => Ok(()),
        epoch if epoch < current => Err(ResponseError::FencedLeaderEpoch.code()),
        _ => Err(ResponseError::UnknownLeaderEpoch.code()),
    }
}

async fn answer(ctx: &Rc<ShardContext>, topic: String, partition: i32, requested: i32, client_current: i32) -> EpochEndOffset {
    let response = EpochEndOffset::default().with_partition(partition).with_leader_epoch(-1).with_end_offset(-1);
    let known = ctx.metadata().topics.get(&topic).is_some_and(|t| (0..t.partitions).contains(&partition));
    if !known {
        return response.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    }
    let name = topic.clone();
    let outcome = ctx
        .on_partition(&name, partition, move |ctx, log| async move {
            let log = log?;
            let current = ctx.leader_epoch(&topic, partition);
            check_current_epoch(client_current, current)?;
            log.epoch_end(requested, current).await.map_err(|_| ResponseError::KafkaStorageError.code())
        })
        .await
        .unwrap_or(Err(ResponseError::NotLeaderOrFollower.code()));
    match outcome {
        Ok(Some(end)) => response.with_leader_epoch(end.epoch).with_end_offset(end.end_offset.value()),
        Ok(None) => response,
        Err(code) => response.with_error_code(code),
    }
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: OffsetForLeaderEpochRequest = decode_body(request)?;
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in body.topics {
        let name = topic.topic.0.to_string();
        let lookups = topic.partitions.iter().map(|p| {
            answer(ctx, name.clone(), p.partition, p.leader_epoch, p.current_leader_epoch)
        });
        let partitions = join_all(lookups).await;
        topics.push(OffsetForLeaderTopicResult::default().with_topic(topic.topic).with_partitions(partitions));
    }
    let response = OffsetForLeaderEpochResponse::default().with_topics(topics);
    encode_response(ApiKey::OffsetForLeaderEpoch, request.api_version, request.header.correlation_id, &response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_epoch_check_matches_fetch() {
        assert_eq!(check_current_epoch(-1, 7), Ok(()), "not given: not checked");
        assert_eq!(check_current_epoch(7, 7), Ok(()));
        assert_eq!(check_current_epoch(6, 7), Err(ResponseError::FencedLeaderEpoch.code()));
        assert_eq!(check_current_epoch(8, 7), Err(ResponseError::UnknownLeaderEpoch.code()));
    }
}
