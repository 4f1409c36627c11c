//! Unit tests of the group state machine, driven with explicit times.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::state::{
    Effect, Group, GroupConfig, GroupState, JoinRequest, JoinResult, LeavingMember, MemberAssignment, Reply,
};

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn config() -> GroupConfig {
    GroupConfig { initial_rebalance_delay_ms: 100, ..GroupConfig::default() }
}

fn join_request(member_id: &str, instance_id: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: instance_id.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        protocol_type: "consumer".into(),
        protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("meta-{p}")))).collect(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        require_known_member_id: true,
    }
}

/// Joins a new member with the v4+ two-step handshake; returns its member id.
fn join_new(group: &mut Group, now: i64, protocols: &[&str]) -> (String, Reply<JoinResult>, Vec<Effect>) {
    let (first, _) = group.join(now, join_request("", None, protocols));
    let Reply::Now(required) = first else { panic!("MEMBER_ID_REQUIRED comes at once") };
    assert_eq!(required.error_code, ResponseError::MemberIdRequired.code());
    let id = required.member_id.clone();
    let (reply, effects) = group.join(now, join_request(&id, None, protocols));
    (id, reply, effects)
}

fn join_effect(effects: &[Effect], member: &str) -> JoinResult {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Join { member_id, result } if member_id == member => Some(result.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no join effect for {member} in {effects:?}"))
}

/// Brings three members to Stable; returns their ids (leader first).
fn stable_group_of_three() -> (Group, Vec<String>, i64) {
    let mut group = Group::new("g".into(), config());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (id, reply, _) = join_new(&mut group, 0, &["range", "roundrobin"]);
        assert!(matches!(reply, Reply::Later { .. }), "the join waits for the rebalance");
        ids.push(id);
    }
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert!(group.tick(50).is_empty(), "the initial delay holds the first rebalance");
    let effects = group.tick(200);
    assert_eq!(effects.len(), 3);
    assert_eq!(group.state(), GroupState::CompletingRebalance);
    let leader = group.leader().unwrap().to_string();
    let leader_result = join_effect(&effects, &leader);
    assert_eq!(leader_result.members.len(), 3, "the leader gets every member's metadata");
    assert_eq!(leader_result.protocol_name.as_deref(), Some("range"));
    for id in &ids {
        if *id != leader {
            assert!(join_effect(&effects, id).members.is_empty(), "followers do not");
        }
    }
    let generation = group.generation();
    for id in ids.iter().filter(|id| **id != leader) {
        let (reply, _) = group.sync(210, id, generation, None, Vec::new());
        assert!(matches!(reply, Reply::Later { .. }), "followers wait for the leader");
    }
    let assignments = ids
        .iter()
        .map(|id| MemberAssignment { member_id: id.clone(), assignment: Bytes::from(format!("assign-{id}")) })
        .collect();
    let (reply, effects) = group.sync(220, &leader, generation, None, assignments);
    let Reply::Now(own) = reply else { panic!("the leader's sync completes at once") };
    assert_eq!(own.assignment, Bytes::from(format!("assign-{leader}")));
    assert_eq!(effects.len(), 2, "both followers get their assignment");
    for effect in &effects {
        let Effect::Sync { member_id, result } = effect else { panic!("sync effects only") };
        assert_eq!(result.assignment, Bytes::from(format!("assign-{member_id}")));
    }
    assert_eq!(group.state(), GroupState::Stable);
    let mut ordered = vec![leader.clone()];
    ordered.extend(ids.into_iter().filter(|id| *id != leader));
    (group, ordered, 220)
}

#[test]
fn three_members_reach_stable_with_one_generation() {
    let (group, ids, _) = stable_group_of_three();
    assert_eq!(group.generation(), 1);
    assert_eq!(group.describe().len(), 3);
    assert_eq!(group.leader(), Some(ids[0].as_str()));
}

#[test]
fn heartbeats_and_errors_clients_rely_on() {
    let (mut group, ids, now) = stable_group_of_three();
    let generation = group.generation();
    assert_eq!(group.heartbeat(now + 1000, &ids[1], generation, None), 0);
    assert_eq!(group.heartbeat(now, &ids[1], generation - 1, None), ResponseError::IllegalGeneration.code());
    assert_eq!(group.heartbeat(now, "stranger", generation, None), ResponseError::UnknownMemberId.code());
    let (reply, _) = group.sync(now, &ids[1], generation + 5, None, Vec::new());
    assert_eq!(
        reply,
        Reply::Now(super::state::SyncResult {
            error_code: ResponseError::IllegalGeneration.code(),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new()
        })
    );
    let (reply, _) = group.join(now, join_request("", None, &["sticky-only"]));
    let Reply::Now(result) = reply else { panic!("immediate") };
    assert_eq!(result.error_code, ResponseError::InconsistentGroupProtocol.code());
    let mut bad_timeout = join_request("", None, &["range"]);
    bad_timeout.session_timeout_ms = 10;
    let Reply::Now(result) = group.join(now, bad_timeout).0 else { panic!("immediate") };
    assert_eq!(result.error_code, ResponseError::InvalidSessionTimeout.code());
}

