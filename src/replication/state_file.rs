//! A replica's Raft state, in `raft-state` beside its log: the hard state (term, vote,
//! commit) and the commit anchor, the last committed entry's index, term and end offset
//! as of the write. At the next open the batches after `anchor.next_offset` are the
//! entries after `anchor.index`, in order, so the anchor is all that maps Raft indexes
//! onto the log. A stale anchor is safe (the open reads more of the log); it must
//! only never name an entry the log does not hold, which is why it is taken from the
//! commit clamped to what this replica has written.
//!
//! It also holds the group's configuration (voters and learners) as of the anchor: the
//! anchor is the last applied entry, and configuration changes take effect when applied,
//! so the changes after it are applied again at the next open. A file written before
//! configurations changed has none; the partition's replicas in the cluster metadata are
//! its configuration then.
//!
//! Written whole (temporary file, fdatasync, rename, directory sync) whenever the term or
//! vote changes, before any message that depends on them leaves (Raft's rule), and
//! lazily for the commit. The file carries a CRC-32C: a damaged state file keeps the
//! partition offline rather than let it vote twice in a term.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::storage::disk::{read_small_file, write_file_atomic, StorageEnv};
use crate::storage::Offset;

pub const STATE_FILE: &str = "raft-state";

/// The last committed entry as of a write: its index and term, and the offset after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Anchor {
    pub index: u64,
    pub term: u64,
    pub next_offset: i64,
}

impl Anchor {
    pub fn next_offset(&self) -> Offset {
        Offset(self.next_offset)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplicaState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
    pub anchor: Anchor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<Configuration>,
}

/// A Raft configuration (raft-rs `ConfState`), as the state file stores it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Configuration {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// During a joint change: the voters of the configuration being left.
    #[serde(default)]
    pub voters_outgoing: Vec<u64>,
    #[serde(default)]
    pub learners_next: Vec<u64>,
    #[serde(default)]
    pub auto_leave: bool,
}

impl From<&raft::eraftpb::ConfState> for Configuration {
    fn from(conf: &raft::eraftpb::ConfState) -> Configuration {
        Configuration {
            voters: conf.voters.clone(),
            learners: conf.learners.clone(),
            voters_outgoing: conf.voters_outgoing.clone(),
            learners_next: conf.learners_next.clone(),
            auto_leave: conf.auto_leave,
        }
    }
}

impl From<&Configuration> for raft::eraftpb::ConfState {
    fn from(conf: &Configuration) -> raft::eraftpb::ConfState {
        raft::eraftpb::ConfState {
            voters: conf.voters.clone(),
            learners: conf.learners.clone(),
            voters_outgoing: conf.voters_outgoing.clone(),
            learners_next: conf.learners_next.clone(),
            auto_leave: conf.auto_leave,
            ..Default::default()
        }
    }
}

impl ReplicaState {
    /// The state of a replica that joins with `log_end` records already in its log:
    /// they count as history before the group (index 0).
    pub fn fresh(log_end: Offset) -> ReplicaState {
        ReplicaState { anchor: Anchor { index: 0, term: 0, next_offset: log_end.value() }, ..Default::default() }
    }

    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("replica state encodes");
        let mut out = crc32c::crc32c(&body).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ReplicaState, String> {
        if bytes.len() < 4 {
            return Err("shorter than its checksum".into());
        }
        let (crc, body) = bytes.split_at(4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err("checksum mismatch".into());
        }
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }

    /// Reads the state in `dir`; `None` when there is none yet.
    pub async fn read(dir: &Path, env: &StorageEnv) -> io::Result<Option<ReplicaState>> {
        let path = dir.join(STATE_FILE);
        let Some(bytes) = read_small_file(&path, env).await? else { return Ok(None) };
        ReplicaState::decode(&bytes)
            .map(Some)
            .map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {reason}", path.display())))
    }

    pub async fn write(&self, dir: &Path, env: &StorageEnv) -> io::Result<()> {
        write_file_atomic(&dir.join(STATE_FILE), &self.encode(), env).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_damage_is_detected() {
        let state = ReplicaState {
            term: 3,
            vote: 2,
            commit: 17,
            anchor: Anchor { index: 17, term: 3, next_offset: 1234 },
            conf: Some(Configuration { voters: vec![1, 2], learners: vec![4], ..Default::default() }),
        };
        let mut bytes = state.encode();
        assert_eq!(ReplicaState::decode(&bytes), Ok(state.clone()));
        let conf: raft::eraftpb::ConfState = state.conf.as_ref().unwrap().into();
        assert_eq!(Configuration::from(&conf), state.conf.clone().unwrap());
        // A file written before configurations were stored.
        let old = br#"{"term":1,"vote":1,"commit":2,"anchor":{"index":2,"term":1,"next_offset":5}}"#;
        let mut old_file = crc32c::crc32c(old).to_be_bytes().to_vec();
        old_file.extend_from_slice(old);
        assert_eq!(ReplicaState::decode(&old_file).unwrap().conf, None);
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        assert!(ReplicaState::decode(&bytes).is_err());
        assert!(ReplicaState::decode(&[1, 2]).is_err());
    }
}
