//! Broker configs as Kafka names them: what DescribeConfigs reports for a BROKER
//! resource, and which of them AlterConfigs may change at run time.
//!
//! Two kinds:
//! - the broker defaults of topic configs (`log.retention.ms`, `compression.type`, ...),
//!   taken from the topic catalogue's synonyms. The first synonym of each is dynamic, as
//!   in Kafka (`log.retention.ms` is, `log.retention.hours` is not): set per broker
//!   (resource name = node id) or cluster-wide (resource name ""), persisted in the
//!   cluster metadata, and applied to every topic that does not override it. They can
//!   also be set at startup (`--broker-config`), which makes them static.
//! - settings that come from `tern serve` flags (`listeners`, `log.dirs`, `group.*`,
//!   ...): read-only, changed by restarting with other flags.

use std::collections::BTreeMap;

use crate::config::ServeConfig;

use super::config_catalog::{check_value, topic_config_for_broker_synonym, ConfigType, TOPIC_CONFIGS};
use super::topic_config::{BrokerLayers, ConfigError, ConfigSource, ConfigValue, DescribedConfig};

/// Broker configs whose value is a `tern serve` setting: name, type, value, the flag
/// that sets it.
struct FlagConfig {
    name: &'static str,
    kind: ConfigType,
    value: String,
    flag: &'static str,
}

/// The broker configs `tern serve` flags set, with their current values.
fn flag_configs(config: &ServeConfig, offsets_topic_partitions: i32) -> Vec<FlagConfig> {
    let listener = format!("PLAINTEXT://{}", config.listen);
    let advertised = format!("PLAINTEXT://{}:{}", config.advertised_host, config.advertised_port);
    let shards = config.cores.len().to_string();
    let entry = |name, kind, value: String, flag| FlagConfig { name, kind, value, flag };
    use ConfigType::{Boolean, Int, Long, Short, String as Str};
    vec![
        entry("advertised.listeners", Str, advertised, "advertised-address"),
        entry("auto.create.topics.enable", Boolean, config.auto_create_topics.to_string(), "auto-create-topics"),
        entry("broker.id", Int, config.node_id.to_string(), "node-id"),
        entry(
            "connections.max.idle.ms",
            Long,
            config.connections_max_idle.as_millis().to_string(),
            "connections-max-idle-ms",
        ),
        entry("default.replication.factor", Int, "1".into(), ""),
        entry("delete.topic.enable", Boolean, "true".into(), ""),
        entry(
            "group.initial.rebalance.delay.ms",
            Int,
            config.group_initial_rebalance_delay_ms.to_string(),
            "group-initial-rebalance-delay-ms",
        ),
        entry(
            "group.max.session.timeout.ms",
            Int,
            config.group_max_session_timeout_ms.to_string(),
            "group-max-session-timeout-ms",
        ),
        entry(
            "group.min.session.timeout.ms",
            Int,
            config.group_min_session_timeout_ms.to_string(),
            "group-min-session-timeout-ms",
        ),
        entry("inter.broker.listener.name", Str, "PLAINTEXT".into(), ""),
        entry("listener.security.protocol.map", Str, "PLAINTEXT:PLAINTEXT".into(), ""),
        entry("listeners", Str, listener, "listen"),
        entry("log.cleaner.backoff.ms", Long, config.cleaner.backoff.as_millis().to_string(), "log-cleaner-backoff-ms"),
        entry(
            "log.cleaner.dedupe.buffer.size",
            Long,
            (config.cleaner.map_bytes as u64 * config.cores.len() as u64).to_string(),
            "log-cleaner-dedupe-buffer-size",
        ),
        entry("log.cleaner.enable", Boolean, config.cleaner.enabled.to_string(), "log-cleaner-enable"),
        entry(
            "log.cleaner.io.max.bytes.per.second",
            ConfigType::Double,
            (config.cleaner.io_bytes_per_second * config.cores.len() as u64).to_string(),
            "log-cleaner-io-max-bytes-per-second",
        ),
        entry("log.cleaner.threads", Int, shards.clone(), "cores"),
        entry("log.dir", Str, config.data_dir.display().to_string(), "data-dir"),
        entry("log.dirs", Str, config.data_dir.display().to_string(), "data-dir"),
        entry(
            "log.retention.check.interval.ms",
            Long,
            config.retention_check_interval.as_millis().to_string(),
            "retention-check-interval-ms",
        ),
        entry("max.connections", Int, config.max_connections.min(i32::MAX as usize).to_string(), "max-connections"),
        entry(
            "max.connections.per.ip",
            Int,
            config.max_connections_per_ip.min(i32::MAX as usize).to_string(),
            "max-connections-per-ip",
        ),
        entry("node.id", Int, config.node_id.to_string(), "node-id"),
        entry("num.io.threads", Int, shards.clone(), "cores"),
        entry("num.network.threads", Int, shards, "cores"),
        entry("num.partitions", Int, config.default_partitions.to_string(), "default-partitions"),
        entry(
            "offsets.retention.minutes",
            Int,
            (config.offsets_retention_ms / 60_000).to_string(),
            "offsets-retention-ms",
        ),
        entry("offsets.topic.num.partitions", Int, offsets_topic_partitions.to_string(), ""),
        entry("offsets.topic.replication.factor", Short, "1".into(), ""),
        entry("socket.request.max.bytes", Int, config.request_bytes_max.to_string(), "max-request-bytes"),
        entry(
            "transaction.max.timeout.ms",
            Int,
            config.transaction_max_timeout_ms.to_string(),
            "transaction-max-timeout-ms",
        ),
        entry("transaction.state.log.min.isr", Int, "1".into(), ""),
        entry("transaction.state.log.num.partitions", Int, crate::txn::TXN_STATE_PARTITIONS.to_string(), ""),
        entry("transaction.state.log.replication.factor", Short, "1".into(), ""),
    ]
}

