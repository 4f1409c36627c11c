//! The classic consumer group protocol as a sans-I/O state machine: one `Group` per group
//! id, driven by JoinGroup / SyncGroup / Heartbeat / LeaveGroup inputs and by `tick(now)`,
//! all with an explicit `now_ms`. Replies that must wait for a rebalance to complete are
//! answered later through `Effect`s; the coordinator (async glue) keeps the pending
//! requests and delivers them. Follows Kafka's GroupCoordinator semantics:
//!
//! ```text
//!            join (new/changed member), leave, session expiry
//!  Empty ─────────────────────────────────────────────► PreparingRebalance
//!  Stable / CompletingRebalance ──── same ────────────►        │
//!    ▲                                   all members rejoined, │ or rebalance timeout
//!    │ leader's SyncGroup                                      ▼
//!  Stable ◄──────────────────────────────────────── CompletingRebalance
//!  Dead: the group was deleted (DeleteGroups)
//! ```
//!
//! Static members (`group.instance.id`) keep their member slot and assignment across
//! restarts: a rejoin with a known instance id replaces the old member id (fencing the
//! old instance) without a rebalance when nothing else changed.

use super::membership::{GroupSnapshot, MemberSnapshot};
use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

/// Group lifecycle states (Kafka's names, as DescribeGroups reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The leader's assignment for one member (SyncGroup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAssignment {
    pub member_id: String,
    pub assignment: Bytes,
}

/// A member leaving (LeaveGroup): by member id, or by static instance id (v3+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub instance_id: Option<String>,
}

impl LeavingMember {
    pub fn new(member_id: impl Into<String>, instance_id: Option<String>) -> LeavingMember {
        LeavingMember { member_id: member_id.into(), instance_id }
    }
}

