//! Membership of a consumer group with the classic (eager) protocol, as the Java client
//! and librdkafka do it: FindCoordinator, JoinGroup (answering MEMBER_ID_REQUIRED), the
//! leader's assignment ([`super::assignor`]), SyncGroup, heartbeats, commits fenced by
//! member id and generation, and LeaveGroup.
//!
//! The member keeps its own connection to the coordinator, so heartbeats never queue
//! behind long-polling fetches. The caller drives it: [`GroupMember::join`] until it has
//! an assignment, then [`GroupMember::heartbeat_if_due`] between fetches; when either a
//! heartbeat or a commit answers [`Membership::Rejoin`], the caller commits what it has
//! (while the group still prepares the rebalance, that commit is accepted) and joins
//! again. Nothing here blocks for longer than one broker round trip, except the JoinGroup,
//! which the coordinator holds until every member has rejoined.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, OffsetCommitRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};

use super::assignor::{self, MemberSubscription, ASSIGNORS};
use super::cluster::Client;
use super::connection::Connection;
use super::error::ClientError;
use super::requests::offset_commit_request;

/// Timing of the membership.
#[derive(Debug, Clone, Copy)]
pub struct MemberTimeouts {
    /// The coordinator drops a member it has not heard from for this long.
    pub session_timeout_ms: i32,
    /// How long the coordinator waits for members to rejoin during a rebalance.
    pub rebalance_timeout_ms: i32,
    pub heartbeat_interval: Duration,
}

impl MemberTimeouts {
    /// Heartbeats at a third of the session timeout, as the Java client's defaults do.
    pub fn with_session_timeout(session_timeout_ms: i32) -> MemberTimeouts {
        MemberTimeouts {
            session_timeout_ms,
            rebalance_timeout_ms: 60_000,
            heartbeat_interval: Duration::from_millis((session_timeout_ms / 3).max(100) as u64),
        }
    }
}

/// Whether the member still holds its assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Current,
    /// A rebalance started, or the coordinator no longer knows this generation: join again.
    Rejoin,
}

/// Answers that mean "find the coordinator again and retry".
const COORDINATOR_MOVED: [ResponseError; 3] =
    [ResponseError::CoordinatorLoadInProgress, ResponseError::CoordinatorNotAvailable, ResponseError::NotCoordinator];
const COORDINATOR_RETRIES: u32 = 50;
const COORDINATOR_BACKOFF: Duration = Duration::from_millis(200);
/// Pause before re-sending a JoinGroup the coordinator answered with a retriable error.
const JOIN_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct GroupMember<'c> {
    client: &'c Client,
    group: String,
    topics: Vec<String>,
    timeouts: MemberTimeouts,
    member_id: String,
    generation: i32,
    coordinator: Option<Rc<Connection>>,
    next_heartbeat: Instant,
    /// When the coordinator last answered a heartbeat (or the join).
    last_heartbeat_ok: Instant,
}

