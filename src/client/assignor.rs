//! The consumer group leader's partition assignors, computing the same assignments as
//! the Java client's and librdkafka's `range` and `roundrobin` (eager protocol), so a
//! group may mix Tern's consumer with theirs whichever member leads. Also the wire form
//! of subscriptions and assignments (`ConsumerProtocolSubscription` /
//! `ConsumerProtocolAssignment`, each prefixed by its version).

use std::collections::{BTreeMap, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::error::ClientError;

/// The assignors we offer, in order of preference (both eager).
pub const ASSIGNORS: &[&str] = &["range", "roundrobin"];

/// Highest version of the consumer protocol messages we decode; later versions only
/// append fields, so a newer payload is read as this one.
const CONSUMER_PROTOCOL_VERSION_MAX: i16 = 3;

/// A member as the leader sees it in the JoinGroup answer.
#[derive(Debug, Clone)]
pub struct MemberSubscription {
    pub member_id: String,
    /// Static members come first, ordered by instance id, as in the Java client
    /// (librdkafka orders a group mixing static and dynamic members differently).
    pub instance_id: Option<String>,
    pub topics: Vec<String>,
}

/// Member id -> its (topic, partition) list; every member appears, possibly empty.
pub type Assignment = BTreeMap<String, Vec<(String, i32)>>;

/// Runs the named assignor; `partition_counts` has every subscribed topic that exists.
pub fn assign(
    protocol: &str,
    members: &[MemberSubscription],
    partition_counts: &HashMap<String, i32>,
) -> Result<Assignment, ClientError> {
    let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
    // Java's MemberInfo order: static members by instance id, then dynamic ones by id.
    sorted.sort_by_key(|m| (m.instance_id.is_none(), m.instance_id.as_deref().unwrap_or(&m.member_id)));
    let mut assignment: Assignment = members.iter().map(|m| (m.member_id.clone(), Vec::new())).collect();
    let mut topics: Vec<&String> = members.iter().flat_map(|m| &m.topics).collect();
    topics.sort();
    topics.dedup();
    match protocol {
        "range" => {
            for topic in topics {
                let Some(&count) = partition_counts.get(topic) else { continue };
                let consumers: Vec<_> = sorted.iter().filter(|m| m.topics.contains(topic)).collect();
                let (per_member, extra) = (count as usize / consumers.len(), count as usize % consumers.len());
                for (i, member) in consumers.iter().enumerate() {
                    let start = per_member * i + i.min(extra);
                    let length = per_member + usize::from(i < extra);
                    let owned = assignment.get_mut(&member.member_id).expect("every member is listed");
                    owned.extend((start..start + length).map(|p| (topic.clone(), p as i32)));
                }
            }
        }
        "roundrobin" => {
            let mut next = 0usize;
            for topic in topics {
                let Some(&count) = partition_counts.get(topic) else { continue };
                for partition in 0..count {
                    // The next member in the circle that subscribes to this topic.
                    let member = (0..sorted.len())
                        .map(|step| sorted[(next + step) % sorted.len()])
                        .position(|m| m.topics.contains(topic))
                        .map(|step| (next + step) % sorted.len())
                        .expect("some member subscribes to every listed topic");
                    assignment.get_mut(&sorted[member].member_id).expect("listed").push((topic.clone(), partition));
                    next = member + 1;
                }
            }
        }
        other => {
            return Err(ClientError::Protocol(format!("the group chose assignor {other:?}, which we do not offer")))
        }
    }
    Ok(assignment)
}

/// Our JoinGroup metadata: version 0 of the subscription (topics only).
pub fn encode_subscription(topics: &[String]) -> Result<Bytes, ClientError> {
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| StrBytes::from_string(t.clone())).collect());
    encode_versioned(&subscription, "subscription")
}

pub fn decode_subscription(mut bytes: Bytes) -> Result<Vec<String>, ClientError> {
    let version = read_version(&mut bytes, "subscription")?;
    let subscription = ConsumerProtocolSubscription::decode(&mut bytes, version)
        .map_err(|e| ClientError::Protocol(format!("bad consumer subscription: {e}")))?;
    Ok(subscription.topics.iter().map(|t| t.to_string()).collect())
}

/// A member's SyncGroup assignment: version 0, partitions grouped by topic.
pub fn encode_assignment(partitions: &[(String, i32)]) -> Result<Bytes, ClientError> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    encode_versioned(&assignment, "assignment")
}

/// The (topic, partition) list of a SyncGroup answer; empty bytes mean no partitions.
pub fn decode_assignment(mut bytes: Bytes) -> Result<Vec<(String, i32)>, ClientError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let version = read_version(&mut bytes, "assignment")?;
    let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version)
        .map_err(|e| ClientError::Protocol(format!("bad consumer assignment: {e}")))?;
    Ok(assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.to_string(), p)))
        .collect())
}

fn encode_versioned<M: Encodable>(message: &M, what: &str) -> Result<Bytes, ClientError> {
    let mut buffer = BytesMut::new();
    buffer.put_i16(0);
    message.encode(&mut buffer, 0).map_err(|e| ClientError::Protocol(format!("cannot encode the {what}: {e}")))?;
    Ok(buffer.freeze())
}

