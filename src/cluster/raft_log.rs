//! The metadata quorum's durable Raft log: one append-only file, `cluster-raft.log` in
//! the data dir, replayed into raft-rs's `MemStorage` at startup.
//!
//! Each record is `[len u32 LE][crc32c u32 LE][kind u8][payload]` where the length and
//! checksum cover kind and payload. Kinds: entries (a count, then length-prefixed
//! protobuf `Entry`s) and hard state (protobuf `HardState`). Replay applies records in
//! order with Raft's own append rule (a record whose first index is at or below the
//! last one replaces that suffix), so truncations need no record of their own. A torn
//! tail (the last record incomplete or damaged, running to the end of the file) is cut
//! off: only a write that was never synced can be torn, and nothing unsynced was ever
//! acknowledged to a peer. A damaged record with more records after it is not a torn
//! write but damage to synced data (votes and entries a majority counted on): the
//! broker refuses to start instead of dropping it.
//!
//! Writes are buffered; `sync` makes them durable (fdatasync) before the driver sends
//! the messages that depend on them. File I/O runs on the shard's blocking pool.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
/// Bigger records are damage (an entry holds one metadata change).
const RECORD_BYTES_MAX: usize = 256 << 20;
/// Entries are split over records of about this size.
const RECORD_PAYLOAD_TARGET: usize = 16 << 20;
pub const RAFT_LOG_FILE: &str = "cluster-raft.log";

/// What a replay recovered.
#[derive(Debug, Default)]
pub struct Recovered {
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
    /// Bytes of damaged tail cut off.
    pub truncated_bytes: u64,
}

/// The writer side; records accumulate in `pending` until `sync`.
#[derive(Debug)]
pub struct RaftLogFile {
    path: PathBuf,
    pending: Vec<u8>,
}

impl RaftLogFile {
    /// Reads (and repairs) the log in `data_dir`, creating it if absent.
    pub fn open(data_dir: &Path) -> io::Result<(RaftLogFile, Recovered)> {
        let path = data_dir.join(RAFT_LOG_FILE);
        let bytes = match std::fs::File::open(&path) {
            Ok(mut file) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)?;
                bytes
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        let (mut recovered, valid) = replay(&bytes);
        if valid < bytes.len() && !is_torn_tail(&bytes, valid) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is damaged at byte {valid} of {} (a record that is not the last one): the node's \
                     metadata log cannot be trusted; move the file away to let the node catch up from the \
                     other nodes as a fresh member",
                    path.display(),
                    bytes.len()
                ),
            ));
        }
        if valid < bytes.len() {
            recovered.truncated_bytes = (bytes.len() - valid) as u64;
            tracing::warn!(
                path = %path.display(),
                cut = recovered.truncated_bytes,
                "metadata log had a torn or damaged tail; cut it off"
            );
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            file.set_len(valid as u64)?;
            file.sync_data()?;
        }
        Ok((RaftLogFile { path, pending: Vec::new() }, recovered))
    }

    /// Records `entries`, in as many records as needed to keep each under
    /// `RECORD_PAYLOAD_TARGET` (one entry larger than that gets a record of its own).
    pub fn append_entries(&mut self, entries: &[Entry]) {
        let encoded: Vec<Vec<u8>> = entries.iter().map(|e| e.write_to_bytes().expect("raft entries encode")).collect();
        let mut start = 0;
        while start < encoded.len() {
            let mut end = start;
            let mut size = 4;
            while end < encoded.len() && (end == start || size + 4 + encoded[end].len() <= RECORD_PAYLOAD_TARGET) {
                size += 4 + encoded[end].len();
                end += 1;
            }
            let mut payload = Vec::with_capacity(size);
            payload.extend_from_slice(&((end - start) as u32).to_le_bytes());
            for bytes in &encoded[start..end] {
                payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                payload.extend_from_slice(bytes);
            }
            push_record(&mut self.pending, KIND_ENTRIES, &payload);
            start = end;
        }
    }

    pub fn set_hard_state(&mut self, hard_state: &HardState) {
        let bytes = hard_state.write_to_bytes().expect("hard state encodes");
        push_record(&mut self.pending, KIND_HARD_STATE, &bytes);
    }

    /// Appends what was recorded since the last sync and makes it durable.
    pub async fn sync(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.pending);
        let path = self.path.clone();
        glommio::executor().spawn_blocking(move || append_durably(&path, &bytes)).await
    }

    /// Blocking variant for tests and tools outside an executor.
    pub fn sync_blocking(&mut self) -> io::Result<()> {
        let bytes = std::mem::take(&mut self.pending);
        append_durably(&self.path, &bytes)
    }
}

