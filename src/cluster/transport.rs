//! Inter-broker transport on the cluster listener (`--cluster-listen`), separate from
//! the Kafka client listener.
//!
//! Each node keeps one outbound connection per peer. Frames for a peer are encoded
//! straight into that peer's send buffer, and one task writes whatever the buffer holds
//! in a single write (Raft heartbeats, appends and controller traffic to one peer share
//! a syscall; no frame is copied twice). A node receives on the connections its peers
//! opened to it, so each direction has its own socket and a reply travels on the
//! replier's own outbound link. A received frame is one buffer: the Raft entries
//! decoded from it share it (`bytes::Bytes`) instead of being copied out.
//!
//! Frames are `[len u32 BE][kind u8][body]` (`len` counts kind and body). A frame that
//! does not decode closes that connection; the peer reconnects. Frames queued while a
//! peer is unreachable are dropped when the connection fails (Raft retransmits; a
//! forwarded request times out and its caller retries), and at most
//! `QUEUED_BYTES_MAX` bytes wait per peer.
//!
//! When a peer's connection to this node ends, or a connection to the peer fails, the
//! transport asks the peer's cluster port again: a refusal means no process listens
//! there, so the peer's broker is gone (killed, crashed or exited), and it is marked so
//! in `cluster::peer_liveness` until it connects again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};
use protobuf::Message as _;

use crate::metadata::BrokerRegistration;

use super::{ClusterView, Peer};

/// Largest frame accepted from a peer.
const FRAME_BYTES_MAX: usize = 64 << 20;
/// Bytes queued for one peer before new frames are dropped.
const QUEUED_BYTES_MAX: usize = 64 << 20;
/// Capacity a peer's send buffer keeps between writes.
const WRITE_BUFFER_KEEP: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A write to a peer that makes no progress for this long (a paused process) drops the
/// connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a probe of a peer whose connection ended waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// A probe that found the peer's port still open asks once more after this long (a
/// killed process's sockets close one after another).
const PROBE_RETRY: Duration = Duration::from_millis(50);

const KIND_HELLO: u8 = 1;
const KIND_RAFT: u8 = 2;
const KIND_HEARTBEAT: u8 = 3;
const KIND_FORWARD_REQUEST: u8 = 4;
const KIND_FORWARD_REPLY: u8 = 5;
const KIND_PARTITION_RAFT: u8 = 6;
const KIND_CATCH_UP_REQUEST: u8 = 7;
const KIND_CATCH_UP_REPLY: u8 = 8;
const KIND_LEADER_UPDATES: u8 = 9;

/// A partition leader's news for every broker (those without a replica learn leaders
/// only this way): who leads, in which epoch, with which in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaderUpdate {
    pub topic: String,
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub leader: i32,
    pub epoch: i32,
    pub in_sync: Vec<i32>,
}

/// A follower too far behind for Raft's in-memory entries asks the leader for the
/// committed batches `[from, until)` of a partition (at most `max_bytes` per answer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CatchUpRequest {
    pub id: u64,
    pub topic: String,
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub from: i64,
    pub until: i64,
    pub max_bytes: u32,
}

/// The leader's answer: whole batches from `from`, back to back (empty with `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUpReply {
    pub id: u64,
    pub topic: String,
    pub partition: i32,
    pub error: Option<String>,
    pub log_start: i64,
    pub records: bytes::Bytes,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CatchUpReplyHeader {
    id: u64,
    topic: String,
    partition: i32,
    error: Option<String>,
    log_start: i64,
}

/// A Raft message of one partition's replica group.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionMessage {
    pub topic: String,
    /// The topic's id: a message for a deleted topic never reaches a new one of the
    /// same name.
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub message: raft::eraftpb::Message,
}

