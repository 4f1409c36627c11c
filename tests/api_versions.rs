//! Every API at every version the broker advertises, against the real binary:
//! - ApiVersions advertises at least the range Apache Kafka 3.9 serves for each API,
//!   except the versions Kafka 4.0 removed (KIP-896), which the README lists;
//! - a request at each advertised version gets a response that decodes at that version
//!   with the request's correlation id (no connection closed, no UNSUPPORTED_VERSION);
//! - the version-specific semantics clients rely on: Metadata v0 (an empty topic list
//!   means every topic), Fetch v13+ by topic id (and UNKNOWN_TOPIC_ID), DeleteTopics v6
//!   by id, OffsetFetch v8 for several groups at once, ListOffsets -4/-5 (v8/v9);
//! - broker configs at the cluster-default level (resource name ""), which the Python
//!   clients cannot address: AlterConfigs sets one, DescribeConfigs "" lists it with
//!   source DYNAMIC_DEFAULT_BROKER_CONFIG, and topics inherit it.
//!
//! The client here is a few lines of blocking std::net code over `kafka-protocol`'s
//! codecs, so a version the project's own client never sends is still exercised.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::broker::TestBroker;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use uuid::Uuid;

/// Apache Kafka 3.9's ranges (clients/src/main/resources/common/message/*Request.json at
/// 3.9.0), raised to Kafka 4.0's minimum where KIP-896 removed old versions.
const KAFKA_RANGES: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 2, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
    // Transactions; AddPartitionsToTxn v4-5 are Kafka's broker-to-broker form.
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    // v0 was removed by Kafka 4.0 (KIP-896).
    (ApiKey::WriteTxnMarkers, 1, 1),
    // KIP-101/320; v0-1 were removed by Kafka 4.0 (KIP-896).
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    // KIP-455 (v1: KIP-860's allow_replication_factor_change).
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
];

struct Raw {
    stream: TcpStream,
    correlation: i32,
}

impl Raw {
    fn connect(address: &str) -> Raw {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Raw { stream, correlation: 0 }
    }

    /// Sends `request` at `version`; returns the response body bytes after the header.
    fn call_raw<R: Encodable + HeaderVersion>(&mut self, key: ApiKey, version: i16, request: &R) -> Bytes {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("api-versions-test")));
        let mut body = BytesMut::new();
        header.encode(&mut body, key.request_header_version(version)).unwrap();
        request.encode(&mut body, version).unwrap_or_else(|e| panic!("encode {key:?} v{version}: {e}"));
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).unwrap();
        let mut length = [0u8; 4];
        self.stream
            .read_exact(&mut length)
            .unwrap_or_else(|e| panic!("{key:?} v{version}: the broker closed the connection ({e})"));
        let mut response = vec![0u8; i32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut response).unwrap();
        let mut response = Bytes::from(response);
        let header = ResponseHeader::decode(&mut response, key.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation, "{key:?} v{version}: correlation id");
        response
    }

    fn call<R: Encodable + HeaderVersion, S: Decodable>(&mut self, key: ApiKey, version: i16, request: &R) -> S {
        let mut body = self.call_raw(key, version, request);
        let decoded = S::decode(&mut body, version).unwrap_or_else(|e| panic!("decode {key:?} v{version}: {e}"));
        assert_eq!(body.remaining(), 0, "{key:?} v{version}: trailing bytes in the response");
        decoded
    }
}

