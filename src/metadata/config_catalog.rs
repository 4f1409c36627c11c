//! The topic configs Apache Kafka 3.9 defines (LogConfig), as data: name, type, default,
//! valid values, broker synonyms in precedence order (ServerTopicConfigSynonyms), and
//! what each one does on Tern. CreateTopics, AlterConfigs, IncrementalAlterConfigs and
//! DescribeConfigs all read this one table, so a config is added in one place.
//!
//! Every Kafka topic config is accepted. Those that have a meaning on a single Tern node
//! are honoured; those that belong to features still to come (replication)
//! are validated and stored so they take effect when the feature lands; the rest are
//! accepted and described with the reason they have no effect (`Effect`). Unknown names
//! are refused with INVALID_CONFIG, as Kafka does.

/// DescribeConfigs config types (KIP-336 `ConfigType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// What a topic config does on Tern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Honoured as Kafka defines it.
    Honoured,
    /// Validated and stored; used by a feature that is not built yet (named here).
    Stored(&'static str),
    /// Accepted for compatibility; no effect on Tern, for the reason given.
    NoEffect(&'static str),
}

/// The values a config accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// An integer in the inclusive range (INT configs are also bounded by i32).
    Range(i64, i64),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of these strings (possibly empty).
    ListOf(&'static [&'static str]),
    Boolean,
    /// A double in the inclusive range.
    Fraction(f64, f64),
    /// gzip's level: 1..=9, or -1 for the codec default.
    GzipLevel,
    /// `*` or `partition:broker,partition:broker,...` (Kafka's ThrottledReplicaListValidator).
    ThrottledReplicas,
    /// A Kafka version string such as `2.8`, `3.0-IV1` or `0.10.0` (message.format.version).
    FormatVersion,
}

/// A broker config a topic config falls back to, and how many milliseconds one of its
/// units is (1 for `*.ms` configs, 60,000 for minutes, 3,600,000 for hours; 1 for
/// everything that is not a duration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synonym {
    pub name: &'static str,
    pub unit_ms: i64,
    /// The broker config's own default as Kafka reports it (`None`: null).
    pub default: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// The default when neither the topic nor the broker sets it.
    pub default: &'static str,
    pub check: Check,
    /// Broker configs that supply the topic default, highest precedence first.
    pub synonyms: &'static [Synonym],
    pub effect: Effect,
    pub doc: &'static str,
}

const fn syn(name: &'static str, unit_ms: i64, default: Option<&'static str>) -> Synonym {
    Synonym { name, unit_ms, default }
}

const LONG_MAX: &str = "9223372036854775807";
const I32_MAX: i64 = i32::MAX as i64;
const NO_TIERED_STORAGE: &str = "Tern has no tiered storage: every segment stays local";
const SINGLE_NODE: &str = "replication (partitions are not replicated yet)";