/// True when `name` is a broker config Kafka lets AlterConfigs change: the first synonym
/// of a topic config (message.format.version excepted).
pub fn is_dynamic(name: &str) -> bool {
    TOPIC_CONFIGS.iter().any(|def| def.synonyms.first().is_some_and(|s| s.name == name))
        && name != "log.message.format.version"
}

/// Validates one broker config value that defaults a topic config.
pub fn check_broker_value(name: &str, value: &str) -> Result<(), ConfigError> {
    let Some((def, synonym)) = topic_config_for_broker_synonym(name) else {
        return Err(ConfigError::Invalid(format!("Unknown broker config name: {name}")));
    };
    if synonym.unit_ms == 1 {
        check_value(name, def.kind, def.check, value).map_err(ConfigError::Invalid)?;
    } else {
        value.trim().parse::<i64>().map_err(|_| ConfigError::Invalid(format!("Invalid value {value} for {name}")))?;
    }
    Ok(())
}

/// Checks a new set of dynamic configs for one BROKER resource: every name dynamic
/// (INVALID_REQUEST otherwise, as Kafka), every value valid (INVALID_CONFIG).
pub fn validate_dynamic(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let fixed: Vec<&str> = configs.keys().map(String::as_str).filter(|name| !is_dynamic(name)).collect();
    if let Some(unknown) =
        fixed.iter().find(|name| topic_config_for_broker_synonym(name).is_none() && !is_flag_config(name))
    {
        return Err(ConfigError::Invalid(format!("Unknown broker config name: {unknown}")));
    }
    if !fixed.is_empty() {
        return Err(ConfigError::Request(format!(
            "Cannot update these configs dynamically: Set({})",
            fixed.join(", ")
        )));
    }
    for (name, value) in configs {
        check_broker_value(name, value)?;
    }
    Ok(())
}