/// Marker so `call_raw` takes only request types.
trait HeaderVersion {}
macro_rules! requests { ($($t:ty),*) => { $(impl HeaderVersion for $t {})* } }
requests!(
    ProduceRequest,
    AddPartitionsToTxnRequest,
    AddOffsetsToTxnRequest,
    EndTxnRequest,
    TxnOffsetCommitRequest,
    DescribeTransactionsRequest,
    ListTransactionsRequest,
    DescribeProducersRequest,
    WriteTxnMarkersRequest,
    OffsetForLeaderEpochRequest,
    FetchRequest,
    ListOffsetsRequest,
    MetadataRequest,
    OffsetCommitRequest,
    OffsetFetchRequest,
    FindCoordinatorRequest,
    JoinGroupRequest,
    HeartbeatRequest,
    LeaveGroupRequest,
    SyncGroupRequest,
    DescribeGroupsRequest,
    ListGroupsRequest,
    ApiVersionsRequest,
    CreateTopicsRequest,
    DeleteTopicsRequest,
    DeleteRecordsRequest,
    InitProducerIdRequest,
    DescribeConfigsRequest,
    AlterConfigsRequest,
    DescribeLogDirsRequest,
    CreatePartitionsRequest,
    DeleteGroupsRequest,
    IncrementalAlterConfigsRequest,
    OffsetDeleteRequest,
    DescribeClusterRequest,
    AlterPartitionReassignmentsRequest,
    ListPartitionReassignmentsRequest
);

