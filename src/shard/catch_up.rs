//! Catch-up of a replica too far behind for its leader's in-memory Raft entries.
//!
//! The leader's Raft asks for a snapshot when a follower needs entries below its window;
//! the snapshot is only a descriptor (the window's base: index, term and the log offset
//! after it, `replication::window`). The follower does not step it into Raft at once:
//! 1. it cuts its log back to its own commit (anything after may differ from the
//!    leader's);
//! 2. it copies the leader's committed batches from there up to the descriptor's offset,
//!    a megabyte per request over the cluster transport, writing them verbatim
//!    ([`run`]); the leader serves them from its segments ([`serve`]), paced by
//!    `--replica-catch-up-bytes-per-sec` per shard so a catch-up does not starve live
//!    traffic;
//! 3. then it steps the snapshot: Raft moves its log to the descriptor's index and the
//!    leader goes on with ordinary appends.
//!
//! A failed copy (leader gone, timeout) just ends; the next leader sends its own
//! snapshot. Copying a compacted leader's log (offsets with gaps) is not supported: such
//! a follower stays out of sync (logged).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::future::{select, Either};

use crate::cluster::transport::{CatchUpReply, CatchUpRequest, PeerFrame};
use crate::protocol::record_batch::iter_batches;
use crate::protocol::topic_partition::TopicPartition;
use crate::storage::{Offset, PartitionLog};

use super::context::OFFSETS_TOPIC_ID;
use super::replicas::ReplicaEvent;
use super::ShardContext;
use crate::group::offsets::OFFSETS_TOPIC;

/// Bytes asked for per catch-up request.
const CHUNK_BYTES: u32 = 1 << 20;
/// A catch-up request not answered within this long ends the catch-up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a leader's snapshot describes: the log offset after its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotDescriptor {
    pub next_offset: i64,
}

/// A token bucket over bytes served, holding at most one second's worth.
#[derive(Debug)]
pub struct Pacer(crate::byte_bucket::ByteBucket);

impl Default for Pacer {
    fn default() -> Pacer {
        Pacer(crate::byte_bucket::ByteBucket::empty(Instant::now()))
    }
}

impl Pacer {
    /// Takes `bytes` from the bucket (refilled at `rate` per second, holding at most one
    /// second's worth) and says how long to wait before sending them.
    pub fn reserve(&mut self, bytes: u64, rate: u64) -> Duration {
        let rate = rate.max(1) as f64;
        self.0.take(bytes, rate, rate, Instant::now())
    }
}

/// Leader side: answers one catch-up request from `peer` with the committed batches it
/// asks for, paced.
pub async fn serve(ctx: Rc<ShardContext>, peer: i32, request: CatchUpRequest) {
    let reply = |error: Option<String>, log_start: i64, records: bytes::Bytes| CatchUpReply {
        id: request.id,
        topic: request.topic.clone(),
        partition: request.partition,
        error,
        log_start,
        records,
    };
    let log = if request.topic == OFFSETS_TOPIC {
        (request.topic_id == OFFSETS_TOPIC_ID).then(|| ctx.groups.offsets_partition_log(request.partition)).flatten()
    } else if request.topic == crate::txn::TXN_STATE_TOPIC {
        (request.topic_id == super::context::TXN_STATE_TOPIC_ID)
            .then(|| ctx.txns.partition_log(request.partition))
            .flatten()
    } else {
        let metadata = ctx.metadata();
        let known = metadata.topics.get(&request.topic).is_some_and(|info| info.id == request.topic_id);
        ctx.log(&request.topic, request.partition).filter(|_| known)
    };
    let answer = match log {
        None => reply(Some("this broker has no such partition".into()), -1, bytes::Bytes::new()),
        Some(log) => match read_range(&log, Offset(request.from), Offset(request.until), request.max_bytes).await {
            Ok(records) => {
                let rate = ctx.cluster_config().catch_up_bytes_per_sec;
                let wait = ctx.catch_up_pacer.borrow_mut().reserve(records.len() as u64, rate);
                if !wait.is_zero() {
                    glommio::timer::sleep(wait).await;
                }
                reply(None, log.offsets().log_start.value(), records)
            }
            Err(error) => reply(Some(error), log.offsets().log_start.value(), bytes::Bytes::new()),
        },
    };
    ctx.send_peer_frame(peer, PeerFrame::CatchUpReply(answer));
}

