//! Errors of the Kafka client: connection failures, protocol violations, and error codes
//! the broker answered with (kept as codes, so callers can count them by name).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("connection to {address} failed: {reason}")]
    Io { address: String, reason: String },
    #[error("connection to {0} closed")]
    Disconnected(String),
    #[error("the broker does not support {api:?} in any version this client speaks ({ours})")]
    Unsupported { api: ApiKey, ours: String },
    #[error("cannot encode {api:?} v{version}: {reason}")]
    Encode { api: ApiKey, version: i16, reason: String },
    #[error("cannot decode the {api:?} response: {reason}")]
    Decode { api: ApiKey, reason: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{context}: {}{}", error_name(*code), message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker { context: String, code: i16, message: Option<String> },
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// A broker that could not be reached, or a connection that broke: worth retrying
    /// (after fresh metadata) rather than reporting at once.
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Disconnected(_) | ClientError::Io { .. } | ClientError::Connect { .. })
    }

    /// Wraps a non-zero error code from a response.
    pub fn broker(context: impl Into<String>, code: i16, message: Option<String>) -> ClientError {
        ClientError::Broker { context: context.into(), code, message }
    }
}

/// Kafka's upper-case name for an error code (`NOT_LEADER_OR_FOLLOWER`), or the number.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(_)) => format!("ERROR_{code}"),
        Some(error) => upper_snake(&format!("{error:?}")),
        None if code == 0 => "NONE".to_string(),
        None => format!("ERROR_{code}"),
    }
}

fn upper_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_match_kafka() {
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(0), "NONE");
    }
}