#[test]
fn a_dead_member_is_removed_after_its_session_and_the_group_rebalances() {
    let (mut group, ids, now) = stable_group_of_three();
    let generation = group.generation();
    // Two members keep heartbeating; the third goes silent.
    let mut t = now;
    while t < now + i64::from(SESSION_MS) + 1000 {
        t += 1000;
        for id in &ids[..2] {
            let code = group.heartbeat(t, id, generation, None);
            assert!(code == 0 || code == ResponseError::RebalanceInProgress.code());
        }
        group.tick(t);
    }
    assert_eq!(group.member_count(), 2);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(group.heartbeat(t, &ids[0], generation, None), ResponseError::RebalanceInProgress.code());
    // The survivors rejoin; the join completes without waiting for the rebalance timeout.
    let (first, _) = group.join(t, join_request(&ids[0], None, &["range", "roundrobin"]));
    assert!(matches!(first, Reply::Later { .. }));
    let (second, effects) = group.join(t, join_request(&ids[1], None, &["range", "roundrobin"]));
    let Reply::Now(result) = second else { panic!("the last rejoin completes the phase") };
    assert_eq!(result.generation_id, generation + 1);
    assert_eq!(join_effect(&effects, &ids[0]).generation_id, generation + 1);
    assert_eq!(group.state(), GroupState::CompletingRebalance);
}

#[test]
fn members_that_miss_the_rebalance_are_dropped_at_the_timeout() {
    let (mut group, ids, now) = stable_group_of_three();
    let (_, effects) = group.leave(now, &[LeavingMember::new(ids[2].clone(), None)]);
    assert!(effects.is_empty());
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    group.join(now, join_request(&ids[0], None, &["range"]));
    // ids[1] never rejoins; it keeps no heartbeat either way.
    let effects = group.tick(now + i64::from(REBALANCE_MS) + 1);
    assert_eq!(group.member_count(), 1);
    assert_eq!(join_effect(&effects, &ids[0]).members.len(), 1);
}

#[test]
fn leave_of_the_last_member_empties_the_group() {
    let (mut group, ids, now) = stable_group_of_three();
    let leaving: Vec<_> = ids.iter().map(|id| LeavingMember::new(id.clone(), None)).collect();
    let (codes, _) = group.leave(now, &leaving);
    assert_eq!(codes, vec![0, 0, 0]);
    assert_eq!(group.state(), GroupState::Empty);
    let (codes, _) = group.leave(now, &[LeavingMember::new(ids[0].clone(), None)]);
    assert_eq!(codes, vec![ResponseError::UnknownMemberId.code()]);
}

#[test]
fn static_member_rejoin_keeps_its_assignment_without_rebalance() {
    let mut group = Group::new("g".into(), config());
    let (a, _) = group.join(0, join_request("", Some("instance-a"), &["range"]));
    assert!(matches!(a, Reply::Later { .. }), "static members skip MEMBER_ID_REQUIRED");
    let effects = group.tick(200);
    let Effect::Join { member_id: old_id, result } = &effects[0] else { panic!("join") };
    let (reply, _) = group.sync(
        200,
        old_id,
        result.generation_id,
        Some("instance-a"),
        vec![MemberAssignment { member_id: old_id.clone(), assignment: Bytes::from_static(b"p0,p1") }],
    );
    assert!(matches!(reply, Reply::Now(ref r) if r.assignment == Bytes::from_static(b"p0,p1")));
    let generation = group.generation();

    // The process restarts: same instance id, new (empty) member id.
    let (reply, effects) = group.join(5_000, join_request("", Some("instance-a"), &["range"]));
    let Reply::Now(result) = reply else { panic!("no rebalance for an unchanged static member") };
    assert_eq!(result.generation_id, generation);
    assert_eq!(group.state(), GroupState::Stable);
    assert!(effects
        .iter()
        .all(|e| matches!(e, Effect::Join { member_id, .. } | Effect::Sync { member_id, .. } if member_id == old_id)));
    let (reply, _) = group.sync(5_001, &result.member_id, generation, Some("instance-a"), Vec::new());
    assert!(matches!(reply, Reply::Now(ref r) if r.assignment == Bytes::from_static(b"p0,p1")));
    // The old instance is fenced.
    assert_eq!(group.heartbeat(5_002, old_id, generation, Some("instance-a")), ResponseError::FencedInstanceId.code());
}

