//! Topic configs: validating overrides against the catalogue, resolving each config's
//! effective value with its source and synonyms (topic override, then the broker's
//! dynamic per-broker, dynamic cluster-default and static configs, then the default, as
//! Kafka's DescribeConfigs reports them), applying IncrementalAlterConfigs operations,
//! and turning the effective values into the storage engine's `LogConfig`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::protocol::compression::Codec;
use crate::storage::{CompressionPolicy, FlushPolicy, LogConfig, TimestampType};

use super::config_catalog::{check_value, list_items, topic_config, ConfigType, Effect, TopicConfigDef, TOPIC_CONFIGS};

/// Where a config's value comes from (DescribeConfigs `config_source`, KIP-226).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigSource {
    TopicConfig = 1,
    DynamicBrokerConfig = 2,
    DynamicDefaultBrokerConfig = 3,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

/// One value of a config or of one of its synonyms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigValue {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
}

/// A config as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedConfig {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
    pub kind: ConfigType,
    /// Every value that could supply this config, highest precedence first (the first
    /// is the effective one, when there is any).
    pub synonyms: Vec<ConfigValue>,
    pub documentation: String,
}

/// The broker-level configs a topic default can come from, highest precedence first.
#[derive(Debug, Clone, Copy)]
pub struct BrokerLayers<'a> {
    /// AlterConfigs on BROKER `<this node id>`.
    pub per_broker: Option<&'a BTreeMap<String, String>>,
    /// AlterConfigs on BROKER `""` (cluster-wide default).
    pub cluster_default: Option<&'a BTreeMap<String, String>>,
    /// Set at startup (flags, `--broker-config`, the config file).
    pub static_configs: &'a BTreeMap<String, String>,
}

impl BrokerLayers<'_> {
    fn sources(&self) -> [(Option<&BTreeMap<String, String>>, ConfigSource); 3] {
        [
            (self.per_broker, ConfigSource::DynamicBrokerConfig),
            (self.cluster_default, ConfigSource::DynamicDefaultBrokerConfig),
            (Some(self.static_configs), ConfigSource::StaticBrokerConfig),
        ]
    }
}

/// One IncrementalAlterConfigs operation (AlterConfigs is SET of every key after a clear).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConfigOp {
    Set(String),
    Delete,
    /// Add list elements not already present (LIST configs only).
    Append(String),
    /// Remove list elements (LIST configs only).
    Subtract(String),
}

/// A change to one config of a resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigChange {
    pub name: String,
    pub op: ConfigOp,
}

/// Why a config change was refused, with the Kafka error it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// INVALID_CONFIG: an unknown name, a bad value, APPEND on a non-list.
    Invalid(String),
    /// INVALID_REQUEST: a malformed request (duplicate keys, a read-only broker config).
    Request(String),
}

impl ConfigError {
    pub fn message(&self) -> &str {
        match self {
            ConfigError::Invalid(message) | ConfigError::Request(message) => message,
        }
    }
}

/// Resolves one topic config: the topic's override, else the first broker synonym set in
/// the highest broker layer, else the default. Durations set in minutes or hours are
/// converted to ms, negative ones mean "forever" (-1), as Kafka does.
pub fn resolve(
    def: &TopicConfigDef,
    overrides: &BTreeMap<String, String>,
    layers: BrokerLayers<'_>,
) -> DescribedConfig {
    let mut synonyms = Vec::new();
    if let Some(value) = overrides.get(def.name) {
        synonyms.push(ConfigValue {
            name: def.name.to_string(),
            value: Some(value.clone()),
            source: ConfigSource::TopicConfig,
        });
    }
    for (layer, source) in layers.sources() {
        let Some(layer) = layer else { continue };
        for synonym in def.synonyms {
            if let Some(value) = layer.get(synonym.name) {
                synonyms.push(ConfigValue { name: synonym.name.to_string(), value: Some(value.clone()), source });
            }
        }
    }
    for synonym in def.synonyms {
        if let Some(default) = synonym.default {
            synonyms.push(ConfigValue {
                name: synonym.name.to_string(),
                value: Some(default.to_string()),
                source: ConfigSource::DefaultConfig,
            });
        }
    }
    let (value, source) = match synonyms.first() {
        Some(first) if first.source == ConfigSource::TopicConfig => (first.value.clone(), first.source),
        Some(first) => {
            let unit_ms = def.synonyms.iter().find(|s| s.name == first.name).map_or(1, |s| s.unit_ms);
            (first.value.as_deref().map(|v| in_ms(v, unit_ms)), first.source)
        }
        None => (Some(def.default.to_string()), ConfigSource::DefaultConfig),
    };
    DescribedConfig {
        name: def.name.to_string(),
        value,
        source,
        read_only: false,
        kind: def.kind,
        synonyms,
        documentation: documentation(def),
    }
}