/// One message between brokers.
#[derive(Debug, Clone)]
pub enum PeerFrame {
    /// First frame on every connection: who is calling, and a fingerprint of its
    /// `--peers` list (a node configured for another cluster is turned away).
    Hello {
        node_id: i32,
        cluster: u64,
    },
    /// A metadata-quorum Raft message.
    Raft(raft::eraftpb::Message),
    /// A broker's periodic heartbeat to the controller, with its registration.
    Heartbeat(BrokerRegistration),
    /// A controller request forwarded to the controller (opaque to the transport).
    ForwardRequest {
        id: u64,
        body: Vec<u8>,
    },
    ForwardReply {
        id: u64,
        body: Vec<u8>,
    },
    /// Partition replica groups' Raft messages, everything one round of a shard has for
    /// this peer in one frame.
    PartitionRaft(Vec<PartitionMessage>),
    CatchUpRequest(CatchUpRequest),
    CatchUpReply(CatchUpReply),
    LeaderUpdates(Vec<LeaderUpdate>),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame kind {0} is unknown")]
    UnknownKind(u8),
    #[error("frame body does not decode: {0}")]
    Body(String),
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
}

impl PeerFrame {
    /// Appends the framed encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            PeerFrame::Hello { node_id, cluster } => {
                out.push(KIND_HELLO);
                out.extend_from_slice(&node_id.to_be_bytes());
                out.extend_from_slice(&cluster.to_be_bytes());
            }
            PeerFrame::Raft(message) => {
                out.push(KIND_RAFT);
                out.extend_from_slice(&message.write_to_bytes().expect("raft messages encode"));
            }
            PeerFrame::Heartbeat(registration) => {
                out.push(KIND_HEARTBEAT);
                out.extend_from_slice(&serde_json::to_vec(registration).expect("registrations encode"));
            }
            PeerFrame::ForwardRequest { id, body } | PeerFrame::ForwardReply { id, body } => {
                let kind = if matches!(self, PeerFrame::ForwardRequest { .. }) {
                    KIND_FORWARD_REQUEST
                } else {
                    KIND_FORWARD_REPLY
                };
                out.push(kind);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(body);
            }
            PeerFrame::LeaderUpdates(updates) => {
                out.push(KIND_LEADER_UPDATES);
                out.extend_from_slice(&serde_json::to_vec(updates).expect("leader updates encode"));
            }
            PeerFrame::CatchUpRequest(request) => {
                out.push(KIND_CATCH_UP_REQUEST);
                out.extend_from_slice(&serde_json::to_vec(request).expect("catch-up requests encode"));
            }
            PeerFrame::CatchUpReply(reply) => {
                out.push(KIND_CATCH_UP_REPLY);
                let header = CatchUpReplyHeader {
                    id: reply.id,
                    topic: reply.topic.clone(),
                    partition: reply.partition,
                    error: reply.error.clone(),
                    log_start: reply.log_start,
                };
                let header = serde_json::to_vec(&header).expect("catch-up replies encode");
                out.extend_from_slice(&(header.len() as u32).to_be_bytes());
                out.extend_from_slice(&header);
                out.extend_from_slice(&reply.records);
            }
            PeerFrame::PartitionRaft(messages) => {
                out.push(KIND_PARTITION_RAFT);
                out.extend_from_slice(&(messages.len() as u32).to_be_bytes());
                for message in messages {
                    out.extend_from_slice(&(message.topic.len() as u16).to_be_bytes());
                    out.extend_from_slice(message.topic.as_bytes());
                    out.extend_from_slice(&message.topic_id);
                    out.extend_from_slice(&message.partition.to_be_bytes());
                    // The body straight into `out`, its length in front once known.
                    let at = out.len();
                    out.extend_from_slice(&[0; 4]);
                    message.message.write_to_vec(out).expect("raft messages encode");
                    let len = (out.len() - at - 4) as u32;
                    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                }
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Decodes a frame's kind and body (the length prefix already removed). Raft entries
    /// and catch-up records share `body`'s buffer.
    pub fn decode(kind: u8, body: bytes::Bytes) -> Result<PeerFrame, FrameError> {
        let bad = |what: &str| FrameError::Body(what.to_string());
        match kind {
            KIND_HELLO => {
                if body.len() != 12 {
                    return Err(bad("hello is 12 bytes"));
                }
                let node_id = i32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
                let cluster = u64::from_be_bytes(body[4..].try_into().expect("8 bytes"));
                Ok(PeerFrame::Hello { node_id, cluster })
            }
            KIND_RAFT => raft::eraftpb::Message::parse_from_carllerche_bytes(&body)
                .map(PeerFrame::Raft)
                .map_err(|e| FrameError::Body(e.to_string())),
            KIND_HEARTBEAT => {
                serde_json::from_slice(&body).map(PeerFrame::Heartbeat).map_err(|e| FrameError::Body(e.to_string()))
            }
            KIND_FORWARD_REQUEST | KIND_FORWARD_REPLY => {
                let id = u64::from_be_bytes(body.get(..8).ok_or_else(|| bad("no request id"))?.try_into().unwrap());
                let body = body[8..].to_vec();
                Ok(if kind == KIND_FORWARD_REQUEST {
                    PeerFrame::ForwardRequest { id, body }
                } else {
                    PeerFrame::ForwardReply { id, body }
                })
            }
            KIND_PARTITION_RAFT => decode_partition_messages(&body).map(PeerFrame::PartitionRaft),
            KIND_LEADER_UPDATES => {
                serde_json::from_slice(&body).map(PeerFrame::LeaderUpdates).map_err(|e| FrameError::Body(e.to_string()))
            }
            KIND_CATCH_UP_REQUEST => serde_json::from_slice(&body)
                .map(PeerFrame::CatchUpRequest)
                .map_err(|e| FrameError::Body(e.to_string())),
            KIND_CATCH_UP_REPLY => {
                let len = u32::from_be_bytes(body.get(..4).ok_or_else(|| bad("no header length"))?.try_into().unwrap())
                    as usize;
                let header = body.get(4..4 + len).ok_or_else(|| bad("catch-up reply header is truncated"))?;
                let header: CatchUpReplyHeader =
                    serde_json::from_slice(header).map_err(|e| FrameError::Body(e.to_string()))?;
                Ok(PeerFrame::CatchUpReply(CatchUpReply {
                    id: header.id,
                    topic: header.topic,
                    partition: header.partition,
                    error: header.error,
                    log_start: header.log_start,
                    records: body.slice(4 + len..),
                }))
            }
            other => Err(FrameError::UnknownKind(other)),
        }
    }
}