/// Every topic config of Apache Kafka 3.9, plus Tern's own `flush.bytes`.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        kind: ConfigType::List,
        default: "delete",
        check: Check::ListOf(&["compact", "delete"]),
        synonyms: &[syn("log.cleanup.policy", 1, Some("delete"))],
        effect: Effect::Honoured,
        doc: "delete: retention.ms/retention.bytes delete old segments. compact: the log cleaner keeps the latest \
              record per key in closed segments (and refuses keyless records); compact,delete: both",
    },
    TopicConfigDef {
        name: "compression.gzip.level",
        kind: ConfigType::Int,
        default: "-1",
        check: Check::GzipLevel,
        synonyms: &[syn("compression.gzip.level", 1, Some("-1"))],
        effect: Effect::Honoured,
        doc: "gzip level used when the broker compresses for compression.type=gzip",
    },
    TopicConfigDef {
        name: "compression.lz4.level",
        kind: ConfigType::Int,
        default: "9",
        check: Check::Range(1, 17),
        synonyms: &[syn("compression.lz4.level", 1, Some("9"))],
        effect: Effect::Honoured,
        doc: "lz4 level used when the broker compresses for compression.type=lz4",
    },
    TopicConfigDef {
        name: "compression.type",
        kind: ConfigType::String,
        default: "producer",
        check: Check::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        synonyms: &[syn("compression.type", 1, Some("producer"))],
        effect: Effect::Honoured,
        doc: "producer: batches are stored as the producer compressed them; a codec: batches in another codec \
              are recompressed to it (uncompressed: decompressed)",
    },
    TopicConfigDef {
        name: "compression.zstd.level",
        kind: ConfigType::Int,
        default: "3",
        check: Check::Range(-131_072, 22),
        synonyms: &[syn("compression.zstd.level", 1, Some("3"))],
        effect: Effect::Honoured,
        doc: "zstd level used when the broker compresses for compression.type=zstd",
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        kind: ConfigType::Long,
        default: "86400000",
        check: Check::Range(0, i64::MAX),
        synonyms: &[syn("log.cleaner.delete.retention.ms", 1, Some("86400000"))],
        effect: Effect::Honoured,
        doc: "how long a tombstone is kept after its timestamp once the cleaner has seen it",
    },
    TopicConfigDef {
        name: "file.delete.delay.ms",
        kind: ConfigType::Long,
        default: "60000",
        check: Check::Range(0, i64::MAX),
        synonyms: &[syn("log.segment.delete.delay.ms", 1, Some("60000"))],
        effect: Effect::NoEffect(
            "Tern deletes a segment file as soon as no read holds it, so no delay is needed for readers",
        ),
        doc: "delay before a deleted segment's file is removed",
    },
    TopicConfigDef {
        name: "flush.bytes",
        kind: ConfigType::Long,
        default: "1048576",
        check: Check::Range(1, i64::MAX),
        synonyms: &[syn("log.flush.interval.bytes", 1, Some("1048576"))],
        effect: Effect::Honoured,
        doc: "Tern's own: with flush.ms >= 0, also fdatasync after this many unsynced bytes",
    },
    TopicConfigDef {
        name: "flush.messages",
        kind: ConfigType::Long,
        default: LONG_MAX,
        check: Check::Range(1, i64::MAX),
        synonyms: &[syn("log.flush.interval.messages", 1, Some(LONG_MAX))],
        effect: Effect::NoEffect(
            "Tern is durable by default (fdatasync before every acknowledgement); relax it with flush.ms and \
             flush.bytes",
        ),
        doc: "fsync after this many messages",
    },
    TopicConfigDef {
        name: "flush.ms",
        kind: ConfigType::Long,
        default: "-1",
        check: Check::Range(-1, i64::MAX),
        synonyms: &[syn("log.flush.interval.ms", 1, None), syn("log.flush.scheduler.interval.ms", 1, Some("-1"))],
        effect: Effect::Honoured,
        doc: "-1 (Tern's default): acknowledge after fdatasync. >= 0: acknowledge once written and fdatasync \
              at most this many ms later (or after flush.bytes)",
    },
    TopicConfigDef {
        name: "follower.replication.throttled.replicas",
        kind: ConfigType::List,
        default: "",
        check: Check::ThrottledReplicas,
        synonyms: &[],
        effect: Effect::Stored(SINGLE_NODE),
        doc: "replicas whose follower fetches are throttled",
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        kind: ConfigType::Int,
        default: "4096",
        check: Check::Range(1, I32_MAX),
        synonyms: &[syn("log.index.interval.bytes", 1, Some("4096"))],
        effect: Effect::Honoured,
        doc: "bytes of log between offset-index entries (indexes rebuilt after a crash use 4096)",
    },
    TopicConfigDef {
        name: "leader.replication.throttled.replicas",
        kind: ConfigType::List,
        default: "",
        check: Check::ThrottledReplicas,
        synonyms: &[],
        effect: Effect::Stored(SINGLE_NODE),
        doc: "replicas whose leader-side replication is throttled",
    },
    TopicConfigDef {
        name: "local.retention.bytes",
        kind: ConfigType::Long,
        default: "-2",
        check: Check::Range(-2, i64::MAX),
        synonyms: &[syn("log.local.retention.bytes", 1, Some("-2"))],
        effect: Effect::NoEffect(NO_TIERED_STORAGE),
        doc: "local retention by size with tiered storage (-2: retention.bytes)",
    },
    TopicConfigDef {
        name: "local.retention.ms",
        kind: ConfigType::Long,
        default: "-2",
        check: Check::Range(-2, i64::MAX),
        synonyms: &[syn("log.local.retention.ms", 1, Some("-2"))],
        effect: Effect::NoEffect(NO_TIERED_STORAGE),
        doc: "local retention by time with tiered storage (-2: retention.ms)",
    },
    TopicConfigDef {
        name: "max.compaction.lag.ms",
        kind: ConfigType::Long,
        default: LONG_MAX,
        check: Check::Range(1, i64::MAX),
        synonyms: &[syn("log.cleaner.max.compaction.lag.ms", 1, Some(LONG_MAX))],
        effect: Effect::Honoured,
        doc: "a log whose oldest uncleaned record is older than this is cleaned whatever its dirty ratio; its active segment rolls",
    },
    TopicConfigDef {
        name: "max.message.bytes",
        kind: ConfigType::Int,
        default: "1048588",
        check: Check::Range(0, I32_MAX),
        synonyms: &[syn("message.max.bytes", 1, Some("1048588"))],
        effect: Effect::Honoured,
        doc: "largest record batch accepted (after recompression to compression.type)",
    },
    TopicConfigDef {
        name: "message.downconversion.enable",
        kind: ConfigType::Boolean,
        default: "true",
        check: Check::Boolean,
        synonyms: &[syn("log.message.downconversion.enable", 1, Some("true"))],
        effect: Effect::NoEffect(
            "Tern serves only Fetch v4+ (record batch v2), so it never down-converts (Kafka 4.0 removed it too)",
        ),
        doc: "down-convert batches for old fetch versions",
    },
    TopicConfigDef {
        name: "message.format.version",
        kind: ConfigType::String,
        default: "3.0-IV1",
        check: Check::FormatVersion,
        synonyms: &[syn("log.message.format.version", 1, Some("3.0-IV1"))],
        effect: Effect::NoEffect(
            "ignored, as by Kafka 3.x with inter.broker.protocol.version >= 3.0: batches are always v2",
        ),
        doc: "deprecated message format version",
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        kind: ConfigType::Long,
        default: LONG_MAX,
        check: Check::Range(0, i64::MAX),
        synonyms: &[syn("log.message.timestamp.after.max.ms", 1, Some(LONG_MAX))],
        effect: Effect::Honoured,
        doc: "CreateTime records more than this far ahead of the broker's clock are refused (INVALID_TIMESTAMP)",
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        kind: ConfigType::Long,
        default: LONG_MAX,
        check: Check::Range(0, i64::MAX),
        synonyms: &[syn("log.message.timestamp.before.max.ms", 1, Some(LONG_MAX))],
        effect: Effect::Honoured,
        doc: "CreateTime records more than this far behind the broker's clock are refused (INVALID_TIMESTAMP)",
    },
    TopicConfigDef {
        name: "message.timestamp.difference.max.ms",
        kind: ConfigType::Long,
        default: LONG_MAX,
        check: Check::Range(0, i64::MAX),
        synonyms: &[syn("log.message.timestamp.difference.max.ms", 1, Some(LONG_MAX))],
        effect: Effect::Honoured,
        doc: "deprecated (KIP-937): used for before.max.ms and after.max.ms where those are not set",
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        kind: ConfigType::String,
        default: "CreateTime",
        check: Check::OneOf(&["CreateTime", "LogAppendTime"]),
        synonyms: &[syn("log.message.timestamp.type", 1, Some("CreateTime"))],
        effect: Effect::Honoured,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's clock",
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        kind: ConfigType::Double,
        default: "0.5",
        check: Check::Fraction(0.0, 1.0),
        synonyms: &[syn("log.cleaner.min.cleanable.ratio", 1, Some("0.5"))],
        effect: Effect::Honoured,
        doc: "dirty share of the cleanable log (uncleaned bytes / bytes below the active segment) that triggers cleaning",
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        kind: ConfigType::Long,
        default: "0",
        check: Check::Range(0, i64::MAX),
        synonyms: &[syn("log.cleaner.min.compaction.lag.ms", 1, Some("0"))],
        effect: Effect::Honoured,
        doc: "segments with a record newer than this are not cleaned yet",
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        kind: ConfigType::Int,
        default: "1",
        check: Check::Range(1, I32_MAX),
        synonyms: &[syn("min.insync.replicas", 1, Some("1"))],
        effect: Effect::Honoured,
        doc: "acks=all produces are refused with NOT_ENOUGH_REPLICAS while fewer replicas are in sync (a single \
              node has one)",
    },
    TopicConfigDef {
        name: "preallocate",
        kind: ConfigType::Boolean,
        default: "false",
        check: Check::Boolean,
        synonyms: &[syn("log.preallocate", 1, Some("false"))],
        effect: Effect::NoEffect(
            "Tern always preallocates segment files (steps doubling from 1 MiB to 32 MiB) so that fdatasync rarely writes metadata",
        ),
        doc: "preallocate segment files",
    },
    TopicConfigDef {
        name: "remote.log.copy.disable",
        kind: ConfigType::Boolean,
        default: "false",
        check: Check::Boolean,
        synonyms: &[],
        effect: Effect::NoEffect(NO_TIERED_STORAGE),
        doc: "stop copying segments to tiered storage",
    },
    TopicConfigDef {
        name: "remote.log.delete.on.disable",
        kind: ConfigType::Boolean,
        default: "false",
        check: Check::Boolean,
        synonyms: &[],
        effect: Effect::NoEffect(NO_TIERED_STORAGE),
        doc: "delete tiered data when remote storage is disabled",
    },
    TopicConfigDef {
        name: "remote.storage.enable",
        kind: ConfigType::Boolean,
        default: "false",
        check: Check::Boolean,
        synonyms: &[],
        effect: Effect::NoEffect("only false is accepted: Tern has no tiered storage (as a Kafka broker without it)"),
        doc: "tiered storage for this topic",
    },
    TopicConfigDef {
        name: "retention.bytes",
        kind: ConfigType::Long,
        default: "-1",
        check: Check::Range(i64::MIN, i64::MAX),
        synonyms: &[syn("log.retention.bytes", 1, Some("-1"))],
        effect: Effect::Honoured,
        doc: "delete closed segments while the log is larger (-1: no limit)",
    },
    TopicConfigDef {
        name: "retention.ms",
        kind: ConfigType::Long,
        default: "604800000",
        check: Check::Range(-1, i64::MAX),
        synonyms: &[
            syn("log.retention.ms", 1, None),
            syn("log.retention.minutes", 60_000, None),
            syn("log.retention.hours", 3_600_000, Some("168")),
        ],
        effect: Effect::Honoured,
        doc: "delete closed segments whose newest record is older (-1: forever)",
    },
    TopicConfigDef {
        name: "segment.bytes",
        kind: ConfigType::Int,
        default: "1073741824",
        check: Check::Range(14, I32_MAX),
        synonyms: &[syn("log.segment.bytes", 1, Some("1073741824"))],
        effect: Effect::Honoured,
        doc: "roll the active segment at this size (Tern's minimum is 4096)",
    },
    TopicConfigDef {
        name: "segment.index.bytes",
        kind: ConfigType::Int,
        default: "10485760",
        check: Check::Range(4, I32_MAX),
        synonyms: &[syn("log.index.size.max.bytes", 1, Some("10485760"))],
        effect: Effect::Honoured,
        doc: "roll the active segment before its index files outgrow this (Tern's minimum is 48)",
    },
    TopicConfigDef {
        name: "segment.jitter.ms",
        kind: ConfigType::Long,
        default: "0",
        check: Check::Range(0, i64::MAX),
        synonyms: &[syn("log.roll.jitter.ms", 1, None), syn("log.roll.jitter.hours", 3_600_000, Some("0"))],
        effect: Effect::Honoured,
        doc: "roll each segment up to this much before segment.ms",
    },
    TopicConfigDef {
        name: "segment.ms",
        kind: ConfigType::Long,
        default: "604800000",
        check: Check::Range(1, i64::MAX),
        synonyms: &[syn("log.roll.ms", 1, None), syn("log.roll.hours", 3_600_000, Some("168"))],
        effect: Effect::Honoured,
        doc: "roll the active segment once it is this old",
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        kind: ConfigType::Boolean,
        default: "false",
        check: Check::Boolean,
        synonyms: &[syn("unclean.leader.election.enable", 1, Some("false"))],
        effect: Effect::Stored(SINGLE_NODE),
        doc: "allow an out-of-sync replica to become leader",
    },
];

