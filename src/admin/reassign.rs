//! `tern topic reassign` and `tern topic reassignments`: moves partitions' replicas to
//! other brokers, cancels moves, and lists the moves in progress, over Kafka's
//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455), so they work
//! against any Kafka-compatible cluster.

use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::{Client, ClientError};

/// How often `--wait` asks whether the moves are done.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// `partition=broker,broker,...` (a move) as given on the command line.
pub fn parse_move(text: &str) -> Result<(i32, Vec<i32>), String> {
    let (partition, brokers) =
        text.split_once('=').ok_or_else(|| format!("{text:?}: expected partition=broker,broker,..."))?;
    let partition = partition.trim().parse::<i32>().map_err(|_| format!("{partition:?} is not a partition number"))?;
    let brokers = brokers
        .split(',')
        .map(|id| id.trim().parse::<i32>().map_err(|_| format!("{id:?} is not a broker id")))
        .collect::<Result<Vec<i32>, String>>()?;
    Ok((partition, brokers))
}

/// Asks for the moves and cancellations of `topic`'s partitions; with `wait`, returns
/// once none of them is in progress any more (or `wait` has passed).
pub async fn reassign(
    client: &Client,
    topic: &str,
    moves: Vec<(i32, Vec<i32>)>,
    cancels: Vec<i32>,
    wait: Option<Duration>,
) -> Result<(), ClientError> {
    if moves.is_empty() && cancels.is_empty() {
        return Err(ClientError::Usage(
            "nothing to do: pass --move partition=brokers and/or --cancel partition".into(),
        ));
    }
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let mut partitions: Vec<ReassignablePartition> = moves
        .iter()
        .map(|(partition, brokers)| {
            ReassignablePartition::default()
                .with_partition_index(*partition)
                .with_replicas(Some(brokers.iter().copied().map(BrokerId).collect()))
        })
        .collect();
    partitions.extend(cancels.iter().map(|&p| ReassignablePartition::default().with_partition_index(p)));
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![ReassignableTopic::default().with_name(name.clone()).with_partitions(partitions)]);
    let response = client.call_any(&request).await?;
    if response.error_code != 0 {
        return Err(ClientError::broker(
            "reassigning partitions".to_string(),
            response.error_code,
            response.error_message.map(|m| m.to_string()),
        ));
    }
    let mut failed = None;
    for result in response.responses.iter().flat_map(|t| t.partitions.iter()) {
        let partition = result.partition_index;
        if result.error_code == 0 {
            match moves.iter().find(|(p, _)| *p == partition) {
                Some((_, brokers)) => println!("{topic}-{partition}: moving to brokers {brokers:?}"),
                None => println!("{topic}-{partition}: reassignment cancelled"),
            }
        } else {
            let error = ClientError::broker(
                format!("reassigning {topic}-{partition}"),
                result.error_code,
                result.error_message.as_ref().map(|m| m.to_string()),
            );
            eprintln!("{error}");
            failed.get_or_insert(error);
        }
    }
    if let Some(error) = failed {
        return Err(error);
    }
    let Some(wait) = wait else { return Ok(()) };
    let watched: Vec<i32> = moves.iter().map(|(p, _)| *p).chain(cancels.iter().copied()).collect();
    let deadline = Instant::now() + wait;
    loop {
        let ongoing = list(client, Some((topic, &watched))).await?;
        if ongoing.is_empty() {
            println!("{topic}: every requested move is complete");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Usage(format!(
                "{topic}: still moving after {} s: partitions {:?}",
                wait.as_secs(),
                ongoing.iter().map(|m| m.partition).collect::<Vec<_>>()
            )));
        }
        glommio::timer::sleep(WAIT_POLL).await;
    }
}

/// A move in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingMove {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// The moves in progress: all of them, or those among `only`'s partitions.
pub async fn list(client: &Client, only: Option<(&str, &[i32])>) -> Result<Vec<OngoingMove>, ClientError> {
    let topics = only.map(|(topic, partitions)| {
        vec![ListPartitionReassignmentsTopics::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_indexes(partitions.to_vec())]
    });
    let request = ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000).with_topics(topics);
    let response = client.call_any(&request).await?;
    if response.error_code != 0 {
        return Err(ClientError::broker(
            "listing reassignments".to_string(),
            response.error_code,
            response.error_message.map(|m| m.to_string()),
        ));
    }
    let ids = |list: &[BrokerId]| list.iter().map(|id| id.0).collect::<Vec<i32>>();
    Ok(response
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| OngoingMove {
                topic: topic.name.0.to_string(),
                partition: p.partition_index,
                replicas: ids(&p.replicas),
                adding: ids(&p.adding_replicas),
                removing: ids(&p.removing_replicas),
            })
        })
        .collect())
}

/// Prints the moves in progress.
pub async fn print_list(client: &Client) -> Result<(), ClientError> {
    let moves = list(client, None).await?;
    println!("{:<40} {:>9}  {:<16} {:<12} REMOVING", "TOPIC", "PARTITION", "REPLICAS", "ADDING");
    for m in moves {
        let show = |list: &[i32]| list.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        println!(
            "{:<40} {:>9}  {:<16} {:<12} {}",
            m.topic,
            m.partition,
            show(&m.replicas),
            show(&m.adding),
            show(&m.removing)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_parse_and_bad_ones_are_named() {
        assert_eq!(parse_move("3=4,2, 1"), Ok((3, vec![4, 2, 1])));
        assert!(parse_move("3").is_err());
        assert!(parse_move("x=1").is_err());
        assert!(parse_move("0=1,b").is_err());
    }
}