/// A frame received from a peer.
#[derive(Debug)]
pub struct Inbound {
    pub from: i32,
    pub frame: PeerFrame,
}

struct PeerLink {
    /// Encoded frames waiting for the writer task, which takes the whole buffer.
    pending: Rc<RefCell<Vec<u8>>>,
    /// Wakes the writer task when the buffer stops being empty.
    wake: mpsc::UnboundedSender<()>,
}

/// The outbound side: one link per peer.
pub struct Transport {
    links: HashMap<i32, PeerLink>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("peers", &self.links.keys().collect::<Vec<_>>()).finish()
    }
}

impl Transport {
    /// Starts a writer task per peer other than `node_id`; `view` learns which peers'
    /// processes are gone.
    pub fn start(node_id: i32, peers: &[Peer], view: Arc<ClusterView>) -> Rc<Transport> {
        let mut links = HashMap::new();
        for peer in peers.iter().filter(|p| p.node_id != node_id) {
            let (wake, woken) = mpsc::unbounded();
            let pending = Rc::new(RefCell::new(Vec::new()));
            glommio::spawn_local(write_to_peer(
                node_id,
                cluster_fingerprint(peers),
                peer.clone(),
                woken,
                pending.clone(),
                view.clone(),
            ))
            .detach();
            links.insert(peer.node_id, PeerLink { pending, wake });
        }
        Rc::new(Transport { links })
    }

    /// Queues `frame` for peer `to`; false if it was dropped (unknown peer, queue full).
    pub fn send(&self, to: i32, frame: &PeerFrame) -> bool {
        let Some(link) = self.links.get(&to) else { return false };
        let mut pending = link.pending.borrow_mut();
        if pending.len() >= QUEUED_BYTES_MAX {
            return false;
        }
        let was_empty = pending.is_empty();
        frame.encode(&mut pending);
        !was_empty || link.wake.unbounded_send(()).is_ok()
    }
}

