//! `tern cluster status`: the brokers a cluster has live, its controller (the metadata
//! quorum's leader), the partitions that have no leader and those with fewer in-sync
//! replicas than replicas, from one Metadata request to any bootstrap broker.

use clap::{Args, Subcommand};

use super::{run_with_client, ConnectArgs};
use crate::client::ClientError;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller, and partitions without a leader.
    Status {
        /// Exit with status 1 unless this many brokers are live and there is a
        /// controller (for scripts that wait for a cluster to form).
        #[arg(long)]
        wait_brokers: Option<usize>,
    },
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

pub fn run(args: ClusterArgs) -> Result<(), String> {
    let ClusterCommand::Status { wait_brokers } = args.command;
    run_with_client(&args.connect, move |client| async move {
        let metadata = client.metadata(None).await?;
        let mut brokers: Vec<_> = metadata.brokers.iter().collect();
        brokers.sort_by_key(|b| b.node_id.0);
        let controller = metadata.controller_id.0;
        println!("controller: {}", if controller >= 0 { controller.to_string() } else { "none".into() });
        println!("brokers: {}", brokers.len());
        println!("  {:>4}  {:<24} RACK", "NODE", "ADDRESS");
        for broker in &brokers {
            let rack = broker.rack.as_ref().map_or("-".to_string(), |r| r.to_string());
            println!("  {:>4}  {:<24} {rack}", broker.node_id.0, format!("{}:{}", broker.host, broker.port));
        }
        let mut leaderless = Vec::new();
        let mut under_replicated = Vec::new();
        let mut partitions = 0;
        for topic in &metadata.topics {
            let name = topic.name.as_ref().map_or(String::new(), |n| n.to_string());
            for partition in &topic.partitions {
                partitions += 1;
                let replicas: Vec<i32> = partition.replica_nodes.iter().map(|r| r.0).collect();
                let in_sync: Vec<i32> = partition.isr_nodes.iter().map(|r| r.0).collect();
                if partition.leader_id.0 < 0 {
                    leaderless.push(format!("{name}-{} (replicas {replicas:?})", partition.partition_index));
                } else if in_sync.len() < replicas.len() {
                    under_replicated.push(format!(
                        "{name}-{} (leader {}, replicas {replicas:?}, in sync {in_sync:?})",
                        partition.partition_index, partition.leader_id.0
                    ));
                }
            }
        }
        println!(
            "partitions: {partitions}, without a leader: {}, under-replicated: {}",
            leaderless.len(),
            under_replicated.len()
        );
        for line in leaderless.iter().chain(&under_replicated) {
            println!("  {line}");
        }
        if let Some(wanted) = wait_brokers {
            if brokers.len() < wanted || controller < 0 {
                return Err(ClientError::Usage(format!(
                    "{} of {wanted} brokers live, controller {}",
                    brokers.len(),
                    if controller >= 0 { controller.to_string() } else { "none".into() }
                )));
            }
        }
        Ok(())
    })
}
