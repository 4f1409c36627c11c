//! The fetch side of `tern consume`: reads a set of partitions of one topic from their
//! leaders (one long-polling Fetch per leader per round), prints each record once, and
//! rides out what a long-running consumer meets: a broker restart or a moved leader
//! (fresh metadata, retried for up to [`READ_RETRY_LIMIT`]) and a position that retention
//! deleted (OFFSET_OUT_OF_RANGE: reset to the earliest or latest offset, said on stderr).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::FetchRequest;

use super::consume::{missing_topic, Output};
use crate::client::records::{decode_records, whole_batches_len};
use crate::client::requests::{fetch_request, FetchLimits};
use crate::client::{error_name, Client, ClientError, PartitionLeader};
use crate::protocol::record_batch::iter_batches;

/// How long reads may keep failing (brokers down, leaders moving) before giving up.
pub const READ_RETRY_LIMIT: Duration = Duration::from_secs(30);
const READ_RETRY_BACKOFF: Duration = Duration::from_millis(500);
const FETCH_LIMITS: FetchLimits = FetchLimits { max_wait_ms: 500, max_bytes: 16 << 20, partition_max_bytes: 1 << 20 };

/// Partition errors fixed by asking the cluster again who leads.
const LEADER_MOVED: [ResponseError; 6] = [
    ResponseError::NotLeaderOrFollower,
    ResponseError::LeaderNotAvailable,
    ResponseError::UnknownTopicOrPartition,
    ResponseError::FencedLeaderEpoch,
    ResponseError::UnknownLeaderEpoch,
    ResponseError::KafkaStorageError,
];

#[derive(Debug)]
pub struct PartitionReader {
    topic: String,
    partitions: Vec<PartitionLeader>,
    /// Partition -> next offset to print.
    positions: BTreeMap<i32, i64>,
    /// Where an out-of-range position restarts: -2 earliest, -1 latest (ListOffsets).
    reset_to: i64,
    failing_since: Option<Instant>,
}

impl PartitionReader {
    pub fn new(
        topic: &str,
        partitions: Vec<PartitionLeader>,
        positions: BTreeMap<i32, i64>,
        reset_to: i64,
    ) -> PartitionReader {
        PartitionReader { topic: topic.to_string(), partitions, positions, reset_to, failing_since: None }
    }

    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// True when every partition's position has reached `ends`.
    pub fn at_end(&self, ends: &HashMap<i32, i64>) -> bool {
        self.partitions.iter().all(|p| self.positions[&p.partition] >= ends.get(&p.partition).copied().unwrap_or(0))
    }

    /// One round of fetches. Failures a retry can fix are retried (after a pause and a
    /// metadata refresh) on the next call; only after [`READ_RETRY_LIMIT`] of them, or
    /// on any other error, does this fail.
    pub async fn poll(&mut self, client: &Client, out: &mut Output<'_>) -> Result<(), ClientError> {
        match self.fetch_round(client, out).await {
            Ok(None) => {
                self.failing_since = None;
                Ok(())
            }
            Ok(Some(reason)) => self.recover(client, reason).await,
            Err(error) if error.is_transport() => self.recover(client, error.to_string()).await,
            Err(error) => Err(error),
        }
    }

    /// Fetches from every leader once and prints what came. `Some(reason)` when a
    /// partition's leader moved.
    async fn fetch_round(&mut self, client: &Client, out: &mut Output<'_>) -> Result<Option<String>, ClientError> {
        let version = client.version_for::<FetchRequest>()?;
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for p in &self.partitions {
            by_leader.entry(p.leader).or_default().push((p.partition, self.positions[&p.partition]));
        }
        let mut moved = None;
        let mut out_of_range = Vec::new();
        for (leader, wanted) in by_leader {
            let connection = client.shared_connection(&client.broker_address(leader)?).await?;
            let response = connection.call(version, &fetch_request(&self.topic, &wanted, FETCH_LIMITS)).await?;
            for data in response.responses.iter().flat_map(|t| t.partitions.iter()) {
                let partition = data.partition_index;
                let Some(position) = self.positions.get_mut(&partition) else { continue };
                match data.error_code {
                    0 => {}
                    code if code == ResponseError::OffsetOutOfRange.code() => {
                        out_of_range.push(PartitionLeader { partition, leader });
                        continue;
                    }
                    code if LEADER_MOVED.iter().any(|e| e.code() == code) => {
                        moved = Some(format!("{}-{partition}: {}", self.topic, error_name(code)));
                        continue;
                    }
                    code => {
                        return Err(ClientError::Usage(format!(
                            "reading {}-{partition} failed: {}",
                            self.topic,
                            error_name(code)
                        )))
                    }
                }
                let Some(records) = &data.records else { continue };
                let stdout = std::io::stdout();
                let mut lock = stdout.lock();
                for record in decode_records(records)? {
                    if record.offset < *position {
                        continue;
                    }
                    if !out.print(&mut lock, partition, &record) {
                        return Ok(None);
                    }
                    *position = record.offset + 1;
                    if out.done() {
                        return Ok(None);
                    }
                }
                // Every whole batch received is behind us, control batches (which hold no
                // record to print) included: a replicated partition's leader writes one
                // at each leader change, and an end offset can lie just past one.
                let whole = &records[..whole_batches_len(records)];
                if let Some(end) = iter_batches(whole).map(|(header, _)| header.next_offset()).max() {
                    *position = (*position).max(end);
                }
            }
        }
        if !out_of_range.is_empty() {
            self.reset(client, &out_of_range).await?;
        }
        Ok(moved)
    }

    /// Moves out-of-range positions (deleted by retention, or past the end) to the
    /// earliest or latest offset.
    async fn reset(&mut self, client: &Client, partitions: &[PartitionLeader]) -> Result<(), ClientError> {
        let offsets = client.list_offsets(&self.topic, partitions, self.reset_to).await?;
        let to = if self.reset_to == -2 { "earliest" } else { "latest" };
        for (partition, offset) in offsets {
            if let Some(position) = self.positions.get_mut(&partition) {
                eprintln!(
                    "offset {} of {}-{partition} is out of range: continuing from the {to} offset, {offset}",
                    *position, self.topic
                );
                *position = offset;
            }
        }
        Ok(())
    }

    async fn recover(&mut self, client: &Client, reason: String) -> Result<(), ClientError> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() > READ_RETRY_LIMIT {
            return Err(ClientError::Usage(format!(
                "reading {} kept failing for {} s ({reason}): check the brokers",
                self.topic,
                READ_RETRY_LIMIT.as_secs()
            )));
        }
        eprintln!("retrying the read of {}: {reason}", self.topic);
        glommio::timer::sleep(READ_RETRY_BACKOFF).await;
        match client.partitions(&self.topic).await {
            Ok(Some(leaders)) => {
                for p in &mut self.partitions {
                    if let Some(now) = leaders.iter().find(|l| l.partition == p.partition) {
                        p.leader = now.leader;
                    }
                }
                Ok(())
            }
            Ok(None) => Err(missing_topic(&self.topic)),
            Err(error) if error.is_transport() => Ok(()), // still down: the next poll retries
            Err(error) => Err(error),
        }
    }
}
