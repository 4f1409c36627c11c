//! A hash that is the same on every run and platform (unlike `DefaultHasher`), for
//! placement decisions every shard and every restart must agree on: which shard owns a
//! partition, which `__consumer_offsets` partition holds a group, topic ids.

/// FNV-1a, 32-bit.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in bytes {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
    }
}