fn name(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// One request of `key` at `version`, decoded as its response type; panics on failure.
fn exercise(raw: &mut Raw, key: ApiKey, version: i16) {
    macro_rules! call {
        ($req:expr, $resp:ty) => {{
            let _: $resp = raw.call(key, version, &$req);
        }};
    }
    let topic = TopicName(name("sweep"));
    let group = GroupId(name("sweep-group"));
    match key {
        ApiKey::Produce => call!(ProduceRequest::default().with_acks(1).with_timeout_ms(1000), ProduceResponse),
        ApiKey::Fetch => call!(FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20), FetchResponse),
        ApiKey::ListOffsets => call!(ListOffsetsRequest::default().with_replica_id(BrokerId(-1)), ListOffsetsResponse),
        ApiKey::Metadata => {
            let request = if version == 0 {
                MetadataRequest::default().with_topics(Some(vec![]))
            } else {
                MetadataRequest::default()
            };
            call!(request, MetadataResponse)
        }
        ApiKey::OffsetCommit => call!(
            OffsetCommitRequest::default().with_group_id(group).with_generation_id_or_member_epoch(-1),
            OffsetCommitResponse
        ),
        ApiKey::OffsetFetch => {
            let request = if version >= 8 {
                OffsetFetchRequest::default()
                    .with_groups(vec![offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(group)
                        .with_topics(None)])
            } else {
                OffsetFetchRequest::default().with_group_id(group).with_topics(if version >= 2 {
                    None
                } else {
                    Some(vec![])
                })
            };
            call!(request, OffsetFetchResponse)
        }
        ApiKey::FindCoordinator => {
            let request = if version >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![name("sweep-group")])
            } else {
                FindCoordinatorRequest::default().with_key(name("sweep-group"))
            };
            call!(request, FindCoordinatorResponse)
        }
        ApiKey::JoinGroup => call!(
            JoinGroupRequest::default()
                .with_group_id(GroupId(name(&format!("join-{version}"))))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(name("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(name("range"))
                    .with_metadata(Bytes::new())]),
            JoinGroupResponse
        ),
        ApiKey::Heartbeat => call!(HeartbeatRequest::default().with_group_id(group), HeartbeatResponse),
        ApiKey::LeaveGroup => {
            let request = if version >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(group)
                    .with_members(vec![leave_group_request::MemberIdentity::default().with_member_id(name("nobody"))])
            } else {
                LeaveGroupRequest::default().with_group_id(group).with_member_id(name("nobody"))
            };
            call!(request, LeaveGroupResponse)
        }
        ApiKey::SyncGroup => call!(SyncGroupRequest::default().with_group_id(group), SyncGroupResponse),
        ApiKey::DescribeGroups => {
            call!(DescribeGroupsRequest::default().with_groups(vec![group]), DescribeGroupsResponse)
        }
        ApiKey::ListGroups => call!(ListGroupsRequest::default(), ListGroupsResponse),
        ApiKey::ApiVersions => call!(
            ApiVersionsRequest::default()
                .with_client_software_name(name("sweep"))
                .with_client_software_version(name("1")),
            ApiVersionsResponse
        ),
        ApiKey::CreateTopics => call!(
            CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(name(&format!("created-v{version}"))))
                    .with_num_partitions(1)
                    .with_replication_factor(1)
            ]),
            CreateTopicsResponse
        ),
        ApiKey::DeleteTopics => {
            let request = if version >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![
                    delete_topics_request::DeleteTopicState::default().with_name(Some(TopicName(name("absent"))))
                ])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![TopicName(name("absent"))])
            };
            call!(request.with_timeout_ms(10_000), DeleteTopicsResponse)
        }
        ApiKey::DeleteRecords => call!(DeleteRecordsRequest::default().with_timeout_ms(1000), DeleteRecordsResponse),
        ApiKey::InitProducerId => call!(
            InitProducerIdRequest::default()
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
            InitProducerIdResponse
        ),
        ApiKey::DescribeConfigs => call!(
            DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(topic.0.clone())
                    .with_configuration_keys(None)
            ]),
            DescribeConfigsResponse
        ),
        ApiKey::AlterConfigs => call!(AlterConfigsRequest::default().with_validate_only(true), AlterConfigsResponse),
        ApiKey::DescribeLogDirs => call!(DescribeLogDirsRequest::default().with_topics(None), DescribeLogDirsResponse),
        ApiKey::CreatePartitions => {
            call!(CreatePartitionsRequest::default().with_timeout_ms(1000), CreatePartitionsResponse)
        }
        ApiKey::DeleteGroups => {
            call!(DeleteGroupsRequest::default().with_groups_names(vec![GroupId(name("none"))]), DeleteGroupsResponse)
        }
        ApiKey::IncrementalAlterConfigs => {
            call!(IncrementalAlterConfigsRequest::default().with_validate_only(true), IncrementalAlterConfigsResponse)
        }
        ApiKey::OffsetDelete => call!(OffsetDeleteRequest::default().with_group_id(group), OffsetDeleteResponse),
        ApiKey::DescribeCluster => call!(DescribeClusterRequest::default(), DescribeClusterResponse),
        ApiKey::AddPartitionsToTxn => call!(
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(name("no-such-txn")))
                .with_v3_and_below_producer_id(ProducerId(1))
                .with_v3_and_below_producer_epoch(0),
            AddPartitionsToTxnResponse
        ),
        ApiKey::AddOffsetsToTxn => call!(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(name("no-such-txn")))
                .with_group_id(group),
            AddOffsetsToTxnResponse
        ),
        ApiKey::EndTxn => {
            call!(EndTxnRequest::default().with_transactional_id(TransactionalId(name("no-such-txn"))), EndTxnResponse)
        }
        ApiKey::TxnOffsetCommit => call!(
            TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(name("no-such-txn")))
                .with_group_id(group),
            TxnOffsetCommitResponse
        ),
        ApiKey::DescribeTransactions => call!(
            DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(name("no-such-txn"))]),
            DescribeTransactionsResponse
        ),
        ApiKey::ListTransactions => call!(ListTransactionsRequest::default(), ListTransactionsResponse),
        ApiKey::DescribeProducers => call!(
            DescribeProducersRequest::default().with_topics(vec![describe_producers_request::TopicRequest::default()
                .with_name(TopicName(name("no-such-topic")))
                .with_partition_indexes(vec![0])]),
            DescribeProducersResponse
        ),
        ApiKey::WriteTxnMarkers => call!(WriteTxnMarkersRequest::default(), WriteTxnMarkersResponse),
        ApiKey::OffsetForLeaderEpoch => call!(
            OffsetForLeaderEpochRequest::default().with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(TopicName(name("no-such-topic")))
                    .with_partitions(vec![offset_for_leader_epoch_request::OffsetForLeaderPartition::default()])
            ]),
            OffsetForLeaderEpochResponse
        ),
        ApiKey::AlterPartitionReassignments => call!(
            AlterPartitionReassignmentsRequest::default().with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(TopicName(name("no-such-topic")))
                    .with_partitions(vec![alter_partition_reassignments_request::ReassignablePartition::default()])
            ]),
            AlterPartitionReassignmentsResponse
        ),
        ApiKey::ListPartitionReassignments => {
            call!(ListPartitionReassignmentsRequest::default(), ListPartitionReassignmentsResponse)
        }
        other => panic!("{other:?} is advertised but this test does not know it: add it"),
    }
}

