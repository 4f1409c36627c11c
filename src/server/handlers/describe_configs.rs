//! DescribeConfigs (key 32), versions 1-4: a topic's effective configs (explicit values
//! with source TOPIC_CONFIG, the rest with their defaults as DEFAULT_CONFIG), optionally
//! filtered by key. Broker resources list the broker-wide settings, read-only.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::metadata::topic_config::describe;
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DescribeConfigs, 1, 4);

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
const SOURCE_DEFAULT_CONFIG: i8 = 5;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

fn config_type(key: &str) -> i8 {
    match key {
        "max.message.bytes" | "segment.bytes" => TYPE_INT,
        "retention.ms" | "retention.bytes" | "segment.ms" | "flush.ms" | "flush.bytes" => TYPE_LONG,
        _ => TYPE_STRING,
    }
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: DescribeConfigsRequest = decode_body(request)?;
    let metadata = ctx.metadata();
    let version = request.api_version;
    let entry = |key: String, value: String, source: i8, read_only: bool| {
        let mut result = DescribeConfigsResourceResult::default()
            .with_config_type(if version >= 3 { config_type(&key) } else { 0 })
            .with_name(StrBytes::from_string(key))
            .with_value(Some(StrBytes::from_string(value)))
            .with_read_only(read_only)
            .with_config_source(source);
        if version >= 3 {
            result.documentation = None;
        }
        result
    };
    let results = body
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let wanted = |key: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == key))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match resource.resource_type {
                RESOURCE_TOPIC => match metadata.topics.get(&name) {
                    None => result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(StrBytes::from_string(format!("unknown topic {name:?}")))),
                    Some(topic) => result.with_configs(
                        describe(&topic.configs, ctx.config.flush)
                            .into_iter()
                            .filter(|(key, _, _)| wanted(key))
                            .map(|(key, value, default)| {
                                let source = if default { SOURCE_DEFAULT_CONFIG } else { SOURCE_TOPIC_CONFIG };
                                entry(key, value, source, false)
                            })
                            .collect(),
                    ),
                },
                RESOURCE_BROKER => {
                    let config = &ctx.config;
                    let settings = [
                        ("broker.id", config.node_id.to_string()),
                        ("log.dirs", config.data_dir.display().to_string()),
                        ("auto.create.topics.enable", config.auto_create_topics.to_string()),
                        ("num.partitions", config.default_partitions.to_string()),
                        ("socket.request.max.bytes", config.request_bytes_max.to_string()),
                    ];
                    result.with_configs(
                        settings
                            .into_iter()
                            .filter(|(key, _)| wanted(key))
                            .map(|(key, value)| entry(key.to_string(), value, SOURCE_STATIC_BROKER_CONFIG, true))
                            .collect(),
                    )
                }
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_string(format!("resource type {other} is not supported")))),
            }
        })
        .collect();
    let response = DescribeConfigsResponse::default().with_results(results);
    encode_response(ApiKey::DescribeConfigs, request.api_version, request.header.correlation_id, &response)
}
