//! DescribeConfigs (key 32), versions 1-4 (v0 was removed by Kafka 4.0, KIP-896). TOPIC resources: every Kafka topic config
//! with its effective value and source (topic override, dynamic per-broker, dynamic
//! cluster default, static broker, default), its synonyms when asked (v1+), its type
//! (v3+) and documentation saying what it does on Tern (v3+, when asked). BROKER
//! resources: this broker's configs (resource name = node id) or the cluster-wide
//! dynamic defaults (resource name ""). Resolution lives in `metadata::topic_config`
//! and `metadata::broker_config`; this file only encodes it.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::group::offsets::OFFSETS_PARTITIONS;
use crate::metadata::broker_config::{broker_resource, describe_broker};
use crate::metadata::topic_config::{describe, ConfigError, DescribedConfig};
use crate::server::frame::{decode_body, encode_response, FrameError, Request};
use crate::shard::ShardContext;

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::DescribeConfigs, 1, 4);

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

fn encode_entry(
    config: DescribedConfig,
    version: i16,
    synonyms: bool,
    documentation: bool,
) -> DescribeConfigsResourceResult {
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(config.name))
        .with_value(config.value.map(StrBytes::from_string))
        .with_read_only(config.read_only)
        .with_is_sensitive(false);
    result.config_source = config.source as i8;
    if version >= 1 && synonyms {
        result.synonyms = config
            .synonyms
            .into_iter()
            .map(|s| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(s.name))
                    .with_value(s.value.map(StrBytes::from_string))
                    .with_source(s.source as i8)
            })
            .collect();
    }
    if version >= 3 {
        result.config_type = config.kind as i8;
        result.documentation = documentation.then(|| StrBytes::from_string(config.documentation));
    }
    result
}

pub async fn handle(ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    let body: DescribeConfigsRequest = decode_body(request)?;
    let metadata = ctx.metadata();
    let layers = metadata.broker_layers(ctx.config.node_id, &ctx.config.static_broker_configs);
    let version = request.api_version;
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
            let configs = match resource.resource_type {
                RESOURCE_TOPIC => match metadata.topics.get(&name) {
                    None => Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name:?}"))),
                    Some(topic) => Ok(describe(&topic.configs, layers)),
                },
                RESOURCE_BROKER => match broker_resource(&name, ctx.config.node_id) {
                    Ok(which) => Ok(describe_broker(&ctx.config, layers, which, OFFSETS_PARTITIONS)),
                    Err(error @ (ConfigError::Request(_) | ConfigError::Invalid(_))) => {
                        Err((ResponseError::InvalidRequest, error.message().to_string()))
                    }
                },
                other => Err((ResponseError::InvalidRequest, format!("resource type {other} is not supported"))),
            };
            match configs {
                Ok(configs) => result.with_configs(
                    configs
                        .into_iter()
                        .filter(|c| wanted(&c.name))
                        .map(|c| encode_entry(c, version, body.include_synonyms, body.include_documentation))
                        .collect(),
                ),
                Err((error, message)) => {
                    result.with_error_code(error.code()).with_error_message(Some(StrBytes::from_string(message)))
                }
            }
        })
        .collect();
    let response = DescribeConfigsResponse::default().with_results(results);
    encode_response(ApiKey::DescribeConfigs, request.api_version, request.header.correlation_id, &response)
}
