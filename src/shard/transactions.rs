//! The transaction coordinator's work that needs the rest of the broker: producer ids
//! from the controller, markers written to the transaction's partitions (here, or sent
//! to the brokers leading them), staged offsets completed by the group coordinators,
//! timeouts, and finishing after a restart or a coordinator failover. The state itself is
//! `crate::txn`; where an id is coordinated is `txn_cluster`.
//!
//! Every function named after a request runs on the coordinating shard (the owner of the
//! id's `__transaction_state` partition); handlers get there with [`on_coordinator`].
//!
//! Ending a transaction: the decision (PrepareCommit / PrepareAbort) is persisted first;
//! then every partition gets its marker (data partitions: a control batch in the log;
//! `__consumer_offsets` partitions: the staged offsets committed or dropped), all at
//! once; then CompleteCommit / CompleteAbort is queued for the disk (not waited for:
//! lost in a crash, the markers are written again, which changes nothing) and the client
//! answered. A
//! marker that cannot be written now (a partition briefly unavailable) leaves the id in
//! its Prepare state; the client is still answered (the decision is durable) and the
//! timeout loop retries until every marker is written. Its next request for the id gets
//! CONCURRENT_TRANSACTIONS until then, as in Kafka. After a restart the same loop
//! finishes every transaction found in a Prepare state.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;

use crate::group::coordinator::{TxnProducer, TxnVerifier};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::protocol::topic_partition::TopicPartition;
use crate::storage::clock::{Clock, SystemClock};
use crate::storage::TxnMarker;
use crate::txn::metadata::EPOCH_MAX;
use crate::txn::{partition_for_txn, TxnError, TxnLock, TxnMetadata, TxnState, TXN_STATE_TOPIC};

use super::context::PartitionLeader;
use super::mesh::{ControllerRequest, ShardRequest};
use super::txn_cluster::{check_coordinator, txn_coordinator_node};
use super::txn_forward::{self, TxnAnswer, TxnCall};
use super::txn_markers::write_marker_here;
use super::ShardContext;

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// The shard coordinating `transactional_id`.
pub fn coordinator_shard(ctx: &ShardContext, transactional_id: &str) -> usize {
    ctx.owner(TXN_STATE_TOPIC, partition_for_txn(transactional_id))
}

