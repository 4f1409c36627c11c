//! Who a bench producer lane writes as: nobody (plain produce, the default), an
//! idempotent producer (`--idempotent`: a producer id and a sequence per partition), or a
//! transactional one (`--transactional N`: also a transactional id, and every N batches
//! make one transaction: AddPartitionsToTxn for the partitions they go to, the batches,
//! then EndTxn commit once every batch is acknowledged).

use std::collections::{BTreeSet, HashMap};

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::records::BatchProducer;
use crate::client::{Client, ClientError};

/// The producer identity of one lane.
#[derive(Debug)]
pub struct LaneIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Next sequence number per partition.
    sequences: HashMap<i32, i32>,
    /// Transactional lanes: the id and the batches per transaction.
    pub transaction: Option<(String, usize)>,
}

/// The transaction timeout the bench asks for.
const TRANSACTION_TIMEOUT_MS: i32 = 60_000;

impl LaneIdentity {
    /// Gets a producer id (and epoch) from the broker: InitProducerId, with a
    /// transactional id when `batches_per_transaction` is set.
    pub async fn init(
        client: &Client,
        lane: usize,
        batches_per_transaction: Option<usize>,
    ) -> Result<LaneIdentity, ClientError> {
        let transaction = batches_per_transaction.map(|n| (format!("tern-bench-{}-{lane}", std::process::id()), n));
        // The default request carries an empty transactional id, not none.
        let mut request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(TRANSACTION_TIMEOUT_MS)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let response = match &transaction {
            Some((id, _)) => {
                request.transactional_id = Some(TransactionalId(StrBytes::from_string(id.clone())));
                client.call_txn_coordinator(id, &request).await?
            }
            None => client.call_any(&request).await?,
        };
        if response.error_code != 0 {
            return Err(ClientError::broker("getting a producer id", response.error_code, None));
        }
        Ok(LaneIdentity {
            producer_id: response.producer_id.0,
            producer_epoch: response.producer_epoch,
            sequences: HashMap::new(),
            transaction,
        })
    }

    /// The producer fields of the next batch of `count` records to `partition`.
    pub fn next_batch(&mut self, partition: i32, count: usize) -> BatchProducer {
        let sequence = self.sequences.entry(partition).or_insert(0);
        let base_sequence = *sequence;
        *sequence = sequence.wrapping_add(count as i32) & i32::MAX;
        BatchProducer {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence,
            transactional: self.transaction.is_some(),
        }
    }

    /// Opens a transaction over `partitions` of `topic` (AddPartitionsToTxn).
    pub async fn begin(&self, client: &Client, topic: &str, partitions: &BTreeSet<i32>) -> Result<(), ClientError> {
        let Some((id, _)) = &self.transaction else { return Ok(()) };
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(id.clone())))
            .with_v3_and_below_producer_id(ProducerId(self.producer_id))
            .with_v3_and_below_producer_epoch(self.producer_epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions.iter().copied().collect())]);
        let response = client.call_txn_coordinator(id, &request).await?;
        let failed = response
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| t.results_by_partition.iter())
            .find(|p| p.partition_error_code != 0);
        match failed {
            Some(p) => Err(ClientError::broker("adding partitions to a transaction", p.partition_error_code, None)),
            None => Ok(()),
        }
    }

    /// Commits the open transaction (EndTxn).
    pub async fn commit(&self, client: &Client) -> Result<(), ClientError> {
        let Some((id, _)) = &self.transaction else { return Ok(()) };
        let request = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.clone())))
            .with_producer_id(ProducerId(self.producer_id))
            .with_producer_epoch(self.producer_epoch)
            .with_committed(true);
        let response = client.call_txn_coordinator(id, &request).await?;
        if response.error_code != 0 {
            return Err(ClientError::broker("committing a transaction", response.error_code, None));
        }
        Ok(())
    }
}
