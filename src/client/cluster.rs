//! The cluster view of the client: bootstrap, API version negotiation, metadata (which
//! broker leads which partition) and the admin calls the load tool and the CLI need.
//!
//! Works against any Kafka-compatible cluster: versions are the highest both sides speak
//! (capped where newer versions change shape, e.g. Fetch v13 addresses topics by id), and
//! requests for a partition go to its leader.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, CreateTopicsRequest, FindCoordinatorRequest, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};

use super::connection::Connection;
use super::error::ClientError;

/// Highest version of each API this client sends (lower ones are used when the broker
/// supports no more). Chosen where the message shape stays name-addressed.
pub const VERSION_CAPS: &[(ApiKey, i16)] = &[
    (ApiKey::Produce, 9),
    (ApiKey::Fetch, 12),
    (ApiKey::ListOffsets, 7),
    (ApiKey::Metadata, 12),
    (ApiKey::CreateTopics, 7),
    (ApiKey::DeleteTopics, 5),
    (ApiKey::ApiVersions, 3),
    // v8 moves the group into a `groups` array (batched OffsetFetch).
    (ApiKey::OffsetFetch, 7),
];

/// Leader and index of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLeader {
    pub partition: i32,
    pub leader: i32,
}

/// A client bound to one executor.
pub struct Client {
    client_id: String,
    bootstrap: Vec<String>,
    /// Broker id -> "host:port", from the last metadata answer.
    brokers: RefCell<HashMap<i32, String>>,
    /// Shared connections for admin calls, by address.
    connections: RefCell<HashMap<String, Rc<Connection>>>,
    /// ApiKey -> (min, max) the broker supports (a cluster is assumed uniform).
    broker_versions: RefCell<HashMap<i16, (i16, i16)>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("bootstrap", &self.bootstrap).finish_non_exhaustive()
    }
}

/// What FindCoordinator looks up (its key type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorKind {
    Group = 0,
    Transaction = 1,
}

impl Client {
    /// Connects to the first reachable bootstrap broker and learns its API versions.
    pub async fn connect(bootstrap: &[String], client_id: &str) -> Result<Client, ClientError> {
        if bootstrap.is_empty() {
            return Err(ClientError::Usage("no bootstrap brokers given (--brokers host:port)".into()));
        }
        let client = Client {
            client_id: client_id.to_string(),
            bootstrap: bootstrap.to_vec(),
            brokers: RefCell::default(),
            connections: RefCell::default(),
            broker_versions: RefCell::default(),
        };
        let mut last_error = None;
        for address in bootstrap {
            match client.negotiate(address).await {
                Ok(()) => return Ok(client),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("bootstrap is not empty"))
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    async fn negotiate(&self, address: &str) -> Result<(), ClientError> {
        let connection = self.shared_connection(address).await?;
        // v0 is understood by every broker; it lists every API's version range.
        let request = ApiVersionsRequest::default();
        let response = connection.call(0, &request).await?;
        if response.error_code != 0 {
            return Err(ClientError::broker("ApiVersions", response.error_code, None));
        }
        let mut versions = self.broker_versions.borrow_mut();
        for api in response.api_keys {
            versions.insert(api.api_key, (api.min_version, api.max_version));
        }
        Ok(())
    }

    /// The version to send `R` with: the highest both sides speak.
    pub fn version_for<R: Request>(&self) -> Result<i16, ClientError> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| ClientError::Protocol(format!("unknown api key {}", R::KEY)))?;
        let ours = R::VERSIONS;
        let cap = VERSION_CAPS.iter().find(|(key, _)| *key == api).map_or(ours.max, |(_, cap)| *cap);
        let ours_max = ours.max.min(cap);
        let unsupported = || ClientError::Unsupported { api, ours: format!("v{}-{}", ours.min, ours_max) };
        let (theirs_min, theirs_max) = *self.broker_versions.borrow().get(&R::KEY).ok_or_else(unsupported)?;
        let version = ours_max.min(theirs_max);
        if version < ours.min.max(theirs_min) {
            return Err(unsupported());
        }
        Ok(version)
    }

    /// A connection shared by admin calls of this executor.
    pub async fn shared_connection(&self, address: &str) -> Result<Rc<Connection>, ClientError> {
        if let Some(connection) = self.connections.borrow().get(address) {
            if !connection.is_broken() {
                return Ok(connection.clone());
            }
        }
        let connection = Connection::connect(address, &self.client_id).await?;
        self.connections.borrow_mut().insert(address.to_string(), connection.clone());
        Ok(connection)
    }

    /// A new connection of its own (the load tool gives each worker one).
    pub async fn dedicated_connection(&self, broker: i32) -> Result<Rc<Connection>, ClientError> {
        let address = self.broker_address(broker)?;
        Connection::connect(&address, &self.client_id).await
    }

    pub fn broker_address(&self, broker: i32) -> Result<String, ClientError> {
        self.brokers
            .borrow()
            .get(&broker)
            .cloned()
            .ok_or_else(|| ClientError::Protocol(format!("broker {broker} is not in the cluster metadata")))
    }

