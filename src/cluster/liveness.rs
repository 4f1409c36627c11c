//! Broker liveness as the controller sees it: who heartbeated when, and which
//! registrations or fencings to propose. Pure logic over `Instant`s, driven by the
//! quorum; only the quorum leader keeps one.
//!
//! - A heartbeat whose registration differs from the committed one (a new broker, a new
//!   address, a fenced broker back) proposes `RegisterBroker`, which unfences it.
//! - A registered, unfenced broker silent for longer than the session timeout is fenced.
//! - A new leader counts every broker as just heard from, so an election never fences
//!   brokers that were heartbeating to the old leader.
//! - A proposal in flight for a broker is not repeated for `RETRY_AFTER`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::metadata::commands::MetadataCommand;
use crate::metadata::{BrokerRegistration, ClusterMetadata};

const RETRY_AFTER: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct LivenessTracker {
    session_timeout: Duration,
    last_seen: HashMap<i32, Instant>,
    in_flight: HashMap<i32, Instant>,
}

impl LivenessTracker {
    /// A tracker for a leader elected at `now`.
    pub fn new(session_timeout: Duration, peers: &[i32], now: Instant) -> LivenessTracker {
        LivenessTracker {
            session_timeout,
            last_seen: peers.iter().map(|&id| (id, now)).collect(),
            in_flight: HashMap::new(),
        }
    }

    /// A heartbeat from `registration.node_id`; returns the command to propose, if any.
    pub fn heard(
        &mut self,
        registration: &BrokerRegistration,
        state: &ClusterMetadata,
        now: Instant,
    ) -> Option<MetadataCommand> {
        let id = registration.node_id;
        self.last_seen.insert(id, now);
        let wanted = BrokerRegistration { fenced: false, ..registration.clone() };
        if state.brokers.get(&id) == Some(&wanted) || self.busy(id, now) {
            return None;
        }
        self.in_flight.insert(id, now);
        Some(MetadataCommand::RegisterBroker(wanted))
    }

    /// Fencings due at `now`.
    pub fn expired(&mut self, state: &ClusterMetadata, now: Instant) -> Vec<MetadataCommand> {
        let mut commands = Vec::new();
        for (&id, broker) in &state.brokers {
            if broker.fenced || self.busy(id, now) {
                continue;
            }
            let seen = *self.last_seen.entry(id).or_insert(now);
            if now.duration_since(seen) > self.session_timeout {
                self.in_flight.insert(id, now);
                commands.push(MetadataCommand::FenceBroker { node_id: id });
            }
        }
        commands
    }

    /// Counts every broker as heard from at `now` (the controller itself could not
    /// listen for a while).
    pub fn restart_sessions(&mut self, now: Instant) {
        for seen in self.last_seen.values_mut() {
            *seen = now;
        }
    }

    /// A registration or fencing of `node_id` was applied.
    pub fn settled(&mut self, node_id: i32) {
        self.in_flight.remove(&node_id);
    }

    fn busy(&self, id: i32, now: Instant) -> bool {
        self.in_flight.get(&id).is_some_and(|since| now.duration_since(*since) < RETRY_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::commands::apply;

    fn registration(node_id: i32) -> BrokerRegistration {
        BrokerRegistration { node_id, host: "h".into(), port: 1, rack: None, fenced: false }
    }

    #[test]
    fn registers_fences_and_unfences() {
        let start = Instant::now();
        let session = Duration::from_secs(9);
        let mut state = ClusterMetadata::default();
        let mut tracker = LivenessTracker::new(session, &[1, 2], start);
        let register = tracker.heard(&registration(2), &state, start).expect("a new broker registers");
        assert!(tracker.heard(&registration(2), &state, start).is_none(), "not twice while in flight");
        apply(&mut state, &register);
        tracker.settled(2);
        assert!(tracker.heard(&registration(2), &state, start).is_none(), "already registered");
        assert!(tracker.expired(&state, start + Duration::from_secs(5)).is_empty());
        let fence = tracker.expired(&state, start + Duration::from_secs(10));
        assert_eq!(fence, vec![MetadataCommand::FenceBroker { node_id: 2 }]);
        apply(&mut state, &fence[0]);
        tracker.settled(2);
        assert!(tracker.expired(&state, start + Duration::from_secs(20)).is_empty(), "fenced once");
        let back = tracker.heard(&registration(2), &state, start + Duration::from_secs(21));
        assert_eq!(back, Some(MetadataCommand::RegisterBroker(registration(2))), "a heartbeat unfences");
    }

    #[test]
    fn a_new_leader_gives_everyone_a_full_session() {
        let start = Instant::now();
        let mut state = ClusterMetadata::default();
        apply(&mut state, &MetadataCommand::RegisterBroker(registration(3)));
        let mut tracker = LivenessTracker::new(Duration::from_secs(9), &[1, 2, 3], start);
        assert!(tracker.expired(&state, start + Duration::from_secs(8)).is_empty());
        assert_eq!(tracker.expired(&state, start + Duration::from_secs(10)).len(), 1);
    }
}
