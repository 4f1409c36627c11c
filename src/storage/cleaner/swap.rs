//! Replacing a group of closed segments by their cleaned copy, crash-safely.
//!
//! The cleaned segment is written beside the log as `<base>.log.cleaned` with
//! `<base>.index.cleaned` and `<base>.timeindex.cleaned`, all durable, where `<base>` is
//! the first segment of the group. Then:
//!
//! 1. the intent file `cleaner-swap` (base and end offset of the group, CRC) is written
//!    atomically (its directory sync also makes the `.cleaned` names durable): from here
//!    on the swap is decided;
//! 2. the group's old segment files are removed, and the directory synced, so no old
//!    file can outlive a rename;
//! 3. the index files, then the log file, are renamed to their final names;
//! 4. the directory is synced and the intent removed.
//!
//! Opening a log finishes an interrupted swap ([`finish_interrupted`]). With the intent
//! present it removes every segment of `base+1..end` (only old ones can be there), and
//! `base` itself while `<base>.log.cleaned` exists (the old one), then renames whatever
//! `.cleaned` files of `base` are left. Without an intent, `*.cleaned` files are an
//! abandoned pass and are removed. A half-written cleaned segment is therefore never
//! visible, and the old segments are never removed before the new one is complete and
//! durable.

use std::io;
use std::path::{Path, PathBuf};

use super::super::clean_state::{decode_offset_pair, encode_offset_pair};
use super::super::disk::{
    list_dir, read_small_file, remove_file, rename_file, sync_dir, write_file_atomic, StorageEnv,
};
use super::super::offset::Offset;
use super::super::recovery::remove_segment_files;
use super::super::segment::{parse_segment_name, segment_path, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX};

/// The intent file of a swap in progress.
pub const SWAP_INTENT: &str = "cleaner-swap";
/// Suffix of files the cleaner is writing.
pub const CLEANED_SUFFIX: &str = "cleaned";

/// `<base>.<suffix>.cleaned`
pub fn cleaned_path(dir: &Path, base: Offset, suffix: &str) -> PathBuf {
    dir.join(format!("{:020}.{suffix}.{CLEANED_SUFFIX}", base.value()))
}

/// The group a swap replaces: segments with base offsets in `base..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapIntent {
    pub base: Offset,
    pub end: Offset,
}

impl SwapIntent {
    fn encode(&self) -> Vec<u8> {
        encode_offset_pair(self.base, self.end)
    }

    fn decode(bytes: &[u8]) -> Option<SwapIntent> {
        let (base, end) = decode_offset_pair(bytes)?;
        Some(SwapIntent { base, end })
    }
}

/// Runs steps 1-4 for a cleaned segment already written and synced. `old_bases` are the
/// base offsets of the group's segments (all in `intent.base..intent.end`).
pub async fn swap_in(dir: &Path, intent: SwapIntent, old_bases: &[Offset], env: &StorageEnv) -> io::Result<()> {
    write_file_atomic(&dir.join(SWAP_INTENT), &intent.encode(), env).await?;
    for &base in old_bases {
        remove_segment_files(dir, base, env).await?;
    }
    sync_dir(dir, env).await?;
    rename_cleaned(dir, intent.base, env).await?;
    sync_dir(dir, env).await?;
    remove_file(&dir.join(SWAP_INTENT), env).await?;
    sync_dir(dir, env).await
}

/// Renames the cleaned files of `base` to their final names, the log file last. A file
/// already renamed (before a crash) is skipped: the old files are gone by then, so a
/// file under a final name is the new one.
async fn rename_cleaned(dir: &Path, base: Offset, env: &StorageEnv) -> io::Result<()> {
    for suffix in [OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
        let from = cleaned_path(dir, base, suffix);
        match rename_file(&from, &segment_path(dir, base, suffix), env).await {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Finishes or discards a swap a crash interrupted (see the module docs).
pub async fn finish_interrupted(dir: &Path, env: &StorageEnv) -> io::Result<()> {
    let intent_path = dir.join(SWAP_INTENT);
    let intent = match read_small_file(&intent_path, env).await? {
        None => None,
        Some(bytes) => match SwapIntent::decode(&bytes) {
            Some(intent) => Some(intent),
            None => {
                // The intent is written atomically, so a damaged one was never complete:
                // the swap had not begun.
                tracing::warn!(path = %intent_path.display(), "cleaner swap intent is damaged; discarding the swap");
                None
            }
        },
    };
    let names: Vec<String> = list_dir(dir, env)?.into_iter().map(|entry| entry.name).collect();
    let cleaned_log = |base: Offset| format!("{:020}.{LOG_SUFFIX}.{CLEANED_SUFFIX}", base.value());
    if let Some(intent) = intent {
        tracing::info!(dir = %dir.display(), base = %intent.base, end = %intent.end, "finishing an interrupted cleaner swap");
        let old_base_left = names.contains(&cleaned_log(intent.base));
        for base in names.iter().filter_map(|name| parse_segment_name(name)) {
            let old = if base == intent.base { old_base_left } else { base > intent.base && base < intent.end };
            if old {
                remove_segment_files(dir, base, env).await?;
            }
        }
        sync_dir(dir, env).await?;
        rename_cleaned(dir, intent.base, env).await?;
    }
    for name in &names {
        if name.ends_with(&format!(".{CLEANED_SUFFIX}")) {
            let path = dir.join(name);
            let done = intent.is_some_and(|i| name.starts_with(&format!("{:020}.", i.base.value())));
            if !done {
                tracing::info!(path = %path.display(), "removing a cleaned file of an abandoned cleaner pass");
            }
            remove_file(&path, env).await?;
        }
    }
    if intent.is_some() || names.iter().any(|n| n.ends_with(&format!(".{CLEANED_SUFFIX}"))) {
        sync_dir(dir, env).await?;
    }
    if read_small_file(&intent_path, env).await?.is_some() {
        remove_file(&intent_path, env).await?;
        sync_dir(dir, env).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_round_trips_and_damage_is_detected() {
        let intent = SwapIntent { base: Offset(10), end: Offset(500) };
        assert_eq!(SwapIntent::decode(&intent.encode()), Some(intent));
        let mut bytes = intent.encode();
        bytes[0] ^= 0x80;
        assert_eq!(SwapIntent::decode(&bytes), None);
    }
}
