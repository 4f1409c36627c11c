//! The operator commands of the `tern` binary that talk to a running broker (any
//! Kafka-compatible one) through [`crate::client`]: `tern topic ...`, `tern group ...`,
//! `tern transaction ...`, `tern produce`,
//! `tern consume`, `tern cluster status`. Each runs
//! on a short-lived glommio executor on the calling thread; errors are one lowercase
//! line saying what to do, and the exit code is non-zero.

pub mod cleaner_status;
pub mod cluster;
pub mod consume;
pub mod consume_group;
pub mod group;
pub mod partition_reader;
pub mod produce;
pub mod reassign;
pub mod topic;
pub mod transaction;

use std::future::Future;

use clap::Args;
use glommio::{LocalExecutorBuilder, Placement};

use crate::client::{Client, ClientError};

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long, default_value = "127.0.0.1:9092", value_delimiter = ',', global = true)]
    pub brokers: Vec<String>,
}

/// io_uring memory of the command's executor (counts against ulimit -l).
const CLI_IO_MEMORY_BYTES: usize = 256 << 10;

/// Connects and runs `work` with the client.
pub fn run_with_client<F, Fut>(connect: &ConnectArgs, work: F) -> Result<(), String>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<(), ClientError>>,
{
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(CLI_IO_MEMORY_BYTES)
        .make()
        .map_err(|e| format!("cannot start an io_uring executor: {e}"))?;
    let brokers = connect.brokers.clone();
    executor.run(async move {
        let client = Client::connect(&brokers, "tern-cli").await.map_err(|e| describe(&e))?;
        work(client).await.map_err(|e| describe(&e))
    })
}

fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Connect { address, reason } => {
            format!("cannot connect to {address} ({reason}): is the broker running? pass --brokers host:port")
        }
        other => other.to_string(),
    }
}

/// Parses `key=value`.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}
