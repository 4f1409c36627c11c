//! One module per Kafka API. Each declares the versions it implements next to its code
//! (`SUPPORT`); ApiVersions advertises exactly this table.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::*;

use crate::shard::ShardContext;
use crate::storage::RecordChunk;

use super::frame::{decode_body, FrameError, Request};

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;

/// An API and the inclusive version range Tern implements for it.
#[derive(Debug, Clone, Copy)]
pub struct ApiSupport {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

impl ApiSupport {
    pub const fn new(key: ApiKey, min: i16, max: i16) -> ApiSupport {
        ApiSupport { key, min, max }
    }
}

pub const SUPPORTED: &[ApiSupport] = &[
    api_versions::SUPPORT,
    metadata::SUPPORT,
    produce::SUPPORT,
    fetch::SUPPORT,
    list_offsets::SUPPORT,
    create_topics::SUPPORT,
    delete_topics::SUPPORT,
    init_producer_id::SUPPORT,
    describe_configs::SUPPORT,
    alter_configs::SUPPORT,
    incremental_alter_configs::SUPPORT,
    create_partitions::SUPPORT,
    delete_records::SUPPORT,
    describe_cluster::SUPPORT,
    describe_log_dirs::SUPPORT,
    find_coordinator::SUPPORT,
    join_group::SUPPORT,
    sync_group::SUPPORT,
    heartbeat::SUPPORT,
    leave_group::SUPPORT,
    offset_commit::SUPPORT,
    offset_fetch::SUPPORT,
    list_groups::SUPPORT,
    describe_groups::SUPPORT,
    delete_groups::SUPPORT,
    offset_delete::SUPPORT,
];

pub fn support_for(key: ApiKey) -> Option<ApiSupport> {
    SUPPORTED.iter().copied().find(|s| s.key == key)
}

/// A response as chunks written back to back (Fetch keeps record batches in their own
/// buffers or sends them from segment files); `None` means no response (Produce with
/// acks=0).
pub type Response = Option<Vec<RecordChunk>>;

/// Runs the handler for a parsed request.
pub async fn dispatch(ctx: &Rc<ShardContext>, request: Request) -> Result<Response, FrameError> {
    let support = support_for(request.api_key)
        .filter(|s| (s.min..=s.max).contains(&request.api_version))
        .ok_or(FrameError::UnsupportedVersion { api: request.api_key, version: request.api_version })?;
    match support.key {
        ApiKey::ApiVersions => api_versions::handle(&request).map(one),
        ApiKey::Metadata => metadata::handle(ctx, &request).await.map(one),
        ApiKey::Produce => produce::handle(ctx, &request).await.map(|r| r.map(|b| vec![RecordChunk::Memory(b)])),
        ApiKey::Fetch => fetch::handle(ctx, &request).await.map(Some),
        ApiKey::ListOffsets => list_offsets::handle(ctx, &request).await.map(one),
        ApiKey::CreateTopics => create_topics::handle(ctx, &request).await.map(one),
        ApiKey::DeleteTopics => delete_topics::handle(ctx, &request).await.map(one),
        ApiKey::InitProducerId => init_producer_id::handle(ctx, &request).await.map(one),
        ApiKey::DescribeConfigs => describe_configs::handle(ctx, &request).await.map(one),
        ApiKey::AlterConfigs => alter_configs::handle(ctx, &request).await.map(one),
        ApiKey::IncrementalAlterConfigs => incremental_alter_configs::handle(ctx, &request).await.map(one),
        ApiKey::CreatePartitions => create_partitions::handle(ctx, &request).await.map(one),
        ApiKey::DeleteRecords => delete_records::handle(ctx, &request).await.map(one),
        ApiKey::DescribeCluster => describe_cluster::handle(ctx, &request).await.map(one),
        ApiKey::DescribeLogDirs => describe_log_dirs::handle(ctx, &request).await.map(one),
        ApiKey::FindCoordinator => find_coordinator::handle(ctx, &request).await.map(one),
        ApiKey::JoinGroup => join_group::handle(ctx, &request).await.map(one),
        ApiKey::SyncGroup => sync_group::handle(ctx, &request).await.map(one),
        ApiKey::Heartbeat => heartbeat::handle(ctx, &request).await.map(one),
        ApiKey::LeaveGroup => leave_group::handle(ctx, &request).await.map(one),
        ApiKey::OffsetCommit => offset_commit::handle(ctx, &request).await.map(one),
        ApiKey::OffsetFetch => offset_fetch::handle(ctx, &request).await.map(one),
        ApiKey::ListGroups => list_groups::handle(ctx, &request).await.map(one),
        ApiKey::DescribeGroups => describe_groups::handle(ctx, &request).await.map(one),
        ApiKey::DeleteGroups => delete_groups::handle(ctx, &request).await.map(one),
        ApiKey::OffsetDelete => offset_delete::handle(ctx, &request).await.map(one),
        other => unreachable!("{other:?} is in SUPPORTED without a handler"),
    }
}

fn one(bytes: Bytes) -> Response {
    Some(vec![RecordChunk::Memory(bytes)])
}

/// Decodes the body of any supported request (used by the decoder property test).
pub fn decode_any(request: &Request) -> Result<(), FrameError> {
    match request.api_key {
        ApiKey::ApiVersions => decode_body::<ApiVersionsRequest>(request).map(drop),
        ApiKey::Metadata => decode_body::<MetadataRequest>(request).map(drop),
        ApiKey::Produce => decode_body::<ProduceRequest>(request).map(drop),
        ApiKey::Fetch => decode_body::<FetchRequest>(request).map(drop),
        ApiKey::ListOffsets => decode_body::<ListOffsetsRequest>(request).map(drop),
        ApiKey::CreateTopics => decode_body::<CreateTopicsRequest>(request).map(drop),
        ApiKey::DeleteTopics => decode_body::<DeleteTopicsRequest>(request).map(drop),
        ApiKey::InitProducerId => decode_body::<InitProducerIdRequest>(request).map(drop),
        ApiKey::DescribeConfigs => decode_body::<DescribeConfigsRequest>(request).map(drop),
        ApiKey::AlterConfigs => decode_body::<AlterConfigsRequest>(request).map(drop),
        ApiKey::IncrementalAlterConfigs => decode_body::<IncrementalAlterConfigsRequest>(request).map(drop),
        ApiKey::CreatePartitions => decode_body::<CreatePartitionsRequest>(request).map(drop),
        ApiKey::DeleteRecords => decode_body::<DeleteRecordsRequest>(request).map(drop),
        ApiKey::DescribeCluster => decode_body::<DescribeClusterRequest>(request).map(drop),
        ApiKey::DescribeLogDirs => decode_body::<DescribeLogDirsRequest>(request).map(drop),
        ApiKey::FindCoordinator => decode_body::<FindCoordinatorRequest>(request).map(drop),
        ApiKey::JoinGroup => decode_body::<JoinGroupRequest>(request).map(drop),
        ApiKey::SyncGroup => decode_body::<SyncGroupRequest>(request).map(drop),
        ApiKey::Heartbeat => decode_body::<HeartbeatRequest>(request).map(drop),
        ApiKey::LeaveGroup => decode_body::<LeaveGroupRequest>(request).map(drop),
        ApiKey::OffsetCommit => decode_body::<OffsetCommitRequest>(request).map(drop),
        ApiKey::OffsetFetch => decode_body::<OffsetFetchRequest>(request).map(drop),
        ApiKey::ListGroups => decode_body::<ListGroupsRequest>(request).map(drop),
        ApiKey::DescribeGroups => decode_body::<DescribeGroupsRequest>(request).map(drop),
        ApiKey::DeleteGroups => decode_body::<DeleteGroupsRequest>(request).map(drop),
        ApiKey::OffsetDelete => decode_body::<OffsetDeleteRequest>(request).map(drop),
        _ => Ok(()),
    }
}