fn read_version(bytes: &mut Bytes, what: &str) -> Result<i16, ClientError> {
    if bytes.len() < 2 {
        return Err(ClientError::Protocol(format!("consumer {what} of {} bytes", bytes.len())));
    }
    let version = bytes.get_i16();
    if version < 0 {
        return Err(ClientError::Protocol(format!("consumer {what} version {version}")));
    }
    Ok(version.min(CONSUMER_PROTOCOL_VERSION_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_string(),
            instance_id: None,
            topics: topics.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn partitions(assignment: &Assignment, member: &str) -> Vec<(String, i32)> {
        assignment[member].clone()
    }

    fn tp(topic: &str, range: std::ops::Range<i32>) -> Vec<(String, i32)> {
        range.map(|p| (topic.to_string(), p)).collect()
    }

    #[test]
    fn range_gives_the_first_members_one_extra_partition_per_topic() {
        let members = [member("c", &["t"]), member("a", &["t", "u"]), member("b", &["t", "u"])];
        let counts = HashMap::from([("t".to_string(), 7), ("u".to_string(), 2)]);
        let assignment = assign("range", &members, &counts).unwrap();
        let mut a = tp("t", 0..3);
        a.extend(tp("u", 0..1));
        assert_eq!(partitions(&assignment, "a"), a);
        let mut b = tp("t", 3..5);
        b.extend(tp("u", 1..2));
        assert_eq!(partitions(&assignment, "b"), b);
        assert_eq!(partitions(&assignment, "c"), tp("t", 5..7));
    }

    #[test]
    fn range_with_more_members_than_partitions_leaves_some_empty() {
        let members = [member("a", &["t"]), member("b", &["t"]), member("c", &["t"])];
        let assignment = assign("range", &members, &HashMap::from([("t".to_string(), 2)])).unwrap();
        assert_eq!(partitions(&assignment, "a"), tp("t", 0..1));
        assert_eq!(partitions(&assignment, "b"), tp("t", 1..2));
        assert!(partitions(&assignment, "c").is_empty());
    }

    #[test]
    fn roundrobin_deals_partitions_in_order_skipping_unsubscribed_members() {
        let members = [member("a", &["t", "u"]), member("b", &["u"])];
        let counts = HashMap::from([("t".to_string(), 3), ("u".to_string(), 3)]);
        let assignment = assign("roundrobin", &members, &counts).unwrap();
        // t-0, t-1, t-2 all go to a (b does not read t); then u-0 b, u-1 a, u-2 b.
        let mut a = tp("t", 0..3);
        a.push(("u".into(), 1));
        assert_eq!(partitions(&assignment, "a"), a);
        assert_eq!(partitions(&assignment, "b"), vec![("u".into(), 0), ("u".into(), 2)]);
    }

    #[test]
    fn every_partition_is_assigned_exactly_once() {
        for protocol in ASSIGNORS {
            for members_count in 1..6 {
                for count in 0..13 {
                    let members: Vec<_> = (0..members_count).map(|i| member(&format!("m{i}"), &["t"])).collect();
                    let assignment = assign(protocol, &members, &HashMap::from([("t".to_string(), count)])).unwrap();
                    let mut all: Vec<_> = assignment.values().flatten().cloned().collect();
                    all.sort();
                    assert_eq!(all, tp("t", 0..count), "{protocol} {members_count} members {count} partitions");
                    let sizes: Vec<_> = assignment.values().map(Vec::len).collect();
                    assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
                }
            }
        }
    }

    #[test]
    fn static_members_come_first_in_instance_id_order() {
        let mut members = vec![member("a", &["t"]), member("b", &["t"]), member("c", &["t"])];
        members[0].instance_id = Some("z".into());
        members[2].instance_id = Some("y".into());
        let assignment = assign("range", &members, &HashMap::from([("t".to_string(), 3)])).unwrap();
        // Order: c (static "y"), a (static "z"), then b (dynamic).
        assert_eq!(partitions(&assignment, "c"), tp("t", 0..1));
        assert_eq!(partitions(&assignment, "a"), tp("t", 1..2));
        assert_eq!(partitions(&assignment, "b"), tp("t", 2..3));
    }

    #[test]
    fn unknown_topics_are_skipped_and_unknown_assignors_refused() {
        let members = [member("a", &["missing"])];
        assert!(assign("range", &members, &HashMap::new()).unwrap()["a"].is_empty());
        assert!(assign("cooperative-sticky", &members, &HashMap::new()).is_err());
    }

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let topics = vec!["orders".to_string(), "payments".to_string()];
        assert_eq!(decode_subscription(encode_subscription(&topics).unwrap()).unwrap(), topics);
        let owned = vec![("orders".to_string(), 2), ("orders".to_string(), 5), ("payments".to_string(), 0)];
        assert_eq!(decode_assignment(encode_assignment(&owned).unwrap()).unwrap(), owned);
        assert!(decode_assignment(Bytes::new()).unwrap().is_empty());
        assert!(decode_assignment(Bytes::from_static(&[0])).is_err());
        assert!(decode_subscription(Bytes::from_static(&[0, 0, 0, 0, 0, 9, b'x'])).is_err());
    }
}
