//! One module per Kafka API, registered in the one list below (`kafka_apis!`): adding an
//! API is a new file with `SUPPORT` (the versions it implements, declared next to its
//! code) and `handle`, plus one line here. ApiVersions advertises exactly this table,
//! dispatch and the decoder property test are generated from it.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::*;

use crate::protocol::record_chunk::RecordChunk;
use crate::shard::ShardContext;

use super::frame::{decode_body, FrameError, Request};

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

/// A response as chunks written back to back (Fetch keeps record batches in their own
/// buffers or sends them from segment files); `None` means no response (Produce with
/// acks=0).
pub type Response = Option<Vec<RecordChunk>>;

/// What a handler returns, turned into a `Response`.
pub trait IntoResponse {
    fn into_response(self) -> Response;
}

impl IntoResponse for Bytes {
    fn into_response(self) -> Response {
        Some(vec![RecordChunk::Memory(self)])
    }
}

impl IntoResponse for Option<Bytes> {
    fn into_response(self) -> Response {
        self.map(|bytes| vec![RecordChunk::Memory(bytes)])
    }
}

impl IntoResponse for Vec<RecordChunk> {
    fn into_response(self) -> Response {
        Some(self)
    }
}

/// Registers the APIs: `module: RequestType`, one line each. Generates the `mod` lines,
/// `SUPPORTED`, `dispatch` to each module's `handle` and `decode_any`.
macro_rules! kafka_apis {
    ($($module:ident: $body:ty),* $(,)?) => {
        $(pub mod $module;)*

        /// Every implemented API with its versions, in the order ApiVersions lists them.
        pub const SUPPORTED: &[ApiSupport] = &[$($module::SUPPORT),*];

        /// Runs the handler for a parsed request. The connection has already checked the
        /// version against `SUPPORTED` (`support_for`), once.
        pub async fn dispatch(ctx: &Rc<ShardContext>, request: Request) -> Result<Response, FrameError> {
            $(
                if request.api_key == $module::SUPPORT.key {
                    return $module::handle(ctx, &request).await.map(IntoResponse::into_response);
                }
            )*
            Err(FrameError::UnsupportedVersion { api: request.api_key, version: request.api_version })
        }

        /// Decodes the body of any supported request (used by the decoder property test).
        pub fn decode_any(request: &Request) -> Result<(), FrameError> {
            $(
                if request.api_key == $module::SUPPORT.key {
                    return decode_body::<$body>(request).map(drop);
                }
            )*
            Ok(())
        }
    };
}

/// The cluster as Metadata, DescribeCluster and FindCoordinator describe it.
pub mod cluster_layout;
/// The partition bookkeeping OffsetCommit and TxnOffsetCommit share.
pub mod offset_commit_plan;
/// Kafka error codes for storage failures, shared by the partition APIs.
pub mod partition_errors;
/// Kafka error codes for the transaction coordinator's refusals.
pub mod transaction_errors;

kafka_apis! {
    api_versions: ApiVersionsRequest,
    metadata: MetadataRequest,
    produce: ProduceRequest,
    fetch: FetchRequest,
    list_offsets: ListOffsetsRequest,
    create_topics: CreateTopicsRequest,
    delete_topics: DeleteTopicsRequest,
    init_producer_id: InitProducerIdRequest,
    describe_configs: DescribeConfigsRequest,
    alter_configs: AlterConfigsRequest,
    incremental_alter_configs: IncrementalAlterConfigsRequest,
    create_partitions: CreatePartitionsRequest,
    delete_records: DeleteRecordsRequest,
    describe_cluster: DescribeClusterRequest,
    describe_log_dirs: DescribeLogDirsRequest,
    find_coordinator: FindCoordinatorRequest,
    join_group: JoinGroupRequest,
    sync_group: SyncGroupRequest,
    heartbeat: HeartbeatRequest,
    leave_group: LeaveGroupRequest,
    offset_commit: OffsetCommitRequest,
    offset_fetch: OffsetFetchRequest,
    list_groups: ListGroupsRequest,
    describe_groups: DescribeGroupsRequest,
    delete_groups: DeleteGroupsRequest,
    offset_delete: OffsetDeleteRequest,
    add_partitions_to_txn: AddPartitionsToTxnRequest,
    add_offsets_to_txn: AddOffsetsToTxnRequest,
    end_txn: EndTxnRequest,
    txn_offset_commit: TxnOffsetCommitRequest,
    describe_transactions: DescribeTransactionsRequest,
    list_transactions: ListTransactionsRequest,
    describe_producers: DescribeProducersRequest,
    write_txn_markers: WriteTxnMarkersRequest,
    offset_for_leader_epoch: OffsetForLeaderEpochRequest,
    alter_partition_reassignments: AlterPartitionReassignmentsRequest,
    list_partition_reassignments: ListPartitionReassignmentsRequest,
}

pub fn support_for(key: ApiKey) -> Option<ApiSupport> {
    SUPPORTED.iter().copied().find(|s| s.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_is_registered_once() {
        let mut keys: Vec<i16> = SUPPORTED.iter().map(|s| s.key as i16).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SUPPORTED.len());
        assert!(SUPPORTED.iter().all(|s| s.min <= s.max));
    }
}
