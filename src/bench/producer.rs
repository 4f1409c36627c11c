//! A producer lane: one connection to one leader broker, sending batches for its share of
//! the partitions with up to `--max-in-flight` Produce requests outstanding.
//!
//! Without `--rate` every request carries a full batch for each partition it covers (up
//! to `--max-request-bytes`), built when a request slot frees up; latency is from that
//! moment to the acknowledgement. With `--rate` records are due on a fixed schedule and
//! a request carries what is due (a batch fills up to `--batch-bytes`; with
//! `--linger-ms` a partial batch waits that long for more); latency runs from each
//! record's due time, so time spent waiting for a request slot counts.
//!
//! Partitions rotate per batch (Kafka's sticky partitioner switches on a new batch).
//! Broker error codes are counted per record; a lost connection ends the lane and is
//! reported. Nothing is retried.
//!
//! With `--idempotent` or `--transactional N` the lane writes as a producer (see
//! `identity`); a transactional lane's requests carry at most what is left of the
//! current transaction's N batches, and the transaction is committed once they are all
//! acknowledged, before the next one begins.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::sync::Semaphore;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::context::{within, Schedule, SharedContext};
use super::identity::LaneIdentity;
use super::payload::{records_per_batch, BatchTemplate};
use super::stats::now_ns;
use crate::client::requests::produce_request;
use crate::client::{error_name, ClientError, Connection};

/// One lane's assignment.
#[derive(Debug, Clone)]
pub struct ProducerPlan {
    pub id: usize,
    pub leader: i32,
    pub partitions: Vec<i32>,
    /// This lane's share of `--rate` (records/s), if fixed-rate.
    pub rate: Option<u64>,
}

/// A batch in flight: where it went and whose latency it carries.
struct SentBatch {
    partition: i32,
    records: u64,
    /// Due time of its first record (rate mode) or its build time.
    first_due_ns: u64,
    /// Schedule index of its first record (rate mode).
    first_index: u64,
}

pub async fn run_producer(ctx: SharedContext, plan: ProducerPlan) {
    if let Err(error) = produce_loop(&ctx, &plan).await {
        let message = format!("producer {} (broker {}): {error}", plan.id, plan.leader);
        ctx.probe.lock().expect("probe lock").failures.push(message);
    }
}

async fn produce_loop(ctx: &SharedContext, plan: &ProducerPlan) -> Result<(), ClientError> {
    let args = &ctx.args;
    let connection = ctx.client.dedicated_connection(plan.leader).await?;
    let version = ctx.client.version_for::<ProduceRequest>()?;
    let per_batch = records_per_batch(args.batch_bytes as usize, args.key_size, args.record_size);
    let template =
        Rc::new(BatchTemplate::new(per_batch, args.key_size, args.record_size, args.compression, plan.id as u64 + 1));
    let batches_per_request =
        ((args.max_request_bytes / args.batch_bytes.max(1)) as usize).clamp(1, plan.partitions.len().max(1));
    let window = Rc::new(Semaphore::new(args.max_in_flight as u64));
    let schedule = plan.rate.map(|rate| Schedule::new(now_ns(), rate));
    let linger_ns = args.linger_ms * 1_000_000;
    let mut scheduled = 0u64; // records taken from the schedule so far
    let mut next_partition = 0usize;
    let mut identity = if args.idempotent || args.transactional.is_some() {
        Some(LaneIdentity::init(&ctx.client, plan.id, args.transactional).await?)
    } else {
        None
    };
    let batches_per_transaction = identity.as_ref().and_then(|i| i.transaction.as_ref()).map(|(_, n)| *n);
    // Batches sent in the open transaction (transactional lanes).
    let mut in_transaction = 0usize;

    while !ctx.control.stopped() && !connection.is_broken() {
        if let (Some(per_transaction), Some(identity)) = (batches_per_transaction, identity.as_ref()) {
            if in_transaction == per_transaction {
                // Every batch of the transaction acknowledged, then the commit.
                drop(window.acquire_permit(args.max_in_flight as u64).await);
                identity.commit(&ctx.client).await?;
                ctx.probe.lock().expect("probe lock").transactions += 1;
                in_transaction = 0;
            }
            if in_transaction == 0 {
                let partitions = (0..per_transaction)
                    .map(|i| plan.partitions[(next_partition + i) % plan.partitions.len()])
                    .collect();
                identity.begin(&ctx.client, &args.topic, &partitions).await?;
            }
        }
        let permit = window.acquire_static_permit(1).await.expect("semaphore is never closed");
        // How many records go into this request, and when the first one was due.
        let (wanted, first_due_ns) = match schedule {
            None => ((per_batch * batches_per_request) as u64, now_ns()),
            Some(schedule) => {
                let now = now_ns();
                let due = schedule.due_by(now).saturating_sub(scheduled);
                let first_due = schedule.due_at(scheduled);
                if due == 0 {
                    drop(permit);
                    sleep_until(first_due).await;
                    continue;
                }
                if linger_ns > 0 && due < per_batch as u64 && now < first_due + linger_ns {
                    drop(permit);
                    let batch_full_at = schedule.due_at(scheduled + per_batch as u64 - 1);
                    sleep_until((first_due + linger_ns).min(batch_full_at)).await;
                    continue;
                }
                (due.min((per_batch * batches_per_request) as u64), first_due)
            }
        };
        let wanted = match batches_per_transaction {
            Some(n) => wanted.min(((n - in_transaction) * per_batch) as u64),
            None => wanted,
        };
        let granted = ctx.control.claim(wanted);
        if granted == 0 {
            break;
        }
        let mut batches = Vec::new();
        let mut partition_data = Vec::new();
        let mut taken = 0u64;
        let timestamp_ms = wall_clock_ms();
        while taken < granted {
            let count = (granted - taken).min(per_batch as u64);
            let partition = plan.partitions[next_partition % plan.partitions.len()];
            next_partition += 1;
            let batch_first = scheduled + taken;
            let batch_first_due = schedule.map_or(first_due_ns, |s| s.due_at(batch_first));
            let producer = match identity.as_mut() {
                Some(identity) => identity.next_batch(partition, count as usize),
                None => crate::client::records::BatchProducer::NONE,
            };
            let records: Bytes = template.build_as(
                count as usize,
                timestamp_ms,
                |i| match schedule {
                    Some(s) => s.due_at(batch_first + i as u64),
                    None => first_due_ns,
                },
                producer,
            )?;
            partition_data.push((partition, records));
            batches.push(SentBatch {
                partition,
                records: count,
                first_due_ns: batch_first_due,
                first_index: batch_first,
            });
            taken += count;
        }
        scheduled += granted;
        in_transaction += batches.len();
        let mut request = produce_request(&args.topic, args.acks, 30_000, partition_data);
        if let Some((id, _)) = identity.as_ref().and_then(|i| i.transaction.as_ref()) {
            request.transactional_id = Some(kafka_protocol::messages::TransactionalId(
                kafka_protocol::protocol::StrBytes::from_string(id.clone()),
            ));
        }
        let connection = connection.clone();
        let ctx = ctx.clone();
        let timing = RequestTiming { first_due_ns, sent_ns: now_ns() };
        glommio::spawn_local(async move {
            let _permit = permit;
            let outcome = send(&ctx, &connection, version, &request).await;
            account(&ctx, &batches, schedule, timing, outcome);
        })
        .detach();
    }
    // Wait for everything in flight, and commit a transaction left open.
    let _all = window.acquire(args.max_in_flight as u64).await;
    if let Some(identity) = identity.as_ref().filter(|_| in_transaction > 0 && !connection.is_broken()) {
        identity.commit(&ctx.client).await?;
        ctx.probe.lock().expect("probe lock").transactions += 1;
    }
    if connection.is_broken() && !ctx.control.stopped() {
        return Err(ClientError::Disconnected(connection.address().to_string()));
    }
    Ok(())
}

