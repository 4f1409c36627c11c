//! What OffsetCommit and TxnOffsetCommit share: splitting the requested partitions into
//! known ones (sent to the group coordinator) and unknown ones (answered
//! UNKNOWN_TOPIC_OR_PARTITION at once), and putting the answers back in request order.

use kafka_protocol::error::ResponseError;

use crate::group::coordinator::PartitionOffset;
use crate::metadata::ClusterMetadata;

/// One requested partition's commit: topic, partition, offset, leader epoch, metadata.
#[derive(Debug)]
pub struct RequestedCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// The requested partitions: those to commit, and every one in request order with its
/// answer if it already has one.
#[derive(Debug)]
pub struct CommitPlan {
    pub known: Vec<PartitionOffset>,
    order: Vec<(String, i32, Option<i16>)>,
}

impl CommitPlan {
    pub fn new(metadata: &ClusterMetadata, requested: impl IntoIterator<Item = RequestedCommit>) -> CommitPlan {
        let mut plan = CommitPlan { known: Vec::new(), order: Vec::new() };
        for commit in requested {
            let partitions = metadata.topics.get(&commit.topic).map_or(0, |t| t.partitions);
            if (0..partitions).contains(&commit.partition) {
                plan.order.push((commit.topic.clone(), commit.partition, None));
                plan.known.push(PartitionOffset {
                    topic: commit.topic,
                    partition: commit.partition,
                    offset: commit.offset,
                    leader_epoch: commit.leader_epoch,
                    metadata: commit.metadata,
                    error_code: 0,
                });
            } else {
                let code = ResponseError::UnknownTopicOrPartition.code();
                plan.order.push((commit.topic, commit.partition, Some(code)));
            }
        }
        plan
    }

    /// Every requested partition in request order, grouped by consecutive topic, with
    /// its error code: its own, or the coordinator's from `codes` (in `known` order).
    pub fn answers(self, codes: Vec<i16>) -> Vec<(String, Vec<(i32, i16)>)> {
        let mut codes = codes.into_iter();
        let mut topics: Vec<(String, Vec<(i32, i16)>)> = Vec::new();
        for (topic, partition, precheck) in self.order {
            let code = precheck.unwrap_or_else(|| codes.next().unwrap_or(ResponseError::UnknownServerError.code()));
            match topics.last_mut() {
                Some((last, partitions)) if *last == topic => partitions.push((partition, code)),
                _ => topics.push((topic, vec![(partition, code)])),
            }
        }
        topics
    }
}
