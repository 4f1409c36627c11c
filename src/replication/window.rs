//! `raft::Storage` for a replica group: the log entries Raft may still ask for, held in
//! memory, above a base (the entry just before the first one held, whose index, term and
//! end offset stay known for Raft's log matching).
//!
//! The window always holds every entry after the commit (the only ones a new leader may
//! overwrite), and keeps committed ones until their bytes pass a budget, for followers
//! that fall a little behind. A follower behind the window's first entry gets a
//! snapshot that describes the window's base, and copies the log up to it from the
//! leader's segments (`shard::catch_up`).
//!
//! The window also knows the group's configuration (its voters and learners) as of its
//! base, for the snapshot, and as of the last applied change (`conf_state`): a
//! configuration change is an entry like any other (`shard::reassignment`), which takes
//! effect once applied.
//!
//! Shard-local (`Rc<RefCell>`): the driver task writes it, raft-rs reads it through the
//! `Storage` trait, never both at once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{RaftState, Storage, StorageError};

use super::state_file::Anchor;
use crate::storage::Offset;

/// One entry as written in the log.
#[derive(Debug, Clone)]
pub struct WindowEntry {
    pub term: u64,
    pub base_offset: Offset,
    pub next_offset: Offset,
    pub data: Bytes,
    /// A configuration-change entry: the raft-rs `ConfChangeV2` its control batch
    /// carries (Raft gets it back as an `EntryConfChangeV2`).
    pub conf_change: Option<Bytes>,
}

#[derive(Debug)]
pub struct Window {
    pub hard_state: HardState,
    /// The configuration as of the last applied change.
    pub conf_state: ConfState,
    /// The configuration as of the base, and the applied changes after it.
    base_conf: ConfState,
    conf_changes: VecDeque<(u64, ConfState)>,
    base: Anchor,
    entries: VecDeque<WindowEntry>,
    bytes: usize,
}

impl Window {
    pub fn new(base: Anchor, hard_state: HardState, conf_state: ConfState) -> Window {
        Window {
            hard_state,
            base_conf: conf_state.clone(),
            conf_state,
            conf_changes: VecDeque::new(),
            base,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Records the configuration that the change at `index` (applied) produced.
    pub fn apply_conf(&mut self, index: u64, conf: ConfState) {
        self.conf_state = conf.clone();
        if index <= self.base.index {
            self.base_conf = conf;
        } else {
            self.conf_changes.push_back((index, conf));
        }
    }

    /// The index of the last applied configuration change above the base, if any.
    pub fn last_conf_change(&self) -> Option<u64> {
        self.conf_changes.back().map(|(index, _)| *index)
    }

    /// The entry before the first held one.
    pub fn base(&self) -> Anchor {
        self.base
    }

    pub fn first_index(&self) -> u64 {
        self.base.index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.base.index + self.entries.len() as u64
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of entry payloads held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, index: u64) -> Option<&WindowEntry> {
        let position = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(position).ok()?)
    }

    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        self.get(index).map(|e| e.term)
    }

    /// The log offset right after entry `index` (at the base: the base's end).
    pub fn next_offset_after(&self, index: u64) -> Option<Offset> {
        if index == self.base.index {
            return Some(self.base.next_offset());
        }
        self.get(index).map(|e| e.next_offset)
    }

    /// Entry `index` as an anchor (index, term, end offset).
    pub fn anchor_at(&self, index: u64) -> Option<Anchor> {
        if index == self.base.index {
            return Some(self.base);
        }
        self.get(index).map(|e| Anchor { index, term: e.term, next_offset: e.next_offset.value() })
    }

    /// Adds the entry after the last one.
    pub fn push(&mut self, entry: WindowEntry) {
        if let Some(last) = self.entries.back() {
            assert_eq!(last.next_offset, entry.base_offset, "window entries are contiguous");
        } else {
            assert_eq!(self.base.next_offset(), entry.base_offset, "the first entry follows the base");
        }
        self.bytes += entry.data.len();
        self.entries.push_back(entry);
    }

    /// Drops the entries after `index` (a new leader's entries replace them).
    pub fn truncate_after(&mut self, index: u64) {
        assert!(index >= self.base.index, "entries at or below the base are committed and never replaced");
        while self.last_index() > index {
            let entry = self.entries.pop_back().expect("non-empty");
            self.bytes -= entry.data.len();
        }
    }

    /// Starts over at `base` with configuration `conf` (a snapshot installed after a
    /// catch-up copied the log up to its offset): every entry held is dropped.
    pub fn restore(&mut self, base: Anchor, conf: ConfState) {
        self.entries.clear();
        self.bytes = 0;
        self.base = base;
        self.base_conf = conf.clone();
        self.conf_state = conf;
        self.conf_changes.clear();
    }

    /// Forgets entries up to `index` (applied) while more than `keep_bytes` are held.
    pub fn evict_through(&mut self, index: u64, keep_bytes: usize) {
        while self.bytes > keep_bytes && self.first_index() <= index && !self.entries.is_empty() {
            let entry = self.entries.pop_front().expect("non-empty");
            self.bytes -= entry.data.len();
            self.base = Anchor { index: self.base.index + 1, term: entry.term, next_offset: entry.next_offset.value() };
        }
        while self.conf_changes.front().is_some_and(|(index, _)| *index <= self.base.index) {
            self.base_conf = self.conf_changes.pop_front().expect("non-empty").1;
        }
    }
}