/// Coordinator-wide settings (Kafka's group.* broker configs).
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    /// group.initial.rebalance.delay.ms: how long the first rebalance of an empty group
    /// waits for more members.
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// offsets.retention.minutes, in ms: offsets of a group that is empty and has not
    /// committed for this long are deleted.
    pub offsets_retention_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub protocol_type: String,
    /// (protocol name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// JoinGroup v4+: a new member must come back with the id it is given.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error_code: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader receives the members and their metadata.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    pub fn error(code: i16, member_id: &str) -> JoinResult {
        JoinResult {
            error_code: code,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(code: i16) -> SyncResult {
        SyncResult { error_code: code, protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// An answer now, or later through an `Effect` for this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<T> {
    Now(T),
    Later { member_id: String },
}

/// A delayed answer to deliver to a member's pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Join { member_id: String, result: JoinResult },
    Sync { member_id: String, result: SyncResult },
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    assignment: Bytes,
    last_heartbeat_ms: i64,
    awaiting_join: bool,
    awaiting_sync: bool,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id -> member id of static members.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and when they expire.
    pending_member_ids: HashMap<String, i64>,
    /// PreparingRebalance: when the join phase completes even if members are missing.
    rebalance_deadline_ms: i64,
    /// PreparingRebalance of a previously empty group: not before this time.
    initial_delay_until_ms: i64,
    /// CompletingRebalance: when members that have not synced are dropped.
    sync_deadline_ms: i64,
    config: GroupConfig,
    next_member_suffix: u64,
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

impl Group {
    pub fn new(id: String, config: GroupConfig) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_member_ids: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: 0,
            sync_deadline_ms: 0,
            config,
            next_member_suffix: 0,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The group has something for [`Group::tick`] to expire or complete.
    pub fn needs_ticks(&self) -> bool {
        !self.members.is_empty()
            || !self.pending_member_ids.is_empty()
            || !matches!(self.state, GroupState::Empty | GroupState::Dead)
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Marks the group deleted; every later request sees it as unknown.
    pub fn mark_dead(&mut self) {
        self.state = GroupState::Dead;
        self.members.clear();
        self.static_members.clear();
    }

    /// Topics the members subscribe to, read from their "consumer" protocol metadata
    /// (ConsumerProtocolSubscription); empty for other protocol types.
    pub fn subscribed_topics(&self) -> Vec<String> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        let mut topics = Vec::new();
        if self.protocol_type.as_deref() != Some("consumer") {
            return topics;
        }
        for member in self.members.values() {
            for (_, metadata) in &member.protocols {
                let mut bytes = metadata.clone();
                if bytes.len() < 2 {
                    continue;
                }
                let version = i16::from_be_bytes([bytes[0], bytes[1]]);
                bytes = bytes.slice(2..);
                if let Ok(subscription) = ConsumerProtocolSubscription::decode(&mut bytes, version.clamp(0, 3)) {
                    topics.extend(subscription.topics.iter().map(|t| t.to_string()));
                }
            }
        }
        topics.sort();
        topics.dedup();
        topics
    }

    /// What a new coordinator needs to keep this group going: `Some` once a generation's
    /// assignments are in (Stable).
    pub fn snapshot(&self) -> Option<GroupSnapshot> {
        if self.state != GroupState::Stable {
            return None;
        }
        let protocol = self.protocol.clone()?;
        let members = self
            .members
            .iter()
            .map(|(id, m)| MemberSnapshot {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                metadata: m
                    .protocols
                    .iter()
                    .find(|(name, _)| *name == protocol)
                    .map(|(_, meta)| meta.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect();
        Some(GroupSnapshot {
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol,
            leader: self.leader.clone().unwrap_or_default(),
            members,
        })
    }

    /// A stable group as an earlier coordinator left it; its members' session timers
    /// start now (those that are gone expire and the group rebalances).
    pub fn restore(id: String, config: GroupConfig, snapshot: GroupSnapshot, now_ms: i64) -> Group {
        let mut group = Group::new(id, config);
        group.state = if snapshot.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
        group.generation = snapshot.generation;
        group.protocol_type = Some(snapshot.protocol_type).filter(|t| !t.is_empty());
        group.leader = Some(snapshot.leader).filter(|l| !l.is_empty());
        for member in snapshot.members {
            if let Some(instance) = &member.instance_id {
                group.static_members.insert(instance.clone(), member.member_id.clone());
            }
            group.members.insert(
                member.member_id,
                Member {
                    instance_id: member.instance_id,
                    client_id: member.client_id,
                    client_host: member.client_host,
                    protocol_type: group.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(snapshot.protocol.clone(), member.metadata)],
                    session_timeout_ms: member.session_timeout_ms,
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    assignment: member.assignment,
                    last_heartbeat_ms: now_ms,
                    awaiting_join: false,
                    awaiting_sync: false,
                },
            );
        }
        group.protocol = Some(snapshot.protocol);
        group
    }

    pub fn describe(&self) -> Vec<MemberDescription> {
        self.members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: self
                    .protocol
                    .as_ref()
                    .and_then(|p| m.protocols.iter().find(|(name, _)| name == p))
                    .map(|(_, meta)| meta.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    /// Checks an OffsetCommit's member and generation (generation -1: a simple consumer
    /// committing outside any group membership). As in Kafka, a member of the current
    /// generation may commit while the group prepares a rebalance (that is when eager
    /// consumers commit what they are about to give up) and the commit counts as a sign
    /// of life; between the JoinGroup and SyncGroup answers (CompletingRebalance) it gets
    /// REBALANCE_IN_PROGRESS.
    pub fn validate_commit(
        &mut self,
        now_ms: i64,
        member_id: &str,
        generation: i32,
        instance_id: Option<&str>,
    ) -> Result<(), i16> {
        if generation < 0 && member_id.is_empty() {
            return if self.members.is_empty() { Ok(()) } else { Err(code(ResponseError::UnknownMemberId)) };
        }
        self.known_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(code(ResponseError::IllegalGeneration));
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(code(ResponseError::RebalanceInProgress));
        }
        self.members.get_mut(member_id).expect("known member").last_heartbeat_ms = now_ms;
        Ok(())
    }

    fn known_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<&Member, i16> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                Some(current) if current != member_id => return Err(code(ResponseError::FencedInstanceId)),
                _ => {}
            }
        }
        self.members.get(member_id).ok_or(code(ResponseError::UnknownMemberId))
    }

    fn new_member_id(&mut self, client_id: &str, now_ms: i64) -> String {
        self.next_member_suffix += 1;
        format!("{client_id}-{:x}-{:x}", now_ms, self.next_member_suffix)
    }

    pub fn join(&mut self, now_ms: i64, request: JoinRequest) -> (Reply<JoinResult>, Vec<Effect>) {
        let mut effects = Vec::new();
        if self.state == GroupState::Dead {
            return (
                Reply::Now(JoinResult::error(code(ResponseError::CoordinatorNotAvailable), &request.member_id)),
                effects,
            );
        }
        if request.session_timeout_ms < self.config.min_session_timeout_ms
            || request.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return (
                Reply::Now(JoinResult::error(code(ResponseError::InvalidSessionTimeout), &request.member_id)),
                effects,
            );
        }
        if request.protocol_type.is_empty()
            || request.protocols.is_empty()
            || (!self.members.is_empty() && !self.supports(&request.protocol_type, &request.protocols))
        {
            return (
                Reply::Now(JoinResult::error(code(ResponseError::InconsistentGroupProtocol), &request.member_id)),
                effects,
            );
        }

        let member_id = if request.member_id.is_empty() {
            if let Some(instance) = &request.instance_id {
                if let Some(old_id) = self.static_members.get(instance).cloned() {
                    return self.rejoin_static(now_ms, old_id, request);
                }
            }
            let new_id = self.new_member_id(&request.client_id, now_ms);
            if request.require_known_member_id && request.instance_id.is_none() {
                let max_timeout = i64::from(request.session_timeout_ms);
                self.pending_member_ids.insert(new_id.clone(), now_ms + max_timeout);
                return (Reply::Now(JoinResult::error(code(ResponseError::MemberIdRequired), &new_id)), effects);
            }
            new_id
        } else if self.pending_member_ids.remove(&request.member_id).is_some() {
            request.member_id.clone()
        } else {
            match self.known_member(&request.member_id, request.instance_id.as_deref()) {
                Err(error) => return (Reply::Now(JoinResult::error(error, &request.member_id)), effects),
                Ok(_) => return self.rejoin_known(now_ms, request, effects),
            }
        };

        // A new member: add it and (re)start the join phase.
        if let Some(instance) = &request.instance_id {
            self.static_members.insert(instance.clone(), member_id.clone());
        }
        self.members.insert(member_id.clone(), member_from(&request, now_ms));
        self.prepare_rebalance(now_ms, &mut effects);
        effects.extend(self.try_complete_join(now_ms));
        (self.pending_or_done(&member_id, &mut effects), effects)
    }

    /// If the join phase already completed (the effect for this member is among the
    /// effects), answer now; otherwise later.
    fn pending_or_done(&self, member_id: &str, effects: &mut Vec<Effect>) -> Reply<JoinResult> {
        if let Some(at) = effects.iter().position(|e| matches!(e, Effect::Join { member_id: m, .. } if m == member_id))
        {
            if let Effect::Join { result, .. } = effects.remove(at) {
                return Reply::Now(result);
            }
        }
        Reply::Later { member_id: member_id.to_string() }
    }

    fn rejoin_known(
        &mut self,
        now_ms: i64,
        request: JoinRequest,
        mut effects: Vec<Effect>,
    ) -> (Reply<JoinResult>, Vec<Effect>) {
        let member_id = request.member_id.clone();
        let changed = {
            let member = self.members.get(&member_id).expect("known member");
            member.protocols != request.protocols || member.protocol_type != request.protocol_type
        };
        self.members.insert(member_id.clone(), {
            let mut updated = member_from(&request, now_ms);
            updated.assignment = self.members[&member_id].assignment.clone();
            updated
        });
        match self.state {
            GroupState::PreparingRebalance => {}
            GroupState::CompletingRebalance | GroupState::Stable
                if !changed && self.leader.as_deref() != Some(member_id.as_str()) =>
            {
                // Nothing changed: hand back the current generation.
                self.members.get_mut(&member_id).expect("member").awaiting_join = false;
                let result = self.join_result(&member_id);
                return (Reply::Now(result), effects);
            }
            _ => self.prepare_rebalance(now_ms, &mut effects),
        }
        effects.extend(self.try_complete_join(now_ms));
        (self.pending_or_done(&member_id, &mut effects), effects)
    }

    fn rejoin_static(&mut self, now_ms: i64, old_id: String, request: JoinRequest) -> (Reply<JoinResult>, Vec<Effect>) {
        let mut effects = Vec::new();
        let new_id = self.new_member_id(&request.client_id, now_ms);
        let old = self.members.remove(&old_id);
        // The old instance's pending requests are fenced.
        effects.push(Effect::Join {
            member_id: old_id.clone(),
            result: JoinResult::error(code(ResponseError::FencedInstanceId), &old_id),
        });
        effects.push(Effect::Sync {
            member_id: old_id.clone(),
            result: SyncResult::error(code(ResponseError::FencedInstanceId)),
        });
        let instance = request.instance_id.clone().expect("static rejoin has an instance id");
        self.static_members.insert(instance, new_id.clone());
        let mut member = member_from(&request, now_ms);
        let unchanged = old.as_ref().is_some_and(|o| o.protocols == request.protocols);
        if let Some(old) = &old {
            member.assignment = old.assignment.clone();
        }
        self.members.insert(new_id.clone(), member);
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        if self.state == GroupState::Stable && unchanged {
            // KIP-345: a static member coming back unchanged does not rebalance the group.
            self.members.get_mut(&new_id).expect("member").awaiting_join = false;
            let result = self.join_result(&new_id);
            return (Reply::Now(result), effects);
        }
        self.prepare_rebalance(now_ms, &mut effects);
        effects.extend(self.try_complete_join(now_ms));
        (self.pending_or_done(&new_id, &mut effects), effects)
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.protocol_type.as_deref().is_some_and(|t| t != protocol_type) {
            return false;
        }
        // Some protocol every current member supports must be offered.
        protocols.iter().any(|(name, _)| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    fn prepare_rebalance(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        // Members waiting for their assignment learn that a new rebalance started.
        for (id, member) in self.members.iter_mut() {
            if member.awaiting_sync {
                member.awaiting_sync = false;
                effects.push(Effect::Sync {
                    member_id: id.clone(),
                    result: SyncResult::error(code(ResponseError::RebalanceInProgress)),
                });
            }
        }
        let rebalance_timeout = self.members.values().map(|m| i64::from(m.rebalance_timeout_ms)).max().unwrap_or(0);
        if self.state != GroupState::PreparingRebalance {
            self.rebalance_deadline_ms = now_ms + rebalance_timeout;
            self.initial_delay_until_ms = if self.state == GroupState::Empty {
                now_ms + self.config.initial_rebalance_delay_ms.min(rebalance_timeout)
            } else {
                now_ms
            };
            self.state = GroupState::PreparingRebalance;
        } else if now_ms < self.initial_delay_until_ms {
            // Like Kafka's InitialDelayedJoin: while members keep arriving at an empty
            // group's first rebalance, wait a little longer, up to the rebalance timeout.
            self.initial_delay_until_ms =
                (now_ms + self.config.initial_rebalance_delay_ms).min(self.rebalance_deadline_ms);
        }
    }

    fn try_complete_join(&mut self, now_ms: i64) -> Vec<Effect> {
        if self.state != GroupState::PreparingRebalance {
            return Vec::new();
        }
        let everyone_joined = self.members.values().all(|m| m.awaiting_join);
        let delay_over = now_ms >= self.initial_delay_until_ms;
        if !((everyone_joined && delay_over) || now_ms >= self.rebalance_deadline_ms) {
            return Vec::new();
        }
        // Members that did not rejoin in time are out.
        let missing: Vec<String> =
            self.members.iter().filter(|(_, m)| !m.awaiting_join).map(|(id, _)| id.clone()).collect();
        for id in missing {
            self.remove_member(&id);
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            return Vec::new();
        }
        self.protocol_type = self.members.values().next().map(|m| m.protocol_type.clone());
        self.protocol = self.select_protocol();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let rebalance_timeout = self.members.values().map(|m| i64::from(m.rebalance_timeout_ms)).max().unwrap_or(0);
        self.sync_deadline_ms = now_ms + rebalance_timeout;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        let mut effects = Vec::with_capacity(ids.len());
        for id in ids {
            let member = self.members.get_mut(&id).expect("member");
            member.awaiting_join = false;
            member.last_heartbeat_ms = now_ms;
            effects.push(Effect::Join { member_id: id.clone(), result: self.join_result(&id) });
        }
        effects
    }

    fn join_result(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, m)| JoinedMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: self
                        .protocol
                        .as_ref()
                        .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error_code: 0,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Kafka's vote: among protocols every member supports, each member votes for the one
    /// it prefers most; the most votes wins (ties: the first member's preference).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == *name)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0usize, *c)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                if let Some(entry) = votes.iter_mut().find(|(_, c)| *c == name) {
                    entry.0 += 1;
                }
            }
        }
        let best = votes.iter().map(|(v, _)| *v).max()?;
        votes.iter().find(|(v, _)| *v == best).map(|(_, name)| (*name).clone())
    }

    fn remove_member(&mut self, member_id: &str) {
        if let Some(member) = self.members.remove(member_id) {
            if let Some(instance) = member.instance_id {
                if self.static_members.get(&instance).map(String::as_str) == Some(member_id) {
                    self.static_members.remove(&instance);
                }
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    pub fn sync(
        &mut self,
        now_ms: i64,
        member_id: &str,
        generation: i32,
        instance_id: Option<&str>,
        assignments: Vec<MemberAssignment>,
    ) -> (Reply<SyncResult>, Vec<Effect>) {
        let mut effects = Vec::new();
        if self.state == GroupState::Dead || self.state == GroupState::Empty {
            return (Reply::Now(SyncResult::error(code(ResponseError::UnknownMemberId))), effects);
        }
        if let Err(error) = self.known_member(member_id, instance_id) {
            return (Reply::Now(SyncResult::error(error)), effects);
        }
        if generation != self.generation {
            return (Reply::Now(SyncResult::error(code(ResponseError::IllegalGeneration))), effects);
        }
        match self.state {
            GroupState::PreparingRebalance => {
                (Reply::Now(SyncResult::error(code(ResponseError::RebalanceInProgress))), effects)
            }
            GroupState::Stable => {
                let member = self.members.get_mut(member_id).expect("known member");
                member.last_heartbeat_ms = now_ms;
                let result = SyncResult {
                    error_code: 0,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: member.assignment.clone(),
                };
                (Reply::Now(result), effects)
            }
            GroupState::CompletingRebalance => {
                {
                    let member = self.members.get_mut(member_id).expect("known member");
                    member.awaiting_sync = true;
                    member.last_heartbeat_ms = now_ms;
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut by_member: HashMap<String, Bytes> =
                        assignments.into_iter().map(|a| (a.member_id, a.assignment)).collect();
                    for (id, member) in self.members.iter_mut() {
                        member.assignment = by_member.remove(id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    for (id, member) in self.members.iter_mut() {
                        if member.awaiting_sync {
                            member.awaiting_sync = false;
                            effects.push(Effect::Sync {
                                member_id: id.clone(),
                                result: SyncResult {
                                    error_code: 0,
                                    protocol_type: self.protocol_type.clone(),
                                    protocol_name: self.protocol.clone(),
                                    assignment: member.assignment.clone(),
                                },
                            });
                        }
                    }
                    if let Some(at) =
                        effects.iter().position(|e| matches!(e, Effect::Sync { member_id: m, .. } if m == member_id))
                    {
                        if let Effect::Sync { result, .. } = effects.remove(at) {
                            return (Reply::Now(result), effects);
                        }
                    }
                }
                (Reply::Later { member_id: member_id.to_string() }, effects)
            }
            GroupState::Empty | GroupState::Dead => unreachable!("handled above"),
        }
    }

    pub fn heartbeat(&mut self, now_ms: i64, member_id: &str, generation: i32, instance_id: Option<&str>) -> i16 {
        if matches!(self.state, GroupState::Dead | GroupState::Empty) {
            return code(ResponseError::UnknownMemberId);
        }
        if let Err(error) = self.known_member(member_id, instance_id) {
            return error;
        }
        if generation != self.generation {
            return code(ResponseError::IllegalGeneration);
        }
        self.members.get_mut(member_id).expect("known member").last_heartbeat_ms = now_ms;
        match self.state {
            GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
            _ => 0,
        }
    }

    /// LeaveGroup for members by id and/or instance id; one error code per member.
    pub fn leave(&mut self, now_ms: i64, leaving: &[LeavingMember]) -> (Vec<i16>, Vec<Effect>) {
        let mut effects = Vec::new();
        let mut codes = Vec::with_capacity(leaving.len());
        let mut removed_any = false;
        for LeavingMember { member_id, instance_id } in leaving {
            let id = match instance_id {
                Some(instance) => match self.static_members.get(instance) {
                    Some(current) if member_id.is_empty() || current == member_id => current.clone(),
                    Some(_) => {
                        codes.push(code(ResponseError::FencedInstanceId));
                        continue;
                    }
                    None => {
                        codes.push(code(ResponseError::UnknownMemberId));
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            if !self.members.contains_key(&id) {
                codes.push(code(ResponseError::UnknownMemberId));
                continue;
            }
            if self.members[&id].awaiting_join {
                effects.push(Effect::Join {
                    member_id: id.clone(),
                    result: JoinResult::error(code(ResponseError::UnknownMemberId), &id),
                });
            }
            self.remove_member(&id);
            removed_any = true;
            codes.push(0);
        }
        if removed_any {
            self.after_departure(now_ms, &mut effects);
        }
        (codes, effects)
    }

    fn after_departure(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now_ms, effects),
            _ => {}
        }
        effects.extend(self.try_complete_join(now_ms));
    }

    /// Expires members whose session ran out, and completes or times out phases.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.state == GroupState::Dead {
            return effects;
        }
        self.pending_member_ids.retain(|_, expiry| *expiry > now_ms);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                !m.awaiting_join && !m.awaiting_sync && now_ms - m.last_heartbeat_ms > i64::from(m.session_timeout_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                self.remove_member(id);
            }
            self.after_departure(now_ms, &mut effects);
        }
        if self.state == GroupState::CompletingRebalance && now_ms >= self.sync_deadline_ms {
            // The leader never sent the assignment: drop who did not sync and start over.
            let lagging: Vec<String> =
                self.members.iter().filter(|(_, m)| !m.awaiting_sync).map(|(id, _)| id.clone()).collect();
            for id in &lagging {
                self.remove_member(id);
            }
            self.prepare_rebalance(now_ms, &mut effects);
        }
        effects.extend(self.try_complete_join(now_ms));
        effects
    }
}

fn member_from(request: &JoinRequest, now_ms: i64) -> Member {
    Member {
        instance_id: request.instance_id.clone(),
        client_id: request.client_id.clone(),
        client_host: request.client_host.clone(),
        protocol_type: request.protocol_type.clone(),
        protocols: request.protocols.clone(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        assignment: Bytes::new(),
        last_heartbeat_ms: now_ms,
        awaiting_join: true,
        awaiting_sync: false,
    }
}
