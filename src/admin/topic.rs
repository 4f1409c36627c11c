//! `tern topic create | list | describe | delete | alter-config | reassign |
//! reassignments`, over the Kafka protocol (CreateTopics, Metadata, ListOffsets,
//! DescribeLogDirs, DescribeConfigs, DeleteTopics, IncrementalAlterConfigs, and
//! `admin::reassign`'s), so they work against any Kafka-compatible broker.

use std::collections::{BTreeMap, HashMap};

use clap::{Args, Subcommand};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    DeleteTopicsRequest, DescribeConfigsRequest, DescribeLogDirsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{parse_key_value, run_with_client, ConnectArgs};
use crate::client::{error_name, Client, ClientError, PartitionLeader};

/// ConfigResource type of a topic.
const RESOURCE_TOPIC: i8 = 2;

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (-1: the broker's default).
        #[arg(long, default_value_t = -1)]
        partitions: i32,
        /// Replication factor (-1: the broker's default).
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// A topic config, `key=value` (repeatable), e.g. --config retention.ms=3600000.
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List {
        /// Include internal topics (__consumer_offsets).
        #[arg(long)]
        internal: bool,
    },
    /// Partitions (leader, log start, high watermark), configs and, for a compacted
    /// topic, the log cleaner's state of each partition.
    Describe {
        name: String,
        /// The broker's admin endpoint (`tern serve --admin-listen`), where the cleaner's
        /// figures are read from (`off`: skip them).
        #[arg(long, default_value = "127.0.0.1:9644")]
        admin_address: String,
    },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Move partitions' replicas to other brokers (cluster mode), or cancel a move; the
    /// data is copied while traffic flows, and the first broker listed becomes the
    /// preferred leader.
    Reassign {
        name: String,
        /// `partition=broker,broker,...` (repeatable), e.g. --move 0=2,3,4.
        #[arg(long = "move", value_parser = super::reassign::parse_move)]
        moves: Vec<(i32, Vec<i32>)>,
        /// A partition whose move to cancel (repeatable): it goes back to its replicas.
        #[arg(long = "cancel")]
        cancels: Vec<i32>,
        /// Wait until the moves are complete, at most this many seconds (0: do not wait).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// The reassignments in progress.
    Reassignments,
    /// Change topic configs: --set key=value, --delete key (repeatable).
    AlterConfig {
        name: String,
        #[arg(long = "set", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: TopicCommand,
}

pub fn run(args: TopicArgs) -> Result<(), String> {
    let connect = args.connect.clone();
    run_with_client(&connect, move |client| async move {
        match args.command {
            TopicCommand::Create { name, partitions, replication_factor, configs } => {
                if client.create_topic(&name, partitions, replication_factor, &configs).await? {
                    println!("created topic {name}");
                    Ok(())
                } else {
                    Err(ClientError::Usage(format!("topic {name} already exists")))
                }
            }
            TopicCommand::List { internal } => list(&client, internal).await,
            TopicCommand::Describe { name, admin_address } => describe(&client, &name, &admin_address).await,
            TopicCommand::Delete { name } => delete(&client, &name).await,
            TopicCommand::Reassign { name, moves, cancels, wait } => {
                let wait = (wait > 0).then(|| std::time::Duration::from_secs(wait));
                super::reassign::reassign(&client, &name, moves, cancels, wait).await
            }
            TopicCommand::Reassignments => super::reassign::print_list(&client).await,
            TopicCommand::AlterConfig { name, set, delete } => alter(&client, &name, set, delete).await,
        }
    })
}

async fn list(client: &Client, internal: bool) -> Result<(), ClientError> {
    let metadata = client.metadata(None).await?;
    let mut rows: Vec<(String, usize)> = metadata
        .topics
        .iter()
        .filter(|t| internal || !t.is_internal)
        .filter_map(|t| t.name.as_ref().map(|n| (n.to_string(), t.partitions.len())))
        .collect();
    rows.sort();
    println!("{:<40} {:>10}", "TOPIC", "PARTITIONS");
    for (name, partitions) in rows {
        println!("{name:<40} {partitions:>10}");
    }
    Ok(())
}

async fn describe(client: &Client, name: &str, admin_address: &str) -> Result<(), ClientError> {
    let partitions = client.partitions(name).await?.ok_or_else(|| {
        ClientError::Usage(format!("topic {name} does not exist: `tern topic list` shows the topics"))
    })?;
    let starts = client.list_offsets(name, &partitions, -2).await?;
    let ends = client.list_offsets(name, &partitions, -1).await?;
    let sizes = log_sizes(client, name, &partitions).await?;
    println!("topic {name}: {} partitions", partitions.len());
    println!(
        "{:>9} {:>7} {:>16} {:>16} {:>12} {:>14}",
        "PARTITION", "LEADER", "LOG-START", "HIGH-WATERMARK", "RECORDS", "SIZE-BYTES"
    );
    for p in &partitions {
        let (start, end) =
            (starts.get(&p.partition).copied().unwrap_or(-1), ends.get(&p.partition).copied().unwrap_or(-1));
        let size = match sizes.as_ref().and_then(|s| s.get(&p.partition)) {
            Some(size) => size.to_string(),
            None => "-".to_string(),
        };
        println!(
            "{:>9} {:>7} {:>16} {:>16} {:>12} {:>14}",
            p.partition,
            p.leader,
            start,
            end,
            (end - start).max(0),
            size
        );
    }
    let request = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
        .with_resource_type(RESOURCE_TOPIC)
        .with_resource_name(StrBytes::from_string(name.to_string()))]);
    let response = client.call_any(&request).await?;
    let mut compacted = false;
    for result in response.results {
        if result.error_code != 0 {
            return Err(ClientError::broker(
                format!("describing configs of {name}"),
                result.error_code,
                result.error_message.map(|m| m.to_string()),
            ));
        }
        println!("configs:");
        let mut configs: Vec<_> = result.configs.into_iter().collect();
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        for config in configs {
            let source = match config.config_source {
                1 => "topic",
                2 => "dynamic broker config",
                3 => "dynamic cluster default",
                4 => "static broker config",
                _ => "default",
            };
            let value = config.value.map(|v| v.to_string()).unwrap_or_else(|| "(null)".into());
            if config.name.as_str() == "cleanup.policy" && value.contains("compact") {
                compacted = true;
            }
            println!("  {}={value} ({source})", config.name);
        }
    }
    if compacted && admin_address != "off" {
        print_cleaner_state(name, admin_address);
    }
    Ok(())
}

