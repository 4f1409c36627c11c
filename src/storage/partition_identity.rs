//! Which topic a partition directory belongs to: `partition.metadata` in the directory
//! holds the topic id (as Kafka keeps it, KIP-516), so a directory left behind by a
//! deleted topic, or by a standalone node whose topics were not brought into a cluster,
//! is never opened as a different topic that happens to have the same name.
//!
//! The file is written without a sync: losing it in a crash only makes the directory
//! "unclaimed", and an unclaimed directory is adopted by the topic of its name, as every
//! directory was before this file existed.

use std::io;
use std::path::{Path, PathBuf};

pub const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// What a partition directory says about its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryClaim {
    /// No directory, or no (readable) `partition.metadata`: free to use.
    Unclaimed,
    /// It belongs to this topic id.
    Topic([u8; 16]),
}

pub fn read_claim(dir: &Path) -> DirectoryClaim {
    let Ok(text) = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)) else { return DirectoryClaim::Unclaimed };
    text.lines()
        .find_map(|line| line.strip_prefix("topic_id: "))
        .and_then(parse_hex_id)
        .map_or(DirectoryClaim::Unclaimed, DirectoryClaim::Topic)
}

/// Records that `dir` belongs to topic `id`.
pub fn write_claim(dir: &Path, id: [u8; 16]) -> io::Result<()> {
    let text = format!("version: 0\ntopic_id: {}\n", hex_id(&id));
    std::fs::write(dir.join(PARTITION_METADATA_FILE), text)
}

/// Moves a directory that belongs to another topic id out of the way, keeping its data
/// (`<dir>.orphan-<id>`); returns where it went.
pub fn set_aside(dir: &Path, owner: [u8; 16]) -> io::Result<PathBuf> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("partition");
    let target = dir.with_file_name(format!("{name}.orphan-{}", hex_id(&owner)));
    std::fs::rename(dir, &target)?;
    Ok(target)
}

pub fn hex_id(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex_id(text: &str) -> Option<[u8; 16]> {
    let text = text.trim();
    if text.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip_and_a_foreign_directory_is_set_aside() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("t-0");
        assert_eq!(read_claim(&dir), DirectoryClaim::Unclaimed);
        std::fs::create_dir(&dir).unwrap();
        write_claim(&dir, [0xab; 16]).unwrap();
        assert_eq!(read_claim(&dir), DirectoryClaim::Topic([0xab; 16]));
        let moved = set_aside(&dir, [0xab; 16]).unwrap();
        assert!(!dir.exists());
        assert!(moved.join(PARTITION_METADATA_FILE).exists());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(PARTITION_METADATA_FILE), "garbage").unwrap();
        assert_eq!(read_claim(&dir), DirectoryClaim::Unclaimed);
    }
}
