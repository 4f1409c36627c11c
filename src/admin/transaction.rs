//! `tern transaction list | describe`, over the Kafka protocol (ListTransactions on every
//! broker, DescribeTransactions at the id's coordinator), like kafka-transactions.sh.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use kafka_protocol::messages::{DescribeTransactionsRequest, ListTransactionsRequest, TransactionalId};
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
