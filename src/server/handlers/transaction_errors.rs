//! Kafka error codes for the transaction coordinator's refusals, per request version.

use kafka_protocol::error::ResponseError;

use crate::txn::TxnError;

/// The code for `error` in a response of `version`: PRODUCER_FENCED exists from the
/// version `fenced_since` on (KIP-588); older clients are told INVALID_PRODUCER_EPOCH.
pub fn txn_error_code(error: TxnError, version: i16, fenced_since: i16) -> i16 {
    match error {
        TxnError::ProducerFenced if version < fenced_since => ResponseError::InvalidProducerEpoch.code(),
        other => other.code(),
    }
}