fn append_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let created = !path.exists();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    if created {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

fn push_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut body = Vec::with_capacity(payload.len() + 1);
    body.push(kind);
    body.extend_from_slice(payload);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Whether the bytes from `valid` on are one incomplete or damaged last record (a torn
/// write), as opposed to damage followed by more records.
fn is_torn_tail(bytes: &[u8], valid: usize) -> bool {
    let Some(header) = bytes.get(valid..valid + 8) else { return true };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    // A length that runs past the end, is zero or absurd (a torn header), or a record
    // that ends exactly at the end of the file.
    len == 0 || len > RECORD_BYTES_MAX || valid + 8 + len >= bytes.len()
}

/// Replays records; returns what they hold and the length of the valid prefix.
fn replay(bytes: &[u8]) -> (Recovered, usize) {
    let mut recovered = Recovered::default();
    let mut at = 0;
    while let Some((kind, payload, next)) = next_record(bytes, at) {
        let ok = match kind {
            KIND_ENTRIES => match decode_entries(payload) {
                Some(entries) => {
                    append_with_raft_rule(&mut recovered.entries, entries);
                    true
                }
                None => false,
            },
            KIND_HARD_STATE => match HardState::parse_from_bytes(payload) {
                Ok(hard_state) => {
                    recovered.hard_state = hard_state;
                    true
                }
                Err(_) => false,
            },
            _ => false,
        };
        if !ok {
            break;
        }
        at = next;
    }
    (recovered, at)
}

fn next_record(bytes: &[u8], at: usize) -> Option<(u8, &[u8], usize)> {
    let header = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len == 0 || len > RECORD_BYTES_MAX {
        return None;
    }
    let body = bytes.get(at + 8..at + 8 + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    Some((body[0], &body[1..], at + 8 + len))
}

fn decode_entries(payload: &[u8]) -> Option<Vec<Entry>> {
    let count = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let mut at = 4;
    let mut entries = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let len = u32::from_le_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
        let bytes = payload.get(at + 4..at + 4 + len)?;
        entries.push(Entry::parse_from_bytes(bytes).ok()?);
        at += 4 + len;
    }
    (at == payload.len()).then_some(entries)
}

/// Raft's append: entries from index `i` on replace whatever the log held from `i` on.
fn append_with_raft_rule(log: &mut Vec<Entry>, entries: Vec<Entry>) {
    let Some(first) = entries.first().map(|e| e.index) else { return };
    if let Some(keep) = log.iter().position(|e| e.index >= first) {
        log.truncate(keep);
    }
    log.extend(entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: format!("{index}@{term}").into_bytes().into(), ..Default::default() }
    }

    #[test]
    fn replays_entries_with_overwrites_and_the_last_hard_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovered) = RaftLogFile::open(dir.path()).unwrap();
        assert!(recovered.entries.is_empty());
        log.append_entries(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        let mut hs = HardState { term: 1, commit: 1, ..Default::default() };
        log.set_hard_state(&hs);
        log.sync_blocking().unwrap();
        // A new leader overwrote index 3.
        log.append_entries(&[entry(3, 2), entry(4, 2)]);
        hs.term = 2;
        hs.commit = 4;
        log.set_hard_state(&hs);
        log.sync_blocking().unwrap();

        let (_, recovered) = RaftLogFile::open(dir.path()).unwrap();
        let ids: Vec<(u64, u64)> = recovered.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(ids, vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
        assert_eq!(recovered.hard_state.commit, 4);
        assert_eq!(recovered.truncated_bytes, 0);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = RaftLogFile::open(dir.path()).unwrap();
        log.append_entries(&[entry(1, 1)]);
        log.sync_blocking().unwrap();
        log.append_entries(&[entry(2, 1)]);
        log.sync_blocking().unwrap();
        let path = dir.path().join(RAFT_LOG_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        let (_, recovered) = RaftLogFile::open(dir.path()).unwrap();
        assert_eq!(recovered.entries.len(), 1);
        assert!(recovered.truncated_bytes > 0);
        let (_, again) = RaftLogFile::open(dir.path()).unwrap();
        assert_eq!(again.entries.len(), 1);
        assert_eq!(again.truncated_bytes, 0, "the cut is durable");
    }

    #[test]
    fn damage_before_the_last_record_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = RaftLogFile::open(dir.path()).unwrap();
        log.append_entries(&[entry(1, 1)]);
        log.append_entries(&[entry(2, 1)]);
        log.sync_blocking().unwrap();
        let path = dir.path().join(RAFT_LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 0xff; // inside the first record
        std::fs::write(&path, &bytes).unwrap();
        let error = RaftLogFile::open(dir.path()).unwrap_err();
        assert!(error.to_string().contains("damaged"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing cut");
    }

    #[test]
    fn many_entries_split_over_records_and_replay_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = RaftLogFile::open(dir.path()).unwrap();
        let big: Vec<Entry> = (1..=40)
            .map(|i| Entry { index: i, term: 1, data: vec![7u8; 1 << 20].into(), ..Default::default() })
            .collect();
        log.append_entries(&big);
        log.sync_blocking().unwrap();
        let (_, recovered) = RaftLogFile::open(dir.path()).unwrap();
        assert_eq!(recovered.entries.len(), 40);
        assert_eq!(recovered.entries[39].index, 40);
    }

    #[test]
    fn garbage_never_panics() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..512))| {
            let _ = replay(&bytes);
        });
    }
}
