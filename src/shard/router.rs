//! Which shard owns a partition.
//!
//! The rule, which every shard evaluates the same way:
//! `shard_for(topic, partition) = (fnv1a_32(topic) + partition) mod shard_count`.
//! Consecutive partitions of one topic land on consecutive shards, so a topic with at
//! least as many partitions as shards uses every core. The owner asserts on arrival that
//! the rule names it (see `ShardContext::assert_owner`).

pub use crate::stable_hash::fnv1a_32;

pub fn shard_for(topic: &str, partition: i32, shard_count: usize) -> usize {
    assert!(shard_count > 0, "at least one shard");
    let spread = u64::from(fnv1a_32(topic.as_bytes())) + u64::from(partition.max(0) as u32);
    (spread % shard_count as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_a_topic_spread_over_all_shards() {
        let owners: Vec<usize> = (0..8).map(|p| shard_for("orders", p, 2)).collect();
        assert_eq!(owners.iter().filter(|&&s| s == 0).count(), 4);
        assert_eq!(shard_for("orders", 3, 1), 0);
    }
}
