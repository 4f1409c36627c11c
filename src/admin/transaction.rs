//! `tern transaction list | describe | producers | find-hanging | abort`, over the Kafka
//! protocol (ListTransactions on every broker, DescribeTransactions at the id's
//! coordinator, DescribeProducers and WriteTxnMarkers at partition leaders), like
//! kafka-transactions.sh.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, ProducerId, TopicName,
    TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::{run_with_client, ConnectArgs};
use crate::client::{Client, ClientError};

#[derive(Debug, Subcommand)]
pub enum TransactionCommand {
    /// List transactional ids with their producer id and state.
    List {
        /// Only ids in this state (Empty, Ongoing, PrepareCommit, PrepareAbort,
        /// CompleteCommit, CompleteAbort); repeatable.
        #[arg(long)]
        state: Vec<String>,
        /// Only transactions open for at least this long (hanging ones).
        #[arg(long)]
        min_duration_ms: Option<i64>,
    },
    /// State, producer, timeout, start time and partitions of one transactional id.
    Describe { transactional_id: String },
    /// The producers a topic's partitions remember, with the first offset of the
    /// transaction each has open there (DescribeProducers).
    Producers {
        #[arg(long)]
        topic: String,
        /// Only this partition.
        #[arg(long)]
        partition: Option<i32>,
    },
    /// Transactions open on partitions for at least --min-age-ms whose producer no
    /// coordinator lists as Ongoing: hanging, they hold back read_committed readers.
    FindHanging {
        /// Only partitions of this topic (default: every topic).
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, default_value_t = 0)]
        min_age_ms: i64,
    },
    /// Aborts a producer's open transaction on one partition (WriteTxnMarkers), as
    /// kafka-transactions.sh abort does: for a hanging transaction only.
    Abort {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        producer_id: i64,
    },
}

#[derive(Debug, Args)]
pub struct TransactionArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: TransactionCommand,
}

pub fn run(args: TransactionArgs) -> Result<(), String> {
    let connect = args.connect.clone();
    run_with_client(&connect, move |client| async move {
        match args.command {
            TransactionCommand::List { state, min_duration_ms } => list(&client, state, min_duration_ms).await,
            TransactionCommand::Describe { transactional_id } => describe(&client, &transactional_id).await,
            TransactionCommand::Producers { topic, partition } => producers(&client, &topic, partition).await,
            TransactionCommand::FindHanging { topic, min_age_ms } => find_hanging(&client, topic, min_age_ms).await,
            TransactionCommand::Abort { topic, partition, producer_id } => {
                abort(&client, &topic, partition, producer_id).await
            }
        }
    })
}

async fn list(client: &Client, states: Vec<String>, min_duration_ms: Option<i64>) -> Result<(), ClientError> {
    // Every broker coordinates some ids: ask each one.
    let metadata = client.metadata(Some(&[])).await?;
    let request = ListTransactionsRequest::default()
        .with_state_filters(states.into_iter().map(StrBytes::from_string).collect())
        .with_duration_filter(min_duration_ms.unwrap_or(-1));
    let mut found = BTreeMap::new();
    for broker in &metadata.brokers {
        let connection = client.shared_connection(&format!("{}:{}", broker.host, broker.port)).await?;
        let response = connection.call(client.version_for::<ListTransactionsRequest>()?, &request).await?;
        if response.error_code != 0 {
            return Err(ClientError::broker("listing transactions", response.error_code, None));
        }
        if let Some(unknown) = response.unknown_state_filters.first() {
            return Err(ClientError::Protocol(format!("unknown transaction state {unknown}")));
        }
        for t in response.transaction_states {
            found.insert(t.transactional_id.to_string(), (t.producer_id.0, t.transaction_state.to_string()));
        }
    }
    println!("{:<40} {:>12} STATE", "TRANSACTIONAL ID", "PRODUCER ID");
    for (id, (producer_id, state)) in found {
        println!("{id:<40} {producer_id:>12} {state}");
    }
    Ok(())
}

async fn describe(client: &Client, transactional_id: &str) -> Result<(), ClientError> {
    let request = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(transactional_id.to_string()))]);
    let response = client.call_txn_coordinator(transactional_id, &request).await?;
    let state =
        response.transaction_states.into_iter().next().ok_or_else(|| ClientError::Protocol("empty answer".into()))?;
    if state.error_code != 0 {
        return Err(ClientError::broker(
            format!("describing transactional id {transactional_id}"),
            state.error_code,
            None,
        ));
    }
    println!("transactional id: {transactional_id}");
    println!("state:            {}", state.transaction_state);
    println!("producer:         id {} epoch {}", state.producer_id.0, state.producer_epoch);
    println!("timeout:          {} ms", state.transaction_timeout_ms);
    if state.transaction_start_time_ms >= 0 {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        println!(
            "started:          {} ms ago (at {} ms since the epoch)",
            now - state.transaction_start_time_ms,
            state.transaction_start_time_ms
        );
    }
    println!("partitions:");
    for topic in &state.topics {
        for partition in &topic.partitions {
            println!("  {}-{partition}", topic.topic.0);
        }
    }
    Ok(())
}

/// A producer a partition remembers.
#[derive(Debug, Clone)]
struct PartitionProducer {
    topic: String,
    partition: i32,
    producer_id: i64,
    producer_epoch: i16,
    last_timestamp: i64,
    /// First offset of its open transaction there (-1: none).
    txn_start: i64,
    /// The coordinator epoch of its last marker there: an abort must carry at least it.
    coordinator_epoch: i32,
}