/// Reads the body of a `PartitionRaft` frame; any short or undecodable field is an error.
fn decode_partition_messages(body: &bytes::Bytes) -> Result<Vec<PartitionMessage>, FrameError> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
            if self.0.len() < n {
                return Err(FrameError::Body("partition raft frame is truncated".into()));
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn u32(&mut self) -> Result<u32, FrameError> {
            Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
        }
    }
    let mut reader = Reader(body);
    let count = reader.u32()? as usize;
    // Every message takes at least 26 bytes: a count beyond that is a lie.
    if count > body.len() / 26 {
        return Err(FrameError::Body(format!("partition raft frame claims {count} messages")));
    }
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let topic_len = u16::from_be_bytes(reader.take(2)?.try_into().expect("2 bytes")) as usize;
        let topic = std::str::from_utf8(reader.take(topic_len)?)
            .map_err(|_| FrameError::Body("topic name is not UTF-8".into()))?
            .to_string();
        let topic_id: [u8; 16] = reader.take(16)?.try_into().expect("16 bytes");
        let partition = reader.u32()? as i32;
        let len = reader.u32()? as usize;
        let at = body.len() - reader.0.len();
        reader.take(len)?;
        let message = raft::eraftpb::Message::parse_from_carllerche_bytes(&body.slice(at..at + len))
            .map_err(|e| FrameError::Body(e.to_string()))?;
        messages.push(PartitionMessage { topic, topic_id, partition, message });
    }
    if !reader.0.is_empty() {
        return Err(FrameError::Body("trailing bytes after partition raft messages".into()));
    }
    Ok(messages)
}

/// A fingerprint of the `--peers` list (ids and addresses, in node order): two nodes
/// talk only if they were given the same list.
pub fn cluster_fingerprint(peers: &[Peer]) -> u64 {
    let mut sorted: Vec<&Peer> = peers.iter().collect();
    sorted.sort_by_key(|p| p.node_id);
    let text: String = sorted.iter().map(|p| format!("{}@{},", p.node_id, p.address)).collect();
    (u64::from(crate::stable_hash::fnv1a_32(text.as_bytes())) << 32) | u64::from(crc32c::crc32c(text.as_bytes()))
}

async fn write_to_peer(
    node_id: i32,
    cluster: u64,
    peer: Peer,
    mut woken: mpsc::UnboundedReceiver<()>,
    pending: Rc<RefCell<Vec<u8>>>,
    view: Arc<ClusterView>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut warned = false;
    // The buffer being written; swapped with `pending` each time, so both keep their
    // capacity and nothing is copied.
    let mut batch = Vec::new();
    loop {
        let stream = match connect(peer.address).await {
            Ok(stream) => stream,
            Err(error) => {
                if error.kind() == std::io::ErrorKind::ConnectionRefused {
                    view.peers_heard.process_gone(peer.node_id);
                }
                if !warned {
                    tracing::info!(peer = peer.node_id, address = %peer.address, %error, "peer unreachable; retrying");
                    warned = true;
                }
                // Frames for an unreachable peer are dropped, not queued (see the header).
                pending.borrow_mut().clear();
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        tracing::info!(peer = peer.node_id, address = %peer.address, "connected to peer");
        view.peers_heard.process_back(peer.node_id);
        warned = false;
        backoff = Duration::from_millis(50);
        let mut stream = stream;
        batch.clear();
        PeerFrame::Hello { node_id, cluster }.encode(&mut batch);
        loop {
            if batch.is_empty() {
                std::mem::swap(&mut batch, &mut *pending.borrow_mut());
            }
            if batch.is_empty() {
                // Drained: wait for the next frame (a wake is sent when the buffer
                // stops being empty; stale wakes find it empty and wait again).
                if woken.next().await.is_none() {
                    return; // the transport is gone
                }
                continue;
            }
            if let Err(error) = stream.write_all(&batch).await {
                tracing::info!(peer = peer.node_id, %error, "connection to peer lost");
                batch.clear();
                pending.borrow_mut().clear();
                break;
            }
            batch.clear();
            // A buffer that grew large once does not keep its memory.
            if batch.capacity() > 4 * WRITE_BUFFER_KEEP {
                batch = Vec::with_capacity(WRITE_BUFFER_KEEP);
            }
        }
    }
}

async fn connect(address: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(address, CONNECT_TIMEOUT).await.map_err(std::io::Error::from)?;
    stream.set_nodelay(true).map_err(std::io::Error::from)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(std::io::Error::from)?;
    Ok(stream)
}

/// Accepts peers' connections on `listener` and passes their frames to `inbound`.
/// A connection must first say hello as one of `peers` (not `node_id` itself) with the
/// same cluster fingerprint. There is no authentication: the cluster listener belongs
/// on a network only the brokers reach.
pub async fn accept_peers(
    listener: TcpListener,
    node_id: i32,
    peers: Vec<Peer>,
    inbound: mpsc::UnboundedSender<Inbound>,
    view: Arc<ClusterView>,
) {
    let expected = Rc::new(Expected { node_id, cluster: cluster_fingerprint(&peers), peers, view });
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(read_from_peer(stream, expected.clone(), inbound.clone())).detach();
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a peer connection failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
        if inbound.is_closed() {
            return;
        }
    }
}

/// Who may connect.
struct Expected {
    node_id: i32,
    cluster: u64,
    peers: Vec<Peer>,
    view: Arc<ClusterView>,
}

async fn read_from_peer(stream: TcpStream, expected: Rc<Expected>, inbound: mpsc::UnboundedSender<Inbound>) {
    let from = read_frames(stream, &expected, inbound).await;
    // The connection ended: if its peer's process is gone, its port now refuses.
    if let Some(peer) = from.and_then(|id| expected.peers.iter().find(|p| p.node_id == id)) {
        probe(peer, &expected.view).await;
    }
}

/// Asks `peer`'s cluster port whether anything listens there; marks the peer's process
/// gone if it refuses.
async fn probe(peer: &Peer, view: &ClusterView) {
    for attempt in 0..2 {
        if attempt > 0 {
            glommio::timer::sleep(PROBE_RETRY).await;
        }
        match TcpStream::connect_timeout(peer.address, PROBE_TIMEOUT).await.map_err(std::io::Error::from) {
            Ok(_) => continue, // something listens; closed unused (the peer reads no hello)
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                if view.peers_heard.gone_since(peer.node_id).is_none() {
                    tracing::info!(
                        peer = peer.node_id,
                        "peer's connection ended and its port refuses: its process is gone"
                    );
                }
                view.peers_heard.process_gone(peer.node_id);
                return;
            }
            Err(_) => return, // a timeout or an unreachable network proves nothing
        }
    }
}