enum Outcome {
    Answered(ProduceResponse, u64),
    /// acks=0: written at this time, no answer.
    Written(u64),
    Failed(String),
}

async fn send(ctx: &SharedContext, connection: &Connection, version: i16, request: &ProduceRequest) -> Outcome {
    let timeout = ctx.args.request_timeout;
    if request.acks == 0 {
        return match within(timeout, connection.send_without_response(version, request)).await {
            Some(Ok(())) => Outcome::Written(now_ns()),
            Some(Err(error)) => Outcome::Failed(failure_name(&error)),
            None => Outcome::Failed("REQUEST_TIMED_OUT".into()),
        };
    }
    match within(timeout, connection.call(version, request)).await {
        Some(Ok(response)) => Outcome::Answered(response, now_ns()),
        Some(Err(error)) => Outcome::Failed(failure_name(&error)),
        None => Outcome::Failed("REQUEST_TIMED_OUT".into()),
    }
}

fn failure_name(error: &ClientError) -> String {
    match error {
        ClientError::Disconnected(_) | ClientError::Io { .. } => "DISCONNECTED".into(),
        ClientError::Broker { code, .. } => error_name(*code),
        other => format!("CLIENT_ERROR ({other})"),
    }
}

/// When a request's first record was due and when the request was sent.
#[derive(Debug, Clone, Copy)]
struct RequestTiming {
    first_due_ns: u64,
    sent_ns: u64,
}

fn account(
    ctx: &SharedContext,
    batches: &[SentBatch],
    schedule: Option<Schedule>,
    timing: RequestTiming,
    outcome: Outcome,
) {
    let record_bytes = (ctx.args.record_size + ctx.args.key_size) as u64;
    let mut probe = ctx.probe.lock().expect("probe lock");
    let (codes, done_ns) = match outcome {
        Outcome::Failed(name) => {
            probe.count_error(&name, batches.iter().map(|b| b.records).sum());
            return;
        }
        Outcome::Written(at) => (None, at),
        Outcome::Answered(response, at) => (Some(response), at),
    };
    probe.produce_split.record(timing.first_due_ns, timing.sent_ns, done_ns);
    for batch in batches {
        let code = codes.as_ref().map_or(0, |response| partition_error(response, batch.partition));
        if code != 0 {
            probe.count_error(&error_name(code), batch.records);
            continue;
        }
        probe.produce.records += batch.records;
        probe.produce.bytes += batch.records * record_bytes;
        match schedule {
            None => probe.produce.record_latency(done_ns.saturating_sub(batch.first_due_ns), batch.records),
            Some(schedule) => {
                for i in 0..batch.records {
                    let due = schedule.due_at(batch.first_index + i);
                    probe.produce.record_latency(done_ns.saturating_sub(due), 1);
                }
            }
        }
    }
}

/// The error code the response gives `partition` (UNKNOWN_SERVER_ERROR if it is missing).
fn partition_error(response: &ProduceResponse, partition: i32) -> i16 {
    response
        .responses
        .iter()
        .flat_map(|topic| topic.partition_responses.iter())
        .find(|p| p.index == partition)
        .map_or(-1, |p| p.error_code)
}

async fn sleep_until(at_ns: u64) {
    let now = now_ns();
    if at_ns > now {
        glommio::timer::sleep(Duration::from_nanos(at_ns - now)).await;
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