fn in_ms(value: &str, unit_ms: i64) -> String {
    if unit_ms == 1 {
        return value.to_string();
    }
    match value.trim().parse::<i64>() {
        Ok(n) if n < 0 => "-1".to_string(),
        Ok(n) => n.saturating_mul(unit_ms).to_string(),
        Err(_) => value.to_string(),
    }
}

/// The documentation DescribeConfigs returns: Kafka's meaning and what Tern does with it.
pub fn documentation(def: &TopicConfigDef) -> String {
    match def.effect {
        Effect::Honoured => def.doc.to_string(),
        Effect::Stored(feature) => format!("{}. Tern: stored, used by {feature}", def.doc),
        Effect::NoEffect(why) => format!("{}. Tern: no effect: {why}", def.doc),
    }
}

/// Every topic config of a topic, resolved.
pub fn describe(overrides: &BTreeMap<String, String>, layers: BrokerLayers<'_>) -> Vec<DescribedConfig> {
    TOPIC_CONFIGS.iter().map(|def| resolve(def, overrides, layers)).collect()
}

/// The effective value of every topic config.
pub fn effective(overrides: &BTreeMap<String, String>, layers: BrokerLayers<'_>) -> BTreeMap<&'static str, String> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| (def.name, resolve(def, overrides, layers).value.unwrap_or_else(|| def.default.to_string())))
        .collect()
}

