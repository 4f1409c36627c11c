//! DescribeLogDirs (key 35), versions 1-4: the size of every partition's log, gathered
//! from all shards with one cross-shard call each, reported under the broker's single
//! log directory (`--data-dir`) with the file system's total and usable bytes (v4).
//! Topics the request names that do not exist are left out, as Kafka does.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::protocol::topic_partition::TopicPartition;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DescribeLogDirs, 1, 4);

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: DescribeLogDirsRequest = decode_body(request)?;
    // None = every partition; otherwise the named partitions of each named topic.
    let wanted: Option<HashMap<String, Vec<i32>>> =
        body.topics.map(|topics| topics.into_iter().map(|t| (t.topic.0.to_string(), t.partitions)).collect());

    // One call per shard: each answers with the size of every log it owns.
    let calls = (0..ctx.shard_count).map(|shard| {
        ctx.run_on(shard, |ctx| async move {
            ctx.named_logs().into_iter().map(|(key, log)| (key, log.size_bytes())).collect::<Vec<_>>()
        })
    });
    let mut sizes = HashMap::new();
    let mut complete = true;
    for answer in join_all(calls).await {
        match answer {
            Some(shard_sizes) => sizes.extend(shard_sizes),
            None => complete = false, // a shard is shutting down
        }
    }

    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    let metadata = ctx.metadata();
    for (name, info) in &metadata.topics {
        let partitions: Vec<i32> = match &wanted {
            None => (0..info.partitions).collect(),
            Some(wanted) => match wanted.get(name) {
                Some(listed) => listed.iter().copied().filter(|p| (0..info.partitions).contains(p)).collect(),
                None => continue,
            },
        };
        for partition in partitions {
            // A partition whose log is not open (offline after corruption, or being
            // created) has no size to report; Kafka leaves it out too.
            let Some(&size) = sizes.get(&TopicPartition::new(name.clone(), partition)) else { continue };
            topics.entry(name.clone()).or_default().push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(partition)
                    .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                    .with_offset_lag(0)
                    .with_is_future_key(false),
            );
        }
    }

    let data_dir = &ctx.config.data_dir;
    let (total_bytes, usable_bytes) = file_system_space(data_dir).unwrap_or((-1, -1));
    let error_code = if complete { 0 } else { ResponseError::KafkaStorageError.code() };
    let result = DescribeLogDirsResult::default()
        .with_error_code(error_code)
        .with_log_dir(StrBytes::from_string(data_dir.display().to_string()))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, mut partitions)| {
                    partitions.sort_by_key(|p| p.partition_index);
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    let response = DescribeLogDirsResponse::default().with_results(vec![result]);
    encode_response(ApiKey::DescribeLogDirs, request.api_version, request.header.correlation_id, &response)
}

/// (total, available to unprivileged users) bytes of the file system holding `path`.
fn file_system_space(path: &Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` is a valid, writable statvfs.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let fragment = stat.f_frsize as i64;
    Some((stat.f_blocks as i64 * fragment, stat.f_bavail as i64 * fragment))
}