impl<'c> GroupMember<'c> {
    /// A member that will subscribe to `topics`; nothing is sent until [`Self::join`].
    pub fn new(client: &'c Client, group: &str, topics: Vec<String>, timeouts: MemberTimeouts) -> GroupMember<'c> {
        GroupMember {
            client,
            group: group.to_string(),
            topics,
            timeouts,
            member_id: String::new(),
            generation: -1,
            coordinator: None,
            next_heartbeat: Instant::now(),
            last_heartbeat_ok: Instant::now(),
        }
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// Joins (or rejoins) the group and returns this member's (topic, partition)
    /// assignment for the new generation. As leader, it computes everyone's.
    pub async fn join(&mut self) -> Result<Vec<(String, i32)>, ClientError> {
        let mut coordinator_retries = 0;
        loop {
            match self.join_and_sync().await {
                Ok(JoinStep::Assigned(assignment)) => {
                    self.next_heartbeat = Instant::now() + self.timeouts.heartbeat_interval;
                    self.last_heartbeat_ok = Instant::now();
                    return Ok(assignment);
                }
                Ok(JoinStep::RetryNow) => {}
                Ok(JoinStep::RetryLater) => glommio::timer::sleep(JOIN_BACKOFF).await,
                Err(error) if is_retriable(&error) => self.forget_coordinator(&mut coordinator_retries).await?,
                Err(error) => return Err(error),
            }
        }
    }

    /// One JoinGroup + SyncGroup round.
    async fn join_and_sync(&mut self) -> Result<JoinStep, ClientError> {
        let subscription = assignor::encode_subscription(&self.topics)?;
        let request = JoinGroupRequest::default()
            .with_group_id(self.group_id())
            .with_session_timeout_ms(self.timeouts.session_timeout_ms)
            .with_rebalance_timeout_ms(self.timeouts.rebalance_timeout_ms)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(
                ASSIGNORS
                    .iter()
                    .map(|name| {
                        JoinGroupRequestProtocol::default()
                            .with_name(StrBytes::from_static_str(name))
                            .with_metadata(subscription.clone())
                    })
                    .collect(),
            );
        let joined = self.call(&request).await?;
        match ResponseError::try_from_code(joined.error_code) {
            None => {}
            Some(ResponseError::MemberIdRequired) => {
                self.member_id = joined.member_id.to_string();
                return Ok(JoinStep::RetryNow);
            }
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                return Ok(JoinStep::RetryNow);
            }
            Some(ResponseError::RebalanceInProgress) => return Ok(JoinStep::RetryLater),
            Some(_) => return Err(self.error("joining", joined.error_code)),
        }
        self.member_id = joined.member_id.to_string();
        self.generation = joined.generation_id;
        let protocol = joined.protocol_name.as_ref().map(|p| p.to_string()).unwrap_or_default();
        let assignments = if joined.leader == joined.member_id { self.lead(&joined, &protocol).await? } else { vec![] };

        let version = self.client.version_for::<SyncGroupRequest>()?;
        let mut sync = SyncGroupRequest::default()
            .with_group_id(self.group_id())
            .with_generation_id(self.generation)
            .with_member_id(joined.member_id.clone())
            .with_assignments(assignments);
        if version >= 5 {
            sync = sync
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_string(protocol)));
        }
        let synced = self.call(&sync).await?;
        match ResponseError::try_from_code(synced.error_code) {
            None => Ok(JoinStep::Assigned(assignor::decode_assignment(synced.assignment)?)),
            Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration) => Ok(JoinStep::RetryNow),
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                Ok(JoinStep::RetryNow)
            }
            Some(_) => Err(self.error("syncing", synced.error_code)),
        }
    }

    /// The leader's part: every member's assignment from their subscriptions.
    async fn lead(
        &self,
        joined: &JoinGroupResponse,
        protocol: &str,
    ) -> Result<Vec<SyncGroupRequestAssignment>, ClientError> {
        let mut members = Vec::with_capacity(joined.members.len());
        for member in &joined.members {
            members.push(MemberSubscription {
                member_id: member.member_id.to_string(),
                instance_id: member.group_instance_id.as_ref().map(|i| i.to_string()),
                topics: assignor::decode_subscription(member.metadata.clone())?,
            });
        }
        let topics: Vec<String> =
            members.iter().flat_map(|m| m.topics.iter().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
        let metadata = self.client.metadata(Some(&topics)).await?;
        let counts: HashMap<String, i32> = metadata
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| t.name.as_ref().map(|n| (n.to_string(), t.partitions.len() as i32)))
            .collect();
        assignor::assign(protocol, &members, &counts)?
            .into_iter()
            .map(|(member_id, partitions)| {
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member_id))
                    .with_assignment(assignor::encode_assignment(&partitions)?))
            })
            .collect()
    }

    /// Sends a heartbeat when one is due. When the coordinator moved or cannot be
    /// reached, it is looked up again shortly; once no heartbeat has gone through for a
    /// whole session timeout, the membership counts as lost (the coordinator has dropped
    /// us and reassigned our partitions) and the answer is [`Membership::Rejoin`].
    pub async fn heartbeat_if_due(&mut self) -> Result<Membership, ClientError> {
        if Instant::now() < self.next_heartbeat {
            return Ok(Membership::Current);
        }
        self.next_heartbeat = Instant::now() + self.timeouts.heartbeat_interval;
        let request = HeartbeatRequest::default()
            .with_group_id(self.group_id())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        match self.call(&request).await {
            Ok(answer) if !is_coordinator_moved(answer.error_code) => {
                self.last_heartbeat_ok = Instant::now();
                return self.membership_after("heartbeating", answer.error_code);
            }
            Err(error) if !is_retriable(&error) => return Err(error),
            Ok(_) | Err(_) => {} // the coordinator moved or is unreachable
        }
        self.coordinator = None;
        self.next_heartbeat = Instant::now() + COORDINATOR_BACKOFF;
        if self.last_heartbeat_ok.elapsed() > self.session_timeout() {
            return Ok(Membership::Rejoin);
        }
        Ok(Membership::Current)
    }

    /// Commits `offsets` ((topic, partition, next offset to read)) for this generation.
    pub async fn commit(&mut self, topic: &str, offsets: &[(i32, i64)]) -> Result<Membership, ClientError> {
        if offsets.is_empty() {
            return Ok(Membership::Current);
        }
        let request: OffsetCommitRequest = offset_commit_request(&self.group, topic, offsets.iter().copied())
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        // A moved or unreachable coordinator is found again and the commit re-sent, for
        // up to a session timeout (as the Java client retries a synchronous commit).
        let deadline = Instant::now() + self.session_timeout();
        let response = loop {
            let outcome = self.call(&request).await;
            let retry = match &outcome {
                Ok(response) => {
                    response.topics.iter().flat_map(|t| t.partitions.iter()).any(|p| is_coordinator_moved(p.error_code))
                }
                Err(error) => is_retriable(error),
            };
            if !retry || Instant::now() >= deadline {
                break outcome?;
            }
            self.coordinator = None;
            glommio::timer::sleep(COORDINATOR_BACKOFF).await;
        };
        let mut membership = Membership::Current;
        for code in response.topics.iter().flat_map(|t| t.partitions.iter()).map(|p| p.error_code) {
            if self.membership_after("committing offsets", code)? == Membership::Rejoin {
                membership = Membership::Rejoin;
            }
        }
        Ok(membership)
    }

    /// Leaves the group so the others rebalance at once instead of after our session
    /// timeout. Best effort: a member the coordinator already dropped is fine.
    pub async fn leave(&mut self) -> Result<(), ClientError> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let version = self.client.version_for::<LeaveGroupRequest>()?;
        let member_id = StrBytes::from_string(std::mem::take(&mut self.member_id));
        let mut request = LeaveGroupRequest::default().with_group_id(self.group_id());
        if version >= 3 {
            request = request.with_members(vec![MemberIdentity::default().with_member_id(member_id)]);
        } else {
            request = request.with_member_id(member_id);
        }
        let response = self.call(&request).await?;
        let code = match response.error_code {
            0 => response.members.first().map_or(0, |m| m.error_code),
            code => code,
        };
        match ResponseError::try_from_code(code) {
            None | Some(ResponseError::UnknownMemberId) => Ok(()),
            Some(_) => Err(self.error("leaving", code)),
        }
    }

    fn membership_after(&mut self, action: &str, code: i16) -> Result<Membership, ClientError> {
        match ResponseError::try_from_code(code) {
            None => Ok(Membership::Current),
            Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration) => Ok(Membership::Rejoin),
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                Ok(Membership::Rejoin)
            }
            Some(_) => Err(self.error(action, code)),
        }
    }

    async fn call<R: Request>(&mut self, body: &R) -> Result<R::Response, ClientError> {
        let version = self.client.version_for::<R>()?;
        let connection = match &self.coordinator {
            Some(connection) if !connection.is_broken() => connection.clone(),
            _ => {
                let address = self.client.find_coordinator(&self.group).await?;
                let connection = Connection::connect(&address, self.client.client_id()).await?;
                self.coordinator = Some(connection.clone());
                connection
            }
        };
        connection.call(version, body).await
    }

    async fn forget_coordinator(&mut self, retries: &mut u32) -> Result<(), ClientError> {
        *retries += 1;
        if *retries > COORDINATOR_RETRIES {
            return Err(ClientError::Usage(format!(
                "the coordinator of group {} stayed unavailable: check the brokers",
                self.group
            )));
        }
        self.coordinator = None;
        glommio::timer::sleep(COORDINATOR_BACKOFF).await;
        Ok(())
    }

    fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.session_timeout_ms.max(0) as u64)
    }

    fn group_id(&self) -> GroupId {
        GroupId(StrBytes::from_string(self.group.clone()))
    }

    fn error(&self, action: &str, code: i16) -> ClientError {
        ClientError::broker(format!("{action} group {}", self.group), code, None)
    }
}

fn is_coordinator_moved(code: i16) -> bool {
    COORDINATOR_MOVED.iter().any(|e| e.code() == code)
}

/// Errors after which the request goes again to a freshly found coordinator.
fn is_retriable(error: &ClientError) -> bool {
    match error {
        ClientError::Broker { code, .. } => is_coordinator_moved(*code),
        other => other.is_transport(),
    }
}

/// What one JoinGroup + SyncGroup round ended with.
enum JoinStep {
    Assigned(Vec<(String, i32)>),
    /// MEMBER_ID_REQUIRED, UNKNOWN_MEMBER_ID, or a rebalance that moved on before the sync.
    RetryNow,
    /// REBALANCE_IN_PROGRESS on the join itself: back off before asking again.
    RetryLater,
}