/// The `raft::Storage` handle over a shared window.
#[derive(Debug, Clone)]
pub struct WindowStorage(pub Rc<RefCell<Window>>);

impl WindowStorage {
    pub fn new(window: Window) -> WindowStorage {
        WindowStorage(Rc::new(RefCell::new(window)))
    }
}

impl Storage for WindowStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let window = self.0.borrow();
        Ok(RaftState::new(window.hard_state.clone(), window.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let window = self.0.borrow();
        if low <= window.base.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > window.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for index in low..high {
            let held = window.get(index).expect("inside the window");
            size += held.data.len() as u64 + 24;
            if !out.is_empty() && max_size.is_some_and(|max| size > max) {
                break;
            }
            let mut entry = Entry { term: held.term, index, ..Default::default() };
            match &held.conf_change {
                Some(change) => {
                    entry.set_entry_type(EntryType::EntryConfChangeV2);
                    entry.data = change.clone();
                }
                None => {
                    entry.set_entry_type(EntryType::EntryNormal);
                    entry.data = held.data.clone();
                }
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let window = self.0.borrow();
        if index < window.base.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        window.term_of(index).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.0.borrow().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.0.borrow().last_index())
    }

    /// The window's base as a snapshot: its index and term, and in `data` the log offset
    /// after it (JSON `{"next_offset": N}`). A follower copies the log up to that offset
    /// from this leader's segments before installing it (`shard::catch_up`).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let window = self.0.borrow();
        let base = window.base;
        if base.index == 0 || base.index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut snapshot =
            Snapshot { data: Bytes::from(format!("{{\"next_offset\":{}}}", base.next_offset)), ..Default::default() };
        let metadata = snapshot.mut_metadata();
        metadata.index = base.index;
        metadata.term = base.term;
        metadata.set_conf_state(window.base_conf.clone());
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, base: i64, count: i64) -> WindowEntry {
        WindowEntry {
            term,
            base_offset: Offset(base),
            next_offset: Offset(base + count),
            data: Bytes::from(vec![0; 10]),
            conf_change: None,
        }
    }

    #[test]
    fn the_window_maps_indexes_to_offsets_and_forgets_only_applied_entries() {
        let mut window =
            Window::new(Anchor { index: 5, term: 2, next_offset: 100 }, HardState::default(), ConfState::default());
        window.push(entry(2, 100, 3));
        window.push(entry(3, 103, 1));
        window.push(entry(3, 104, 10));
        assert_eq!((window.first_index(), window.last_index()), (6, 8));
        assert_eq!(window.next_offset_after(5), Some(Offset(100)));
        assert_eq!(window.next_offset_after(7), Some(Offset(104)));
        assert_eq!(window.term_of(8), Some(3));
        let storage = WindowStorage::new(window);
        assert_eq!(storage.term(5).unwrap(), 2);
        assert!(storage.term(4).is_err());
        let entries = storage.entries(6, 9, None, raft::GetEntriesContext::empty(false)).unwrap();
        assert_eq!(entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![6, 7, 8]);
        assert_eq!(storage.entries(6, 9, 1, raft::GetEntriesContext::empty(false)).unwrap().len(), 1, "at least one");
        assert!(storage.entries(5, 7, None, raft::GetEntriesContext::empty(false)).is_err(), "below the window");

        let mut window = storage.0.borrow_mut();
        window.truncate_after(6);
        assert_eq!(window.last_index(), 6);
        window.push(entry(4, 103, 2));
        window.evict_through(6, 0);
        assert_eq!(window.base(), Anchor { index: 6, term: 2, next_offset: 103 });
        assert_eq!(window.first_index(), 7, "entry 7 is not applied: kept");
    }

    #[test]
    fn the_snapshot_carries_the_configuration_of_the_base_and_conf_entries_come_back_as_such() {
        let voters = |ids: Vec<u64>| ConfState::from((ids, vec![]));
        let mut window =
            Window::new(Anchor { index: 5, term: 2, next_offset: 100 }, HardState::default(), voters(vec![1, 2, 3]));
        window.push(entry(2, 100, 1));
        window.push(WindowEntry { conf_change: Some(Bytes::from_static(b"cc")), ..entry(2, 101, 1) });
        window.push(entry(2, 102, 1));
        window.apply_conf(7, voters(vec![1, 2, 4]));
        assert_eq!(window.conf_state, voters(vec![1, 2, 4]));
        let storage = WindowStorage::new(window);
        let entries = storage.entries(6, 9, None, raft::GetEntriesContext::empty(false)).unwrap();
        assert_eq!(entries[1].get_entry_type(), EntryType::EntryConfChangeV2);
        assert_eq!(&entries[1].data[..], b"cc");
        assert_eq!(entries[2].get_entry_type(), EntryType::EntryNormal);
        storage.0.borrow_mut().evict_through(6, 0);
        assert_eq!(
            storage.snapshot(6, 0).unwrap().get_metadata().get_conf_state(),
            &voters(vec![1, 2, 3]),
            "before the change"
        );
        storage.0.borrow_mut().evict_through(8, 0);
        assert_eq!(storage.snapshot(8, 0).unwrap().get_metadata().get_conf_state(), &voters(vec![1, 2, 4]), "after it");
    }
}