fn is_flag_config(name: &str) -> bool {
    const FLAG_CONFIG_NAMES: &[&str] = &[
        "advertised.listeners",
        "auto.create.topics.enable",
        "broker.id",
        "connections.max.idle.ms",
        "max.connections",
        "max.connections.per.ip",
        "default.replication.factor",
        "delete.topic.enable",
        "group.initial.rebalance.delay.ms",
        "group.max.session.timeout.ms",
        "group.min.session.timeout.ms",
        "inter.broker.listener.name",
        "listener.security.protocol.map",
        "listeners",
        "log.dir",
        "log.dirs",
        "log.retention.check.interval.ms",
        "node.id",
        "num.io.threads",
        "num.network.threads",
        "num.partitions",
        "offsets.retention.minutes",
        "offsets.topic.num.partitions",
        "offsets.topic.replication.factor",
        "socket.request.max.bytes",
        "transaction.max.timeout.ms",
        "transaction.state.log.min.isr",
        "transaction.state.log.num.partitions",
        "transaction.state.log.replication.factor",
    ];
    FLAG_CONFIG_NAMES.contains(&name)
}

/// The broker resource a name refers to, from the point of view of broker `node_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerResource {
    /// "": the cluster-wide default.
    ClusterDefault,
    /// This broker.
    ThisBroker,
}

pub fn broker_resource(name: &str, node_id: i32) -> Result<BrokerResource, ConfigError> {
    if name.is_empty() {
        return Ok(BrokerResource::ClusterDefault);
    }
    match name.parse::<i32>() {
        Ok(id) if id == node_id => Ok(BrokerResource::ThisBroker),
        Ok(id) => Err(ConfigError::Request(format!(
            "Unexpected broker id, expected {node_id} or empty string, but received {id}"
        ))),
        Err(_) => Err(ConfigError::Request(format!("Node id must be an integer, but it is: {name}"))),
    }
}