/// Checks a topic's overrides: known names, values Kafka accepts, and what Tern supports.
pub fn validate_overrides(overrides: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in overrides {
        let def = topic_config(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
        check_value(name, def.kind, def.check, value)?;
        if name == "remote.storage.enable" && value.trim().eq_ignore_ascii_case("true") {
            return Err("Tiered Storage functionality is disabled in the broker. \
                        Topic cannot be configured with remote log storage."
                .into());
        }
    }
    Ok(())
}

/// Validates a topic's overrides and builds its storage config from them and the broker
/// layers; errors name the offending key.
pub fn log_config(overrides: &BTreeMap<String, String>, layers: BrokerLayers<'_>) -> Result<LogConfig, String> {
    validate_overrides(overrides)?;
    log_config_from(&effective(overrides, layers))
}

/// Builds a `LogConfig` from effective values (every key of the catalogue present).
pub fn log_config_from(values: &BTreeMap<&'static str, String>) -> Result<LogConfig, String> {
    let get = |key: &str| values.get(key).map(String::as_str).unwrap_or_default().trim();
    fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
        value.parse().map_err(|_| format!("Invalid value {value} for configuration {key}"))
    }
    let long = |key: &str| parse::<i64>(key, get(key));
    let difference = long("message.timestamp.difference.max.ms")?;
    let bound = |key: &str| -> Result<i64, String> {
        // KIP-937: the deprecated difference.max.ms applies where before/after are unset.
        long(key).map(|v| if v == i64::MAX { difference } else { v })
    };
    let flush_ms = long("flush.ms")?;
    let flush = if flush_ms < 0 {
        FlushPolicy::Durable
    } else {
        FlushPolicy::Interval {
            interval: Duration::from_millis(flush_ms.max(1) as u64),
            bytes: parse::<u64>("flush.bytes", get("flush.bytes"))?.max(1),
        }
    };
    let level = |key: &str| -> Result<i32, String> { parse::<i32>(key, get(key)) };
    let compression = match get("compression.type") {
        "producer" => CompressionPolicy::Producer,
        "uncompressed" => CompressionPolicy::Codec { codec: Codec::None, level: None },
        "gzip" => {
            let level = level("compression.gzip.level")?;
            CompressionPolicy::Codec { codec: Codec::Gzip, level: (level != -1).then_some(level) }
        }
        "snappy" => CompressionPolicy::Codec { codec: Codec::Snappy, level: None },
        "lz4" => CompressionPolicy::Codec { codec: Codec::Lz4, level: Some(level("compression.lz4.level")?) },
        "zstd" => CompressionPolicy::Codec { codec: Codec::Zstd, level: Some(level("compression.zstd.level")?) },
        other => return Err(format!("Invalid value {other} for configuration compression.type")),
    };
    let config = LogConfig {
        segment_bytes: parse("segment.bytes", get("segment.bytes"))?,
        segment_ms: long("segment.ms")?,
        retention_ms: long("retention.ms")?.max(-1),
        retention_bytes: long("retention.bytes")?.max(-1),
        max_message_bytes: parse("max.message.bytes", get("max.message.bytes"))?,
        timestamp_type: match get("message.timestamp.type") {
            "LogAppendTime" => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        },
        timestamp_before_max_ms: bound("message.timestamp.before.max.ms")?,
        timestamp_after_max_ms: bound("message.timestamp.after.max.ms")?,
        compression,
        delete_by_retention: list_items(get("cleanup.policy")).contains(&"delete"),
        compact: list_items(get("cleanup.policy")).contains(&"compact"),
        min_cleanable_dirty_ratio_ppm: {
            let ratio = parse::<f64>("min.cleanable.dirty.ratio", get("min.cleanable.dirty.ratio"))?;
            if !(0.0..=1.0).contains(&ratio) {
                return Err(format!(
                    "Invalid value {ratio} for configuration min.cleanable.dirty.ratio: must be 0..=1"
                ));
            }
            (ratio * 1e6).round() as u32
        },
        min_compaction_lag_ms: long("min.compaction.lag.ms")?,
        max_compaction_lag_ms: long("max.compaction.lag.ms")?,
        delete_retention_ms: long("delete.retention.ms")?,
        index_interval_bytes: parse("index.interval.bytes", get("index.interval.bytes"))?,
        segment_index_bytes: parse("segment.index.bytes", get("segment.index.bytes"))?,
        segment_jitter_ms: long("segment.jitter.ms")?,
        min_insync_replicas: parse("min.insync.replicas", get("min.insync.replicas"))?,
        flush,
        use_batch_cache: true,
    };
    config.validate()?;
    Ok(config)
}