/// The definition of a topic config.
pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.name == name)
}

/// The topic config a broker config is a synonym of, with the synonym.
pub fn topic_config_for_broker_synonym(broker_name: &str) -> Option<(&'static TopicConfigDef, &'static Synonym)> {
    TOPIC_CONFIGS.iter().find_map(|def| def.synonyms.iter().find(|s| s.name == broker_name).map(|s| (def, s)))
}

/// Splits a list value the way Kafka does: on commas, trimmed, empty elements dropped.
pub fn list_items(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).filter(|item| !item.is_empty()).collect()
}

/// Checks a value against a config's type and valid values; the error names the config.
pub fn check_value(name: &str, kind: ConfigType, check: Check, value: &str) -> Result<(), String> {
    let invalid = |why: String| Err(format!("Invalid value {value} for configuration {name}: {why}"));
    let integer = || -> Result<i64, String> {
        let parsed: i64 = value
            .trim()
            .parse()
            .map_err(|_| format!("Invalid value {value} for configuration {name}: not a number"))?;
        if kind == ConfigType::Int && i32::try_from(parsed).is_err() {
            return Err(format!("Invalid value {value} for configuration {name}: not a 32-bit integer"));
        }
        Ok(parsed)
    };
    match check {
        Check::Range(low, high) => {
            let n = integer()?;
            if !(low..=high).contains(&n) {
                return invalid(format!("value must be in {low}..={high}"));
            }
        }
        Check::GzipLevel => {
            let n = integer()?;
            if n != -1 && !(1..=9).contains(&n) {
                return invalid("value must be -1 or in 1..=9".into());
            }
        }
        Check::OneOf(allowed) => {
            if !allowed.contains(&value) {
                return invalid(format!("String must be one of: {}", allowed.join(", ")));
            }
        }
        Check::ListOf(allowed) => {
            if let Some(bad) = list_items(value).into_iter().find(|item| !allowed.contains(item)) {
                return invalid(format!("{bad} is not one of: {}", allowed.join(", ")));
            }
        }
        Check::Boolean => {
            if !value.trim().eq_ignore_ascii_case("true") && !value.trim().eq_ignore_ascii_case("false") {
                return invalid("Expected value to be either true or false".into());
            }
        }
        Check::Fraction(low, high) => {
            let n: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("Invalid value {value} for configuration {name}: not a number"))?;
            if !(low..=high).contains(&n) {
                return invalid(format!("value must be in {low}..={high}"));
            }
        }
        Check::ThrottledReplicas => {
            let valid = value.trim() == "*"
                || value.split(',').map(str::trim).all(|item| {
                    item.is_empty()
                        || item.split_once(':').is_some_and(|(p, b)| {
                            !p.is_empty()
                                && !b.is_empty()
                                && p.bytes().all(|c| c.is_ascii_digit())
                                && b.bytes().all(|c| c.is_ascii_digit())
                        })
                });
            if !valid {
                return invalid(
                    "must be the literal '*' or a list of replicas in the following format: \
                     [partitionId]:[brokerId],[partitionId]:[brokerId],..."
                        .into(),
                );
            }
        }
        Check::FormatVersion => {
            if !is_format_version(value) {
                return invalid("not a Kafka version such as 2.8, 3.0-IV1 or 0.10.0".into());
            }
        }
    }
    Ok(())
}

