//! A stable group's members and generation, kept in `__consumer_offsets` (key type 3)
//! so that a new coordinator (a failover, a restart) knows them: members go on with
//! their generation (heartbeats, commits, and a transactional producer's
//! TxnOffsetCommit, KIP-447) instead of being told UNKNOWN_MEMBER_ID or
//! ILLEGAL_GENERATION and rejoining. Written once a generation's assignments are in
//! (the group is Stable), removed (a tombstone) when the group empties or is deleted.
//!
//! Record format (internal; big-endian): key `[3u8][u16 len][group]`; value `[i32
//! generation][str protocol type][str protocol][str leader][u32 member count]` then per
//! member `[str id][u8 static][str instance id][str client id][str host][i32 session
//! timeout][i32 rebalance timeout][bytes metadata][bytes assignment]`, where a str is
//! `[u16 len][utf-8]` and bytes `[u32 len][bytes]`.

use bytes::Bytes;

/// What a new coordinator restores of a stable group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

const KEY_TYPE: u8 = 3;

fn put_str(out: &mut Vec<u8>, value: &str) {
    let len = value.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&value.as_bytes()[..len]);
}

fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

pub fn encode_key(group_id: &str) -> Vec<u8> {
    let mut out = vec![KEY_TYPE];
    put_str(&mut out, group_id);
    out
}

/// The group id of a membership key (`None`: another kind of key).
pub fn decode_key(bytes: &[u8]) -> Option<String> {
    let mut reader = Reader(bytes);
    if reader.take(1)? != [KEY_TYPE] {
        return None;
    }
    reader.string()
}

pub fn encode_value(snapshot: &GroupSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + snapshot.members.len() * 128);
    out.extend_from_slice(&snapshot.generation.to_be_bytes());
    put_str(&mut out, &snapshot.protocol_type);
    put_str(&mut out, &snapshot.protocol);
    put_str(&mut out, &snapshot.leader);
    out.extend_from_slice(&(snapshot.members.len() as u32).to_be_bytes());
    for member in &snapshot.members {
        put_str(&mut out, &member.member_id);
        out.push(u8::from(member.instance_id.is_some()));
        put_str(&mut out, member.instance_id.as_deref().unwrap_or(""));
        put_str(&mut out, &member.client_id);
        put_str(&mut out, &member.client_host);
        out.extend_from_slice(&member.session_timeout_ms.to_be_bytes());
        out.extend_from_slice(&member.rebalance_timeout_ms.to_be_bytes());
        put_bytes(&mut out, &member.metadata);
        put_bytes(&mut out, &member.assignment);
    }
    out
}

/// `None` for a value that does not decode (a damaged or foreign record: ignored).
pub fn decode_value(bytes: &[u8]) -> Option<GroupSnapshot> {
    let mut reader = Reader(bytes);
    let generation = reader.i32()?;
    let protocol_type = reader.string()?;
    let protocol = reader.string()?;
    let leader = reader.string()?;
    let count = reader.u32()? as usize;
    let mut members = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let member_id = reader.string()?;
        let is_static = reader.take(1)?[0] == 1;
        let instance_id = reader.string()?;
        members.push(MemberSnapshot {
            member_id,
            instance_id: is_static.then_some(instance_id),
            client_id: reader.string()?,
            client_host: reader.string()?,
            session_timeout_ms: reader.i32()?,
            rebalance_timeout_ms: reader.i32()?,
            metadata: Bytes::copy_from_slice(reader.bytes()?),
            assignment: Bytes::copy_from_slice(reader.bytes()?),
        });
    }
    reader.0.is_empty().then_some(GroupSnapshot { generation, protocol_type, protocol, leader, members })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn string(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    fn bytes(&mut self) -> Option<&[u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> GroupSnapshot {
        GroupSnapshot {
            generation: 7,
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            leader: "m-1".into(),
            members: vec![
                MemberSnapshot {
                    member_id: "m-1".into(),
                    instance_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 30_000,
                    metadata: Bytes::from_static(b"meta"),
                    assignment: Bytes::from_static(b"assigned"),
                },
                MemberSnapshot {
                    member_id: "m-2".into(),
                    instance_id: Some("static-2".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.2".into(),
                    session_timeout_ms: 6_000,
                    rebalance_timeout_ms: 6_000,
                    metadata: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_keys_are_told_apart() {
        let snapshot = sample();
        assert_eq!(decode_value(&encode_value(&snapshot)), Some(snapshot));
        assert_eq!(decode_key(&encode_key("readers")), Some("readers".to_string()));
        assert_eq!(decode_key(&[1, 0, 1, b'x']), None, "an offset key is not a membership key");
    }

    proptest! {
        #[test]
        fn damaged_values_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_value(&bytes);
            let _ = decode_key(&bytes);
        }

        #[test]
        fn truncated_values_are_refused(cut in 0usize..40) {
            let encoded = encode_value(&sample());
            let cut = cut.min(encoded.len() - 1);
            prop_assert_eq!(decode_value(&encoded[..cut]), None);
        }
    }
}