fn produce_one(raw: &mut Raw, topic: &str, value: &[u8]) {
    let batch = Bytes::from(tern::protocol::record_batch::build::batch(&[value], 1_700_000_000_000));
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        produce_request::TopicProduceData::default().with_name(TopicName(name(topic))).with_partition_data(vec![
            produce_request::PartitionProduceData::default().with_index(0).with_records(Some(batch)),
        ]),
    ]);
    let response: ProduceResponse = raw.call(ApiKey::Produce, 9, &request);
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}

fn create_topic(raw: &mut Raw, topic: &str) -> Uuid {
    let request = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(name(topic)))
            .with_num_partitions(1)
            .with_replication_factor(-1),
    ]);
    let response: CreateTopicsResponse = raw.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(response.topics[0].error_code, 0, "{:?}", response.topics[0].error_message);
    response.topics[0].topic_id
}

#[test]
fn every_advertised_version_answers_and_covers_kafkas_range() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(&dir.path().join("data"), &[]);
    let mut raw = Raw::connect(&broker.address());
    let versions: ApiVersionsResponse = raw.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0);
    for &(key, min, max) in KAFKA_RANGES {
        let advertised = versions
            .api_keys
            .iter()
            .find(|a| a.api_key == key as i16)
            .unwrap_or_else(|| panic!("{key:?} is not advertised"));
        assert!(
            advertised.min_version <= min && advertised.max_version >= max,
            "{key:?}: advertised {}..={}, Kafka serves {min}..={max}",
            advertised.min_version,
            advertised.max_version
        );
    }
    create_topic(&mut raw, "sweep");
    for advertised in &versions.api_keys {
        let key = ApiKey::try_from(advertised.api_key).unwrap();
        for version in advertised.min_version..=advertised.max_version {
            exercise(&mut raw, key, version);
        }
    }
    let (code, log) = broker.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn version_specific_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(&dir.path().join("data"), &[]);
    let mut raw = Raw::connect(&broker.address());
    let id = create_topic(&mut raw, "ids");
    create_topic(&mut raw, "other");
    produce_one(&mut raw, "ids", b"by-id");

    // Metadata v0: an empty list is every topic; v1+: an empty list is none.
    let all: MetadataResponse = raw.call(ApiKey::Metadata, 0, &MetadataRequest::default().with_topics(Some(vec![])));
    let mut names: Vec<String> = all.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect();
    names.sort();
    assert_eq!(names, ["ids", "other"]);
    let none: MetadataResponse = raw.call(ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(Some(vec![])));
    assert!(none.topics.is_empty());

    // Fetch v13+ names topics by id, in the request and the response.
    for version in [13, 17] {
        let request = FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![
            fetch_request::FetchTopic::default().with_topic_id(id).with_partitions(vec![
                fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20),
            ]),
            fetch_request::FetchTopic::default().with_topic_id(Uuid::from_bytes([9; 16])).with_partitions(vec![
                fetch_request::FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20),
            ]),
        ]);
        let response: FetchResponse = raw.call(ApiKey::Fetch, version, &request);
        assert_eq!(response.responses[0].topic_id, id);
        let partition = &response.responses[0].partitions[0];
        assert_eq!((partition.error_code, partition.high_watermark), (0, 1));
        let records = partition.records.clone().unwrap();
        assert!(records.windows(5).any(|w| w == b"by-id"), "v{version} returns the record");
        assert_eq!(response.responses[1].topic_id, Uuid::from_bytes([9; 16]));
        assert_eq!(response.responses[1].partitions[0].error_code, 100, "UNKNOWN_TOPIC_ID");
    }

    // ListOffsets v9: earliest local (-4) is the log start; latest tiered (-5) is none.
    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default().with_name(TopicName(name("ids"))).with_partitions(vec![
            list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-4),
        ]),
        list_offsets_request::ListOffsetsTopic::default().with_name(TopicName(name("ids"))).with_partitions(vec![
            list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-5),
        ]),
    ]);
    let response: ListOffsetsResponse = raw.call(ApiKey::ListOffsets, 9, &request);
    assert_eq!(response.topics[0].partitions[0].offset, 0);
    assert_eq!(response.topics[1].partitions[0].offset, -1);
    assert!(response.topics.iter().all(|t| t.partitions[0].error_code == 0));

    // OffsetFetch v8: several groups in one request, each with its own answer.
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(name("g1")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(TopicName(name("ids")))
            .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    let committed: OffsetCommitResponse = raw.call(ApiKey::OffsetCommit, 9, &commit);
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    let request = OffsetFetchRequest::default().with_groups(
        ["g1", "g2"]
            .iter()
            .map(|g| {
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(name(g)))
                    .with_topics(None)
            })
            .collect(),
    );
    let response: OffsetFetchResponse = raw.call(ApiKey::OffsetFetch, 8, &request);
    assert_eq!(response.groups.len(), 2);
    assert_eq!(response.groups[0].topics[0].partitions[0].committed_offset, 1);
    assert!(response.groups[1].topics.is_empty(), "g2 committed nothing");

    // DeleteTopics v6 by topic id; an unknown id is UNKNOWN_TOPIC_ID.
    let request = DeleteTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        delete_topics_request::DeleteTopicState::default().with_topic_id(id),
        delete_topics_request::DeleteTopicState::default().with_topic_id(Uuid::from_bytes([9; 16])),
    ]);
    let response: DeleteTopicsResponse = raw.call(ApiKey::DeleteTopics, 6, &request);
    assert_eq!(response.responses[0].error_code, 0);
    assert_eq!(response.responses[0].name.as_ref().map(|n| n.0.as_str()), Some("ids"));
    assert_eq!(response.responses[1].error_code, 100);

    let (code, log) = broker.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn cluster_default_broker_configs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = TestBroker::start(&data, &[]);
    let mut raw = Raw::connect(&broker.address());
    create_topic(&mut raw, "inherits");
    let alter =
        AlterConfigsRequest::default().with_resources(vec![alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(name(""))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(name("log.retention.ms"))
                .with_value(Some(name("7200000")))])]);
    let response: AlterConfigsResponse = raw.call(ApiKey::AlterConfigs, 2, &alter);
    assert_eq!(response.responses[0].error_code, 0, "{:?}", response.responses[0].error_message);

    let describe = |raw: &mut Raw, resource_type: i8, resource: &str| -> DescribeConfigsResponse {
        let request = DescribeConfigsRequest::default().with_include_synonyms(true).with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(name(resource))
                .with_configuration_keys(None),
        ]);
        raw.call(ApiKey::DescribeConfigs, 4, &request)
    };
    let check = |raw: &mut Raw| {
        let cluster = describe(raw, 4, "");
        let configs = &cluster.results[0].configs;
        assert_eq!(configs.len(), 1, "the cluster default lists only what is set there");
        assert_eq!(configs[0].name.as_str(), "log.retention.ms");
        assert_eq!(configs[0].config_source, 3);
        let topic = describe(raw, 2, "inherits");
        let retention = topic.results[0].configs.iter().find(|c| c.name.as_str() == "retention.ms").unwrap();
        assert_eq!(retention.value.as_ref().map(|v| v.as_str()), Some("7200000"));
        assert_eq!(retention.config_source, 3, "DYNAMIC_DEFAULT_BROKER_CONFIG");
        assert_eq!(retention.synonyms[0].name.as_str(), "log.retention.ms");
    };
    check(&mut raw);
    let other_broker = describe(&mut raw, 4, "7");
    assert_eq!(other_broker.results[0].error_code, 42, "INVALID_REQUEST for another broker id");

    // Persisted: the same after a restart.
    let (code, log) = broker.stop();
    assert_eq!(code, 0, "{log}");
    let broker = TestBroker::start(&data, &[]);
    let mut raw = Raw::connect(&broker.address());
    check(&mut raw);
    let (code, log) = broker.stop();
    assert_eq!(code, 0, "{log}");
}