/// Kafka's MetadataVersion strings up to 3.9: `0.8.0`..`0.11.0` (three parts), `1.0`..`3.9`
/// (two parts), optionally with `-IVn`; longer patch versions (`2.8.1`) are cut as Kafka does.
fn is_format_version(value: &str) -> bool {
    let (release, iv) = match value.split_once("-IV") {
        Some((release, iv)) => (release, Some(iv)),
        None => (value, None),
    };
    if iv.is_some_and(|iv| iv.is_empty() || !iv.bytes().all(|c| c.is_ascii_digit())) {
        return false;
    }
    let parts: Vec<&str> = release.split('.').collect();
    if parts.iter().any(|p| p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit())) {
        return false;
    }
    let numbers: Vec<u32> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    matches!(numbers.as_slice(), [0, 8..=11, _, ..] | [1, 0..=1, ..] | [2, 0..=8, ..] | [3, 0..=9, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_kafkas_and_its_defaults_pass_their_own_checks() {
        assert_eq!(TOPIC_CONFIGS.len(), 37, "Kafka 3.9's 36 topic configs plus flush.bytes");
        let mut names: Vec<&str> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TOPIC_CONFIGS.len(), "names are unique");
        for def in TOPIC_CONFIGS {
            check_value(def.name, def.kind, def.check, def.default).unwrap_or_else(|e| panic!("{e}"));
            for synonym in def.synonyms {
                if let (Some(default), 1) = (synonym.default, synonym.unit_ms) {
                    check_value(def.name, def.kind, def.check, default).unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
    }

    #[test]
    fn the_readme_documents_every_config_and_its_effect() {
        let readme = include_str!("../../README.md");
        for def in TOPIC_CONFIGS {
            let row = readme
                .lines()
                .find(|line| line.starts_with(&format!("| `{}` |", def.name)))
                .unwrap_or_else(|| panic!("README's Configs table has no row for {}", def.name));
            let expected = match def.effect {
                Effect::Honoured => "**honoured**",
                Effect::Stored(_) => "stored, for",
                Effect::NoEffect(_) => "no effect:",
            };
            assert!(row.contains(expected), "README row of {} should say {expected:?}: {row}", def.name);
            assert!(
                row.contains(&format!("| `{}` |", def.default)),
                "README row of {} shows another default",
                def.name
            );
        }
    }

    #[test]
    fn values_are_checked_like_kafka_checks_them() {
        let def = topic_config("cleanup.policy").unwrap();
        assert!(check_value(def.name, def.kind, def.check, "compact,delete").is_ok());
        assert!(check_value(def.name, def.kind, def.check, "").is_ok(), "Kafka 3.9 accepts an empty policy");
        assert!(check_value(def.name, def.kind, def.check, "compact,shred").is_err());
        let def = topic_config("compression.gzip.level").unwrap();
        assert!(check_value(def.name, def.kind, def.check, "-1").is_ok());
        assert!(check_value(def.name, def.kind, def.check, "0").is_err());
        let def = topic_config("segment.bytes").unwrap();
        assert!(check_value(def.name, def.kind, def.check, "3000000000").is_err(), "INT overflow");
        let def = topic_config("leader.replication.throttled.replicas").unwrap();
        for ok in ["*", "", "0:1,1:2", " 0:1 , 2:3"] {
            assert!(check_value(def.name, def.kind, def.check, ok).is_ok(), "{ok}");
        }
        assert!(check_value(def.name, def.kind, def.check, "0-1").is_err());
        let def = topic_config("message.format.version").unwrap();
        for ok in ["0.10.0", "0.10.0.1", "2.8", "2.8.1", "3.0-IV1", "1.0"] {
            assert!(check_value(def.name, def.kind, def.check, ok).is_ok(), "{ok}");
        }
        for bad in ["4.0", "abc", "3.0-IV", "0.7.0", ""] {
            assert!(check_value(def.name, def.kind, def.check, bad).is_err(), "{bad}");
        }
        let def = topic_config("min.cleanable.dirty.ratio").unwrap();
        assert!(check_value(def.name, def.kind, def.check, "0.25").is_ok());
        assert!(check_value(def.name, def.kind, def.check, "1.5").is_err());
        assert_eq!(topic_config_for_broker_synonym("log.retention.hours").unwrap().0.name, "retention.ms");
    }
}