/// DescribeProducers for `partitions` of `topic`, at each partition's leader.
async fn describe_producers(
    client: &Client,
    topic: &str,
    partition: Option<i32>,
) -> Result<Vec<PartitionProducer>, ClientError> {
    let leaders = client
        .partitions(topic)
        .await?
        .ok_or_else(|| ClientError::Protocol(format!("topic {topic} does not exist")))?;
    let mut found = Vec::new();
    for leader in leaders.iter().filter(|l| partition.is_none_or(|p| l.partition == p)) {
        let request = DescribeProducersRequest::default().with_topics(vec![
            kafka_protocol::messages::describe_producers_request::TopicRequest::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(vec![leader.partition]),
        ]);
        let connection = client.shared_connection(&client.broker_address(leader.leader)?).await?;
        let response = connection.call(client.version_for::<DescribeProducersRequest>()?, &request).await?;
        for p in response.topics.iter().flat_map(|t| t.partitions.iter()) {
            if p.error_code != 0 {
                return Err(ClientError::broker(
                    format!("describing producers of {topic}-{}", p.partition_index),
                    p.error_code,
                    None,
                ));
            }
            for producer in &p.active_producers {
                found.push(PartitionProducer {
                    topic: topic.to_string(),
                    partition: p.partition_index,
                    producer_id: producer.producer_id.0,
                    producer_epoch: producer.producer_epoch as i16,
                    last_timestamp: producer.last_timestamp,
                    txn_start: producer.current_txn_start_offset,
                    coordinator_epoch: producer.coordinator_epoch,
                });
            }
        }
    }
    Ok(found)
}

async fn producers(client: &Client, topic: &str, partition: Option<i32>) -> Result<(), ClientError> {
    println!(
        "{:<30} {:>9} {:>12} {:>6} {:>16} TXN START",
        "TOPIC", "PARTITION", "PRODUCER ID", "EPOCH", "LAST APPEND MS"
    );
    for p in describe_producers(client, topic, partition).await? {
        let start = if p.txn_start >= 0 { p.txn_start.to_string() } else { "-".into() };
        println!(
            "{:<30} {:>9} {:>12} {:>6} {:>16} {start}",
            p.topic, p.partition, p.producer_id, p.producer_epoch, p.last_timestamp
        );
    }
    Ok(())
}

async fn find_hanging(client: &Client, topic: Option<String>, min_age_ms: i64) -> Result<(), ClientError> {
    let topics: Vec<String> = match topic {
        Some(topic) => vec![topic],
        None => client
            .metadata(None)
            .await?
            .topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .filter(|name| !name.starts_with("__"))
            .collect(),
    };
    // Producer ids whose transaction a coordinator has open.
    let metadata = client.metadata(Some(&[])).await?;
    let mut ongoing = std::collections::BTreeSet::new();
    let request = ListTransactionsRequest::default().with_state_filters(vec![StrBytes::from_static_str("Ongoing")]);
    for broker in &metadata.brokers {
        let connection = client.shared_connection(&format!("{}:{}", broker.host, broker.port)).await?;
        let response = connection.call(client.version_for::<ListTransactionsRequest>()?, &request).await?;
        ongoing.extend(response.transaction_states.iter().map(|t| t.producer_id.0));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    println!(
        "{:<30} {:>9} {:>12} {:>6} {:>10} {:>12} COORDINATOR",
        "TOPIC", "PARTITION", "PRODUCER ID", "EPOCH", "TXN START", "AGE MS"
    );
    let mut hanging = 0;
    for topic in topics {
        for p in describe_producers(client, &topic, None).await? {
            let age = now - p.last_timestamp;
            if p.txn_start < 0 || age < min_age_ms || ongoing.contains(&p.producer_id) {
                continue;
            }
            hanging += 1;
            println!(
                "{:<30} {:>9} {:>12} {:>6} {:>10} {:>12} not ongoing: hanging",
                p.topic, p.partition, p.producer_id, p.producer_epoch, p.txn_start, age
            );
        }
    }
    eprintln!("{hanging} hanging transaction(s); end one with `tern transaction abort --topic T --partition P --producer-id ID`");
    Ok(())
}

async fn abort(client: &Client, topic: &str, partition: i32, producer_id: i64) -> Result<(), ClientError> {
    let open = describe_producers(client, topic, Some(partition))
        .await?
        .into_iter()
        .find(|p| p.producer_id == producer_id && p.txn_start >= 0)
        .ok_or_else(|| {
            ClientError::Protocol(format!("producer {producer_id} has no open transaction on {topic}-{partition}"))
        })?;
    let leaders = client.partitions(topic).await?.unwrap_or_default();
    let leader = leaders
        .iter()
        .find(|l| l.partition == partition)
        .ok_or_else(|| ClientError::Protocol(format!("{topic}-{partition} does not exist")))?;
    let request = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(open.producer_epoch)
        .with_transaction_result(false)
        .with_coordinator_epoch(open.coordinator_epoch.max(0))
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_indexes(vec![partition])])]);
    let connection = client.shared_connection(&client.broker_address(leader.leader)?).await?;
    let response = connection.call(client.version_for::<WriteTxnMarkersRequest>()?, &request).await?;
    let code = response
        .markers
        .iter()
        .flat_map(|m| m.topics.iter())
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.error_code)
        .find(|&c| c != 0)
        .unwrap_or(0);
    if code != 0 {
        return Err(ClientError::broker(
            format!("aborting producer {producer_id}'s transaction on {topic}-{partition}"),
            code,
            None,
        ));
    }
    println!(
        "aborted producer {producer_id}'s transaction on {topic}-{partition} (it started at offset {})",
        open.txn_start
    );
    Ok(())
}