/// Passes a peer connection's frames to `inbound` until it ends; returns the peer it
/// said it was.
async fn read_frames(
    mut stream: TcpStream,
    expected: &Expected,
    inbound: mpsc::UnboundedSender<Inbound>,
) -> Option<i32> {
    let remote = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut from = None;
    let mut reader = FrameReader::new();
    loop {
        let frame = match reader.next(&mut stream).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return from,
            Err(error) => {
                tracing::warn!(%remote, %error, "bad frame from a peer; closing its connection");
                return from;
            }
        };
        match (frame, from) {
            (PeerFrame::Hello { node_id, cluster }, None) => {
                let known = node_id != expected.node_id && expected.peers.iter().any(|p| p.node_id == node_id);
                if !known || cluster != expected.cluster {
                    tracing::warn!(
                        %remote, node_id, same_peers = cluster == expected.cluster,
                        "a peer that is not in this cluster's --peers (or has another list) connected; closing"
                    );
                    return None;
                }
                expected.view.peers_heard.process_back(node_id);
                from = Some(node_id);
            }
            (frame, Some(from)) => {
                if inbound.unbounded_send(Inbound { from, frame }).is_err() {
                    return None; // this node is stopping
                }
            }
            (_, None) => {
                tracing::warn!(%remote, "a peer spoke before saying hello; closing its connection");
                return None;
            }
        }
    }
}

/// Bytes a peer connection reads at a time: one read takes every frame that has arrived
/// (a round's frames from a busy peer), not one read for a frame's length and another
/// for its body.
const READ_BUFFER_BYTES: usize = 256 << 10;

/// Splits a peer connection's bytes into frames.
struct FrameReader {
    buffer: Vec<u8>,
    /// The unread bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
}

