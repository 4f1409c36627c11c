//! raft-rs logs through `slog`; this drain hands its records to `tracing`, so the
//! quorum's messages (elections, term changes) appear in the broker's log with the rest.

use slog::{Drain, Level, OwnedKVList, Record, KV};

/// `quiet`: raft-rs's info lines become debug lines (a partition group's elections are
/// summed up by the broker's own "partition leader changed" line; thousands of groups
/// would otherwise flood the log at every failover).
#[derive(Debug)]
struct TracingDrain {
    quiet: bool,
}

/// Collects a record's key-value pairs as `key=value` text.
struct KeyValues(String);

impl slog::Serializer for KeyValues {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = KeyValues(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let message = record.msg();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{message}{}", fields.0),
            Level::Warning => tracing::warn!(target: "raft", "{message}{}", fields.0),
            Level::Info if self.quiet => tracing::debug!(target: "raft", "{message}{}", fields.0),
            Level::Info => tracing::info!(target: "raft", "{message}{}", fields.0),
            Level::Debug => tracing::debug!(target: "raft", "{message}{}", fields.0),
            Level::Trace => tracing::trace!(target: "raft", "{message}{}", fields.0),
        }
        Ok(())
    }
}

/// The logger raft-rs is given.
pub fn raft_logger(node_id: i32) -> slog::Logger {
    slog::Logger::root(TracingDrain { quiet: false }.fuse(), slog::o!("raft_node" => node_id))
}

/// The logger of a partition replica group's raft-rs node (its lines name the partition).
pub fn raft_group_logger(node_id: i32, partition: String) -> slog::Logger {
    slog::Logger::root(TracingDrain { quiet: true }.fuse(), slog::o!("raft_node" => node_id, "partition" => partition))
}