    /// A connection to any broker (admin requests that any broker answers).
    pub async fn any_connection(&self) -> Result<Rc<Connection>, ClientError> {
        let mut last_error = None;
        for address in &self.bootstrap {
            match self.shared_connection(address).await {
                Ok(connection) => return Ok(connection),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("bootstrap is not empty"))
    }

    /// Sends an admin request to any broker, at the negotiated version.
    pub async fn call_any<R: Request>(&self, body: &R) -> Result<R::Response, ClientError> {
        let version = self.version_for::<R>()?;
        self.any_connection().await?.call(version, body).await
    }

    /// Sends a group request to the group's coordinator (found with FindCoordinator).
    pub async fn call_coordinator<R: Request>(&self, group: &str, body: &R) -> Result<R::Response, ClientError> {
        let connection = self.shared_connection(&self.find_coordinator(group).await?).await?;
        connection.call(self.version_for::<R>()?, body).await
    }

    /// Sends a request to the transaction coordinator of `transactional_id`.
    pub async fn call_txn_coordinator<R: Request>(
        &self,
        transactional_id: &str,
        body: &R,
    ) -> Result<R::Response, ClientError> {
        let address = self.find_coordinator_of(CoordinatorKind::Transaction, transactional_id).await?;
        self.shared_connection(&address).await?.call(self.version_for::<R>()?, body).await
    }

    /// The "host:port" of the broker coordinating `group` (FindCoordinator).
    pub async fn find_coordinator(&self, group: &str) -> Result<String, ClientError> {
        self.find_coordinator_of(CoordinatorKind::Group, group).await
    }

    /// The "host:port" of the broker coordinating a group or a transactional id.
    pub async fn find_coordinator_of(&self, kind: CoordinatorKind, key: &str) -> Result<String, ClientError> {
        let group = key;
        let version = self.version_for::<FindCoordinatorRequest>()?;
        let mut request = FindCoordinatorRequest::default().with_key_type(kind as i8);
        if version >= 4 {
            request.coordinator_keys = vec![StrBytes::from_string(key.to_string())];
        } else {
            request.key = StrBytes::from_string(key.to_string());
        }
        let response = self.any_connection().await?.call(version, &request).await?;
        let (code, host, port) = match response.coordinators.first() {
            Some(c) if version >= 4 => (c.error_code, c.host.to_string(), c.port),
            _ => (response.error_code, response.host.to_string(), response.port),
        };
        if code != 0 {
            let what = match kind {
                CoordinatorKind::Group => "group",
                CoordinatorKind::Transaction => "transactional id",
            };
            return Err(ClientError::broker(format!("finding the coordinator of {what} {group}"), code, None));
        }
        Ok(format!("{host}:{port}"))
    }

    /// Metadata for `topics` (all topics if `None`); remembers the broker addresses.
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<MetadataResponse, ClientError> {
        let version = self.version_for::<MetadataRequest>()?;
        let mut request = MetadataRequest::default();
        request.topics = topics.map(|names| {
            names
                .iter()
                .map(|name| {
                    MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                })
                .collect()
        });
        if version >= 4 {
            request.allow_auto_topic_creation = false;
        }
        let response = self.any_connection().await?.call(version, &request).await?;
        let mut brokers = self.brokers.borrow_mut();
        for broker in &response.brokers {
            brokers.insert(broker.node_id.0, format!("{}:{}", broker.host, broker.port));
        }
        Ok(response)
    }

    /// Partition leaders of one topic; `Ok(None)` if the topic does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<Option<Vec<PartitionLeader>>, ClientError> {
        let response = self.metadata(Some(&[topic.to_string()])).await?;
        let Some(entry) = response.topics.into_iter().next() else {
            return Ok(None);
        };
        match entry.error_code {
            0 => {}
            3 => return Ok(None), // UNKNOWN_TOPIC_OR_PARTITION
            code => return Err(ClientError::broker(format!("metadata for topic {topic}"), code, None)),
        }
        let mut partitions: Vec<PartitionLeader> = entry
            .partitions
            .iter()
            .map(|p| PartitionLeader { partition: p.partition_index, leader: p.leader_id.0 })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Ok(Some(partitions))
    }

    /// Creates a topic; `Ok(false)` if it already existed. Replication factor -1 means the
    /// broker's default (KIP-464; CreateTopics v4+).
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<bool, ClientError> {
        let version = self.version_for::<CreateTopicsRequest>()?;
        let replication_factor = if replication_factor < 1 && version < 4 { 1 } else { replication_factor };
        let topic_entry = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(name, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(name.clone()))
                            .with_value(Some(StrBytes::from_string(value.clone())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default().with_topics(vec![topic_entry]).with_timeout_ms(30_000);
        let response = self.any_connection().await?.call(version, &request).await?;
        let result = response
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("empty CreateTopics answer".into()))?;
        match result.error_code {
            0 => Ok(true),
            36 => Ok(false), // TOPIC_ALREADY_EXISTS
            code => Err(ClientError::broker(
                format!("creating topic {topic}"),
                code,
                result.error_message.map(|m| m.to_string()),
            )),
        }
    }

    /// The offset for `timestamp` (-2 earliest, -1 latest) of each listed partition,
    /// asked of each partition's leader.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[PartitionLeader],
        timestamp: i64,
    ) -> Result<HashMap<i32, i64>, ClientError> {
        let version = self.version_for::<ListOffsetsRequest>()?;
        let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in partitions {
            by_leader.entry(p.leader).or_default().push(p.partition);
        }
        let mut offsets = HashMap::new();
        for (leader, indexes) in by_leader {
            let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(
                        indexes
                            .iter()
                            .map(|&partition| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(partition)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    ),
            ]);
            let address = self.broker_address(leader)?;
            let response = self.shared_connection(&address).await?.call(version, &request).await?;
            for topic_answer in response.topics {
                for partition in topic_answer.partitions {
                    if partition.error_code != 0 {
                        return Err(ClientError::broker(
                            format!("listing offsets of {topic}-{}", partition.partition_index),
                            partition.error_code,
                            None,
                        ));
                    }
                    offsets.insert(partition.partition_index, partition.offset);
                }
            }
        }
        Ok(offsets)
    }
}