#[test]
fn protocol_vote_prefers_what_most_members_prefer() {
    let mut group = Group::new("g".into(), config());
    join_new(&mut group, 0, &["range", "cooperative-sticky"]);
    join_new(&mut group, 0, &["cooperative-sticky", "range"]);
    join_new(&mut group, 0, &["cooperative-sticky", "range"]);
    group.tick(200);
    assert_eq!(group.protocol(), Some("cooperative-sticky"));
}

#[test]
fn commit_validation_follows_generation_and_membership() {
    let (mut group, ids, now) = stable_group_of_three();
    let generation = group.generation();
    assert_eq!(group.validate_commit(now, &ids[0], generation, None), Ok(()));
    assert_eq!(group.validate_commit(now, &ids[0], generation - 1, None), Err(ResponseError::IllegalGeneration.code()));
    assert_eq!(group.validate_commit(now, "", -1, None), Err(ResponseError::UnknownMemberId.code()));
    assert_eq!(group.validate_commit(now, "stranger", generation, None), Err(ResponseError::UnknownMemberId.code()));

    // A fourth member arrives: while the group prepares the rebalance, members of the
    // current generation may still commit what they are about to give up (as in Kafka).
    let protocols = ["range", "roundrobin"];
    let (newcomer, _, _) = join_new(&mut group, now + 1, &protocols);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(group.validate_commit(now + 2, &ids[1], generation, None), Ok(()));
    // Everyone rejoins: between the JoinGroup and SyncGroup answers commits are refused.
    for id in &ids {
        group.join(now + 3, join_request(id, None, &protocols));
    }
    assert_eq!(group.state(), GroupState::CompletingRebalance);
    let next = group.generation();
    assert_eq!(next, generation + 1);
    assert_eq!(group.validate_commit(now + 4, &newcomer, next, None), Err(ResponseError::RebalanceInProgress.code()));
    assert_eq!(group.validate_commit(now + 4, &ids[0], generation, None), Err(ResponseError::IllegalGeneration.code()));

    let mut leaving: Vec<_> = ids.iter().map(|id| LeavingMember::new(id.clone(), None)).collect();
    leaving.push(LeavingMember::new(newcomer, None));
    group.leave(now + 5, &leaving);
    assert_eq!(group.validate_commit(now + 5, "", -1, None), Ok(()), "an empty group accepts simple commits");
}

#[test]
fn a_commit_keeps_a_member_alive_like_a_heartbeat() {
    let (mut group, ids, now) = stable_group_of_three();
    let generation = group.generation();
    let mut t = now;
    while t < now + i64::from(SESSION_MS) * 2 {
        t += 1000;
        assert_eq!(group.heartbeat(t, &ids[0], generation, None), 0);
        assert_eq!(group.heartbeat(t, &ids[1], generation, None), 0);
        assert_eq!(group.validate_commit(t, &ids[2], generation, None), Ok(()));
        group.tick(t);
    }
    assert_eq!(group.member_count(), 3);
    assert_eq!(group.state(), GroupState::Stable);
}

#[test]
fn a_restored_group_keeps_its_generation_and_members_until_they_expire() {
    let (group, ids, now) = stable_group_of_three();
    let snapshot = group.snapshot().expect("a stable group has a snapshot");
    assert_eq!(snapshot.members.len(), 3);
    assert_eq!(snapshot.protocol, "range");
    let encoded = crate::group::membership::encode_value(&snapshot);
    let decoded = crate::group::membership::decode_value(&encoded).unwrap();

    // A new coordinator, much later: the members go on with their generation.
    let later = now + 3_600_000;
    let mut restored = Group::restore("g".into(), config(), decoded, later);
    assert_eq!(restored.state(), GroupState::Stable);
    assert_eq!(restored.generation(), group.generation());
    assert_eq!(restored.leader(), Some(ids[0].as_str()));
    assert_eq!(restored.describe(), group.describe(), "members, metadata and assignments as they were");
    assert_eq!(restored.heartbeat(later + 1000, &ids[1], group.generation(), None), 0);
    assert_eq!(restored.validate_commit(later + 1000, &ids[2], group.generation(), None), Ok(()));
    assert_eq!(
        restored.validate_commit(later + 1000, &ids[2], group.generation() - 1, None),
        Err(ResponseError::IllegalGeneration.code())
    );
    assert_eq!(restored.snapshot(), Some(snapshot), "an unchanged group is not rewritten");

    // Members that never come back expire from the restore on, and the group rebalances.
    let _ = restored.tick(later + i64::from(SESSION_MS) + 2_000);
    assert_ne!(restored.state(), GroupState::Stable);
    assert_eq!(restored.snapshot(), None);
}
