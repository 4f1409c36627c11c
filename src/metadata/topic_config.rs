//! Topic configs: which keys Tern honours, their validation, and how they become a
//! storage `LogConfig`. Unknown keys are rejected (INVALID_CONFIG), never ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::storage::{FlushPolicy, LogConfig, TimestampType};

/// Default bytes between fsyncs when a topic sets only `flush.ms`.
const FLUSH_BYTES_DEFAULT: u64 = 1 << 20;

/// Keys a topic may set, with their default as Kafka's DescribeConfigs shows it.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "flush.ms",
    "flush.bytes",
];

/// The effective value of every supported key for a topic, and whether it is a default.
pub fn describe(configs: &BTreeMap<String, String>, broker_flush: FlushPolicy) -> Vec<(String, String, bool)> {
    let defaults = LogConfig::default();
    let default_flush_ms = match broker_flush {
        FlushPolicy::Durable => "-1".to_string(),
        FlushPolicy::Interval { interval, .. } => interval.as_millis().to_string(),
    };
    let default_flush_bytes = match broker_flush {
        FlushPolicy::Durable => FLUSH_BYTES_DEFAULT.to_string(),
        FlushPolicy::Interval { bytes, .. } => bytes.to_string(),
    };
    TOPIC_CONFIG_KEYS
        .iter()
        .map(|&key| {
            let default = match key {
                "cleanup.policy" => "delete".to_string(),
                "retention.ms" => defaults.retention_ms.to_string(),
                "retention.bytes" => defaults.retention_bytes.to_string(),
                "segment.bytes" => defaults.segment_bytes.to_string(),
                "segment.ms" => defaults.segment_ms.to_string(),
                "max.message.bytes" => defaults.max_message_bytes.to_string(),
                "message.timestamp.type" => "CreateTime".to_string(),
                "flush.ms" => default_flush_ms.clone(),
                "flush.bytes" => default_flush_bytes.clone(),
                _ => unreachable!("every key has a default"),
            };
            match configs.get(key) {
                Some(value) => (key.to_string(), value.clone(), false),
                None => (key.to_string(), default, true),
            }
        })
        .collect()
}

/// Builds the storage config for a topic; errors name the offending key.
pub fn log_config(configs: &BTreeMap<String, String>, broker_flush: FlushPolicy) -> Result<LogConfig, String> {
    let mut config = LogConfig { flush: broker_flush, ..LogConfig::default() };
    let mut flush_ms: Option<i64> = None;
    let mut flush_bytes: Option<u64> = None;
    for (key, value) in configs {
        let bad = || format!("invalid value {value:?} for {key}");
        match key.as_str() {
            "cleanup.policy" => {
                if value != "delete" {
                    return Err(format!("cleanup.policy {value:?} is not supported: only \"delete\""));
                }
            }
            "retention.ms" => config.retention_ms = value.parse().map_err(|_| bad())?,
            "retention.bytes" => config.retention_bytes = value.parse().map_err(|_| bad())?,
            "segment.bytes" => config.segment_bytes = value.parse().map_err(|_| bad())?,
            "segment.ms" => config.segment_ms = value.parse().map_err(|_| bad())?,
            "max.message.bytes" => config.max_message_bytes = value.parse().map_err(|_| bad())?,
            "message.timestamp.type" => {
                config.timestamp_type = match value.as_str() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(bad()),
                }
            }
            "flush.ms" => flush_ms = Some(value.parse().map_err(|_| bad())?),
            "flush.bytes" => flush_bytes = Some(value.parse().map_err(|_| bad())?),
            other => return Err(format!("unknown topic config {other:?}")),
        }
    }
    if flush_ms.is_some() || flush_bytes.is_some() {
        config.flush = match (flush_ms, broker_flush) {
            (Some(ms), _) if ms < 0 => FlushPolicy::Durable,
            (Some(ms), _) => FlushPolicy::Interval {
                interval: Duration::from_millis(ms.max(1) as u64),
                bytes: flush_bytes.unwrap_or(FLUSH_BYTES_DEFAULT).max(1),
            },
            (None, FlushPolicy::Interval { interval, .. }) => {
                FlushPolicy::Interval { interval, bytes: flush_bytes.unwrap_or(FLUSH_BYTES_DEFAULT).max(1) }
            }
            (None, FlushPolicy::Durable) => FlushPolicy::Durable,
        };
    }
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_map_and_unknown_keys_fail() {
        let configs: BTreeMap<String, String> = [
            ("retention.ms".to_string(), "1000".to_string()),
            ("message.timestamp.type".to_string(), "LogAppendTime".to_string()),
            ("flush.ms".to_string(), "50".to_string()),
        ]
        .into();
        let config = log_config(&configs, FlushPolicy::Durable).unwrap();
        assert_eq!(config.retention_ms, 1000);
        assert_eq!(config.timestamp_type, TimestampType::LogAppendTime);
        assert!(matches!(config.flush, FlushPolicy::Interval { .. }));
        let unknown: BTreeMap<String, String> = [("compression.typo".to_string(), "x".to_string())].into();
        assert!(log_config(&unknown, FlushPolicy::Durable).is_err());
        let bad: BTreeMap<String, String> = [("segment.bytes".to_string(), "12".to_string())].into();
        assert!(log_config(&bad, FlushPolicy::Durable).is_err());
    }
}