/// The cleaner's figures of a compacted topic's partitions, from the admin endpoint.
fn print_cleaner_state(name: &str, admin_address: &str) {
    let metrics = match super::cleaner_status::fetch_metrics(admin_address) {
        Ok(metrics) => metrics,
        Err(error) => {
            eprintln!("cleaner state unavailable ({error}); pass --admin-address of the broker's --admin-listen");
            return;
        }
    };
    let rows = super::cleaner_status::cleaner_rows(&metrics, name);
    println!("log cleaner (from http://{admin_address}/metrics):");
    println!(
        "{:>9} {:>11} {:>12} {:>12} {:>7} {:>15} {:>12} {:>13} {:>20}",
        "PARTITION",
        "DIRTY-RATIO",
        "DIRTY-BYTES",
        "FIRST-DIRTY",
        "PASSES",
        "RECORDS-REMOVED",
        "BYTES-READ",
        "BYTES-WRITTEN",
        "LAST-RUN"
    );
    for (partition, row) in rows {
        let last_run = if row.last_run_seconds > 0.0 {
            let ago = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |now| now.as_secs_f64() - row.last_run_seconds);
            format!("{ago:.1} s ago")
        } else {
            "never".to_string()
        };
        println!(
            "{:>9} {:>11.3} {:>12} {:>12} {:>7} {:>15} {:>12} {:>13} {:>20}",
            partition,
            row.dirty_ratio,
            row.dirty_bytes as u64,
            row.first_dirty_offset as i64,
            row.passes as u64,
            row.records_removed as u64,
            row.bytes_read as u64,
            row.bytes_written as u64,
            last_run
        );
    }
}