/// The whole batches in `[from, until)`, back to back, about `max_bytes` of them (at
/// least one).
async fn read_range(log: &PartitionLog, from: Offset, until: Offset, max_bytes: u32) -> Result<bytes::Bytes, String> {
    let read = log.read(from, max_bytes as usize).await.map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    for chunk in read.records {
        for (header, range) in iter_batches(&chunk) {
            if header.base_offset < from.value() {
                continue;
            }
            if header.base_offset >= until.value() || (!out.is_empty() && out.len() + range.len() > max_bytes as usize)
            {
                return Ok(out.freeze());
            }
            out.extend_from_slice(&chunk[range]);
        }
    }
    Ok(out.freeze())
}

/// Follower side: copies the leader's batches from this log's end up to `until`, then
/// tells the driver how it went.
pub async fn run(
    ctx: Rc<ShardContext>,
    leader: i32,
    partition: TopicPartition,
    topic_id: [u8; 16],
    log: PartitionLog,
    until: Offset,
) {
    let started = Instant::now();
    let from = log.offsets().log_end.offset();
    let size_before = log.size_bytes();
    let result = copy(&ctx, leader, &partition, topic_id, &log, until).await;
    let gauges = crate::metrics::replication_gauges();
    gauges.catch_up_bytes.fetch_add(log.size_bytes().saturating_sub(size_before), std::sync::atomic::Ordering::Relaxed);
    match &result {
        Ok(()) => tracing::info!(
            %partition, leader, %from, %until, took_ms = started.elapsed().as_millis() as u64,
            "replica caught up from the leader's log"
        ),
        Err(error) => tracing::warn!(%partition, leader, %from, %until, %error, "replica catch-up stopped"),
    }
    if result.is_ok() {
        gauges.catch_ups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    ctx.replica_event(ReplicaEvent::CaughtUp { partition, result });
}

async fn copy(
    ctx: &Rc<ShardContext>,
    leader: i32,
    partition: &TopicPartition,
    topic_id: [u8; 16],
    log: &PartitionLog,
    until: Offset,
) -> Result<(), String> {
    loop {
        let from = log.offsets().log_end.offset();
        if from >= until {
            return Ok(());
        }
        let (id, answer) = ctx.expect_catch_up_reply();
        let request = CatchUpRequest {
            id,
            topic: partition.topic.clone(),
            topic_id,
            partition: partition.partition,
            from: from.value(),
            until: until.value(),
            max_bytes: CHUNK_BYTES,
        };
        ctx.send_peer_frame(leader, PeerFrame::CatchUpRequest(request));
        let reply = match select(answer, Box::pin(glommio::timer::sleep(REPLY_TIMEOUT))).await {
            Either::Left((Ok(reply), _)) => reply,
            Either::Left((Err(_), _)) => return Err("the catch-up request was dropped".into()),
            Either::Right(_) => {
                ctx.forget_catch_up(id);
                return Err(format!("the leader did not answer within {REPLY_TIMEOUT:?}"));
            }
        };
        if let Some(error) = reply.error {
            return Err(format!("the leader refused: {error}"));
        }
        if reply.records.is_empty() {
            return Err(format!("the leader has nothing at offset {from}"));
        }
        let mut writes = Vec::new();
        for (header, range) in iter_batches(&reply.records) {
            if header.base_offset >= until.value() {
                break;
            }
            let pending = log.append_entry(reply.records.slice(range), true).map_err(|e| e.to_string())?;
            writes.push(pending);
        }
        for write in writes {
            write.durable().await.map_err(|e| e.to_string())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_holds_reads_to_the_rate() {
        let mut pacer = Pacer::default();
        assert!(pacer.reserve(1000, 1000) > Duration::from_millis(900), "an empty bucket waits");
        let mut pacer = Pacer(crate::byte_bucket::ByteBucket::holding(1000.0, Instant::now()));
        assert_eq!(pacer.reserve(500, 1000), Duration::ZERO);
        assert!(pacer.reserve(1500, 1000) >= Duration::from_millis(900));
    }
}
