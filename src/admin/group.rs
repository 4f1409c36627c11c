//! `tern group list | describe | delete | reset-offsets`, over the Kafka protocol
//! (ListGroups, DescribeGroups, OffsetFetch, ListOffsets, DeleteGroups, OffsetCommit),
//! like kafka-consumer-groups.sh.

use std::collections::BTreeMap;

use bytes::Buf;
use clap::{Args, Subcommand};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
    OffsetFetchRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::{run_with_client, ConnectArgs};
use crate::client::requests::offset_commit_request;
use crate::client::{error_name, Client, ClientError};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their state.
    List,
    /// Members, assignments, committed offsets and lag per partition.
    Describe { group: String },
    /// Delete an empty group and its committed offsets.
    Delete { group: String },
    /// Move an inactive group's committed offsets (dry run unless --execute).
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// earliest, latest, offset:N or timestamp:MS.
        #[arg(long)]
        to: String,
        /// Commit the new offsets (without it, only print them).
        #[arg(long)]
        execute: bool,
    },
}

#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: GroupCommand,
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

pub fn run(args: GroupArgs) -> Result<(), String> {
    let connect = args.connect.clone();
    run_with_client(&connect, move |client| async move {
        match args.command {
            GroupCommand::List => list(&client).await,
            GroupCommand::Describe { group } => describe(&client, &group).await,
            GroupCommand::Delete { group } => delete(&client, &group).await,
            GroupCommand::ResetOffsets { group, topic, to, execute } => {
                reset(&client, &group, &topic, &to, execute).await
            }
        }
    })
}

async fn list(client: &Client) -> Result<(), ClientError> {
    // Every broker coordinates some groups: ask each one.
    let metadata = client.metadata(Some(&[])).await?;
    let mut groups = BTreeMap::new();
    for broker in &metadata.brokers {
        let connection = client.shared_connection(&format!("{}:{}", broker.host, broker.port)).await?;
        let response =
            connection.call(client.version_for::<ListGroupsRequest>()?, &ListGroupsRequest::default()).await?;
        if response.error_code != 0 {
            return Err(ClientError::broker("listing groups", response.error_code, None));
        }
        for g in response.groups {
            groups.insert(g.group_id.to_string(), g.group_state.to_string());
        }
    }
    println!("{:<40} STATE", "GROUP");
    for (group, state) in groups {
        println!("{group:<40} {}", if state.is_empty() { "-" } else { &state });
    }
    Ok(())
}

/// State and (member id, client id, host, assigned (topic, partition)s) of a group.
type Members = Vec<(String, String, String, Vec<(String, i32)>)>;

async fn group_state(client: &Client, group: &str) -> Result<(String, Members), ClientError> {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let response = client.call_coordinator(group, &request).await?;
    let described = response.groups.into_iter().next().ok_or_else(|| ClientError::Protocol("empty answer".into()))?;
    if described.error_code != 0 {
        return Err(ClientError::broker(format!("describing group {group}"), described.error_code, None));
    }
    let members = described
        .members
        .iter()
        .map(|m| {
            let mut bytes = m.member_assignment.clone();
            let assigned = if bytes.len() >= 2 {
                let version = bytes.get_i16();
                ConsumerProtocolAssignment::decode(&mut bytes, version)
                    .map(|a| {
                        a.assigned_partitions
                            .iter()
                            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.to_string(), p)))
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            (m.member_id.to_string(), m.client_id.to_string(), m.client_host.to_string(), assigned)
        })
        .collect();
    Ok((described.group_state.to_string(), members))
}

/// Every committed offset of the group: (topic, partition) -> offset.
pub async fn committed_offsets(client: &Client, group: &str) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
    let request = OffsetFetchRequest::default().with_group_id(group_id(group)).with_topics(None);
    let response = client.call_coordinator(group, &request).await?;
    if response.error_code != 0 {
        return Err(ClientError::broker(format!("fetching offsets of group {group}"), response.error_code, None));
    }
    Ok(response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| ((t.name.to_string(), p.partition_index), p.committed_offset)))
        .filter(|(_, offset)| *offset >= 0)
        .collect())
}