/// Size in bytes of each partition's log on its leader, from DescribeLogDirs sent to every
/// leader (summed over the leader's log directories, ignoring future replicas being moved).
/// `None` when the cluster does not speak DescribeLogDirs.
async fn log_sizes(
    client: &Client,
    topic: &str,
    partitions: &[PartitionLeader],
) -> Result<Option<HashMap<i32, i64>>, ClientError> {
    let version = match client.version_for::<DescribeLogDirsRequest>() {
        Ok(version) => version,
        Err(ClientError::Unsupported { .. }) => {
            eprintln!("sizes unavailable: the broker does not support DescribeLogDirs");
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in partitions {
        by_leader.entry(p.leader).or_default().push(p.partition);
    }
    let mut sizes = HashMap::new();
    for (leader, led) in by_leader {
        let request = DescribeLogDirsRequest::default().with_topics(Some(vec![DescribableLogDirTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(led.clone())]));
        let connection = client.shared_connection(&client.broker_address(leader)?).await?;
        let response = connection.call(version, &request).await?;
        if response.error_code != 0 {
            // e.g. CLUSTER_AUTHORIZATION_FAILED under ACLs: the rest of the answer stands.
            eprintln!("sizes unavailable: broker {leader} answered {}", error_name(response.error_code));
            return Ok(None);
        }
        for dir in response.results.iter().filter(|d| d.error_code == 0) {
            for reported in dir.topics.iter().filter(|t| t.name.0.as_str() == topic) {
                for partition in
                    reported.partitions.iter().filter(|p| !p.is_future_key && led.contains(&p.partition_index))
                {
                    *sizes.entry(partition.partition_index).or_insert(0) += partition.partition_size;
                }
            }
        }
    }
    Ok(Some(sizes))
}

async fn delete(client: &Client, name: &str) -> Result<(), ClientError> {
    let version = client.version_for::<DeleteTopicsRequest>()?;
    let mut request = DeleteTopicsRequest::default().with_timeout_ms(30_000);
    if version >= 6 {
        request.topics =
            vec![DeleteTopicState::default().with_name(Some(TopicName(StrBytes::from_string(name.into()))))];
    } else {
        request.topic_names = vec![TopicName(StrBytes::from_string(name.into()))];
    }
    let response = client.any_connection().await?.call(version, &request).await?;
    let result = response.responses.into_iter().next().ok_or_else(|| ClientError::Protocol("empty answer".into()))?;
    match result.error_code {
        0 => {
            println!("deleted topic {name}");
            Ok(())
        }
        3 => Err(ClientError::Usage(format!("topic {name} does not exist"))),
        code => Err(ClientError::broker(
            format!("deleting topic {name}"),
            code,
            result.error_message.map(|m| m.to_string()),
        )),
    }
}

async fn alter(
    client: &Client,
    name: &str,
    set: Vec<(String, String)>,
    delete: Vec<String>,
) -> Result<(), ClientError> {
    if set.is_empty() && delete.is_empty() {
        return Err(ClientError::Usage("nothing to change: pass --set key=value and/or --delete key".into()));
    }
    let mut configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(key, value)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(key.clone()))
                .with_config_operation(0) // SET
                .with_value(Some(StrBytes::from_string(value.clone())))
        })
        .collect();
    configs.extend(delete.iter().map(|key| {
        AlterableConfig::default().with_name(StrBytes::from_string(key.clone())).with_config_operation(1)
        // DELETE
    }));
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(RESOURCE_TOPIC)
        .with_resource_name(StrBytes::from_string(name.to_string()))
        .with_configs(configs)]);
    let response = client.call_any(&request).await?;
    for result in response.responses {
        if result.error_code != 0 {
            return Err(ClientError::broker(
                format!("changing configs of {name}"),
                result.error_code,
                result.error_message.map(|m| m.to_string()),
            ));
        }
    }
    for (key, value) in &set {
        println!("set {key}={value} on {name}");
    }
    for key in &delete {
        println!("reset {key} on {name} to its default");
    }
    Ok(())
}