/// Applies IncrementalAlterConfigs operations to a resource's stored overrides. `default`
/// gives the value APPEND and SUBTRACT start from when there is no override (Kafka uses
/// the config's own default, not the broker's), and `None` for an unknown name.
pub fn apply_changes(
    current: &BTreeMap<String, String>,
    changes: &[ConfigChange],
    kind_and_default: impl Fn(&str) -> Option<(ConfigType, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    if let Some(duplicate) = changes.iter().find(|c| !seen.insert(c.name.as_str())) {
        return Err(ConfigError::Request(format!("Error due to duplicate config keys: {}", duplicate.name)));
    }
    let mut next = current.clone();
    for change in changes {
        match &change.op {
            ConfigOp::Set(value) => {
                next.insert(change.name.clone(), value.clone());
            }
            ConfigOp::Delete => {
                next.remove(&change.name);
            }
            ConfigOp::Append(value) | ConfigOp::Subtract(value) => {
                let append = matches!(change.op, ConfigOp::Append(_));
                let verb = if append { "append" } else { "subtract" };
                let (kind, default) = kind_and_default(&change.name)
                    .ok_or_else(|| ConfigError::Invalid(format!("Unknown config name: {}", change.name)))?;
                if kind != ConfigType::List {
                    return Err(ConfigError::Invalid(format!(
                        "Config value {verb} is not allowed for config key: {}",
                        change.name
                    )));
                }
                let base = next.get(&change.name).cloned().unwrap_or(default);
                let mut items: Vec<String> = list_items(&base).into_iter().map(str::to_string).collect();
                for item in list_items(value) {
                    if append {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else if let Some(at) = items.iter().position(|i| i == item) {
                        items.remove(at);
                    }
                }
                next.insert(change.name.clone(), items.join(","));
            }
        }
    }
    Ok(next)
}

/// `apply_changes`' lookup for topic configs.
pub fn topic_kind_and_default(name: &str) -> Option<(ConfigType, String)> {
    topic_config(name).map(|def| (def.kind, def.default.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn no_broker(static_configs: &BTreeMap<String, String>) -> BrokerLayers<'_> {
        BrokerLayers { per_broker: None, cluster_default: None, static_configs }
    }

    #[test]
    fn defaults_give_the_storage_defaults() {
        let empty = BTreeMap::new();
        let config = log_config(&empty, no_broker(&empty)).unwrap();
        assert_eq!(config, LogConfig::default());
    }

    #[test]
    fn compaction_configs_map_and_bad_values_are_refused_with_the_key() {
        let empty = BTreeMap::new();
        let overrides = map(&[
            ("cleanup.policy", "compact,delete"),
            ("min.cleanable.dirty.ratio", "0.25"),
            ("min.compaction.lag.ms", "1000"),
            ("max.compaction.lag.ms", "60000"),
            ("delete.retention.ms", "5000"),
        ]);
        let config = log_config(&overrides, no_broker(&empty)).unwrap();
        assert!(config.compact && config.delete_by_retention);
        assert_eq!(config.min_cleanable_dirty_ratio_ppm, 250_000);
        assert_eq!((config.min_compaction_lag_ms, config.max_compaction_lag_ms), (1000, 60_000));
        assert_eq!(config.delete_retention_ms, 5000);
        for (key, value, says) in [
            ("min.cleanable.dirty.ratio", "1.5", "min.cleanable.dirty.ratio"),
            ("max.compaction.lag.ms", "0", "max.compaction.lag.ms"),
            ("delete.retention.ms", "-1", "delete.retention.ms"),
            ("cleanup.policy", "compact,shred", "cleanup.policy"),
        ] {
            let error = log_config(&map(&[(key, value)]), no_broker(&empty)).unwrap_err();
            assert!(error.contains(says), "{key}={value}: {error}");
        }
        let inverted = map(&[("min.compaction.lag.ms", "10000"), ("max.compaction.lag.ms", "5000")]);
        let error = log_config(&inverted, no_broker(&empty)).unwrap_err();
        assert!(error.contains("must not be below min.compaction.lag.ms"), "{error}");
    }

    #[test]
    fn known_keys_map_and_unknown_keys_fail() {
        let empty = BTreeMap::new();
        let overrides = map(&[
            ("retention.ms", "1000"),
            ("message.timestamp.type", "LogAppendTime"),
            ("flush.ms", "50"),
            ("compression.type", "zstd"),
            ("compression.zstd.level", "7"),
            ("cleanup.policy", "compact"),
            ("message.timestamp.difference.max.ms", "60000"),
            ("message.timestamp.after.max.ms", "5000"),
            ("message.format.version", "2.8"),
        ]);
        let config = log_config(&overrides, no_broker(&empty)).unwrap();
        assert_eq!(config.retention_ms, 1000);
        assert_eq!(config.timestamp_type, TimestampType::LogAppendTime);
        assert!(matches!(config.flush, FlushPolicy::Interval { bytes: 1_048_576, .. }));
        assert_eq!(config.compression, CompressionPolicy::Codec { codec: Codec::Zstd, level: Some(7) });
        assert!(!config.delete_by_retention);
        assert_eq!((config.timestamp_before_max_ms, config.timestamp_after_max_ms), (60_000, 5_000));
        let error = log_config(&map(&[("compression.typo", "x")]), no_broker(&empty)).unwrap_err();
        assert_eq!(error, "Unknown topic config name: compression.typo");
        assert!(log_config(&map(&[("segment.bytes", "12")]), no_broker(&empty)).is_err());
        assert!(log_config(&map(&[("segment.bytes", "1000")]), no_broker(&empty)).is_err(), "Tern's 4096 minimum");
        assert!(log_config(&map(&[("remote.storage.enable", "true")]), no_broker(&empty)).is_err());
        assert!(log_config(&map(&[("remote.storage.enable", "false")]), no_broker(&empty)).is_ok());
    }

    #[test]
    fn sources_and_synonyms_follow_kafkas_precedence() {
        let static_configs = map(&[("log.retention.hours", "24"), ("log.segment.bytes", "8192")]);
        let cluster = map(&[("log.retention.ms", "5000")]);
        let broker = map(&[("log.segment.bytes", "16384")]);
        let layers = BrokerLayers {
            per_broker: Some(&broker),
            cluster_default: Some(&cluster),
            static_configs: &static_configs,
        };
        let retention = resolve(topic_config("retention.ms").unwrap(), &BTreeMap::new(), layers);
        assert_eq!(retention.value.as_deref(), Some("5000"));
        assert_eq!(retention.source, ConfigSource::DynamicDefaultBrokerConfig);
        let order: Vec<(&str, ConfigSource)> = retention.synonyms.iter().map(|s| (s.name.as_str(), s.source)).collect();
        assert_eq!(
            order,
            [
                ("log.retention.ms", ConfigSource::DynamicDefaultBrokerConfig),
                ("log.retention.hours", ConfigSource::StaticBrokerConfig),
                ("log.retention.hours", ConfigSource::DefaultConfig),
            ]
        );
        let static_only = BrokerLayers { per_broker: None, cluster_default: None, static_configs: &static_configs };
        let retention = resolve(topic_config("retention.ms").unwrap(), &BTreeMap::new(), static_only);
        assert_eq!(retention.value.as_deref(), Some("86400000"), "hours converted to ms");
        assert_eq!(retention.source, ConfigSource::StaticBrokerConfig);
        let segment = resolve(topic_config("segment.bytes").unwrap(), &map(&[("segment.bytes", "4096")]), layers);
        assert_eq!((segment.value.as_deref(), segment.source), (Some("4096"), ConfigSource::TopicConfig));
        assert_eq!(segment.synonyms.len(), 4, "topic, per-broker, static, default");
        let untouched = resolve(topic_config("preallocate").unwrap(), &BTreeMap::new(), layers);
        assert_eq!((untouched.value.as_deref(), untouched.source), (Some("false"), ConfigSource::DefaultConfig));
        assert!(untouched.documentation.contains("Tern: no effect"));
        assert_eq!(log_config(&BTreeMap::new(), layers).unwrap().segment_bytes, 16384);
    }

    #[test]
    fn append_and_subtract_work_on_lists_only() {
        let change = |name: &str, op: ConfigOp| ConfigChange { name: name.into(), op };
        let start = BTreeMap::new();
        let appended = apply_changes(
            &start,
            &[change("cleanup.policy", ConfigOp::Append("compact".into()))],
            topic_kind_and_default,
        )
        .unwrap();
        assert_eq!(appended["cleanup.policy"], "delete,compact", "APPEND starts from the default");
        let again = apply_changes(
            &appended,
            &[change("cleanup.policy", ConfigOp::Append("compact,delete".into()))],
            topic_kind_and_default,
        )
        .unwrap();
        assert_eq!(again["cleanup.policy"], "delete,compact", "present elements are not added twice");
        let subtracted = apply_changes(
            &again,
            &[change("cleanup.policy", ConfigOp::Subtract("delete,absent".into()))],
            topic_kind_and_default,
        )
        .unwrap();
        assert_eq!(subtracted["cleanup.policy"], "compact");
        let error =
            apply_changes(&start, &[change("retention.ms", ConfigOp::Append("5".into()))], topic_kind_and_default)
                .unwrap_err();
        assert_eq!(
            error,
            ConfigError::Invalid("Config value append is not allowed for config key: retention.ms".into())
        );
        let duplicate = [change("retention.ms", ConfigOp::Delete), change("retention.ms", ConfigOp::Set("1".into()))];
        assert!(matches!(apply_changes(&start, &duplicate, topic_kind_and_default), Err(ConfigError::Request(_))));
    }
}