impl FrameReader {
    fn new() -> FrameReader {
        FrameReader { buffer: vec![0; READ_BUFFER_BYTES], start: 0, end: 0 }
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream.
    async fn next(&mut self, stream: &mut TcpStream) -> Result<Option<PeerFrame>, Box<dyn std::error::Error>> {
        loop {
            let held = self.end - self.start;
            if held >= 4 {
                let header: [u8; 4] = self.buffer[self.start..self.start + 4].try_into().expect("4 bytes");
                let len = u32::from_be_bytes(header) as usize;
                if len == 0 || len > FRAME_BYTES_MAX {
                    return Err(FrameError::TooLarge(len).into());
                }
                if held >= 4 + len {
                    let body = bytes::Bytes::copy_from_slice(&self.buffer[self.start + 4..self.start + 4 + len]);
                    self.start += 4 + len;
                    return Ok(Some(PeerFrame::decode(body[0], body.slice(1..))?));
                }
                if 4 + len > self.buffer.len() {
                    // Larger than the buffer (a catch-up reply): read the rest into its own.
                    let mut body = vec![0u8; len];
                    let have = held - 4;
                    body[..have].copy_from_slice(&self.buffer[self.start + 4..self.end]);
                    self.start = 0;
                    self.end = 0;
                    stream.read_exact(&mut body[have..]).await?;
                    let body = bytes::Bytes::from(body);
                    return Ok(Some(PeerFrame::decode(body[0], body.slice(1..))?));
                }
            }
            if self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let read = stream.read(&mut self.buffer[self.end..]).await?;
            if read == 0 {
                if self.end == 0 {
                    return Ok(None);
                }
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            self.end += read;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: PeerFrame) -> PeerFrame {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        let bytes = bytes::Bytes::from(bytes);
        PeerFrame::decode(bytes[4], bytes.slice(5..)).unwrap()
    }

    #[test]
    fn frames_round_trip() {
        assert!(matches!(
            round_trip(PeerFrame::Hello { node_id: 7, cluster: 99 }),
            PeerFrame::Hello { node_id: 7, cluster: 99 }
        ));
        let message = raft::eraftpb::Message { from: 2, to: 3, term: 9, ..Default::default() };
        match round_trip(PeerFrame::Raft(message.clone())) {
            PeerFrame::Raft(back) => assert_eq!(back, message),
            other => panic!("{other:?}"),
        }
        match round_trip(PeerFrame::ForwardReply { id: 5, body: b"x".to_vec() }) {
            PeerFrame::ForwardReply { id: 5, body } => assert_eq!(body, b"x"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partition_messages_round_trip() {
        let entry = raft::eraftpb::Entry { index: 9, data: bytes::Bytes::from_static(b"batch"), ..Default::default() };
        let message = raft::eraftpb::Message { term: 4, to: 2, entries: vec![entry].into(), ..Default::default() };
        let messages = vec![
            PartitionMessage { topic: "orders".into(), topic_id: [7; 16], partition: 3, message: message.clone() },
            PartitionMessage { topic: "t".into(), topic_id: [1; 16], partition: 0, message },
        ];
        match round_trip(PeerFrame::PartitionRaft(messages.clone())) {
            PeerFrame::PartitionRaft(back) => assert_eq!(back, messages),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn catch_up_frames_round_trip() {
        let request = CatchUpRequest {
            id: 3,
            topic: "t".into(),
            topic_id: [2; 16],
            partition: 1,
            from: 10,
            until: 99,
            max_bytes: 1 << 20,
        };
        match round_trip(PeerFrame::CatchUpRequest(request.clone())) {
            PeerFrame::CatchUpRequest(back) => assert_eq!(back, request),
            other => panic!("{other:?}"),
        }
        let reply = CatchUpReply {
            id: 3,
            topic: "t".into(),
            partition: 1,
            error: None,
            log_start: 0,
            records: bytes::Bytes::from_static(b"batches"),
        };
        match round_trip(PeerFrame::CatchUpReply(reply.clone())) {
            PeerFrame::CatchUpReply(back) => assert_eq!(back, reply),
            other => panic!("{other:?}"),
        }
        let updates = vec![LeaderUpdate {
            topic: "t".into(),
            topic_id: [5; 16],
            partition: 2,
            leader: 3,
            epoch: 7,
            in_sync: vec![1, 3],
        }];
        match round_trip(PeerFrame::LeaderUpdates(updates.clone())) {
            PeerFrame::LeaderUpdates(back) => assert_eq!(back, updates),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        use proptest::prelude::*;
        proptest!(|(kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..64))| {
            let _ = PeerFrame::decode(kind, bytes::Bytes::from(body));
        });
    }
}
