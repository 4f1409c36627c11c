//! A simulated disk in memory, for tests that must decide when a write tears, a sync
//! fails or takes long, the disk fills up, or the machine crashes: every decision comes
//! from one seeded generator, so a failing seed replays exactly.
//!
//! The model is the one a log on a real file system has to survive:
//! - a file's content as reads see it, and the content that survives a crash: writes,
//!   truncations and allocations since the file's last successful `fdatasync` are
//!   pending and may be lost;
//! - directory entries (create, rename, remove) are durable only after the directory is
//!   synced; directories themselves are durable once created (the log's data dir is);
//! - a crash ([`MemoryDisk::crash`]) keeps each pending operation of each file whole,
//!   drops it, or tears it at any byte, independently and in any combination, then
//!   reverts every directory to its last synced entries. Handles opened before the crash
//!   fail every later call with EIO, like the descriptors of a dead process;
//! - faults drawn per call from the seeded generator: EIO on a write or a sync (after a
//!   failed sync nothing is known about the pending writes), a sync that takes several
//!   scheduler turns (so appends pile up behind it), ENOSPC past a capacity.
//!
//! Everything runs on the calling shard; nothing here is `Send`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

/// splitmix64: a small, good, seedable generator (no dependency for the library).
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }
}

/// How often each fault happens, per call (per mille), and the disk's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryFaults {
    pub write_error_per_mille: u32,
    pub sync_error_per_mille: u32,
    /// A sync yields to the scheduler up to this many times before it completes.
    pub sync_delay_turns_max: u32,
    /// Writes and allocations past this many bytes in all files fail with ENOSPC.
    pub capacity_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
enum PendingOp {
    Write { position: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Since the last successful sync, in order.
    pending: Vec<PendingOp>,
    modified_ms: i64,
}

fn apply(data: &mut Vec<u8>, op: &PendingOp) {
    match op {
        PendingOp::Write { position, bytes } => {
            let end = *position as usize + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[*position as usize..end].copy_from_slice(bytes);
        }
        PendingOp::SetLen(len) => data.resize(*len as usize, 0),
    }
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every crash; handles of an older generation are dead.
    generation: u64,
    visible: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
}

/// Counts of what the disk did, for tests to check that faults really happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryDiskStats {
    pub writes: u64,
    pub syncs: u64,
    pub write_errors: u64,
    pub sync_errors: u64,
    pub full_errors: u64,
    pub crashes: u64,
    pub torn_writes: u64,
    pub lost_writes: u64,
}

/// The simulated disk. Share it with `Rc`; put it in `StorageEnv::disk`.
#[derive(Debug)]
pub struct MemoryDisk {
    state: RefCell<State>,
    rng: RefCell<SeededRng>,
    faults: Cell<MemoryFaults>,
    stats: Cell<MemoryDiskStats>,
    now_ms: Cell<i64>,
}

impl MemoryDisk {
    pub fn new(seed: u64) -> Rc<MemoryDisk> {
        Rc::new(MemoryDisk {
            state: RefCell::default(),
            rng: RefCell::new(SeededRng::new(seed)),
            faults: Cell::new(MemoryFaults::default()),
            stats: Cell::new(MemoryDiskStats::default()),
            now_ms: Cell::new(0),
        })
    }

    /// Changes the fault rates from now on.
    pub fn set_faults(&self, faults: MemoryFaults) {
        self.faults.set(faults);
    }

    pub fn stats(&self) -> MemoryDiskStats {
        self.stats.get()
    }