/// Runs `work` on the shard coordinating `transactional_id`, when this node coordinates
/// it (NOT_COORDINATOR otherwise: the client asks FindCoordinator again).
pub async fn on_coordinator<T, F, Fut>(ctx: &Rc<ShardContext>, transactional_id: &str, work: F) -> Result<T, TxnError>
where
    T: Send + 'static,
    F: FnOnce(Rc<ShardContext>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, TxnError>> + 'static,
{
    check_coordinator(ctx, transactional_id)?;
    let shard = coordinator_shard(ctx, transactional_id);
    ctx.run_on(shard, work).await.unwrap_or(Err(TxnError::CoordinatorNotAvailable))
}

async fn allocate_producer_id(ctx: &Rc<ShardContext>) -> Result<i64, TxnError> {
    match ctx.call(0, |reply| ShardRequest::Controller(ControllerRequest::AllocateProducerId { reply })).await {
        Some(Ok(id)) => Ok(id),
        _ => Err(TxnError::CoordinatorNotAvailable),
    }
}

/// InitProducerId with a transactional id: the id's producer gets a bumped epoch (a new
/// producer id past `EPOCH_MAX`), which fences every older instance; a transaction the
/// previous instance left open is aborted first. `current` is the caller's own id and
/// epoch when it asks to bump them (KIP-360); they must be the id's current ones.
pub async fn init_producer_id(
    ctx: &Rc<ShardContext>,
    transactional_id: &str,
    timeout_ms: i32,
    current: Option<(i64, i16)>,
) -> Result<(i64, i16), TxnError> {
    if timeout_ms <= 0 || timeout_ms > ctx.txns.config.max_timeout_ms {
        return Err(TxnError::InvalidTransactionTimeout);
    }
    let lock = ctx.txns.lock(transactional_id)?;
    let now = now_ms();
    let meta = match ctx.txns.get(transactional_id) {
        None => TxnMetadata {
            producer_id: allocate_producer_id(ctx).await?,
            producer_epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            start_ms: -1,
            update_ms: now,
            partitions: BTreeSet::new(),
        },
        Some(mut meta) => {
            if let Some((producer_id, epoch)) = current {
                // KIP-360: the caller's own id and epoch, or the epoch before the
                // current one (the coordinator bumped it when it aborted the caller's
                // timed-out transaction): the caller recovers with a new epoch.
                let bumped_by_us = producer_id == meta.producer_id && epoch.checked_add(1) == Some(meta.producer_epoch);
                if !bumped_by_us {
                    meta.check_producer(producer_id, epoch)?;
                }
            }
            if meta.state.is_preparing() {
                return Err(TxnError::ConcurrentTransactions);
            }
            if meta.state == TxnState::Ongoing {
                // The previous instance's transaction: abort it under a bumped epoch,
                // which fences that instance everywhere the markers go.
                meta = prepare(ctx, &lock, meta, false, true).await?;
                meta = complete(ctx, &lock, meta).await?;
                if meta.state.is_preparing() {
                    return Err(TxnError::ConcurrentTransactions);
                }
            } else if meta.producer_epoch < EPOCH_MAX {
                meta.producer_epoch += 1;
            } else {
                meta.producer_epoch = EPOCH_MAX;
            }
            if meta.producer_epoch >= EPOCH_MAX {
                meta.producer_id = allocate_producer_id(ctx).await?;
                meta.producer_epoch = 0;
            }
            TxnMetadata {
                timeout_ms,
                state: TxnState::Empty,
                start_ms: -1,
                update_ms: now,
                partitions: BTreeSet::new(),
                ..meta
            }
        }
    };
    ctx.txns.persist(&lock, meta.clone()).await?;
    Ok((meta.producer_id, meta.producer_epoch))
}

/// AddPartitionsToTxn / AddOffsetsToTxn: the transaction (opened by its first
/// partition) now spans `partitions`.
pub async fn add_partitions(
    ctx: &Rc<ShardContext>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<TopicPartition>,
) -> Result<(), TxnError> {
    let lock = ctx.txns.lock(transactional_id)?;
    let mut meta = ctx.txns.get(transactional_id).ok_or(TxnError::InvalidProducerIdMapping)?;
    meta.check_producer(producer_id, producer_epoch)?;
    if meta.state.is_preparing() {
        return Err(TxnError::ConcurrentTransactions);
    }
    // Nothing new (an empty request opens no transaction).
    if partitions.iter().all(|p| meta.partitions.contains(p))
        && (meta.state == TxnState::Ongoing || partitions.is_empty())
    {
        return Ok(());
    }
    let now = now_ms();
    if meta.state != TxnState::Ongoing {
        meta.partitions.clear();
        meta.start_ms = now;
    }
    meta.state = TxnState::Ongoing;
    meta.update_ms = now;
    meta.partitions.extend(partitions);
    ctx.txns.persist(&lock, meta).await
}

/// Whether `producer_id`/`producer_epoch` may write transactional records to
/// `partition` now: the id's transaction is open and includes it (KIP-890's check,
/// made by the partition's leader before a producer's first batch of a transaction).
pub fn verify(
    ctx: &ShardContext,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partition: &TopicPartition,
) -> Result<(), TxnError> {
    let meta = ctx.txns.get(transactional_id).ok_or(TxnError::InvalidProducerIdMapping)?;
    meta.check_producer(producer_id, producer_epoch)?;
    if meta.state == TxnState::Ongoing && meta.partitions.contains(partition) {
        Ok(())
    } else {
        Err(TxnError::InvalidTxnState)
    }
}

/// [`verify`] on the node coordinating `transactional_id`, this one or another. `Err`
/// is the Kafka error code; a fenced producer is told INVALID_PRODUCER_EPOCH (what every
/// version knows).
pub async fn verify_anywhere(
    ctx: &Rc<ShardContext>,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    partition: TopicPartition,
) -> Result<(), i16> {
    let node = txn_coordinator_node(ctx, &transactional_id);
    if node != ctx.config.node_id && node >= 0 {
        return txn_forward::verify_on(ctx, node, transactional_id, producer_id, producer_epoch, partition).await;
    }
    let key = transactional_id.clone();
    on_coordinator(ctx, &key, move |ctx| async move {
        verify(&ctx, &transactional_id, producer_id, producer_epoch, &partition)
    })
    .await
    .map_err(|error| match error {
        TxnError::ProducerFenced => ResponseError::InvalidProducerEpoch.code(),
        other => other.code(),
    })
}

/// Lets this shard's group coordinator check TxnOffsetCommit requests: the producer is
/// the id's current one and its transaction is open with the group's offsets partition.
pub fn verify_offsets_commits(ctx: &Rc<ShardContext>) {
    let weak = Rc::downgrade(ctx);
    let verifier = TxnVerifier(Rc::new(move |producer: TxnProducer, offsets_partition: i32| {
        let ctx = weak.upgrade();
        Box::pin(async move {
            let ctx = ctx.ok_or(ResponseError::CoordinatorNotAvailable.code())?;
            let TxnProducer { transactional_id, producer_id, producer_epoch } = producer;
            let partition = TopicPartition::new(OFFSETS_TOPIC, offsets_partition);
            verify_anywhere(&ctx, transactional_id, producer_id, producer_epoch, partition).await
        }) as _
    }));
    ctx.groups.verify_transactions_with(verifier);
}

/// The answering side of another node's transaction call (`txn_forward`).
pub async fn serve_forwarded(ctx: Rc<ShardContext>, body: &[u8]) -> Vec<u8> {
    let answer = match txn_forward::decode_call(body) {
        Err(reason) => TxnAnswer::Unreadable(reason),
        Ok(TxnCall::WriteMarkers { marker, partitions }) => {
            let marker = TxnMarker::from(marker);
            let writes = partitions
                .into_iter()
                .map(|(topic, partition)| write_marker_here(&ctx, TopicPartition::new(topic, partition), marker));
            TxnAnswer::Codes(join_all(writes).await)
        }
        Ok(TxnCall::Verify { transactional_id, producer_id, producer_epoch, topic, partition }) => {
            let key = transactional_id.clone();
            let partition = TopicPartition::new(topic, partition);
            let verified = on_coordinator(&ctx, &key, move |ctx| async move {
                verify(&ctx, &transactional_id, producer_id, producer_epoch, &partition)
            })
            .await
            .map_err(|error| match error {
                TxnError::ProducerFenced => ResponseError::InvalidProducerEpoch.code(),
                other => other.code(),
            });
            TxnAnswer::Verified(verified)
        }
    };
    txn_forward::encode_answer(&answer)
}

/// EndTxn: commits or aborts the open transaction. A retry of an end that already
/// happened succeeds; one that contradicts it is INVALID_TXN_STATE.
pub async fn end_txn(
    ctx: &Rc<ShardContext>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Result<(), TxnError> {
    let lock = ctx.txns.lock(transactional_id)?;
    let meta = ctx.txns.get(transactional_id).ok_or(TxnError::InvalidProducerIdMapping)?;
    meta.check_producer(producer_id, producer_epoch)?;
    match (meta.state, commit) {
        (TxnState::Ongoing, _) => {
            let prepared = prepare(ctx, &lock, meta, commit, false).await?;
            complete(ctx, &lock, prepared).await.map(drop)
        }
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => Err(TxnError::ConcurrentTransactions),
        _ => Err(TxnError::InvalidTxnState),
    }
}

/// Persists the decision to commit or abort; `bump` raises the epoch first (an abort
/// the coordinator starts: timeout, or a new instance), fencing the producer.
async fn prepare(
    ctx: &Rc<ShardContext>,
    lock: &TxnLock,
    mut meta: TxnMetadata,
    commit: bool,
    bump: bool,
) -> Result<TxnMetadata, TxnError> {
    if bump && meta.producer_epoch < EPOCH_MAX {
        meta.producer_epoch += 1;
    }
    meta.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
    meta.update_ms = now_ms();
    ctx.txns.persist(lock, meta.clone()).await?;
    Ok(meta)
}

/// Writes the markers of a prepared transaction and, when every one is written,
/// persists its completion. Returns the state the id is left in (still preparing when
/// a marker failed; the timeout loop retries).
async fn complete(ctx: &Rc<ShardContext>, lock: &TxnLock, meta: TxnMetadata) -> Result<TxnMetadata, TxnError> {
    let commit = meta.state == TxnState::PrepareCommit;
    let marker = TxnMarker {
        producer_id: meta.producer_id,
        producer_epoch: meta.producer_epoch,
        committed: commit,
        coordinator_epoch: ctx.txns.coordinator_epoch(partition_for_txn(lock.id())),
    };
    let failed = write_markers(ctx, &meta.partitions, marker).await;
    if !failed.is_empty() {
        tracing::warn!(
            transactional_id = lock.id(),
            failures = ?failed,
            "transaction markers not all written; retrying in the background"
        );
        return Ok(meta);
    }
    let done = TxnMetadata {
        state: if commit { TxnState::CompleteCommit } else { TxnState::CompleteAbort },
        start_ms: -1,
        update_ms: now_ms(),
        partitions: BTreeSet::new(),
        ..meta
    };
    // Its loss in a crash only means writing the markers again: not waited for.
    ctx.txns.persist_in_background(lock, done.clone()).await?;
    Ok(done)
}

/// Where a partition's marker is written.
enum MarkerDestination {
    Here,
    Node(i32),
    /// The partition no longer exists: it needs no marker.
    Gone,
    /// No node can take it now (no leader): tried again later.
    Unavailable,
}

fn marker_destination(ctx: &ShardContext, partition: &TopicPartition) -> MarkerDestination {
    let node = if partition.topic == OFFSETS_TOPIC {
        ctx.offsets_coordinator_node(partition.partition)
    } else {
        match ctx.partition_leader(&ctx.metadata(), &partition.topic, partition.partition) {
            PartitionLeader::Unknown => return MarkerDestination::Gone,
            PartitionLeader::Here => return MarkerDestination::Here,
            PartitionLeader::Broker(node) => node,
            PartitionLeader::Offline => return MarkerDestination::Unavailable,
        }
    };
    match node {
        node if node == ctx.config.node_id => MarkerDestination::Here,
        node if node >= 0 => MarkerDestination::Node(node),
        _ => MarkerDestination::Unavailable,
    }
}

/// Writes `marker` to every partition of a transaction, all at once: those this node
/// leads here, the others through a call to each leading node. Returns what failed.
async fn write_markers(
    ctx: &Rc<ShardContext>,
    partitions: &BTreeSet<TopicPartition>,
    marker: TxnMarker,
) -> Vec<String> {
    let written = |code: i16| code == 0 || code == ResponseError::UnknownTopicOrPartition.code();
    let mut failed = Vec::new();
    let mut here = Vec::new();
    let mut remote: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
    for partition in partitions {
        match marker_destination(ctx, partition) {
            MarkerDestination::Here => here.push(partition.clone()),
            MarkerDestination::Node(node) => remote.entry(node).or_default().push(partition.clone()),
            MarkerDestination::Gone => {}
            MarkerDestination::Unavailable => failed.push(format!("{partition}: no leader")),
        }
    }
    let local = join_all(here.into_iter().map(|partition| async move {
        let code = write_marker_here(ctx, partition.clone(), marker).await;
        (!written(code)).then(|| format!("{partition}: error {code}"))
    }));
    let forwarded = join_all(remote.into_iter().map(|(node, partitions)| async move {
        match txn_forward::write_markers_on(ctx, node, marker, &partitions).await {
            Ok(codes) => partitions
                .iter()
                .zip(codes)
                .filter(|(_, code)| !written(*code))
                .map(|(partition, code)| format!("{partition} on node {node}: error {code}"))
                .collect(),
            Err(reason) => vec![format!("node {node}: {reason}")],
        }
    }));
    let (local, forwarded) = futures_util::future::join(local, forwarded).await;
    failed.extend(local.into_iter().flatten());
    failed.extend(forwarded.into_iter().flatten());
    failed
}

/// Aborts `transactional_id`'s transaction if it has outlived its timeout, or finishes
/// its markers if they are pending. Skips an id another request is working on.
async fn tend(ctx: &Rc<ShardContext>, transactional_id: &str) {
    let Ok(lock) = ctx.txns.lock(transactional_id) else { return };
    let Some(meta) = ctx.txns.get(transactional_id) else { return };
    let result = if meta.expired(now_ms()) {
        tracing::info!(
            transactional_id,
            producer_id = meta.producer_id,
            timeout_ms = meta.timeout_ms,
            "aborting a transaction that outlived its timeout"
        );
        match prepare(ctx, &lock, meta, false, true).await {
            Ok(prepared) => complete(ctx, &lock, prepared).await.map(drop),
            Err(error) => Err(error),
        }
    } else if meta.state.is_preparing() {
        complete(ctx, &lock, meta).await.map(drop)
    } else {
        Ok(())
    };
    if let Err(error) = result {
        tracing::warn!(transactional_id, %error, "could not end a transaction; will retry");
    }
}

/// Forgets the ids with no transaction whose state is older than `cutoff_ms`.
async fn expire_idle(ctx: &Rc<ShardContext>, cutoff_ms: i64) {
    for id in ctx.txns.idle_since(cutoff_ms) {
        let Ok(lock) = ctx.txns.lock(&id) else { continue };
        let still_idle = ctx
            .txns
            .get(&id)
            .is_some_and(|m| m.update_ms < cutoff_ms && !m.state.is_preparing() && m.state != TxnState::Ongoing);
        if still_idle {
            match ctx.txns.forget(&lock).await {
                Ok(()) => tracing::info!(transactional_id = %id, "forgot an idle transactional id"),
                Err(error) => {
                    tracing::warn!(transactional_id = %id, %error, "could not forget an idle transactional id")
                }
            }
        }
    }
}

/// A transactional id unused this long is forgotten (Kafka's
/// transactional.id.expiration.ms default, 7 days); its next InitProducerId starts over
/// with a new producer id.
pub const TRANSACTIONAL_ID_EXPIRATION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// How often idle ids are looked for.
const EXPIRATION_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// Runs forever on each shard: aborts timed-out transactions and finishes pending
/// markers (including those a restart interrupted), every check interval: one timer wake
/// per interval, with no work while this shard has no transaction open or completing.
/// Once an hour it forgets ids idle for `TRANSACTIONAL_ID_EXPIRATION_MS`.
pub async fn run_timeouts(ctx: Rc<ShardContext>) {
    let interval = Duration::from_millis(ctx.txns.config.timeout_check_interval_ms);
    let mut next_expiration = std::time::Instant::now() + EXPIRATION_CHECK_INTERVAL;
    loop {
        glommio::timer::sleep(interval).await;
        if std::time::Instant::now() >= next_expiration {
            next_expiration = std::time::Instant::now() + EXPIRATION_CHECK_INTERVAL;
            expire_idle(&ctx, now_ms() - TRANSACTIONAL_ID_EXPIRATION_MS).await;
        }
        if !ctx.txns.has_open() {
            continue;
        }
        let now = now_ms();
        let mut due = ctx.txns.expired(now);
        due.extend(ctx.txns.preparing());
        for id in due {
            tend(&ctx, &id).await;
        }
    }
}