/// Describes a BROKER resource. The cluster default ("") lists only the configs set at
/// that level; this broker lists every broker config with its source and synonyms.
pub fn describe_broker(
    config: &ServeConfig,
    layers: BrokerLayers<'_>,
    resource: BrokerResource,
    offsets_topic_partitions: i32,
) -> Vec<DescribedConfig> {
    if resource == BrokerResource::ClusterDefault {
        let Some(cluster) = layers.cluster_default else { return Vec::new() };
        return cluster
            .iter()
            .map(|(name, value)| {
                let entry = ConfigValue {
                    name: name.clone(),
                    value: Some(value.clone()),
                    source: ConfigSource::DynamicDefaultBrokerConfig,
                };
                DescribedConfig {
                    name: name.clone(),
                    value: Some(value.clone()),
                    source: ConfigSource::DynamicDefaultBrokerConfig,
                    read_only: !is_dynamic(name),
                    kind: topic_config_for_broker_synonym(name).map_or(ConfigType::String, |(def, _)| def.kind),
                    synonyms: vec![entry],
                    documentation: String::new(),
                }
            })
            .collect();
    }
    let mut out = Vec::new();
    for def in TOPIC_CONFIGS {
        for synonym in def.synonyms {
            if out.iter().any(|c: &DescribedConfig| c.name == synonym.name) {
                continue; // min.insync.replicas and friends share their name with the topic config
            }
            let mut synonyms: Vec<ConfigValue> = Vec::new();
            for (layer, source) in [
                (layers.per_broker, ConfigSource::DynamicBrokerConfig),
                (layers.cluster_default, ConfigSource::DynamicDefaultBrokerConfig),
                (Some(layers.static_configs), ConfigSource::StaticBrokerConfig),
            ] {
                if let Some(value) = layer.and_then(|l| l.get(synonym.name)) {
                    synonyms.push(ConfigValue { name: synonym.name.to_string(), value: Some(value.clone()), source });
                }
            }
            if let Some(default) = synonym.default {
                synonyms.push(ConfigValue {
                    name: synonym.name.to_string(),
                    value: Some(default.to_string()),
                    source: ConfigSource::DefaultConfig,
                });
            }
            let (value, source) =
                synonyms.first().map_or((None, ConfigSource::DefaultConfig), |s| (s.value.clone(), s.source));
            out.push(DescribedConfig {
                name: synonym.name.to_string(),
                value,
                source,
                read_only: !is_dynamic(synonym.name),
                kind: if synonym.unit_ms == 1 { def.kind } else { ConfigType::Int },
                synonyms,
                documentation: format!("broker default of the topic config {}", def.name),
            });
        }
    }
    for flag in flag_configs(config, offsets_topic_partitions) {
        let source = if !flag.flag.is_empty() && config.explicit_flags.contains(flag.flag) {
            ConfigSource::StaticBrokerConfig
        } else {
            ConfigSource::DefaultConfig
        };
        out.push(DescribedConfig {
            name: flag.name.to_string(),
            value: Some(flag.value.clone()),
            source,
            read_only: true,
            kind: flag.kind,
            synonyms: vec![ConfigValue { name: flag.name.to_string(), value: Some(flag.value), source }],
            documentation: if flag.flag.is_empty() {
                "fixed on Tern".to_string()
            } else {
                format!("set with tern serve --{}", flag.flag)
            },
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Parses `--broker-config NAME=VALUE` settings: only broker defaults of topic configs.
pub fn parse_static(settings: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for setting in settings {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("--broker-config {setting:?} must be NAME=VALUE, e.g. log.retention.hours=24"))?;
        let (name, value) = (name.trim(), value.trim());
        if topic_config_for_broker_synonym(name).is_none() {
            let hint = if is_flag_config(name) {
                "it is set by a tern serve flag (see tern serve --help)"
            } else {
                "--broker-config takes the broker defaults of topic configs (log.retention.ms, compression.type, ...)"
            };
            return Err(format!("--broker-config {name}: {hint}"));
        }
        check_broker_value(name, value).map_err(|e| format!("--broker-config: {}", e.message()))?;
        out.insert(name.to_string(), value.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_first_synonyms_are_dynamic() {
        assert!(is_dynamic("log.retention.ms"));
        assert!(is_dynamic("compression.type"));
        assert!(is_dynamic("min.insync.replicas"));
        assert!(!is_dynamic("log.retention.hours"));
        assert!(!is_dynamic("log.message.format.version"));
        assert!(!is_dynamic("log.dirs"));
        let read_only: BTreeMap<String, String> = [("log.dirs".to_string(), "/x".to_string())].into();
        assert!(matches!(validate_dynamic(&read_only), Err(ConfigError::Request(_))));
        let unknown: BTreeMap<String, String> = [("log.dirz".to_string(), "/x".to_string())].into();
        assert!(matches!(validate_dynamic(&unknown), Err(ConfigError::Invalid(_))));
        let bad: BTreeMap<String, String> = [("log.retention.ms".to_string(), "-5".to_string())].into();
        assert!(matches!(validate_dynamic(&bad), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn broker_resource_names() {
        assert_eq!(broker_resource("", 3), Ok(BrokerResource::ClusterDefault));
        assert_eq!(broker_resource("3", 3), Ok(BrokerResource::ThisBroker));
        assert!(broker_resource("4", 3).is_err());
        assert!(broker_resource("x", 3).is_err());
    }

    #[test]
    fn static_settings_are_topic_defaults_only() {
        let parsed = parse_static(&["log.retention.hours=24".into(), "compression.type = zstd".into()]).unwrap();
        assert_eq!(parsed["log.retention.hours"], "24");
        assert_eq!(parsed["compression.type"], "zstd");
        assert!(parse_static(&["num.partitions=3".into()]).unwrap_err().contains("flag"));
        assert!(parse_static(&["compression.type=brotli".into()]).is_err());
        assert!(parse_static(&["nonsense".into()]).is_err());
    }
}