    fn count(&self, update: impl FnOnce(&mut MemoryDiskStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }

    fn roll(&self, per_mille: u32) -> bool {
        per_mille > 0 && self.rng.borrow_mut().chance(per_mille)
    }

    /// The machine loses power: every file keeps its synced content plus each pending
    /// operation whole, not at all, or torn at a random byte; every directory reverts to
    /// its last synced entries; every open handle dies.
    pub fn crash(&self) {
        let mut state = self.state.borrow_mut();
        let mut rng = self.rng.borrow_mut();
        let (mut torn, mut lost) = (0, 0);
        state.generation += 1;
        for inode in state.inodes.values_mut() {
            let mut survived = std::mem::take(&mut inode.durable);
            for op in inode.pending.drain(..) {
                match (rng.below(4), &op) {
                    (0, _) => lost += 1,
                    (1, PendingOp::Write { position, bytes }) if !bytes.is_empty() => {
                        let kept = rng.below(bytes.len() as u64) as usize;
                        apply(&mut survived, &PendingOp::Write { position: *position, bytes: bytes[..kept].to_vec() });
                        torn += 1;
                    }
                    _ => apply(&mut survived, &op),
                }
            }
            inode.data = survived.clone();
            inode.durable = survived;
        }
        state.visible = state.durable.clone();
        let live: std::collections::HashSet<u64> = state.durable.values().copied().collect();
        state.inodes.retain(|id, _| live.contains(id));
        drop(state);
        drop(rng);
        self.count(|s| {
            s.crashes += 1;
            s.torn_writes += torn;
            s.lost_writes += lost;
        });
    }

    fn used_bytes(state: &State) -> u64 {
        state.inodes.values().map(|i| i.data.len() as u64).sum()
    }

    /// `own_bytes`: the size of the file being changed, which `with_inode` has taken out
    /// of `state` for the duration of the call.
    fn check_space(&self, state: &State, own_bytes: u64, growth: u64) -> io::Result<()> {
        if let Some(capacity) = self.faults.get().capacity_bytes {
            if Self::used_bytes(state) + own_bytes + growth > capacity {
                self.count(|s| s.full_errors += 1);
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        Ok(())
    }

    /// A handle for one incarnation of the software using the disk (one "process"):
    /// every call through it fails with EIO once the disk has crashed, so tasks of a log
    /// that died in the crash cannot touch the files of the next one.
    pub fn session(self: &Rc<Self>) -> MemorySession {
        MemorySession { disk: self.clone(), generation: self.state.borrow().generation }
    }

    fn create(self: &Rc<Self>, path: &Path, create_new: bool) -> io::Result<MemoryFile> {
        let mut state = self.state.borrow_mut();
        if let Some(&inode) = state.visible.get(path) {
            if create_new {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            let generation = state.generation;
            return Ok(MemoryFile { disk: self.clone(), inode, generation, path: path.to_path_buf() });
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(inode, Inode { modified_ms: self.now_ms.get(), ..Inode::default() });
        state.visible.insert(path.to_path_buf(), inode);
        let generation = state.generation;
        Ok(MemoryFile { disk: self.clone(), inode, generation, path: path.to_path_buf() })
    }

    fn open(self: &Rc<Self>, path: &Path) -> io::Result<MemoryFile> {
        let state = self.state.borrow();
        let inode = *state.visible.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(MemoryFile { disk: self.clone(), inode, generation: state.generation, path: path.to_path_buf() })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let inode = state.visible.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state.visible.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.visible.remove(path).map(drop).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// Makes `dir`'s current entries the ones that survive a crash.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.sync_delay().await;
        if self.roll(self.faults.get().sync_error_per_mille) {
            self.count(|s| s.sync_errors += 1);
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let mut state = self.state.borrow_mut();
        let in_dir = |path: &Path| path.parent() == Some(dir);
        state.durable.retain(|path, _| !in_dir(path));
        let entries: Vec<(PathBuf, u64)> =
            state.visible.iter().filter(|(path, _)| in_dir(path)).map(|(p, i)| (p.clone(), *i)).collect();
        state.durable.extend(entries);
        Ok(())
    }

    /// The entries of `dir`: (name, size, modified ms).
    pub fn list_dir(&self, dir: &Path) -> Vec<(String, u64, i64)> {
        let state = self.state.borrow();
        state
            .visible
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .filter_map(|(path, inode)| {
                let inode = state.inodes.get(inode)?;
                Some((path.file_name()?.to_str()?.to_string(), inode.data.len() as u64, inode.modified_ms))
            })
            .collect()
    }

    async fn sync_delay(&self) {
        let turns = self.faults.get().sync_delay_turns_max;
        if turns > 0 {
            let delay = self.rng.borrow_mut().below(u64::from(turns) + 1);
            for _ in 0..delay {
                futures_lite::future::yield_now().await;
            }
        }
    }
}

/// The disk as one incarnation of its user sees it (see [`MemoryDisk::session`]).
#[derive(Debug, Clone)]
pub struct MemorySession {
    disk: Rc<MemoryDisk>,
    generation: u64,
}

impl MemorySession {
    fn alive(&self) -> io::Result<()> {
        if self.disk.state.borrow().generation == self.generation {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EIO))
        }
    }

    pub fn disk(&self) -> &Rc<MemoryDisk> {
        &self.disk
    }

    pub fn create(&self, path: &Path, create_new: bool) -> io::Result<MemoryFile> {
        self.alive()?;
        self.disk.create(path, create_new)
    }

    pub fn open(&self, path: &Path) -> io::Result<MemoryFile> {
        self.alive()?;
        self.disk.open(path)
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.alive()?;
        self.disk.rename(from, to)
    }

    pub fn remove(&self, path: &Path) -> io::Result<()> {
        self.alive()?;
        self.disk.remove(path)
    }

    pub async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.alive()?;
        self.disk.sync_dir(dir).await?;
        // A sync that was still running when the machine died made nothing durable.
        self.alive()
    }

    pub fn list_dir(&self, dir: &Path) -> io::Result<Vec<(String, u64, i64)>> {
        self.alive()?;
        Ok(self.disk.list_dir(dir))
    }
}

/// An open file of a [`MemoryDisk`].
#[derive(Debug)]
pub struct MemoryFile {
    disk: Rc<MemoryDisk>,
    inode: u64,
    generation: u64,
    path: PathBuf,
}

impl MemoryFile {
    fn with_inode<T>(&self, f: impl FnOnce(&mut Inode, &State) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.disk.state.borrow_mut();
        if state.generation != self.generation {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let mut inode = state.inodes.remove(&self.inode).ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
        let result = f(&mut inode, &state);
        state.inodes.insert(self.inode, inode);
        result
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_at(&self, position: u64, bytes: &[u8]) -> io::Result<()> {
        let disk = &self.disk;
        if disk.roll(disk.faults.get().write_error_per_mille) {
            disk.count(|s| s.write_errors += 1);
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let now = disk.now_ms.get();
        self.with_inode(|inode, state| {
            let growth = (position + bytes.len() as u64).saturating_sub(inode.data.len() as u64);
            disk.check_space(state, inode.data.len() as u64, growth)?;
            let op = PendingOp::Write { position, bytes: bytes.to_vec() };
            apply(&mut inode.data, &op);
            inode.pending.push(op);
            inode.modified_ms = now;
            Ok(())
        })?;
        disk.count(|s| s.writes += 1);
        Ok(())
    }

    pub fn read_at(&self, position: u64, len: usize) -> io::Result<Bytes> {
        self.with_inode(|inode, _| {
            let start = (position as usize).min(inode.data.len());
            let end = start.saturating_add(len).min(inode.data.len());
            Ok(Bytes::copy_from_slice(&inode.data[start..end]))
        })
    }

    pub async fn sync_data(&self) -> io::Result<()> {
        self.with_inode(|_, _| Ok(()))?;
        self.disk.sync_delay().await;
        self.sync_now()
    }

    /// The durable part of a sync, at once: what an O_DSYNC write does after its data
    /// (every completed write of the file becomes durable, as a cache flush makes it).
    pub fn sync_now(&self) -> io::Result<()> {
        let disk = &self.disk;
        if disk.roll(disk.faults.get().sync_error_per_mille) {
            disk.count(|s| s.sync_errors += 1);
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.with_inode(|inode, _| {
            for op in inode.pending.drain(..) {
                apply(&mut inode.durable, &op);
            }
            Ok(())
        })?;
        disk.count(|s| s.syncs += 1);
        Ok(())
    }

    /// Extends the file to `len` bytes of zeros (fallocate); never shrinks it.
    pub fn allocate(&self, len: u64) -> io::Result<()> {
        let disk = &self.disk;
        self.with_inode(|inode, state| {
            let growth = len.saturating_sub(inode.data.len() as u64);
            disk.check_space(state, inode.data.len() as u64, growth)?;
            if growth > 0 {
                let op = PendingOp::SetLen(len);
                apply(&mut inode.data, &op);
                inode.pending.push(op);
            }
            Ok(())
        })
    }

    pub fn truncate(&self, len: u64) -> io::Result<()> {
        self.with_inode(|inode, _| {
            let op = PendingOp::SetLen(len);
            apply(&mut inode.data, &op);
            inode.pending.push(op);
            Ok(())
        })
    }

    pub fn size(&self) -> io::Result<u64> {
        self.with_inode(|inode, _| Ok(inode.data.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(future)
    }

    #[test]
    fn synced_data_and_entries_survive_a_crash_and_the_rest_may_not() {
        let disk = MemoryDisk::new(7).session();
        let dir = Path::new("/d");
        let file = disk.create(&dir.join("a"), true).unwrap();
        file.write_at(0, b"hello").unwrap();
        block_on(file.sync_data()).unwrap();
        block_on(disk.sync_dir(dir)).unwrap();
        file.write_at(5, b" world").unwrap();
        let unsynced_entry = disk.create(&dir.join("b"), true).unwrap();
        unsynced_entry.write_at(0, b"x").unwrap();
        block_on(unsynced_entry.sync_data()).unwrap();
        disk.disk().crash();
        assert!(file.read_at(0, 5).is_err(), "handles die with the crash");
        assert!(disk.open(&dir.join("a")).is_err(), "and so does the session");
        let disk = disk.disk().session();
        let reopened = disk.open(&dir.join("a")).unwrap();
        let content = reopened.read_at(0, 100).unwrap();
        assert!(content.starts_with(b"hello"), "synced bytes survive");
        assert!(b"hello world".starts_with(&content[..]), "the pending write survives whole, torn or not at all");
        assert!(disk.open(&dir.join("b")).is_err(), "an entry never made durable by a directory sync is gone");
    }

    #[test]
    fn the_same_seed_tears_the_same_way() {
        let run = |seed| {
            let disk = MemoryDisk::new(seed);
            let session = disk.session();
            let file = session.create(Path::new("/d/f"), true).unwrap();
            block_on(session.sync_dir(Path::new("/d"))).unwrap();
            for n in 0..20u8 {
                file.write_at(u64::from(n) * 10, &[n; 10]).unwrap();
            }
            disk.crash();
            disk.session().open(Path::new("/d/f")).unwrap().read_at(0, 1000).unwrap()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn faults_and_capacity() {
        let disk = MemoryDisk::new(1);
        disk.set_faults(MemoryFaults { capacity_bytes: Some(100), ..MemoryFaults::default() });
        let file = disk.session().create(Path::new("/d/f"), true).unwrap();
        file.write_at(0, &[1; 100]).unwrap();
        assert_eq!(file.write_at(100, &[1]).unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(file.allocate(200).unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        disk.set_faults(MemoryFaults { sync_error_per_mille: 1000, ..MemoryFaults::default() });
        assert_eq!(block_on(file.sync_data()).unwrap_err().raw_os_error(), Some(libc::EIO));
        assert_eq!(disk.stats().full_errors, 2);
        assert_eq!(disk.stats().sync_errors, 1);
    }
}