async fn describe(client: &Client, group: &str) -> Result<(), ClientError> {
    let (state, members) = group_state(client, group).await?;
    let committed = committed_offsets(client, group).await?;
    if state == "Dead" && committed.is_empty() {
        return Err(ClientError::Usage(format!("group {group} does not exist: `tern group list` shows the groups")));
    }
    println!("group {group}: {state}, {} members", members.len());
    let mut owner: BTreeMap<(String, i32), (String, String)> = BTreeMap::new();
    for (member, client_id, host, assigned) in &members {
        for tp in assigned {
            owner.insert(tp.clone(), (format!("{member} ({client_id})"), host.clone()));
        }
    }
    let mut partitions: Vec<(String, i32)> = committed.keys().chain(owner.keys()).cloned().collect();
    partitions.sort();
    partitions.dedup();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in &partitions {
        by_topic.entry(topic.clone()).or_default().push(*partition);
    }
    for (topic, wanted) in by_topic {
        if let Some(leaders) = client.partitions(&topic).await? {
            let leaders: Vec<_> = leaders.into_iter().filter(|l| wanted.contains(&l.partition)).collect();
            for (partition, offset) in client.list_offsets(&topic, &leaders, -1).await? {
                ends.insert((topic.clone(), partition), offset);
            }
        }
    }
    println!(
        "{:<24} {:>9} {:>14} {:>14} {:>8}  {:<40} HOST",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER"
    );
    for tp in &partitions {
        let current = committed.get(tp).map_or("-".to_string(), i64::to_string);
        let end = ends.get(tp).map_or("-".to_string(), i64::to_string);
        let lag = match (committed.get(tp), ends.get(tp)) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => "-".into(),
        };
        let (consumer, host) = owner.get(tp).cloned().unwrap_or_else(|| ("-".into(), "-".into()));
        println!("{:<24} {:>9} {:>14} {:>14} {:>8}  {:<40} {host}", tp.0, tp.1, current, end, lag, consumer);
    }
    Ok(())
}

async fn delete(client: &Client, group: &str) -> Result<(), ClientError> {
    let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
    let response = client.call_coordinator(group, &request).await?;
    for result in response.results {
        match result.error_code {
            0 => println!("deleted group {group}"),
            68 => {
                return Err(ClientError::Usage(format!(
                    "group {group} still has members: stop its consumers first (NON_EMPTY_GROUP)"
                )))
            }
            69 => return Err(ClientError::Usage(format!("group {group} does not exist (GROUP_ID_NOT_FOUND)"))),
            code => return Err(ClientError::broker(format!("deleting group {group}"), code, None)),
        }
    }
    Ok(())
}

async fn reset(client: &Client, group: &str, topic: &str, to: &str, execute: bool) -> Result<(), ClientError> {
    let (state, members) = group_state(client, group).await?;
    if !(state == "Empty" || state == "Dead") || !members.is_empty() {
        return Err(ClientError::Usage(format!(
            "group {group} is {state} with {} members: offsets can only be reset while it is inactive (stop its consumers)",
            members.len()
        )));
    }
    let partitions =
        client.partitions(topic).await?.ok_or_else(|| ClientError::Usage(format!("topic {topic} does not exist")))?;
    let targets: BTreeMap<i32, i64> = match to {
        "earliest" => client.list_offsets(topic, &partitions, -2).await?.into_iter().collect(),
        "latest" => client.list_offsets(topic, &partitions, -1).await?.into_iter().collect(),
        other => match other.split_once(':') {
            Some(("offset", n)) => {
                let n: i64 = n.parse().map_err(|_| ClientError::Usage(format!("bad offset in --to {other:?}")))?;
                partitions.iter().map(|p| (p.partition, n)).collect()
            }
            Some(("timestamp", ms)) => {
                let ms: i64 = ms.parse().map_err(|_| ClientError::Usage(format!("bad timestamp in --to {other:?}")))?;
                let at = client.list_offsets(topic, &partitions, ms).await?;
                let ends = client.list_offsets(topic, &partitions, -1).await?;
                at.into_iter().map(|(p, o)| (p, if o < 0 { ends[&p] } else { o })).collect()
            }
            _ => {
                return Err(ClientError::Usage(format!(
                    "--to {other:?}: use earliest, latest, offset:N or timestamp:MS"
                )))
            }
        },
    };
    println!("{:<24} {:>9} {:>14}", "TOPIC", "PARTITION", "NEW-OFFSET");
    for (partition, offset) in &targets {
        println!("{topic:<24} {partition:>9} {offset:>14}");
    }
    if !execute {
        println!("dry run: pass --execute to commit these offsets");
        return Ok(());
    }
    let request = offset_commit_request(group, topic, targets.iter().map(|(&p, &o)| (p, o)));
    let response = client.call_coordinator(group, &request).await?;
    for p in response.topics.iter().flat_map(|t| t.partitions.iter()) {
        if p.error_code != 0 {
            return Err(ClientError::Usage(format!(
                "committing {topic}-{} for group {group} failed: {}",
                p.partition_index,
                error_name(p.error_code)
            )));
        }
    }
    println!("committed new offsets for group {group}");
    Ok(())
}
